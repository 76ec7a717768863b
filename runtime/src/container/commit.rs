//! Commit (the `gantry` tool): the container's writable layer becomes a new
//! image on top of its image (imageservice::commit); a running container is
//! paused meanwhile, as `docker commit` does, so the layer is consistent.

use gantry_imageservice::commit::{CommitError, CommitOptions};
use gantry_imageservice::tree_tar::IdShift;
use gantry_imageservice::{Digest, ImageSelector};

use crate::error::RuntimeError;
use crate::runtime::Runtime;
use crate::shim_client::Status as ShimStatus;

impl Runtime {
    /// The ID shift of a container in a pod user namespace (see tree_tar).
    pub(crate) async fn id_shift(&self, id: &str) -> Option<IdShift> {
        let c = self.container(id).await.ok()?;
        self.sandbox(&c.sandbox_id).await.ok()?.id_maps().map(|m| m.shift())
    }

    /// Commits container `id` as a new image; its ID.
    pub async fn commit(&self, id: &str, opts: &CommitOptions) -> Result<String, RuntimeError> {
        let c = self.container(id).await?;
        let image_id: Digest =
            c.image_id.parse().map_err(|e| RuntimeError::Internal(format!("container {id}'s image ID: {e}")))?;
        let parent = self
            .images
            .resolve(&ImageSelector::Id(image_id.clone()))
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .ok_or_else(|| {
                RuntimeError::FailedPrecondition(format!(
                    "container {id}'s image {image_id} was removed: its config is gone, so nothing to commit onto"
                ))
            })?;
        let upper = self.images.snapshotter().rw_layout(id, &[]).upperdir;
        let running = self.container_state(id).await.status == ShimStatus::Running as i32;
        let pause = running && !self.is_paused(id).await;
        if pause {
            self.pause(id, true).await?;
        }
        let shift = self.id_shift(id).await;
        let result = self.images.commit(&parent, &upper, shift, opts).await;
        if pause {
            let _ = self.pause(id, false).await;
        }
        let record = result.map_err(|e| match e {
            CommitError::Invalid(m) => RuntimeError::InvalidArgument(m),
            other => RuntimeError::Internal(format!("committing container {id}: {other}")),
        })?;
        Ok(record.id.to_string())
    }
}
