//! UpdatePodSandboxResources (in-place pod resize): kubelet resizes the pod
//! cgroup it owns itself and tells the runtime the pod's new resources and
//! overhead. Gantry's own cgroups below it are the containers' (each resized
//! by UpdateContainerResources) and the pause process's, which has no
//! limits of its own; so, as containerd with runc, it checks the values and
//! records them with the pod.

use gantry_proto::cri::v1::LinuxContainerResources;

use crate::error::RuntimeError;
use crate::records::persist;
use crate::runtime::Runtime;

impl Runtime {
    pub async fn update_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<LinuxContainerResources>,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), RuntimeError> {
        for (what, r) in [("overhead", &overhead), ("resources", &resources)] {
            let Some(r) = r else { continue };
            for (field, value) in [
                ("cpu_shares", r.cpu_shares),
                ("cpu_period", r.cpu_period),
                ("memory_limit_in_bytes", r.memory_limit_in_bytes),
                ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes),
            ] {
                if value < 0 {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "pod sandbox {id}: {what}.{field} is {value}, below zero"
                    )));
                }
            }
        }
        let mut sandboxes = self.sandboxes.lock().await;
        let record =
            sandboxes.get_mut(id).ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id:?} not found")))?;
        record.overhead = overhead;
        record.resources = resources;
        persist(&self.sandbox_dir(id), record)?;
        tracing::info!(pod = %id, "pod sandbox resources updated");
        Ok(())
    }
}
