//! The systemd pass: runs as a service on the test node that
//! `tests/systemd/run.sh` boots (QEMU, Debian's kernel, a Debian bookworm
//! root with systemd as PID 1 on a pure cgroup v2 hierarchy) and checks
//! gantryd's systemd cgroup driver against that real systemd: scope units in
//! kubelet's pod slices, their properties (`systemctl show`) and cgroup
//! files, updates, OOM kills, removal, runc and crun with
//! `--systemd-cgroup`, a cgroupfs parent refused, and the D-Bus going away
//! and coming back. Prints `PASS name` or `FAIL name: why` per check; exits
//! 1 if any failed.
//!
//!   systemd_pass IMAGE.tar     (GANTRY_BIN_DIR: gantryd, gantry-shim, gantry)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{
    CgroupDriver, ContainerConfig, ContainerMetadata, ContainerStatsRequest, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatsRequest, PodSandboxStatusRequest,
    RemoveContainerRequest, RunPodSandboxRequest, RuntimeConfigRequest, StartContainerRequest, StopContainerRequest,
    UpdateContainerResourcesRequest,
};
use gantry_tests::node_pass::{
    cg, ensure, exec, expect_file, read, remove_pod, wait_exited, Check, Tally, CGROUP_ROOT, HANDLERS,
};
use gantry_tests::{Cri, Daemon};
use tonic::Code;

const MIB: i64 = 1 << 20;

/// runc's conversion of CPU shares (2..262144) to cgroup2's cpu.weight (1..10000).
fn cpu_weight(shares: u64) -> u64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    ensure(out.status.success(), || {
        format!("{cmd} {}: {} {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim())
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `systemctl show UNIT -p A -p B…` as a map.
fn show(unit: &str, props: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut args = vec!["show", unit];
    for p in props {
        args.extend(["-p", p]);
    }
    Ok(run("systemctl", &args)?
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect())
}

/// Each `(property, value)` as `systemctl show` reports it.
fn expect_props(unit: &str, want: &[(&str, String)]) -> Check {
    let names: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    let got = show(unit, &names)?;
    let wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}={} (want {v})", got.get(*k).map_or("<none>", |s| s.as_str())))
        .collect();
    ensure(wrong.is_empty(), || format!("systemctl show {unit}: {}", wrong.join(", ")))
}

/// Gantry's scope units systemd still knows, in any state.
fn gantry_units() -> Result<Vec<String>, String> {
    let out = run("systemctl", &["list-units", "--all", "--plain", "--no-legend", "--no-pager", "gantry-*"])?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).collect())
}

/// Every cgroup below the root named after Gantry's pods and containers.
fn gantry_cgroups() -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![PathBuf::from(CGROUP_ROOT)];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        if d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("gantry-")) {
            out.push(d);
        }
    }
    out
}

/// Nothing of Gantry's left in systemd or the cgroupfs. A scope goes a
/// moment after its last process: wait a little for that.
async fn nothing_left() -> Check {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let units = gantry_units()?;
        let cgroups = gantry_cgroups();
        if units.is_empty() && cgroups.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("units left: {units:?}; cgroups left: {cgroups:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kubelet's pod slice for QoS class `qos` and pod UID `uid`.
fn pod_slice(qos: &str, uid: &str) -> String {
    format!("kubepods-{qos}-pod{}.slice", uid.replace('-', "_"))
}

/// The cgroup of `unit` in kubelet's pod slice `slice` (kubepods-QOS-podUID.slice).
fn scope_cgroup(slice: &str, unit: &str) -> String {
    let qos = slice.split('-').nth(1).unwrap_or_default();
    format!("/kubepods.slice/kubepods-{qos}.slice/{slice}/{unit}")
}

type Pod = (String, PodSandboxConfig);

struct Pass {
    d: Daemon,
    cri: Cri,
    image: String,
    tally: Tally,
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

    async fn run_pod(&mut self, name: &str, parent: &str, handler: &str) -> Result<Pod, tonic::Status> {
        let config = self.pod_config(name, parent);
        let id = self
            .cri
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() })
            .await?
            .into_inner()
            .pod_sandbox_id;
        Ok((id, config))
    }

    async fn pod(&mut self, name: &str, parent: &str, handler: &str) -> Result<Pod, String> {
        self.run_pod(name, parent, handler).await.map_err(|e| format!("RunPodSandbox {name}: {}", e.message()))
    }

    async fn create(
        &mut self,
        pod: &Pod,
        name: &str,
        command: &[&str],
        resources: LinuxContainerResources,
    ) -> Result<String, tonic::Status> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image.clone(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig { resources: Some(resources), ..Default::default() }),
            ..Default::default()
        };
        self.cri
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    async fn start(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.cri.runtime.start_container(StartContainerRequest { container_id: id.into() }).await.map(|_| ())
    }

    async fn run(
        &mut self,
        pod: &Pod,
        name: &str,
        command: &[&str],
        resources: LinuxContainerResources,
    ) -> Result<String, String> {
        let id = self
            .create(pod, name, command, resources)
            .await
            .map_err(|e| format!("CreateContainer {name}: {}", e.message()))?;
        self.start(&id).await.map_err(|e| format!("StartContainer {name}: {}", e.message()))?;
        Ok(id)
    }

    async fn container_pid(&mut self, id: &str) -> Result<u64, String> {
        let verbose = self
            .cri
            .runtime
            .container_status(ContainerStatusRequest { container_id: id.into(), verbose: true })
            .await
            .map_err(|e| format!("ContainerStatus: {}", e.message()))?
            .into_inner();
        let info: serde_json::Value =
            serde_json::from_str(verbose.info.get("info").map_or("{}", |s| s.as_str())).map_err(|e| e.to_string())?;
        info["pid"].as_u64().filter(|p| *p > 0).ok_or_else(|| format!("no pid in {info}"))
    }

    async fn pause_pid(&mut self, id: &str) -> Result<u64, String> {
        let verbose = self
            .cri
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
            .await
            .map_err(|e| format!("PodSandboxStatus: {}", e.message()))?
            .into_inner();
        let info: serde_json::Value =
            serde_json::from_str(verbose.info.get("info").map_or("{}", |s| s.as_str())).map_err(|e| e.to_string())?;
        info["pid"].as_u64().filter(|p| *p > 0).ok_or_else(|| format!("no pid in {info}"))
    }

    async fn exec_hello(&mut self, id: &str) -> Check {
        let (code, out, err) = exec(&mut self.cri, id, &["echo", "hello"]).await?;
        ensure(code == 0 && out == "hello", || format!("exec: exit {code} {out:?} {err:?}"))
    }

    async fn remove_container(&mut self, id: &str) -> Check {
        self.cri
            .runtime
            .stop_container(StopContainerRequest { container_id: id.into(), timeout: 2 })
            .await
            .map_err(|e| format!("StopContainer: {}", e.message()))?;
        self.cri
            .runtime
            .remove_container(RemoveContainerRequest { container_id: id.into() })
            .await
            .map_err(|e| format!("RemoveContainer: {}", e.message()))?;
        Ok(())
    }

    /// The process `pid` is in `cgroup` (a path from the root).
    fn in_cgroup(pid: u64, cgroup: &str) -> Check {
        let own = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
        let want = format!("0::{cgroup}");
        ensure(own == want, || format!("/proc/{pid}/cgroup is {own:?}, want {want:?}"))
    }

    async fn runtime_config(&mut self) -> Check {
        let config = self
            .cri
            .runtime
            .runtime_config(RuntimeConfigRequest {})
            .await
            .map_err(|e| format!("RuntimeConfig: {}", e.message()))?
            .into_inner();
        let driver = config.linux.map(|l| l.cgroup_driver);
        ensure(driver == Some(CgroupDriver::Systemd as i32), || format!("cgroup driver {driver:?}"))
    }

    /// A pod in kubelet's burstable pod slice and a container with limits:
    /// their scope units, properties, cgroups; exec, update, removal.
    async fn scopes(&mut self) -> Check {
        let slice = pod_slice("burstable", "7d5f1c3e-0b2a-4c8d-9e6f-1a2b3c4d5e6f");
        let pod = self.pod("scoped", &slice, "").await?;
        let pod_unit = format!("gantry-{}.scope", pod.0);
        let pod_cgroup = scope_cgroup(&slice, &pod_unit);
        let r = async {
            let pid = self.pause_pid(&pod.0).await?;
            Self::in_cgroup(pid, &pod_cgroup)
        }
        .await;
        self.report("pod: the pause process is in its scope in kubelet's pod slice", r);
        let r = expect_props(
            &pod_unit,
            &[
                ("ActiveState", "active".into()),
                ("Delegate", "yes".into()),
                ("Slice", slice.clone()),
                ("ControlGroup", pod_cgroup.clone()),
            ],
        );
        self.report("pod: systemctl show of its scope (Delegate=yes, Slice, ControlGroup)", r);

        let shares = 512;
        let resources = LinuxContainerResources {
            memory_limit_in_bytes: 64 * MIB,
            cpu_shares: shares,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            unified: HashMap::from([("pids.max".to_string(), "64".to_string())]),
            ..Default::default()
        };
        let id = match self.run(&pod, "limited", &["sleep", "3600"], resources).await {
            Ok(id) => id,
            Err(e) => {
                let _ = remove_pod(&mut self.cri, &pod.0).await;
                return Err(e);
            }
        };
        let unit = format!("gantry-{id}.scope");
        let cgroup = scope_cgroup(&slice, &unit);
        let dir = cg(&cgroup);
        let r = async {
            let pid = self.container_pid(&id).await?;
            Self::in_cgroup(pid, &cgroup)
        }
        .await;
        self.report("container: its process is in its scope", r);
        let r = expect_props(
            &unit,
            &[
                ("ActiveState", "active".into()),
                ("Delegate", "yes".into()),
                ("MemoryMax", (64 * MIB).to_string()),
                ("CPUQuotaPerSecUSec", "500ms".into()),
                ("CPUWeight", cpu_weight(shares as u64).to_string()),
                ("TasksMax", "64".into()),
            ],
        );
        self.report("container: systemctl show MemoryMax, CPUQuotaPerSecUSec, CPUWeight, TasksMax", r);
        let r = expect_file(&dir, "memory.max", &(64 * MIB).to_string())
            .and_then(|()| expect_file(&dir, "cpu.max", "50000 100000"))
            .and_then(|()| expect_file(&dir, "cpu.weight", &cpu_weight(shares as u64).to_string()))
            .and_then(|()| expect_file(&dir, "pids.max", "64"));
        self.report("container: memory.max, cpu.max, cpu.weight, pids.max agree", r);

        let r = self.exec_hello(&id).await;
        self.report("container: ExecSync", r);
        let r = exec(&mut self.cri, &id, &["cat", "/proc/self/cgroup"]).await.and_then(|(code, out, err)| {
            let whole = format!("0::{cgroup}");
            ensure(code == 0 && (out == whole || out == "0::/"), || format!("exit {code}, out {out:?}, err {err:?}"))
        });
        self.report("container: an exec joins its scope", r);

        let update = LinuxContainerResources {
            memory_limit_in_bytes: 128 * MIB,
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
            .map(drop)
            .map_err(|e| format!("UpdateContainerResources: {}", e.message()));
        let want = [
            ("MemoryMax", (128 * MIB).to_string()),
            ("CPUQuotaPerSecUSec", "200ms".into()),
            ("CPUWeight", cpu_weight(2048).to_string()),
            ("TasksMax", "32".into()),
        ];
        let files = |dir: &Path| {
            expect_file(dir, "memory.max", &(128 * MIB).to_string())
                .and_then(|()| expect_file(dir, "cpu.max", "20000 100000"))
                .and_then(|()| expect_file(dir, "cpu.weight", &cpu_weight(2048).to_string()))
                .and_then(|()| expect_file(dir, "pids.max", "32"))
        };
        let r = r.and_then(|()| expect_props(&unit, &want)).and_then(|()| files(&dir));
        self.report("UpdateContainerResources: the unit's properties and the cgroup files", r);
        // systemd rewrites a unit's cgroup from its properties at a reload:
        // the updated limits must be the unit's own.
        let r = run("systemctl", &["daemon-reload"]).map(drop).and_then(|()| files(&dir));
        self.report("the updated limits survive a daemon-reload", r);

        // Stats read the scope's cgroup (and the pod slice's, for PSI).
        let r = self.stats(&pod.0, &id).await;
        self.report("ContainerStats and PodSandboxStats from the scope's cgroup", r);
        // A gantryd restart finds its scopes as it left them.
        self.d.restart();
        self.cri = self.d.connect().await;
        let r = self.exec_hello(&id).await.and_then(|()| {
            expect_props(&unit, &[("ActiveState", "active".into()), ("MemoryMax", (128 * MIB).to_string())])
        });
        self.report("after a gantryd restart: exec, the scope as it was", r);

        let r = self.remove_container(&id).await.and_then(|()| {
            let units = gantry_units()?;
            ensure(!units.iter().any(|u| u.contains(&unit)), || format!("{unit} still listed: {units:?}"))?;
            ensure(!dir.exists(), || format!("{} is left", dir.display()))
        });
        self.report("RemoveContainer: its scope and cgroup are gone", r);
        remove_pod(&mut self.cri, &pod.0).await?;
        let r = nothing_left().await;
        self.report("RemovePodSandbox: no gantry-* unit or cgroup left", r);
        Ok(())
    }

    async fn stats(&mut self, pod: &str, id: &str) -> Check {
        let stats = self
            .cri
            .runtime
            .container_stats(ContainerStatsRequest { container_id: id.into() })
            .await
            .map_err(|e| format!("ContainerStats: {}", e.message()))?
            .into_inner()
            .stats
            .ok_or("ContainerStats: none")?;
        let memory = stats.memory.as_ref().and_then(|m| m.usage_bytes.as_ref()).map_or(0, |v| v.value);
        let cpu = stats.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds.as_ref()).map_or(0, |v| v.value);
        ensure(memory > 0 && cpu > 0, || format!("container memory {memory} B, cpu {cpu} ns: {stats:?}"))?;
        let pod_stats = self
            .cri
            .runtime
            .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod.into() })
            .await
            .map_err(|e| format!("PodSandboxStats: {}", e.message()))?
            .into_inner()
            .stats
            .ok_or("PodSandboxStats: none")?;
        let linux = pod_stats.linux.as_ref().ok_or("PodSandboxStats: no linux stats")?;
        let memory = linux.memory.as_ref().and_then(|m| m.usage_bytes.as_ref()).map_or(0, |v| v.value);
        let containers = linux.containers.len();
        ensure(memory > 0 && containers == 1, || format!("pod memory {memory} B, {containers} containers"))
    }

    /// OOM kills in scopes, several at once: each reported, although
    /// systemd removes an emptied scope's cgroup at once (the shim may find
    /// it gone at the exit). A SIGKILL that was no OOM kill, in the same pod
    /// after them, is not taken for one.
    async fn oom(&mut self) -> Check {
        let slice = pod_slice("besteffort", "0e1d2c3b-4a59-4687-a5b4-c3d2e1f00f1e");
        let pod = self.pod("oom", &slice, "").await?;
        let r = self.oom_kills(&pod).await;
        let removed = remove_pod(&mut self.cri, &pod.0).await;
        r.and(removed)?;
        let r = nothing_left().await;
        self.report("the OOM-killed containers' scopes are gone after removal", r);
        Ok(())
    }

    async fn oom_kills(&mut self, pod: &Pod) -> Check {
        let calm = self.run(pod, "calm", &["sleep", "3600"], Default::default()).await?;
        let resources = LinuxContainerResources { memory_limit_in_bytes: 32 * MIB, ..Default::default() };
        let mut hogs = vec![];
        for i in 0..8 {
            // tail keeps the whole newline-free "line" in memory.
            hogs.push(self.run(pod, &format!("hog{i}"), &["tail", "/dev/zero"], resources.clone()).await?);
        }
        let mut wrong = vec![];
        for id in &hogs {
            let s = wait_exited(&mut self.cri, id, Duration::from_secs(90)).await?;
            if s.reason != "OOMKilled" {
                wrong.push(format!("{}: reason {:?}, exit code {}", &id[..12], s.reason, s.exit_code));
            }
        }
        self.report(
            "OOM kills in scopes (8 at once) are reported as OOMKilled",
            ensure(wrong.is_empty(), || wrong.join("; ")),
        );
        self.cri
            .runtime
            .stop_container(StopContainerRequest { container_id: calm.clone(), timeout: 0 })
            .await
            .map_err(|e| format!("StopContainer: {}", e.message()))?;
        let s = wait_exited(&mut self.cri, &calm, Duration::from_secs(30)).await?;
        self.report(
            "a SIGKILLed container beside them is not OOMKilled",
            ensure(s.reason != "OOMKilled" && s.exit_code == 137, || {
                format!("reason {:?}, exit code {}", s.reason, s.exit_code)
            }),
        );
        Ok(())
    }

    /// An external runtime (`--systemd-cgroup`) makes the container's scope.
    /// runc keeps the container in the scope itself, with the limits as the
    /// unit's properties; crun in a `container` child cgroup of the scope
    /// (its `run.oci.systemd.subgroup` default on cgroup v2), the limits
    /// written there.
    async fn handler(&mut self, handler: &str) -> Check {
        let slice = pod_slice("burstable", &format!("{handler}-0000-4000-8000-000000000001"));
        let pod = self.pod(&format!("with-{handler}"), &slice, handler).await?;
        let r = self.handler_container(handler, &pod, &slice).await;
        let removed = remove_pod(&mut self.cri, &pod.0).await;
        self.report(&format!("{handler}: the container"), r);
        removed?;
        let r = nothing_left().await;
        self.report(&format!("{handler}: nothing left after removal"), r);
        Ok(())
    }

    async fn handler_container(&mut self, handler: &str, pod: &Pod, slice: &str) -> Check {
        let resources = LinuxContainerResources {
            memory_limit_in_bytes: 48 * MIB,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            ..Default::default()
        };
        let id = self.run(pod, "app", &["sleep", "3600"], resources).await?;
        let unit = format!("gantry-{id}.scope");
        let scope = scope_cgroup(slice, &unit);
        let want = if handler == "crun" { format!("{scope}/container") } else { scope.clone() };
        let r = async {
            let pid = self.container_pid(&id).await?;
            Self::in_cgroup(pid, &want)
        }
        .await;
        self.report(&format!("{handler}: the container is in scope {unit} ({want})"), r);
        let mut props = vec![("ActiveState", "active".to_string()), ("Slice", slice.to_string())];
        if handler == "runc" {
            props.push(("MemoryMax", (48 * MIB).to_string()));
        }
        let r = expect_props(&unit, &props)
            .and_then(|()| expect_file(&cg(&want), "memory.max", &(48 * MIB).to_string()))
            .and_then(|()| expect_file(&cg(&want), "cpu.max", "20000 100000"));
        self.report(&format!("{handler}: the scope unit and the limits in its cgroup"), r);
        let r = exec(&mut self.cri, &id, &["cat", "/proc/self/cgroup"]).await.and_then(|(code, out, err)| {
            let whole = format!("0::{want}");
            ensure(code == 0 && (out == whole || out == "0::/"), || format!("exit {code}, out {out:?}, err {err:?}"))
        });
        self.report(&format!("{handler}: an exec joins the container's cgroup"), r);
        Ok(())
    }

    /// No `cgroup_parent`: the scope goes into system.slice.
    async fn default_slice(&mut self) -> Check {
        let pod = self.pod("unparented", "", "").await?;
        let unit = format!("gantry-{}.scope", pod.0);
        let r = async {
            let pid = self.pause_pid(&pod.0).await?;
            Self::in_cgroup(pid, &format!("/system.slice/{unit}"))?;
            expect_props(&unit, &[("Slice", "system.slice".into()), ("Delegate", "yes".into())])
        }
        .await;
        let removed = remove_pod(&mut self.cri, &pod.0).await;
        r.and(removed)
    }

    async fn cgroupfs_parent_refused(&mut self) -> Check {
        let r = self.run_pod("pathed", "/kubepods/burstable/pod1234", "").await;
        match r {
            Ok((id, _)) => {
                let _ = remove_pod(&mut self.cri, &id).await;
                Err("RunPodSandbox accepted a cgroupfs path under the systemd driver".into())
            }
            Err(e) => {
                ensure(e.code() == Code::InvalidArgument && e.message().contains("/kubepods/burstable/pod1234"), || {
                    format!("{:?}: {}", e.code(), e.message())
                })
            }
        }
    }

    /// The system bus stopped: making a scope is `Unavailable`; once it is
    /// back gantryd connects again.
    async fn dbus_down(&mut self) -> Check {
        let slice = pod_slice("besteffort", "d0b05000-0000-4000-8000-00000000d0b0");
        let before = self.pod("before-dbus-stop", &slice, "").await?;
        run("systemctl", &["stop", "dbus.socket", "dbus.service"])?;
        let pod = self.run_pod("while-dbus-stopped", &slice, "").await;
        let r = match &pod {
            Ok(_) => Err("RunPodSandbox succeeded without the system bus".into()),
            Err(e) => ensure(e.code() == Code::Unavailable, || format!("{:?}: {}", e.code(), e.message())),
        };
        self.report("bus stopped: RunPodSandbox is Unavailable", r);
        let r = match self.create(&before, "app", &["sleep", "3600"], Default::default()).await {
            Ok(id) => {
                let r = match self.start(&id).await {
                    Ok(()) => Err("StartContainer succeeded without the system bus".into()),
                    Err(e) => ensure(e.code() == Code::Unavailable, || format!("{:?}: {}", e.code(), e.message())),
                };
                let _ = self.cri.runtime.remove_container(RemoveContainerRequest { container_id: id }).await;
                r
            }
            Err(e) => {
                ensure(e.code() == Code::Unavailable, || format!("CreateContainer {:?}: {}", e.code(), e.message()))
            }
        };
        self.report("bus stopped: a container's start is Unavailable", r);
        let pods = self
            .cri
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner()
            .items;
        self.report(
            "bus stopped: the failed pod is not left",
            ensure(pods.len() == 1, || format!("{} pods listed", pods.len())),
        );

        run("systemctl", &["start", "dbus.socket", "dbus.service"])?;
        // systemd itself is back on the bus a moment later.
        let deadline = Instant::now() + Duration::from_secs(30);
        while run(
            "busctl",
            &["call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.DBus.Peer", "Ping"],
        )
        .is_err()
        {
            if Instant::now() > deadline {
                return Err("systemd not back on the bus within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = async {
            let pod = self.pod("after-dbus-start", &slice, "").await?;
            let r = async {
                let id = self.run(&pod, "app", &["sleep", "3600"], Default::default()).await?;
                self.exec_hello(&id).await?;
                let cid = self.run(&before, "app2", &["sleep", "3600"], Default::default()).await?;
                self.exec_hello(&cid).await
            }
            .await;
            let removed = remove_pod(&mut self.cri, &pod.0).await;
            r.and(removed)
        }
        .await;
        self.report("bus back: gantryd reconnects, new pods and containers run", r);
        remove_pod(&mut self.cri, &before.0).await?;
        let r = nothing_left().await;
        self.report("bus back: nothing left after removal", r);
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let archive = std::env::args().nth(1).expect("usage: systemd_pass IMAGE.tar");
    let started = Instant::now();
    let (d, cri, image) = gantry_tests::node_pass::start("cgroup_driver = \"systemd\"\n", &archive).await;
    let mut p = Pass { d, cri, image, tally: Tally::default() };
    p.report("gantryd up with cgroup_driver = \"systemd\", image loaded", Ok(()));
    let r = p.runtime_config().await;
    p.report("RuntimeConfig reports the systemd driver", r);
    let r = p.scopes().await;
    p.report("scopes pod", r);
    let r = p.oom().await;
    p.report("oom pod", r);
    for (name, _) in HANDLERS {
        let r = p.handler(name).await;
        p.report(&format!("{name} handler pod"), r);
    }
    let r = p.default_slice().await;
    p.report("a pod without cgroup_parent is in system.slice", r);
    let r = p.cgroupfs_parent_refused().await;
    p.report("a cgroupfs cgroup_parent is InvalidArgument", r);
    let r = p.dbus_down().await;
    p.report("dbus pods", r);
    let r = nothing_left().await;
    p.report("no gantry-* unit or cgroup at the end", r);
    // A D-Bus call systemd refused (a property it does not take, a unit it
    // could not stop or reset) is only a warning in gantryd's log.
    let log = p.d.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["StartTransientUnit", "SetUnitProperties", "StopUnit", "ResetFailedUnit", "GetUnit"]
                .iter()
                .any(|m| l.contains(&format!("systemd {m}")))
        })
        .collect();
    p.report("gantryd's log has no call systemd refused", ensure(refused.is_empty(), || refused.join(" | ")));
    let status = p.tally.finish("systemd_pass", &p.d.log_text(), started);
    drop(p);
    std::process::exit(status);
}
