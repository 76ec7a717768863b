//! RemoveContainer, and undoing a container's files (also for a create that
//! failed and for what a crash left half-made).

use std::path::Path;
use std::time::Duration;

use gantry_proto::cri::v1::ContainerEventType;

use crate::error::RuntimeError;
use crate::runtime::Runtime;

impl Runtime {
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let Ok(record) = self.container(id).await else {
            return Ok(());
        };
        self.stop_container(id, 0).await?;
        let dir = self.container_dir(id);
        self.discard_container_files(id, &dir).await;
        self.stop_scope(&record.sandbox_id, id).await;
        // Unlisted first, for the same reason.
        self.listing.remove(id);
        self.containers.lock().await.remove(id);
        self.events.emit(id, ContainerEventType::ContainerDeletedEvent);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    /// Under the systemd driver, stops the scope unit of `id` (pod
    /// `sandbox_id`'s pause process or container) if systemd still has it:
    /// it normally went away with its last process.
    pub(crate) async fn stop_scope(&self, sandbox_id: &str, id: &str) {
        let Some(sandbox) = self.sandboxes.lock().await.get(sandbox_id).cloned() else { return };
        let Some(scope) = sandbox.cgroup_driver.scope(sandbox.cgroup_parent(), id) else { return };
        if let Err(e) = self.systemd.stop_unit(&scope.unit).await {
            tracing::warn!(id, unit = %scope.unit, error = %e, "could not stop the scope unit");
        }
    }

    /// Undoes a container's files: shim, mount, writable layer, bundle.
    pub(crate) async fn discard_container_files(&self, id: &str, dir: &Path) {
        if let Ok(mut shim) = self.shim(id).await {
            let _ = shim.kill(9).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.wait()).await;
            let _ = shim.shutdown().await;
        } else {
            // Its shim died: an external runtime's state for it is left.
            self.handlers.forget(id).await;
        }
        let _ = gantry_imageservice::snapshot::unmount(&dir.join("rootfs"));
        super::image_volumes::unmount_image_volumes(dir);
        let _ = self.images.snapshotter().remove_rw(id);
        let _ = tokio::fs::remove_dir_all(dir).await;
        // Layers whose image was removed while this container used them go now.
        let holders = [id.to_string(), super::image_volumes::holder(id)];
        if let Err(e) = self.images.release_layers_and_collect(&holders).await {
            tracing::warn!(container = %id, error = %e, "collecting released layers");
        }
    }
}
