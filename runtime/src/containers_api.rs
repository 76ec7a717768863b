//! The Gantry `Containers` API (the `gantry` tool): what Docker's model
//! does with containers beyond CRI.
//!
//! Pause: every process of the container's cgroup is frozen, using no CPU
//! and keeping its memory. CRI keeps calling it RUNNING, as containerd does;
//! the verbose status and `gantry ps` say paused.
//!
//! Commit: the container's writable layer becomes a new image on top of its
//! image (imageservice::commit); a running container is paused meanwhile, as
//! `docker commit` does, so the layer is consistent.

use gantry_imageservice::api::{ChunkStream, ChunkWriter};
use gantry_imageservice::commit::{CommitError, CommitOptions};
use gantry_imageservice::tree_tar::{append_tree, IdShift, Marks};
use gantry_imageservice::{Digest, ImageSelector};
use gantry_proto::api::containers_server::Containers;
use gantry_proto::api::{CommitRequest, CommitResponse, ExportRequest, PauseRequest, PauseResponse};
use tonic::{Request, Response, Status};

use crate::runtime::{Runtime, RuntimeError};
use crate::shim_client::Status as ShimStatus;

impl Runtime {
    /// The ID shift of a container in a pod user namespace (see tree_tar).
    async fn id_shift(&self, id: &str) -> Option<IdShift> {
        let c = self.container(id).await.ok()?;
        self.sandbox(&c.sandbox_id).await.ok()?.id_maps().map(|m| m.shift())
    }

    async fn running_cgroup(&self, id: &str) -> Result<String, RuntimeError> {
        let c = self.container(id).await?;
        if self.container_state(id).await.status != ShimStatus::Running as i32 {
            return Err(RuntimeError::FailedPrecondition(format!("container {id} is not running")));
        }
        let sandbox = self.sandbox(&c.sandbox_id).await?;
        Ok(sandbox.container_cgroup(id))
    }

    pub async fn pause(&self, id: &str, paused: bool) -> Result<(), RuntimeError> {
        let cgroup = self.running_cgroup(id).await?;
        let layout = self.cgroups.clone();
        tokio::task::spawn_blocking(move || layout.set_frozen(&cgroup, paused))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(|e| {
                RuntimeError::Internal(format!("{} container {id}: {e}", if paused { "pausing" } else { "unpausing" }))
            })?;
        tracing::info!(container = %id, paused, "container pause state changed");
        Ok(())
    }

    /// Whether the container's processes are frozen.
    pub async fn is_paused(&self, id: &str) -> bool {
        let Ok(c) = self.container(id).await else { return false };
        let Ok(sandbox) = self.sandbox(&c.sandbox_id).await else { return false };
        self.cgroups.is_frozen(&sandbox.container_cgroup(id))
    }

    /// A full ID from a unique prefix.
    pub async fn container_by_prefix(&self, prefix: &str) -> Result<String, RuntimeError> {
        let containers = self.containers.lock().await;
        let matches: Vec<&String> = containers.keys().filter(|id| id.starts_with(prefix)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RuntimeError::NotFound(format!("container {prefix:?} not found"))),
            _ => Err(RuntimeError::InvalidArgument(format!("{prefix:?} names {} containers", matches.len()))),
        }
    }
}

/// The Gantry `Containers` API over the runtime.
pub struct GantryContainers(pub std::sync::Arc<Runtime>);

#[tonic::async_trait]
impl Containers for GantryContainers {
    type ExportStream = ChunkStream;

    async fn export(&self, request: Request<ExportRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(crate::service::status)?;
        // The rootfs overlay gantryd mounted: the image plus the container's
        // changes, without the container's own mounts (/proc, volumes…).
        let rootfs = self.0.bundle_dir(&id).join("rootfs");
        if std::fs::read_dir(&rootfs).map_or(true, |mut d| d.next().is_none()) {
            return Err(Status::failed_precondition(format!("container {id} has no mounted filesystem")));
        }
        let shift = self.0.id_shift(&id).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter::new(tx.clone());
            let result = (|| -> std::io::Result<()> {
                let mut tar = tar::Builder::new(&mut w);
                append_tree(&mut tar, &rootfs, Marks::AsIs, shift)?;
                tar.into_inner()?;
                std::io::Write::flush(&mut w)
            })();
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::internal(format!("exporting container {id}: {e}"))));
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn pause(&self, request: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(crate::service::status)?;
        self.0.pause(&id, true).await.map_err(crate::service::status)?;
        Ok(Response::new(PauseResponse { id }))
    }

    async fn commit(&self, request: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        let req = request.into_inner();
        let id = self.0.container_by_prefix(&req.container).await.map_err(crate::service::status)?;
        let opts =
            CommitOptions { reference: req.reference, author: req.author, message: req.message, changes: req.changes };
        let image = self.0.commit(&id, &opts).await.map_err(crate::service::status)?;
        Ok(Response::new(CommitResponse { id: image }))
    }

    async fn unpause(&self, request: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(crate::service::status)?;
        self.0.pause(&id, false).await.map_err(crate::service::status)?;
        Ok(Response::new(PauseResponse { id }))
    }
}

impl Runtime {
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
