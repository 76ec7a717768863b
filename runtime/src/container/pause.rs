//! Pause and unpause (the `gantry` tool): every process of the container's
//! cgroup is frozen, using no CPU and keeping its memory. CRI keeps calling
//! it RUNNING, as containerd does; the verbose status and `gantry ps` say
//! paused.

use crate::error::RuntimeError;
use crate::runtime::Runtime;
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
}
