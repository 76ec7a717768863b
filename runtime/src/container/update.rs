//! UpdateContainerResources and ReopenContainerLog: changes to a running
//! container.

use crate::error::{internal, RuntimeError};
use crate::records::persist;
use crate::runtime::Runtime;
use crate::shim_client::{ShimError, Status, UpdateRequest};

impl Runtime {
    /// kubelet's log rotation renamed the file: the shim opens a new one.
    pub async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        self.container(id).await?;
        if self.container_state(id).await.status != Status::Running as i32 {
            return Err(RuntimeError::FailedPrecondition(format!("container {id} is not running")));
        }
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        shim.reopen_log().await.map_err(|e| internal("reopening the log")(&e))?;
        Ok(())
    }

    /// New cgroup limits for a container, remembered in its record.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: gantry_proto::cri::v1::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let mut record = self.container(id).await?;
        let update = UpdateRequest {
            memory_limit: resources.memory_limit_in_bytes,
            memory_swap: if resources.memory_swap_limit_in_bytes > 0 {
                resources.memory_swap_limit_in_bytes
            } else {
                resources.memory_limit_in_bytes
            },
            cpu_shares: resources.cpu_shares.max(0) as u64,
            cpu_quota: resources.cpu_quota,
            cpu_period: resources.cpu_period.max(0) as u64,
            cpuset_cpus: resources.cpuset_cpus.clone(),
            cpuset_mems: resources.cpuset_mems.clone(),
            hugepage_limits: resources
                .hugepage_limits
                .iter()
                .map(|h| gantry_proto::shim::HugepageLimit { page_size: h.page_size.clone(), limit: h.limit })
                .collect(),
            unified: resources.unified.clone(),
        };
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        shim.update(update).await.map_err(|e| match e {
            ShimError::Shim(m) => RuntimeError::InvalidArgument(format!("updating container {id}: {m}")),
            other => internal("updating container")(&other),
        })?;
        // Under the systemd driver the scope's unit properties follow, so
        // that systemd (at a daemon-reload) keeps the new limits.
        let sandbox = self.sandbox(&record.sandbox_id).await?;
        if let Some(scope) = sandbox.cgroup_driver.scope(sandbox.cgroup_parent(), id) {
            self.systemd.set_limits(&scope.unit, &crate::systemd::ScopeLimits::from_cri(&resources)).await?;
        }
        let linux = record.config.linux.get_or_insert_with(Default::default);
        linux.resources = Some(resources);
        persist(&self.container_dir(id), &record)?;
        self.listing.insert(&record);
        self.containers.lock().await.insert(id.to_string(), record);
        Ok(())
    }
}
