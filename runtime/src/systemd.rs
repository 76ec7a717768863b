//! systemd's D-Bus API (org.freedesktop.systemd1.Manager) for the systemd
//! cgroup driver: a transient scope unit per pod and container process
//! (`gantry-ID.scope`, `Delegate=yes`, in kubelet's pod slice), its limits
//! as unit properties (so a `daemon-reload` keeps them, as runc's systemd
//! driver sets them), stopped at removal.
//!
//! One system-bus connection, made on first use; when the bus is down the
//! call fails with `Unavailable` and the next call connects again.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use zbus::zvariant::{OwnedObjectPath, Value};

use crate::error::RuntimeError;

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long a new scope may take to show its process in its cgroup.
const SCOPE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits set as unit properties; `None` leaves one as systemd has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeLimits {
    pub memory_max: Option<u64>,
    pub cpu_weight: Option<u64>,
    /// CPU time per second of wall time, in microseconds (`cpu.max` quota
    /// scaled to a 1 s period).
    pub cpu_quota_per_sec_usec: Option<u64>,
    pub tasks_max: Option<u64>,
}

impl ScopeLimits {
    /// The limits of a CRI resources message: memory, CPU weight and quota.
    pub fn from_cri(r: &gantry_proto::cri::v1::LinuxContainerResources) -> Self {
        let quota = (r.cpu_quota > 0 && r.cpu_period > 0)
            .then(|| (r.cpu_quota as u64).saturating_mul(1_000_000) / r.cpu_period as u64);
        ScopeLimits {
            memory_max: (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes as u64),
            // runc's conversion of shares to cgroup2's weight.
            cpu_weight: (r.cpu_shares > 0).then(|| 1 + (r.cpu_shares.clamp(2, 262_144) as u64 - 2) * 9999 / 262_142),
            cpu_quota_per_sec_usec: quota,
            tasks_max: r.unified.get("pids.max").and_then(|v| v.parse().ok()),
        }
    }

    fn properties(&self) -> Vec<(&'static str, Value<'static>)> {
        let mut p = vec![];
        if let Some(v) = self.memory_max {
            p.push(("MemoryMax", Value::from(v)));
        }
        if let Some(v) = self.cpu_weight {
            p.push(("CPUWeight", Value::from(v)));
        }
        if let Some(v) = self.cpu_quota_per_sec_usec {
            p.push(("CPUQuotaPerSecUSec", Value::from(v)));
        }
        if let Some(v) = self.tasks_max {
            p.push(("TasksMax", Value::from(v)));
        }
        p
    }
}

#[derive(Default)]
pub struct Systemd {
    connection: Mutex<Option<zbus::Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Unavailable(format!(
        "systemd is not reachable on the system D-Bus (cgroup_driver = \"systemd\"): {e}"
    ))
}

impl Systemd {
    /// Calls a Manager method; a broken connection is dropped (the next
    /// call reconnects) and reported as `Unavailable`.
    async fn call<B, R>(&self, method: &str, body: &B) -> Result<R, RuntimeError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let mut slot = self.connection.lock().await;
        let conn = match slot.as_ref() {
            Some(c) => c.clone(),
            None => {
                let c = zbus::Connection::system().await.map_err(unavailable)?;
                *slot = Some(c.clone());
                c
            }
        };
        drop(slot);
        let reply = conn.call_method(Some(DESTINATION), PATH, Some(MANAGER), method, body).await;
        match reply {
            Ok(msg) => msg
                .body()
                .deserialize::<R>()
                .map_err(|e| RuntimeError::Internal(format!("systemd {method}: unexpected reply: {e}"))),
            Err(zbus::Error::MethodError(name, text, _)) => {
                Err(RuntimeError::Internal(format!("systemd {method}: {name}: {}", text.unwrap_or_default())))
            }
            Err(e) => {
                *self.connection.lock().await = None;
                Err(unavailable(e))
            }
        }
    }

    /// Starts transient scope `unit` in `slice` holding `pid`, delegated to
    /// us (`Delegate=yes`: the shim writes the limits systemd does not
    /// know, and the device filter), and waits until `pid` is in the
    /// scope's cgroup `cgroup_dir`.
    pub async fn start_scope(
        &self,
        unit: &str,
        slice: &str,
        pid: u32,
        limits: &ScopeLimits,
        cgroup_dir: &std::path::Path,
    ) -> Result<(), RuntimeError> {
        let mut props: Vec<(&str, Value)> = vec![
            ("Description", Value::from(format!("gantry {unit}"))),
            ("Slice", Value::from(slice.to_string())),
            ("Delegate", Value::from(true)),
            ("PIDs", Value::from(vec![pid])),
            ("DefaultDependencies", Value::from(false)),
            ("MemoryAccounting", Value::from(true)),
            ("CPUAccounting", Value::from(true)),
            ("IOAccounting", Value::from(true)),
            ("TasksAccounting", Value::from(true)),
        ];
        props.extend(limits.properties());
        let aux: Vec<(&str, Vec<(&str, Value)>)> = vec![];
        let _job: OwnedObjectPath = self.call("StartTransientUnit", &(unit, "replace", props, aux)).await?;
        // The job moves the process; wait until the kernel shows it there.
        let deadline = Instant::now() + SCOPE_READY_TIMEOUT;
        let procs = cgroup_dir.join("cgroup.procs");
        loop {
            let placed = std::fs::read_to_string(&procs)
                .is_ok_and(|s| s.lines().any(|l| l.trim().parse::<u32>().ok() == Some(pid)));
            if placed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Internal(format!(
                    "systemd started {unit} but process {pid} did not appear in {} within {}s",
                    procs.display(),
                    SCOPE_READY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// New limits for a running scope, kept across `daemon-reload`.
    pub async fn set_limits(&self, unit: &str, limits: &ScopeLimits) -> Result<(), RuntimeError> {
        let props = limits.properties();
        if props.is_empty() {
            return Ok(());
        }
        self.call::<_, ()>("SetUnitProperties", &(unit, true, props)).await
    }

    /// Stops the scope (its processes are killed, its cgroup removed); a
    /// scope already gone is not an error. A scope that ended `failed`
    /// (systemd 253+ stops a scope with result `oom-kill` when the OOM
    /// killer strikes in it) stays loaded, and listed, until its failed
    /// state is reset: reset it too, as runc's systemd driver does.
    pub async fn stop_unit(&self, unit: &str) -> Result<(), RuntimeError> {
        let gone = |r: Result<(), RuntimeError>| match r {
            Err(RuntimeError::Internal(m)) if m.contains("NoSuchUnit") => Ok(()),
            other => other,
        };
        gone(self.call::<_, OwnedObjectPath>("StopUnit", &(unit, "replace")).await.map(drop))?;
        gone(self.call::<_, ()>("ResetFailedUnit", &(unit,)).await)
    }

    /// Whether systemd has unit `unit` loaded.
    pub async fn unit_exists(&self, unit: &str) -> Result<bool, RuntimeError> {
        match self.call::<_, OwnedObjectPath>("GetUnit", &(unit,)).await {
            Ok(_) => Ok(true),
            Err(RuntimeError::Internal(m)) if m.contains("NoSuchUnit") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cri_resources_become_unit_properties_as_runc_converts_them() {
        let r = gantry_proto::cri::v1::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 1024,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            unified: HashMap::from([("pids.max".to_string(), "99".to_string())]),
            ..Default::default()
        };
        let l = ScopeLimits::from_cri(&r);
        assert_eq!(
            l,
            ScopeLimits {
                memory_max: Some(64 << 20),
                cpu_weight: Some(39),
                cpu_quota_per_sec_usec: Some(500_000),
                tasks_max: Some(99),
            }
        );
        assert_eq!(ScopeLimits::from_cri(&Default::default()).properties().len(), 0);
    }
}
