//! StartContainer: the shim starts the process; a watcher task per started
//! container records its exit.

use std::sync::Arc;

use gantry_proto::cri::v1::ContainerEventType;

use crate::error::{internal, RuntimeError};
use crate::runtime::Runtime;
use crate::shim_client::{ShimClient, ShimError, State};
use crate::shim_process;
use crate::systemd::ScopeLimits;
use gantry_proto::systemd_cgroup::Scope;

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
                this.mark_exit_reported(&id);
            }
        });
    }

    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<(), RuntimeError> {
        let container = self.container(id).await?;
        let sandbox = self.sandbox(&container.sandbox_id).await?;
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        // An external runtime made its scope itself at create.
        let scope = if self.handlers.resolve(&sandbox.runtime_handler)?.is_some() {
            None
        } else {
            sandbox.cgroup_driver.scope(sandbox.cgroup_parent(), id)
        };
        let limits = container
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(ScopeLimits::from_cri)
            .unwrap_or_default();
        let result = self.start_shim_process(&mut shim, id, scope, &limits, &format!("starting container {id}")).await;
        // Whatever happened, the shim knows the state now.
        self.container_state(id).await;
        result?;
        self.watch(id.to_string());
        self.events.emit(id, ContainerEventType::ContainerStartedEvent);
        tracing::info!(container = %id, "container started");
        Ok(())
    }

    /// Lets the shim's process run. Under the systemd driver (`scope`), the
    /// shim first makes it without letting it run, systemd puts it into its
    /// new scope unit, and only then does it run: nothing it does escapes
    /// the scope's limits. A failed scope ends the process.
    pub(crate) async fn start_shim_process(
        &self,
        shim: &mut ShimClient,
        id: &str,
        scope: Option<Scope>,
        limits: &ScopeLimits,
        what: &str,
    ) -> Result<State, RuntimeError> {
        let shim_error = |e: ShimError| match e {
            ShimError::Shim(m) => RuntimeError::FailedPrecondition(format!("{what}: {m}")),
            other => internal(what)(&other),
        };
        if let Some(scope) = scope {
            let pid = shim.prepare().await.map_err(shim_error)?.pid;
            let path = scope.cgroup_path().map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
            let dir = self.cgroups.v2_dir(&path).unwrap_or_else(|| path.clone().into());
            if let Err(e) = self.systemd.start_scope(&scope.unit, &scope.slice, pid, limits, &dir).await {
                let _ = shim.kill(9).await;
                tracing::warn!(id, unit = %scope.unit, error = %e, "no scope unit: the process is ended");
                return Err(e);
            }
            tracing::debug!(id, unit = %scope.unit, "scope unit started");
        }
        shim.start().await.map_err(shim_error)
    }
}
