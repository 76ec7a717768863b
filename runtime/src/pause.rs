//! Pausing a container (the `gantry pause` command, Docker's model): every
//! process of its cgroup is frozen, using no CPU and keeping its memory. CRI
//! keeps calling it RUNNING, as containerd does; the verbose status and the
//! Gantry API say paused.

use gantry_proto::api::containers_server::Containers;
use gantry_proto::api::{PauseRequest, PauseResponse};
use tonic::{Request, Response, Status};

use crate::runtime::{Runtime, RuntimeError};
use crate::shim_client::Status as ShimStatus;

impl Runtime {
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
    async fn pause(&self, request: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(crate::service::status)?;
        self.0.pause(&id, true).await.map_err(crate::service::status)?;
        Ok(Response::new(PauseResponse { id }))
    }

    async fn unpause(&self, request: Request<PauseRequest>) -> Result<Response<PauseResponse>, Status> {
        let id = self.0.container_by_prefix(&request.into_inner().container).await.map_err(crate::service::status)?;
        self.0.pause(&id, false).await.map_err(crate::service::status)?;
        Ok(Response::new(PauseResponse { id }))
    }
}
