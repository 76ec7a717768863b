//! The cgroup v2 pass: runs on the pure cgroup v2 test node that
//! `tests/cgroup2/run.sh` boots (QEMU, Debian's kernel, a busybox initramfs)
//! and checks what Gantry writes into the cgroupfs there. Starts gantryd on a
//! tmpfs (the node's /tmp), loads the busybox image from the archive named
//! on the command line with `gantry load`, and drives it through CRI.
//! Prints `PASS name` or `FAIL name: why` per check; exits 1 if any failed.
//!
//!   cgroup2_pass IMAGE.tar     (GANTRY_BIN_DIR: gantryd, gantry-shim, gantry)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatsRequest, CreateContainerRequest, HugepageLimit, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig, ListMetricDescriptorsRequest,
    ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatsRequest, RemoveContainerRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    UpdateContainerResourcesRequest,
};
use gantry_tests::node_pass::{
    cg, ensure, exec, expect_file, read, remove_pod, wait_exited, Check, Tally, CGROUP_ROOT, HANDLERS,
};
use gantry_tests::{Cri, Daemon};

const MIB: i64 = 1 << 20;

struct Pass {
    d: Daemon,
    cri: Cri,
    image: String,
    tally: Tally,
}

/// `key value` lines (memory.stat, cpu.stat, memory.events).
fn keyed(path: &Path) -> Result<HashMap<String, u64>, String> {
    Ok(read(path)?
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// runc's conversion of CPU shares (2..262144) to cgroup2's cpu.weight (1..10000).
fn cpu_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.saturating_sub(2)) * 9999) / 262142
}

/// Every cgroup below `dir` (itself included), parents first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        out.push(d);
    }
    out
}

/// The no-internal-process rule: no process in a (non-root) cgroup that
/// has controllers enabled for its children.
fn internal_processes() -> Vec<String> {
    walk(Path::new(CGROUP_ROOT))
        .into_iter()
        .filter(|d| d != Path::new(CGROUP_ROOT))
        .filter_map(|d| {
            let control = read(&d.join("cgroup.subtree_control")).unwrap_or_default();
            let procs = read(&d.join("cgroup.procs")).unwrap_or_default();
            (!control.is_empty() && !procs.is_empty())
                .then(|| format!("{} (controllers {control:?}) holds {}", d.display(), procs.replace('\n', ",")))
        })
        .collect()
}

/// Cgroups named after Gantry's pods and containers anywhere in the tree.
fn gantry_cgroups() -> Vec<PathBuf> {
    walk(Path::new(CGROUP_ROOT))
        .into_iter()
        .filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("gantry-")))
        .collect()
}

impl Pass {
    fn report(&mut self, name: &str, r: Check) {
        self.tally.report(name, r);
    }

    fn pod_config(&self, name: &str, parent: &str) -> PodSandboxConfig {
        let logs = self.d.dir.path().join("pod-logs").join(name);
        let _ = std::fs::create_dir_all(&logs);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig { cgroup_parent: parent.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn container_config(&self, name: &str, command: &[&str], resources: LinuxContainerResources) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image.clone(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig { resources: Some(resources), ..Default::default() }),
            ..Default::default()
        }
    }

    async fn run_pod(&mut self, name: &str, parent: &str) -> Result<(String, PodSandboxConfig), String> {
        self.run_pod_with(name, parent, "").await
    }

    /// A pod whose containers the RuntimeClass handler `handler` makes.
    async fn run_pod_with(
        &mut self,
        name: &str,
        parent: &str,
        handler: &str,
    ) -> Result<(String, PodSandboxConfig), String> {
        let config = self.pod_config(name, parent);
        let id = self
            .cri
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() })
            .await
            .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
            .into_inner()
            .pod_sandbox_id;
        Ok((id, config))
    }

    async fn create(
        &mut self,
        pod: &(String, PodSandboxConfig),
        name: &str,
        command: &[&str],
        resources: LinuxContainerResources,
    ) -> Result<String, String> {
        let config = self.container_config(name, command, resources);
        self.cri
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
            .map_err(|e| format!("CreateContainer {name}: {}", e.message()))
    }

    async fn start(&mut self, id: &str) -> Check {
        self.cri
            .runtime
            .start_container(StartContainerRequest { container_id: id.into() })
            .await
            .map(|_| ())
            .map_err(|e| format!("StartContainer: {}", e.message()))
    }

    async fn run(
        &mut self,
        pod: &(String, PodSandboxConfig),
        name: &str,
        command: &[&str],
        resources: LinuxContainerResources,
    ) -> Result<String, String> {
        let id = self.create(pod, name, command, resources).await?;
        self.start(&id).await?;
        Ok(id)
    }

    /// Limits from CreateContainer, each file on its own line.
    async fn limits(&mut self) -> Result<(), String> {
        let parent = "/kubepods/burstable/pod-limits";
        let pod = self.run_pod("limits", parent).await?;
        let shares = 512;
        let resources = LinuxContainerResources {
            memory_limit_in_bytes: 64 * MIB,
            memory_swap_limit_in_bytes: 96 * MIB,
            cpu_shares: shares,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit { page_size: "2MB".into(), limit: 4 * MIB as u64 }],
            unified: HashMap::from([("pids.max".to_string(), "64".to_string())]),
            ..Default::default()
        };
        let id = self.run(&pod, "limits", &["sleep", "3600"], resources).await?;
        let dir = cg(&format!("{parent}/gantry-{id}"));
        let checks: Vec<(&str, &str, String)> = vec![
            ("memory.max", "memory.max", (64 * MIB).to_string()),
            ("memory.swap.max", "memory.swap.max", (32 * MIB).to_string()),
            ("cpu.weight", "cpu.weight", cpu_weight(shares as u64).to_string()),
            ("cpu.max", "cpu.max", "50000 100000".into()),
            ("cpuset.cpus", "cpuset.cpus", "1".into()),
            ("cpuset.mems", "cpuset.mems", "0".into()),
            ("hugetlb.2MB.max", "hugetlb.2MB.max", (4 * MIB).to_string()),
            ("hugetlb.2MB.rsvd.max", "hugetlb.2MB.rsvd.max", (4 * MIB).to_string()),
            ("pids.max (unified)", "pids.max", "64".into()),
        ];
        for (name, file, want) in checks {
            self.report(&format!("limits {name}"), expect_file(&dir, file, &want));
        }
        // The container's process is in that cgroup, below the pod's parent.
        let info = self.verbose_info(&id).await?;
        let pid = info["pid"].as_u64().unwrap_or(0);
        let want = format!("0::{parent}/gantry-{id}");
        let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
        self.report(
            "cgroup_parent honoured",
            own.and_then(|own| ensure(own == want, || format!("/proc/{pid}/cgroup is {own:?}, want {want:?}"))),
        );
        // Every ancestor enables what the container's limits need.
        let mut r = Ok(());
        let mut at = String::new();
        for part in ["", "kubepods", "burstable", "pod-limits"] {
            if !part.is_empty() {
                at = format!("{at}/{part}");
            }
            let control = read(&cg(&at).join("cgroup.subtree_control")).unwrap_or_default();
            for c in ["cpuset", "cpu", "memory", "hugetlb", "pids"] {
                if r.is_ok() && !control.split_whitespace().any(|x| x == c) {
                    r = Err(format!("{c} is not in {}/cgroup.subtree_control ({control:?})", cg(&at).display()));
                }
            }
        }
        self.report("nested cgroup.subtree_control", r);
        // An exec joins the container's cgroup (seen whole, or as the root
        // of a cgroup namespace) and leaves no process in an inner node.
        let exec = exec(&mut self.cri, &id, &["cat", "/proc/self/cgroup"]).await;
        self.report(
            "exec joins the container cgroup",
            exec.and_then(|(code, out, err)| {
                ensure(code == 0 && (out == want || out == "0::/"), || format!("exit {code}, out {out:?}, err {err:?}"))
            }),
        );
        let internal = internal_processes();
        self.report("no internal processes", ensure(internal.is_empty(), || internal.join("; ")));
        // Live update.
        let update = LinuxContainerResources {
            memory_limit_in_bytes: 128 * MIB,
            memory_swap_limit_in_bytes: 128 * MIB,
            cpu_shares: 2048,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            unified: HashMap::from([("pids.max".to_string(), "32".to_string())]),
            ..Default::default()
        };
        let r = self
            .cri
            .runtime
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(update),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("UpdateContainerResources: {}", e.message()));
        let r = r.and_then(|_| {
            expect_file(&dir, "memory.max", &(128 * MIB).to_string())?;
            expect_file(&dir, "memory.swap.max", "0")?;
            expect_file(&dir, "cpu.max", "20000 100000")?;
            expect_file(&dir, "cpu.weight", &cpu_weight(2048).to_string())?;
            expect_file(&dir, "pids.max", "32")
        });
        self.report("UpdateContainerResources", r);
        remove_pod(&mut self.cri, &pod.0).await
    }

    async fn verbose_info(&mut self, id: &str) -> Result<serde_json::Value, String> {
        let verbose = self
            .cri
            .runtime
            .container_status(gantry_proto::cri::v1::ContainerStatusRequest { container_id: id.into(), verbose: true })
            .await
            .map_err(|e| format!("ContainerStatus: {}", e.message()))?
            .into_inner();
        serde_json::from_str(verbose.info.get("info").map_or("{}", |s| s.as_str())).map_err(|e| e.to_string())
    }

    async fn oom(&mut self) -> Check {
        let parent = "/kubepods/burstable/pod-oom";
        let pod = self.run_pod("oom", parent).await?;
        let resources = LinuxContainerResources {
            memory_limit_in_bytes: 32 * MIB,
            memory_swap_limit_in_bytes: 32 * MIB,
            ..Default::default()
        };
        // tail keeps the whole newline-free "line" in memory.
        let id = self.run(&pod, "hog", &["tail", "/dev/zero"], resources).await?;
        let dir = cg(&format!("{parent}/gantry-{id}"));
        let r = wait_exited(&mut self.cri, &id, Duration::from_secs(60)).await;
        let events = keyed(&dir.join("memory.events"));
        let r = r.and_then(|s| {
            let kills = events?.get("oom_kill").copied().unwrap_or(0);
            ensure(s.reason == "OOMKilled" && kills > 0, || {
                format!("reason {:?}, exit code {}, memory.events oom_kill {kills}", s.reason, s.exit_code)
            })
        });
        self.report("OOM kill reported as OOMKilled", r);
        remove_pod(&mut self.cri, &pod.0).await
    }

    /// ListMetricDescriptors and ListPodSandboxMetrics on a v2 host: no
    /// failcnt (v1's), each metric as many label values as its descriptor
    /// has keys, the values those of the container's cgroup files.
    async fn pod_metrics_check(
        &mut self,
        pod: &str,
        id: &str,
        dir: &std::path::Path,
        before_cpu: u64,
        after_cpu: u64,
    ) -> Check {
        let descriptors = self
            .cri
            .runtime
            .list_metric_descriptors(ListMetricDescriptorsRequest {})
            .await
            .map_err(|e| format!("ListMetricDescriptors: {}", e.message()))?
            .into_inner()
            .descriptors;
        let keys: HashMap<String, usize> = descriptors.iter().map(|d| (d.name.clone(), d.label_keys.len())).collect();
        ensure(!keys.contains_key("container_memory_failcnt"), || "failcnt described on cgroup v2".into())?;
        let pods = self
            .cri
            .runtime
            .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await
            .map_err(|e| format!("ListPodSandboxMetrics: {}", e.message()))?
            .into_inner()
            .pod_metrics;
        let p = pods.iter().find(|p| p.pod_sandbox_id == pod).ok_or(format!("pod {pod} not in {} pods", pods.len()))?;
        let c = p.container_metrics.iter().find(|c| c.container_id == id).ok_or("container not in its pod")?;
        for m in p.metrics.iter().chain(&c.metrics) {
            ensure(keys.get(&m.name) == Some(&m.label_values.len()), || {
                format!("{}: {} label values, descriptor {:?}", m.name, m.label_values.len(), keys.get(&m.name))
            })?;
        }
        let value = |name: &str| -> Result<u64, String> {
            c.metrics
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.value.as_ref())
                .map(|v| v.value)
                .ok_or(format!("{name} missing"))
        };
        let cpu = value("container_cpu_usage_seconds_total")?;
        let (lo, hi) = (before_cpu / 1_000_000_000, after_cpu / 1_000_000_000);
        ensure(cpu >= lo && cpu <= hi + 1, || format!("cpu {cpu} s, cpu.stat says {lo}..{hi} s"))?;
        let stat = keyed(&dir.join("memory.stat"))?;
        let anon = stat.get("anon").copied().unwrap_or(0);
        let rss = value("container_memory_rss")?;
        ensure(rss + (256 << 10) >= anon && rss <= anon + (256 << 10), || format!("rss {rss}, anon {anon}"))?;
        let ooms = keyed(&dir.join("memory.events"))?.get("oom_kill").copied().unwrap_or(0);
        ensure(value("container_oom_events_total")? == ooms, || format!("oom events vs memory.events {ooms}"))?;
        let max = read(&dir.join("pids.max"))?;
        let want = max.trim().parse().unwrap_or(0);
        ensure(value("container_threads_max")? == want, || format!("threads_max vs pids.max {max:?}"))?;
        value("container_memory_working_set_bytes")?;
        value("container_cpu_user_seconds_total")?;
        Ok(())
    }

    async fn stats(&mut self) -> Check {
        let parent = "/kubepods/besteffort/pod-stats";
        let pod = self.run_pod("stats", parent).await?;
        // Some CPU and memory, then idle so that the figures stand still.
        let cmd = [
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; x=$(head -c 4000000 /dev/zero | tr '\\0' a); sleep 3600",
        ];
        let id = self.run(&pod, "busy", &cmd, LinuxContainerResources::default()).await?;
        let dir = cg(&format!("{parent}/gantry-{id}"));
        tokio::time::sleep(Duration::from_secs(4)).await;
        let before_cpu = keyed(&dir.join("cpu.stat"))?.get("usage_usec").copied().unwrap_or(0) * 1000;
        let before_mem: u64 = read(&dir.join("memory.current"))?.parse().unwrap_or(0);
        let stats = self
            .cri
            .runtime
            .container_stats(ContainerStatsRequest { container_id: id.clone() })
            .await
            .map_err(|e| format!("ContainerStats: {}", e.message()))?
            .into_inner()
            .stats
            .ok_or("ContainerStats: none")?;
        let pod_stats = self
            .cri
            .runtime
            .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod.0.clone() })
            .await
            .map_err(|e| format!("PodSandboxStats: {}", e.message()))?
            .into_inner()
            .stats
            .ok_or("PodSandboxStats: none")?;
        let listed = self
            .cri
            .runtime
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await
            .map_err(|e| format!("ListPodSandboxStats: {}", e.message()))?
            .into_inner()
            .stats;
        let after_cpu = keyed(&dir.join("cpu.stat"))?.get("usage_usec").copied().unwrap_or(0) * 1000;
        let after_mem: u64 = read(&dir.join("memory.current"))?.parse().unwrap_or(0);
        let memory_stat = keyed(&dir.join("memory.stat"))?;
        // Memory may go down as well as up between the two readings.
        let (mem_lo, mem_hi) = (before_mem.min(after_mem), before_mem.max(after_mem));
        let pids: u64 = read(&dir.join("pids.current"))?.parse().unwrap_or(0);
        let v = |x: &Option<gantry_proto::cri::v1::UInt64Value>| x.as_ref().map(|v| v.value);
        let in_range = |what: &str, got: Option<u64>, lo: u64, hi: u64, slack: u64| {
            let g = got.ok_or_else(|| format!("{what}: missing"))?;
            ensure(g + slack >= lo && g <= hi + slack, || format!("{what} {g}, cgroupfs says {lo}..{hi}"))
        };
        let container = |s: &gantry_proto::cri::v1::ContainerStats| -> Check {
            let cpu = s.cpu.as_ref().ok_or("no cpu")?;
            let mem = s.memory.as_ref().ok_or("no memory")?;
            ensure(before_cpu > 0, || "cpu.stat usage_usec is 0".into())?;
            in_range("cpu usage", v(&cpu.usage_core_nano_seconds), before_cpu, after_cpu, 0)?;
            in_range("memory usage", v(&mem.usage_bytes), mem_lo, mem_hi, 256 << 10)?;
            let working = mem_lo.saturating_sub(memory_stat.get("inactive_file").copied().unwrap_or(0));
            in_range("working set", v(&mem.working_set_bytes), working, mem_hi, 256 << 10)?;
            let anon = memory_stat.get("anon").copied().unwrap_or(0);
            in_range("rss (anon)", v(&mem.rss_bytes), anon, anon, 256 << 10)?;
            let faults = memory_stat.get("pgfault").copied().unwrap_or(0);
            in_range("page faults", v(&mem.page_faults), faults / 2, faults, 0)
        };
        self.report("ContainerStats from cpu.stat/memory.stat", container(&stats));
        // PSI: each total at most the cgroup's own (read after), in nanoseconds.
        let psi_total = |file: &str| -> Result<u64, String> {
            let text = read(&dir.join(file))?;
            let some = text.lines().find(|l| l.starts_with("some ")).ok_or(format!("{file}: no some line"))?;
            let total = some.rsplit("total=").next().and_then(|t| t.trim().parse::<u64>().ok());
            total.map(|t| t * 1000).ok_or(format!("{file}: {some:?}"))
        };
        let psi = |what: &str, got: Option<&gantry_proto::cri::v1::PsiStats>, file: &str| -> Check {
            let some = got.and_then(|p| p.some.as_ref()).ok_or(format!("{what}: no PSI"))?;
            let max = psi_total(file)?;
            ensure(some.total <= max, || format!("{what}: PSI total {} ns, {file} says {max} ns", some.total))
        };
        let r = psi("cpu", stats.cpu.as_ref().and_then(|c| c.psi.as_ref()), "cpu.pressure")
            .and_then(|()| psi("memory", stats.memory.as_ref().and_then(|m| m.psi.as_ref()), "memory.pressure"))
            .and_then(|()| psi("io", stats.io.as_ref().and_then(|i| i.psi.as_ref()), "io.pressure"));
        self.report("ContainerStats PSI from *.pressure", r);
        let pod_check = |s: &gantry_proto::cri::v1::PodSandboxStats| -> Check {
            let linux = s.linux.as_ref().ok_or("no linux stats")?;
            let mem = linux.memory.as_ref().ok_or("no memory")?;
            let cpu = linux.cpu.as_ref().ok_or("no cpu")?;
            in_range("pod cpu", v(&cpu.usage_core_nano_seconds), before_cpu, after_cpu, 0)?;
            in_range("pod memory", v(&mem.usage_bytes), mem_lo, mem_hi, 256 << 10)?;
            let procs = linux.process.as_ref().and_then(|p| v(&p.process_count));
            in_range("pod processes (pids.current)", procs, pids, pids, 0)?;
            ensure(linux.containers.len() == 1, || format!("{} containers listed", linux.containers.len()))?;
            container(&linux.containers[0])
        };
        self.report("PodSandboxStats", pod_check(&pod_stats));
        let r = match listed.iter().find(|s| s.attributes.as_ref().is_some_and(|a| a.id == pod.0)) {
            Some(s) => pod_check(s),
            None => Err(format!("pod {} not in ListPodSandboxStats ({} pods)", pod.0, listed.len())),
        };
        self.report("ListPodSandboxStats", r);

        // The Prometheus-style metrics from the same files (whole seconds).
        let r = self.pod_metrics_check(&pod.0, &id, &dir, before_cpu, after_cpu).await;
        self.report("ListPodSandboxMetrics from cpu.stat/memory.stat/memory.events/pids.max", r);

        // Pause and unpause through the freezer (cgroup.freeze).
        let gantry = |verb: &str, d: &Daemon| {
            Command::new(gantry_tests::bin_dir().join("gantry"))
                .arg("--address")
                .arg(&d.socket)
                .arg(verb)
                .arg(&id)
                .output()
                .map_err(|e| e.to_string())
                .and_then(|o| {
                    ensure(o.status.success(), || {
                        format!("gantry {verb}: {}", String::from_utf8_lossy(&o.stderr).trim())
                    })
                })
        };
        let frozen = || read(&dir.join("cgroup.events")).map(|e| e.lines().any(|l| l == "frozen 1"));
        let r = gantry("pause", &self.d)
            .and_then(|()| expect_file(&dir, "cgroup.freeze", "1"))
            .and_then(|()| ensure(frozen()?, || "cgroup.events does not say frozen 1".into()))
            .and_then(|()| gantry("unpause", &self.d))
            .and_then(|()| expect_file(&dir, "cgroup.freeze", "0"))
            .and_then(|()| ensure(!frozen()?, || "still frozen after unpause".into()));
        self.report("pause/unpause via cgroup.freeze", r);

        // The device filter (eBPF): /dev/null works, another device does not.
        let null = exec(&mut self.cri, &id, &["sh", "-c", "echo x >/dev/null && head -c 1 /dev/zero | wc -c"]).await;
        self.report(
            "device filter allows /dev/null",
            null.and_then(|(code, out, err)| {
                ensure(code == 0 && out == "1", || format!("exit {code} {out:?} {err:?}"))
            }),
        );
        let mem = exec(&mut self.cri, &id, &["sh", "-c", "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem"]).await;
        self.report(
            "device filter refuses /dev/mem (c 1:1)",
            mem.and_then(|(code, out, err)| {
                ensure(code != 0 && err.contains("Operation not permitted"), || {
                    format!("exit {code} out {out:?} err {err:?}")
                })
            }),
        );
        let blk = exec(&mut self.cri, &id, &["sh", "-c", "mknod /tmp/blk b 7 0 && head -c 1 /tmp/blk"]).await;
        self.report(
            "device filter refuses a block device (b 7:0)",
            blk.and_then(|(code, out, err)| {
                ensure(code != 0 && err.contains("Operation not permitted"), || {
                    format!("exit {code} out {out:?} err {err:?}")
                })
            }),
        );
        remove_pod(&mut self.cri, &pod.0).await
    }

    /// A parent where controllers cannot be enabled (it holds a process):
    /// a limit must fail naming the controller, not go missing.
    async fn controller_not_enabled(&mut self) -> Check {
        let parent = "/busy-parent";
        std::fs::create_dir_all(cg(parent)).map_err(|e| e.to_string())?;
        let mut sleeper = Command::new("sleep").arg("600").spawn().map_err(|e| e.to_string())?;
        let moved = std::fs::write(cg(parent).join("cgroup.procs"), sleeper.id().to_string());
        let r = async {
            moved.map_err(|e| format!("moving sleep into {parent}: {e}"))?;
            let pod = self.run_pod("busy", parent).await?;
            let resources = LinuxContainerResources { memory_limit_in_bytes: 64 * MIB, ..Default::default() };
            let created = self.create(&pod, "limited", &["sleep", "60"], resources).await;
            let removed = remove_pod(&mut self.cri, &pod.0).await;
            let r = match created {
                Ok(id) => Err(format!("CreateContainer succeeded ({id}) without a memory controller")),
                Err(e) => {
                    println!("# CreateContainer refused: {e}");
                    ensure(e.contains("memory") && e.contains("subtree_control"), || {
                        format!("the error does not name the memory controller and subtree_control: {e}")
                    })
                }
            };
            r.and(removed)
        }
        .await;
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        for _ in 0..50 {
            if std::fs::remove_dir(cg(parent)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.report("a controller not enabled for the parent is named", r);
        Ok(())
    }

    /// An external OCI runtime as a RuntimeClass handler on a pure cgroup
    /// v2 node: the limits in the container's cgroup, exec, an OOM kill
    /// reported, and nothing left (cgroups, the runtime's state) after.
    async fn handler(&mut self, handler: &str) -> Check {
        let parent = format!("/kubepods/burstable/pod-{handler}");
        let pod = self.run_pod_with(&format!("with-{handler}"), &parent, handler).await?;
        let resources = LinuxContainerResources {
            memory_limit_in_bytes: 48 * MIB,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            ..Default::default()
        };
        let id = self.run(&pod, "app", &["sleep", "3600"], resources.clone()).await?;
        let dir = cg(&format!("{parent}/gantry-{id}"));
        self.report(&format!("{handler}: memory.max"), expect_file(&dir, "memory.max", &(48 * MIB).to_string()));
        self.report(&format!("{handler}: cpu.max"), expect_file(&dir, "cpu.max", "20000 100000"));
        let info = self.verbose_info(&id).await?;
        let pid = info["pid"].as_u64().unwrap_or(0);
        let want = format!("0::{parent}/gantry-{id}");
        let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
        self.report(
            &format!("{handler}: the container is in its cgroup"),
            own.and_then(|own| ensure(own == want, || format!("/proc/{pid}/cgroup is {own:?}, want {want:?}"))),
        );
        let r = exec(&mut self.cri, &id, &["echo", "hello"]).await;
        self.report(
            &format!("{handler}: exec"),
            r.and_then(|(code, out, err)| {
                ensure(code == 0 && out == "hello", || format!("exit {code} {out:?} {err:?}"))
            }),
        );
        let hog = self.run(&pod, "hog", &["tail", "/dev/zero"], resources).await?;
        let r = wait_exited(&mut self.cri, &hog, Duration::from_secs(60)).await;
        self.report(
            &format!("{handler}: OOM kill reported"),
            r.and_then(|s| ensure(s.reason == "OOMKilled", || format!("reason {:?}, exit {}", s.reason, s.exit_code))),
        );
        remove_pod(&mut self.cri, &pod.0).await?;
        let root = self.d.dir.path().join("runtime-roots").join(handler);
        let left: Vec<PathBuf> = std::fs::read_dir(&root)
            .map(|r| r.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        ensure(left.is_empty(), || format!("{handler} state left: {left:?}"))?;
        let cgroups = gantry_cgroups();
        ensure(cgroups.is_empty(), || format!("cgroups left: {cgroups:?}"))
    }

    async fn lifecycle(&mut self) -> Check {
        let parent = "/kubepods/besteffort/pod-cycle";
        let pod = self.run_pod("cycle", parent).await?;
        let id = self.run(&pod, "app", &["sleep", "3600"], LinuxContainerResources::default()).await?;
        let (code, out, err) = exec(&mut self.cri, &id, &["echo", "hello"]).await?;
        ensure(code == 0 && out == "hello", || format!("exec: exit {code} {out:?} {err:?}"))?;
        self.cri
            .runtime
            .stop_container(StopContainerRequest { container_id: id.clone(), timeout: 2 })
            .await
            .map_err(|e| format!("StopContainer: {}", e.message()))?;
        let dir = cg(&format!("{parent}/gantry-{id}"));
        self.cri
            .runtime
            .remove_container(RemoveContainerRequest { container_id: id.clone() })
            .await
            .map_err(|e| format!("RemoveContainer: {}", e.message()))?;
        ensure(!dir.exists(), || format!("{} is left after RemoveContainer", dir.display()))?;
        remove_pod(&mut self.cri, &pod.0).await?;
        let left = gantry_cgroups();
        ensure(left.is_empty(), || format!("cgroups left: {left:?}"))?;
        ensure(!cg(parent).exists(), || format!("{} (made by Gantry) is left", cg(parent).display()))
    }
}

#[tokio::main]
async fn main() {
    let archive = std::env::args().nth(1).expect("usage: cgroup2_pass IMAGE.tar");
    let started = Instant::now();
    let (d, cri, image) = gantry_tests::node_pass::start("", &archive).await;
    let mut p = Pass { d, cri, image, tally: Tally::default() };
    p.report("gantryd up, image loaded", Ok(()));
    let r = p.limits().await;
    p.report("limits pod", r);
    let r = p.oom().await;
    p.report("oom pod", r);
    let r = p.stats().await;
    p.report("stats pod", r);
    let r = p.controller_not_enabled().await;
    p.report("busy-parent pod", r);
    for (name, _) in HANDLERS {
        let r = p.handler(name).await;
        p.report(&format!("{name} handler pod"), r);
    }
    let r = p.lifecycle().await;
    p.report("pod lifecycle leaves no cgroup", r);
    let internal = internal_processes();
    p.report("no internal processes at the end", ensure(internal.is_empty(), || internal.join("; ")));
    let status = p.tally.finish("cgroup2_pass", &p.d.log_text(), started);
    drop(p);
    std::process::exit(status);
}
