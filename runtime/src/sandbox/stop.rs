//! StopPodSandbox: the pod's containers stopped together, CNI DEL while the
//! pause process still holds the network namespace, then the pause process.

use gantry_proto::cri::v1::ContainerEventType;

use crate::error::RuntimeError;
use crate::records::persist;
use crate::runtime::Runtime;

impl Runtime {
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.sandboxes.lock().await.get(id).cloned() else {
            // CRI: stopping an unknown or removed sandbox is not an error.
            return Ok(());
        };
        let members = self.members_of(id).await;
        // All of the pod's containers at once, not one by one.
        let stops = members.iter().map(|c| self.stop_container(c, 0));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        let dir = self.sandbox_dir(id);
        // While the pause process still holds the netns, so plugins can clean inside it.
        if record.network_attached {
            self.teardown_network(id, &dir).await?;
        }
        self.kill_shim(id, false).await;
        let mut sandboxes = self.sandboxes.lock().await;
        if let Some(r) = sandboxes.get_mut(id) {
            r.ready = false;
            r.network_attached = false;
            persist(&dir, r)?;
        }
        if record.ready {
            self.events.emit(id, ContainerEventType::ContainerStoppedEvent);
        }
        tracing::info!(pod = %record.id, "pod sandbox stopped");
        Ok(())
    }
}
