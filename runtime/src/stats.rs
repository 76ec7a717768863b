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

/// The counters of one interface, from `/proc/PID/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Every interface but loopback in a `/proc/PID/net/dev` text.
fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    let mut interfaces = vec![];
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop …
        let n: Vec<u64> = counters.split_whitespace().filter_map(|c| c.parse().ok()).collect();
        if n.len() < 12 {
            continue;
        }
        interfaces.push(InterfaceCounters {
            name: name.to_string(),
            rx_bytes: n[0],
            rx_packets: n[1],
            rx_errors: n[2],
            rx_dropped: n[3],
            tx_bytes: n[8],
            tx_packets: n[9],
            tx_errors: n[10],
            tx_dropped: n[11],
        });
    }
    interfaces
}

/// The interfaces of the network namespace of `pid` (loopback left out);
/// `None` if the process is gone.
pub(crate) fn net_dev(pid: u32) -> Option<Vec<InterfaceCounters>> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok().map(|t| parse_net_dev(&t))
}

/// The pod's network counters (loopback left out) as the stats calls give them.
fn network_usage(pid: u32, at: i64) -> Option<NetworkUsage> {
    let interfaces: Vec<NetworkInterfaceUsage> = net_dev(pid)?
        .into_iter()
        .map(|i| NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: val(Some(i.rx_bytes)),
            rx_errors: val(Some(i.rx_errors)),
            tx_bytes: val(Some(i.tx_bytes)),
            tx_errors: val(Some(i.tx_errors)),
        })
        .collect();
    let default_interface = interfaces.iter().find(|i| i.name == "eth0").or_else(|| interfaces.first()).cloned();
    Some(NetworkUsage { timestamp: at, default_interface, interfaces })
}

/// Whether the stats and metrics read the pod's network: a ready pod with
/// a network namespace of its own.
pub(crate) fn reads_network(s: &SandboxRecord) -> bool {
    s.ready && s.namespace_mode(|n| n.network) != gantry_proto::cri::v1::NamespaceMode::Node as i32
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
        let network = if reads_network(s) { network_usage(s.pause_pid, at) } else { None };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_are_read_by_column_and_loopback_left_out() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    1500      10    1    2    0     0          0         0      900       7    3    4    0     0       0          0
";
        let got = parse_net_dev(text);
        assert_eq!(
            got,
            [InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 1500,
                rx_packets: 10,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 900,
                tx_packets: 7,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
        assert!(parse_net_dev("garbage\nmore\n  eth0: 1 2 3\n").is_empty());
    }
}
