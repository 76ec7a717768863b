//! CRI stats: a container's CPU, memory and processes from its cgroup, its
//! writable layer's bytes and inodes, and a pod's sum of its containers
//! plus the network counters of its network namespace.

use gantry_proto::cri::v1::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage, IoUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PodSandboxStats,
    ProcessUsage, PsiData, PsiStats, UInt64Value,
};

use crate::cgroupfs::{CgroupPressure, CgroupUsage, Pressure, PressureLine};
use crate::cpu_readings::CpuReadings;
use crate::error::RuntimeError;
use crate::records::{now_nanos, ContainerRecord, SandboxRecord};
use crate::runtime::Runtime;

fn val(v: Option<u64>) -> Option<UInt64Value> {
    v.map(|value| UInt64Value { value })
}

/// CRI's PSI: totals in nanoseconds (the kernel counts microseconds).
fn psi(p: Option<Pressure>) -> Option<PsiStats> {
    let data = |l: PressureLine| PsiData {
        total: l.total_micros.saturating_mul(1000),
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    p.map(|p| PsiStats { full: p.full.map(data), some: p.some.map(data) })
}

fn cpu_usage(
    readings: &CpuReadings,
    key: &str,
    at: i64,
    u: &CgroupUsage,
    pressure: &CgroupPressure,
) -> Option<CpuUsage> {
    let cpu = u.cpu_nanos?;
    Some(CpuUsage {
        timestamp: at,
        usage_core_nano_seconds: val(Some(cpu)),
        usage_nano_cores: val(Some(readings.rate(key, at, cpu))),
        psi: psi(pressure.cpu),
    })
}

fn io_usage(at: i64, pressure: &CgroupPressure) -> Option<IoUsage> {
    pressure.io.map(|p| IoUsage { timestamp: at, psi: psi(Some(p)) })
}

fn memory_usage(at: i64, u: &CgroupUsage, pressure: &CgroupPressure) -> Option<MemoryUsage> {
    let usage = u.memory_usage?;
    let working_set = u.memory_working_set.unwrap_or(usage);
    Some(MemoryUsage {
        timestamp: at,
        working_set_bytes: val(Some(working_set)),
        available_bytes: val(u.memory_limit.map(|l| l.saturating_sub(working_set))),
        usage_bytes: val(Some(usage)),
        rss_bytes: val(u.memory_rss),
        page_faults: val(u.page_faults),
        major_page_faults: val(u.major_page_faults),
        psi: psi(pressure.memory),
    })
}

/// Counters of every interface but loopback in the network namespace of
/// `pid`, from its `/proc/PID/net/dev`.
fn network_usage(pid: u32, at: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces = vec![];
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs …
        let n: Vec<u64> = counters.split_whitespace().filter_map(|c| c.parse().ok()).collect();
        if n.len() < 11 {
            continue;
        }
        interfaces.push(NetworkInterfaceUsage {
            name: name.to_string(),
            rx_bytes: val(Some(n[0])),
            rx_errors: val(Some(n[2])),
            tx_bytes: val(Some(n[8])),
            tx_errors: val(Some(n[10])),
        });
    }
    let default_interface = interfaces.iter().find(|i| i.name == "eth0").or_else(|| interfaces.first()).cloned();
    Some(NetworkUsage { timestamp: at, default_interface, interfaces })
}

impl Runtime {
    fn container_usage(&self, sandbox: Option<&SandboxRecord>, id: &str) -> CgroupUsage {
        match sandbox {
            Some(s) => self.cgroups.usage(&s.container_cgroup(id)),
            None => CgroupUsage::default(),
        }
    }

    fn container_stats_of(&self, c: &ContainerRecord, sandbox: Option<&SandboxRecord>, at: i64) -> ContainerStats {
        let usage = self.container_usage(sandbox, &c.id);
        let pressure = match sandbox {
            Some(s) => self.cgroups.pressure(&s.container_cgroup(&c.id)),
            None => CgroupPressure::default(),
        };
        let upper = self.images.snapshotter().rw_layout(&c.id, &[]).upperdir;
        let (bytes, inodes) = gantry_imageservice::fsutil::disk_usage(&upper);
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: cpu_usage(&self.cpu_readings, &c.id, at, &usage, &pressure),
            memory: memory_usage(at, &usage, &pressure),
            writable_layer: Some(FilesystemUsage {
                timestamp: at,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.images.snapshotter().root().display().to_string(),
                }),
                used_bytes: val(Some(bytes)),
                inodes_used: val(Some(inodes)),
            }),
            swap: None,
            io: io_usage(at, &pressure),
        }
    }

    pub async fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let c = self.container(id).await?;
        let sandbox = self.sandboxes.lock().await.get(&c.sandbox_id).cloned();
        Ok(self.container_stats_of(&c, sandbox.as_ref(), now_nanos()))
    }

    /// Stats of the containers `keep` selects.
    pub async fn list_container_stats(&self, keep: impl Fn(&ContainerRecord) -> bool) -> Vec<ContainerStats> {
        let containers: Vec<ContainerRecord> =
            self.containers.lock().await.values().filter(|c| keep(c)).cloned().collect();
        let sandboxes = self.sandboxes.lock().await.clone();
        let at = now_nanos();
        let stats = containers.iter().map(|c| self.container_stats_of(c, sandboxes.get(&c.sandbox_id), at)).collect();
        self.forget_stale_readings().await;
        stats
    }

    fn pod_stats_of(&self, s: &SandboxRecord, members: &[&ContainerRecord], at: i64) -> PodSandboxStats {
        let containers: Vec<ContainerStats> = members.iter().map(|c| self.container_stats_of(c, Some(s), at)).collect();
        let mut total = CgroupUsage::default();
        for c in members {
            total.add(&self.container_usage(Some(s), &c.id));
        }
        // The pod's pressure is its cgroup's, kubelet's pod cgroup; with
        // none given, its containers share `/gantry` with other pods.
        let pressure = match s.cgroup_driver.parent_fs_path(s.cgroup_parent()) {
            Some(parent) => self.cgroups.pressure(&parent),
            None => CgroupPressure::default(),
        };
        let host_network = s.namespace_mode(|n| n.network) == gantry_proto::cri::v1::NamespaceMode::Node as i32;
        let network = if s.ready && !host_network { network_usage(s.pause_pid, at) } else { None };
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: cpu_usage(&self.cpu_readings, &s.id, at, &total, &pressure),
                memory: memory_usage(at, &total, &pressure),
                network,
                process: total.processes.map(|n| ProcessUsage { timestamp: at, process_count: val(Some(n)) }),
                containers,
                io: io_usage(at, &pressure),
            }),
            windows: None,
        }
    }

    pub async fn pod_sandbox_stats(&self, id: &str) -> Result<PodSandboxStats, RuntimeError> {
        let mut all = self.list_pod_sandbox_stats(|s| s.id == id).await;
        all.pop().ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    /// Stats of the pods `keep` selects, each with its containers'.
    pub async fn list_pod_sandbox_stats(&self, keep: impl Fn(&SandboxRecord) -> bool) -> Vec<PodSandboxStats> {
        let sandboxes: Vec<SandboxRecord> = self.sandboxes.lock().await.values().filter(|s| keep(s)).cloned().collect();
        let containers: Vec<ContainerRecord> = self.containers.lock().await.values().cloned().collect();
        let at = now_nanos();
        let stats = sandboxes
            .iter()
            .map(|s| {
                let members: Vec<&ContainerRecord> = containers.iter().filter(|c| c.sandbox_id == s.id).collect();
                self.pod_stats_of(s, &members, at)
            })
            .collect();
        self.forget_stale_readings().await;
        stats
    }

    async fn forget_stale_readings(&self) {
        // One lock at a time: other paths take these in either order.
        let mut alive: std::collections::HashSet<String> = self.containers.lock().await.keys().cloned().collect();
        alive.extend(self.sandboxes.lock().await.keys().cloned());
        self.cpu_readings.retain(|k| alive.contains(k));
    }
}
