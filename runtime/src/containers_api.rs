//! The Gantry `Containers` API (the `gantry` tool): what Docker's model
//! does with containers beyond CRI: export, pause (`container/pause.rs`),
//! commit (`container/commit.rs`).

use gantry_imageservice::api::{ChunkStream, ChunkWriter};
use gantry_imageservice::commit::CommitOptions;
use gantry_imageservice::tree_tar::{append_tree, Marks};
use gantry_proto::api::containers_server::Containers;
use gantry_proto::api::{CommitRequest, CommitResponse, ExportRequest, PauseRequest, PauseResponse};
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;

/// The Gantry `Containers` API over the runtime.
pub struct GantryContainers(pub std::sync::Arc<Runtime>);

#[tonic::async_trait]
impl Containers for GantryContainers {
    type ExportStream = ChunkStream;

    async fn export(&self, request: Request<ExportRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(Status::from)?;
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
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(Status::from)?;
        self.0.pause(&id, true).await.map_err(Status::from)?;
        Ok(Response::new(PauseResponse { id }))
    }

    async fn commit(&self, request: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        let req = request.into_inner();
        let id = self.0.container_by_prefix(&req.container).await.map_err(Status::from)?;
        let opts =
            CommitOptions { reference: req.reference, author: req.author, message: req.message, changes: req.changes };
        let image = self.0.commit(&id, &opts).await.map_err(Status::from)?;
        Ok(Response::new(CommitResponse { id: image }))
    }

    async fn unpause(&self, request: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(Status::from)?;
        self.0.pause(&id, false).await.map_err(Status::from)?;
        Ok(Response::new(PauseResponse { id }))
    }
}
