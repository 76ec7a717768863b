//! RemovePodSandbox: stopped first, its containers removed, then its shim
//! and directory.

use gantry_proto::cri::v1::ContainerEventType;

use crate::error::RuntimeError;
use crate::runtime::Runtime;

impl Runtime {
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        if !self.sandboxes.lock().await.contains_key(id) {
            return Ok(());
        }
        self.stop_sandbox(id).await?;
        let members = self.members_of(id).await;
        for c in members {
            self.remove_container(&c).await?;
        }
        let dir = self.sandbox_dir(id);
        if let Ok(mut shim) = self.shim(id).await {
            let _ = shim.shutdown().await;
        }
        self.stop_scope(id, id).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        self.sandboxes.lock().await.remove(id);
        self.events.emit(id, ContainerEventType::ContainerDeletedEvent);
        tracing::info!(pod = %id, "pod sandbox removed");
        Ok(())
    }
}
