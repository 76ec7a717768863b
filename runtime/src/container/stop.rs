//! StopContainer: the stop signal, SIGKILL after the timeout.

use std::time::Duration;

use crate::error::{internal, RuntimeError};
use crate::runtime::Runtime;
use crate::shim_client::Status;

impl Runtime {
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), RuntimeError> {
        let result = self.stop_container_process(id, timeout_secs).await;
        if self.containers.lock().await.contains_key(id) {
            self.container_state(id).await;
        }
        result
    }

    async fn stop_container_process(&self, id: &str, timeout_secs: i64) -> Result<(), RuntimeError> {
        let Ok(record) = self.container(id).await else { return Ok(()) };
        let Ok(mut shim) = self.shim(id).await else { return Ok(()) };
        let state = shim.state().await.map_err(|e| internal("container state")(&e))?;
        // As containerd, a container never started has nothing to stop and
        // stays CREATED (RemoveContainer still removes it).
        if state.status == Status::Stopped as i32 || state.status == Status::Created as i32 {
            return Ok(());
        }
        // A frozen process takes no signal: thaw a paused container first.
        if self.is_paused(id).await {
            let _ = self.pause(id, false).await;
        }
        if state.status == Status::Running as i32 && timeout_secs > 0 {
            let sig = crate::stop_signal::parse(&record.stop_signal).unwrap_or(libc_sigterm());
            shim.kill(sig).await.map_err(|e| internal("signalling container")(&e))?;
            if tokio::time::timeout(Duration::from_secs(timeout_secs as u64), shim.wait()).await.is_ok() {
                tracing::info!(container = %id, "container stopped");
                return Ok(());
            }
            shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        }
        shim.kill(9).await.map_err(|e| internal("killing container")(&e))?;
        tokio::time::timeout(Duration::from_secs(30), shim.wait())
            .await
            .map_err(|_| RuntimeError::Internal(format!("container {id} did not die from SIGKILL")))?
            .map_err(|e| internal("waiting for container")(&e))?;
        tracing::info!(container = %id, "container killed");
        Ok(())
    }
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}
