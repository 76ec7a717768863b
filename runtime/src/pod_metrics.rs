//! Prometheus-style pod and container metrics for kubelet's
//! `PodAndContainerStatsFromCRI` mode (ListMetricDescriptors,
//! ListPodSandboxMetrics, StreamPodSandboxMetrics): cAdvisor's metric names,
//! as containerd 2.x answers them, from the same cgroup, writable layer and
//! network readings as the CRI stats calls (`crate::stats`, `crate::cgroupfs`).
//!
//! kubelet turns each metric into a Prometheus sample with the label keys of
//! the descriptor of its name, by position: every metric of a name carries
//! exactly as many label values as its descriptor has keys (kubelet drops a
//! sample otherwise). The keys are cAdvisor's: `container` (the CRI name),
//! `id` (the cgroup), `image`, `name` (the runtime's ID), `namespace`, `pod`,
//! then the metric's own (`interface`, `device`, `failure_type`, `scope`).
//!
//! Values are `UInt64Value`s, so second counters are whole seconds, rounded
//! down, as containerd sends them.

use std::collections::HashMap;

use gantry_proto::cri::v1::{ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetrics, UInt64Value};

use crate::cgroupfs::{CgroupDetail, CgroupLayout};
use crate::records::{now_nanos, ContainerRecord, SandboxRecord};
use crate::runtime::Runtime;
use crate::stats::{net_dev, reads_network};

/// The label keys every metric starts with, cAdvisor's.
const BASE_KEYS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// Which hosts have a metric: some figures exist only in one cgroup version
/// or with a kernel feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Always,
    /// `memory.failcnt`: cgroup v1 only.
    MemoryV1,
    /// Per-cgroup swap accounting (v1 `memsw`, v2 `memory.swap.current`).
    Swap,
    /// A peak reading (v1 `max_usage_in_bytes`, v2 `memory.peak`, Linux 5.19).
    MemoryPeak,
    /// Pod-level (network) rather than per container.
    Pod,
}

struct Def {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    extra_keys: &'static [&'static str],
    needs: Needs,
}

const fn def(name: &'static str, help: &'static str, kind: MetricType, extra_keys: &'static [&'static str]) -> Def {
    Def { name, help, kind, extra_keys, needs: Needs::Always }
}

const fn needs(d: Def, needs: Needs) -> Def {
    Def { needs, ..d }
}

use MetricType::{Counter as C, Gauge as G};

const DEVICE: &[&str] = &["device"];
const IFACE: &[&str] = &["interface"];

/// Every metric Gantry can answer, in the order it answers them.
const DEFS: &[Def] = &[
    def("container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", C, &[]),
    def("container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.", C, &[]),
    def("container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.", C, &[]),
    def("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", C, &[]),
    def("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", C, &[]),
    def("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", C, &[]),
    def(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        G,
        &[],
    ),
    def("container_memory_working_set_bytes", "Current working set in bytes.", G, &[]),
    def("container_memory_rss", "Size of RSS in bytes.", G, &[]),
    def("container_memory_cache", "Number of bytes of page cache memory.", G, &[]),
    def("container_memory_mapped_file", "Size of memory mapped files in bytes.", G, &[]),
    def(
        "container_memory_total_active_file_bytes",
        "Current total active cache memory in file on disk, in bytes.",
        G,
        &[],
    ),
    def("container_memory_total_inactive_file_bytes", "Current total inactive cache memory in file, in bytes.", G, &[]),
    needs(def("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", G, &[]), Needs::MemoryPeak),
    needs(def("container_memory_swap", "Container swap usage in bytes.", G, &[]), Needs::Swap),
    needs(
        def(
            "container_memory_failcnt",
            "Number of times container memory usage has hit its cgroup v1 upper memory limit",
            C,
            &[],
        ),
        Needs::MemoryV1,
    ),
    def(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        C,
        &["failure_type", "scope"],
    ),
    def("container_oom_events_total", "Count of out of memory events observed for the container", C, &[]),
    def(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        G,
        DEVICE,
    ),
    def(
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        G,
        DEVICE,
    ),
    def("container_fs_inodes_total", "Number of Inodes", G, DEVICE),
    def("container_fs_inodes_free", "Number of available Inodes", G, DEVICE),
    def("container_processes", "Number of processes running inside the container.", G, &[]),
    def("container_threads", "Number of threads running inside the container", G, &[]),
    def(
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        G,
        &[],
    ),
    def("container_spec_cpu_period", "CPU period of the container.", G, &[]),
    def("container_spec_cpu_quota", "CPU quota of the container.", G, &[]),
    def("container_spec_cpu_shares", "CPU share of the container.", G, &[]),
    def("container_spec_memory_limit_bytes", "Memory limit for the container.", G, &[]),
    def("container_last_seen", "Last time a container was seen by the exporter", G, &[]),
    needs(def("container_network_receive_bytes_total", "Cumulative count of bytes received", C, IFACE), Needs::Pod),
    needs(def("container_network_receive_packets_total", "Cumulative count of packets received", C, IFACE), Needs::Pod),
    needs(
        def(
            "container_network_receive_packets_dropped_total",
            "Cumulative count of packets dropped while receiving",
            C,
            IFACE,
        ),
        Needs::Pod,
    ),
    needs(
        def(
            "container_network_receive_errors_total",
            "Cumulative count of errors encountered while receiving",
            C,
            IFACE,
        ),
        Needs::Pod,
    ),
    needs(def("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", C, IFACE), Needs::Pod),
    needs(
        def("container_network_transmit_packets_total", "Cumulative count of packets transmitted", C, IFACE),
        Needs::Pod,
    ),
    needs(
        def(
            "container_network_transmit_packets_dropped_total",
            "Cumulative count of packets dropped while transmitting",
            C,
            IFACE,
        ),
        Needs::Pod,
    ),
    needs(
        def(
            "container_network_transmit_errors_total",
            "Cumulative count of errors encountered while transmitting",
            C,
            IFACE,
        ),
        Needs::Pod,
    ),
];

/// What this host's cgroups offer, for the metrics that depend on it.
#[derive(Debug, Clone, Copy)]
struct HostOffers {
    memory_v1: bool,
    swap: bool,
    peak: bool,
}

impl HostOffers {
    fn of(layout: &CgroupLayout) -> Self {
        HostOffers {
            memory_v1: layout.memory_is_v1(),
            swap: layout.swap_accounted(),
            peak: layout.memory_is_v1() || layout.memory_child_has("memory.peak"),
        }
    }

    fn has(&self, needs: Needs) -> bool {
        match needs {
            Needs::Always | Needs::Pod => true,
            Needs::MemoryV1 => self.memory_v1,
            Needs::Swap => self.swap,
            Needs::MemoryPeak => self.peak,
        }
    }
}

fn label_keys(d: &Def) -> Vec<String> {
    BASE_KEYS.iter().chain(d.extra_keys).map(|k| k.to_string()).collect()
}

/// The descriptors of `defs` this host can answer.
fn descriptors_of(offers: HostOffers) -> Vec<MetricDescriptor> {
    DEFS.iter()
        .filter(|d| offers.has(d.needs))
        .map(|d| MetricDescriptor { name: d.name.to_string(), help: d.help.to_string(), label_keys: label_keys(d) })
        .collect()
}

/// Builds the metrics of one container or pod: the base label values once,
/// each metric by name (its type from `DEFS`), skipped where the reading is
/// missing or the host does not offer it.
struct Emitter<'a> {
    base: [String; 6],
    at: i64,
    offers: HostOffers,
    by_name: &'a HashMap<&'static str, &'static Def>,
    out: Vec<Metric>,
}

impl Emitter<'_> {
    fn emit(&mut self, name: &str, extra: &[&str], value: Option<u64>) {
        let (Some(value), Some(d)) = (value, self.by_name.get(name)) else { return };
        if !self.offers.has(d.needs) {
            return;
        }
        debug_assert_eq!(extra.len(), d.extra_keys.len(), "{name}");
        let label_values = self.base.iter().cloned().chain(extra.iter().map(|v| v.to_string())).collect();
        self.out.push(Metric {
            name: d.name.to_string(),
            timestamp: self.at,
            metric_type: d.kind as i32,
            label_values,
            value: Some(UInt64Value { value }),
        });
    }
}

fn seconds(nanos: Option<u64>) -> Option<u64> {
    nanos.map(|n| n / 1_000_000_000)
}

/// The filesystem the writable layers are on: its size and inodes.
#[derive(Debug, Clone, Copy, Default)]
struct FsCapacity {
    bytes: Option<u64>,
    inodes: Option<u64>,
    inodes_free: Option<u64>,
}

fn fs_capacity(path: &std::path::Path) -> FsCapacity {
    match rustix::fs::statvfs(path) {
        Ok(s) => FsCapacity {
            bytes: Some(s.f_blocks.saturating_mul(s.f_frsize)),
            inodes: Some(s.f_files),
            inodes_free: Some(s.f_ffree),
        },
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "statvfs of the writable layers' filesystem");
            FsCapacity::default()
        }
    }
}

impl Runtime {
    /// ListMetricDescriptors: the metrics `list_pod_sandbox_metrics` can
    /// answer on this host.
    pub fn metric_descriptors(&self) -> Vec<MetricDescriptor> {
        descriptors_of(HostOffers::of(&self.cgroups))
    }

    /// ListPodSandboxMetrics: every ready pod, its network metrics and its
    /// containers' (those whose cgroup exists: running, or stopped and not
    /// yet cleaned up, as cAdvisor sees them).
    pub async fn list_pod_sandbox_metrics(&self) -> Vec<PodSandboxMetrics> {
        let sandboxes: Vec<SandboxRecord> = self.sandboxes.lock().await.values().filter(|s| s.ready).cloned().collect();
        let containers: Vec<ContainerRecord> = self.containers.lock().await.values().cloned().collect();
        let offers = HostOffers::of(&self.cgroups);
        let by_name: HashMap<&'static str, &'static Def> = DEFS.iter().map(|d| (d.name, d)).collect();
        let root = self.images.snapshotter().root().to_path_buf();
        let capacity = fs_capacity(&root);
        let device = root.display().to_string();
        let at = now_nanos();
        let mut pods: Vec<PodSandboxMetrics> = sandboxes
            .iter()
            .map(|s| {
                let members = containers.iter().filter(|c| c.sandbox_id == s.id);
                let container_metrics = members
                    .filter(|c| self.cgroups.exists(&s.container_cgroup(&c.id)))
                    .map(|c| {
                        let mut e =
                            Emitter { base: container_labels(s, c), at, offers, by_name: &by_name, out: vec![] };
                        let detail = self.cgroups.detail(&s.container_cgroup(&c.id));
                        let upper = self.images.snapshotter().rw_layout(&c.id, &[]).upperdir;
                        let (bytes, _) = gantry_imageservice::fsutil::disk_usage(&upper);
                        container_metrics(&mut e, &detail, Some(bytes), capacity, &device);
                        ContainerMetrics { container_id: c.id.clone(), metrics: e.out }
                    })
                    .collect();
                let mut e = Emitter { base: pod_labels(s), at, offers, by_name: &by_name, out: vec![] };
                if reads_network(s) {
                    for i in net_dev(s.pause_pid).unwrap_or_default() {
                        let iface = [i.name.as_str()];
                        e.emit("container_network_receive_bytes_total", &iface, Some(i.rx_bytes));
                        e.emit("container_network_receive_packets_total", &iface, Some(i.rx_packets));
                        e.emit("container_network_receive_packets_dropped_total", &iface, Some(i.rx_dropped));
                        e.emit("container_network_receive_errors_total", &iface, Some(i.rx_errors));
                        e.emit("container_network_transmit_bytes_total", &iface, Some(i.tx_bytes));
                        e.emit("container_network_transmit_packets_total", &iface, Some(i.tx_packets));
                        e.emit("container_network_transmit_packets_dropped_total", &iface, Some(i.tx_dropped));
                        e.emit("container_network_transmit_errors_total", &iface, Some(i.tx_errors));
                    }
                }
                PodSandboxMetrics { pod_sandbox_id: s.id.clone(), metrics: e.out, container_metrics }
            })
            .collect();
        // A stable order (the records are in a map): by pod, then container.
        pods.sort_by(|a, b| a.pod_sandbox_id.cmp(&b.pod_sandbox_id));
        for p in &mut pods {
            p.container_metrics.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        }
        pods
    }
}

fn pod_name_namespace(s: &SandboxRecord) -> (String, String) {
    s.config.metadata.as_ref().map(|m| (m.name.clone(), m.namespace.clone())).unwrap_or_default()
}

/// container, id, image, name, namespace, pod of a container.
fn container_labels(s: &SandboxRecord, c: &ContainerRecord) -> [String; 6] {
    let (pod, namespace) = pod_name_namespace(s);
    let container = c.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    [container, s.container_cgroup(&c.id), c.image_name.clone(), c.id.clone(), namespace, pod]
}

/// The same for the pod's own (network) metrics: no container or image,
/// its cgroup kubelet's pod cgroup (if any), its name the sandbox ID.
fn pod_labels(s: &SandboxRecord) -> [String; 6] {
    let (pod, namespace) = pod_name_namespace(s);
    let cgroup = s.cgroup_driver.parent_fs_path(s.cgroup_parent()).unwrap_or_default();
    [String::new(), cgroup, String::new(), s.id.clone(), namespace, pod]
}

fn container_metrics(e: &mut Emitter, m: &CgroupDetail, fs_bytes: Option<u64>, fs: FsCapacity, device: &str) {
    let u = &m.usage;
    e.emit("container_cpu_usage_seconds_total", &[], seconds(u.cpu_nanos));
    e.emit("container_cpu_user_seconds_total", &[], seconds(m.cpu_user_nanos));
    e.emit("container_cpu_system_seconds_total", &[], seconds(m.cpu_system_nanos));
    e.emit("container_cpu_cfs_periods_total", &[], m.cfs_periods);
    e.emit("container_cpu_cfs_throttled_periods_total", &[], m.cfs_throttled_periods);
    e.emit("container_cpu_cfs_throttled_seconds_total", &[], seconds(m.cfs_throttled_nanos));
    e.emit("container_memory_usage_bytes", &[], u.memory_usage);
    e.emit("container_memory_working_set_bytes", &[], u.memory_working_set);
    e.emit("container_memory_rss", &[], u.memory_rss);
    e.emit("container_memory_cache", &[], m.memory_cache);
    e.emit("container_memory_mapped_file", &[], m.memory_mapped_file);
    e.emit("container_memory_total_active_file_bytes", &[], m.memory_active_file);
    e.emit("container_memory_total_inactive_file_bytes", &[], m.memory_inactive_file);
    e.emit("container_memory_max_usage_bytes", &[], m.memory_max_usage);
    e.emit("container_memory_swap", &[], m.memory_swap);
    e.emit("container_memory_failcnt", &[], m.memory_failcnt);
    e.emit("container_memory_failures_total", &["pgfault", "container"], u.page_faults);
    e.emit("container_memory_failures_total", &["pgmajfault", "container"], u.major_page_faults);
    e.emit("container_oom_events_total", &[], m.oom_kills);
    e.emit("container_fs_usage_bytes", &[device], fs_bytes);
    e.emit("container_fs_limit_bytes", &[device], fs.bytes);
    e.emit("container_fs_inodes_total", &[device], fs.inodes);
    e.emit("container_fs_inodes_free", &[device], fs.inodes_free);
    e.emit("container_processes", &[], u.processes);
    e.emit("container_threads", &[], m.threads);
    e.emit("container_threads_max", &[], m.threads_max);
    e.emit("container_spec_cpu_period", &[], m.cpu_period);
    e.emit("container_spec_cpu_quota", &[], m.cpu_quota);
    e.emit("container_spec_cpu_shares", &[], m.cpu_shares);
    // cAdvisor: 0 for no limit.
    e.emit("container_spec_memory_limit_bytes", &[], Some(u.memory_limit.unwrap_or(0)));
    e.emit("container_last_seen", &[], u64::try_from(e.at / 1_000_000_000).ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroupfs::CgroupUsage;

    fn all() -> HostOffers {
        HostOffers { memory_v1: true, swap: true, peak: true }
    }

    fn emit_full(offers: HostOffers) -> Vec<Metric> {
        let by_name: HashMap<&'static str, &'static Def> = DEFS.iter().map(|d| (d.name, d)).collect();
        let mut e = Emitter { base: Default::default(), at: 5_000_000_000, offers, by_name: &by_name, out: vec![] };
        let some = Some(1);
        let detail = CgroupDetail {
            usage: CgroupUsage {
                cpu_nanos: Some(2_500_000_000),
                memory_usage: some,
                memory_working_set: some,
                memory_rss: some,
                memory_limit: None,
                page_faults: some,
                major_page_faults: some,
                processes: some,
            },
            cpu_user_nanos: some,
            cpu_system_nanos: some,
            cfs_periods: some,
            cfs_throttled_periods: some,
            cfs_throttled_nanos: some,
            cpu_shares: some,
            cpu_quota: some,
            cpu_period: some,
            memory_cache: some,
            memory_mapped_file: some,
            memory_active_file: some,
            memory_inactive_file: some,
            memory_max_usage: some,
            memory_swap: some,
            memory_failcnt: some,
            oom_kills: some,
            threads: some,
            threads_max: some,
        };
        let fs = FsCapacity { bytes: some, inodes: some, inodes_free: some };
        container_metrics(&mut e, &detail, some, fs, "/dev");
        for name in DEFS.iter().filter(|d| d.needs == Needs::Pod).map(|d| d.name) {
            e.emit(name, &["eth0"], some);
        }
        e.out
    }

    #[test]
    fn every_metric_has_a_descriptor_with_as_many_keys_as_values() {
        for offers in [all(), HostOffers { memory_v1: false, swap: false, peak: false }] {
            let descriptors = descriptors_of(offers);
            let keys: HashMap<&str, usize> =
                descriptors.iter().map(|d| (d.name.as_str(), d.label_keys.len())).collect();
            let metrics = emit_full(offers);
            for m in &metrics {
                assert_eq!(keys.get(m.name.as_str()), Some(&m.label_values.len()), "{}", m.name);
            }
            // And every descriptor is answered when the readings are there.
            for d in &descriptors {
                assert!(metrics.iter().any(|m| m.name == d.name), "{} never emitted", d.name);
            }
        }
        let v2 = descriptors_of(HostOffers { memory_v1: false, swap: false, peak: false });
        assert!(!v2.iter().any(|d| d.name == "container_memory_failcnt"));
        assert!(descriptors_of(all()).iter().any(|d| d.name == "container_memory_failcnt"));
    }

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        let mut names: Vec<&str> = DEFS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DEFS.len());
        for d in DEFS {
            if d.kind == MetricType::Counter {
                assert!(d.name.ends_with("_total") || d.name == "container_memory_failcnt", "{}", d.name);
            }
        }
    }

    #[test]
    fn seconds_round_down_and_missing_readings_are_skipped() {
        let m = emit_full(all());
        let cpu = m.iter().find(|m| m.name == "container_cpu_usage_seconds_total").expect("cpu");
        assert_eq!(cpu.value.as_ref().map(|v| v.value), Some(2));
        assert_eq!(cpu.metric_type, MetricType::Counter as i32);
        let last = m.iter().find(|m| m.name == "container_last_seen").expect("last seen");
        assert_eq!(last.value.as_ref().map(|v| v.value), Some(5));
        assert_eq!(last.metric_type, MetricType::Gauge as i32);
        let limit = m.iter().find(|m| m.name == "container_spec_memory_limit_bytes").expect("limit");
        assert_eq!(limit.value.as_ref().map(|v| v.value), Some(0), "no limit is 0");

        let by_name: HashMap<&'static str, &'static Def> = DEFS.iter().map(|d| (d.name, d)).collect();
        let mut e = Emitter { base: Default::default(), at: 1, offers: all(), by_name: &by_name, out: vec![] };
        e.emit("container_memory_rss", &[], None);
        e.emit("no_such_metric", &[], Some(1));
        assert!(e.out.is_empty());
    }
}
