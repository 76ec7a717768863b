//! StartContainer: the shim starts the process; a watcher task per started
//! container records its exit.

use std::sync::Arc;

use gantry_proto::cri::v1::ContainerEventType;

use crate::error::{internal, RuntimeError};
use crate::runtime::Runtime;
use crate::shim_client::ShimError;
use crate::shim_process;

impl Runtime {
    /// Waits (in the background) for the container to exit and records it.
    pub(crate) fn watch(self: &Arc<Self>, id: String) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let exited = match this.shim(&id).await {
                Ok(mut shim) => shim.wait().await.ok(),
                Err(_) => None,
            };
            let state = exited.or_else(|| shim_process::read_state_file(&this.container_dir(&id))).unwrap_or_default();
            if this.containers.lock().await.contains_key(&id) {
                if state.oom_killed {
                    this.counters.oom_kills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                this.cache_state(&id, state);
                this.events.emit(&id, ContainerEventType::ContainerStoppedEvent);
            }
        });
    }

    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<(), RuntimeError> {
        self.container(id).await?;
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        let result = shim.start().await;
        // Whatever happened, the shim knows the state now.
        self.container_state(id).await;
        result.map_err(|e| match e {
            ShimError::Shim(m) => RuntimeError::FailedPrecondition(format!("starting container {id}: {m}")),
            other => internal("starting container")(&other),
        })?;
        self.watch(id.to_string());
        self.events.emit(id, ContainerEventType::ContainerStartedEvent);
        tracing::info!(container = %id, "container started");
        Ok(())
    }
}
