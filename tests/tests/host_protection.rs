//! The runtime as the last line of defence (issue 16): pod specs that would
//! change the node are refused, and the host's values and paths are read
//! before and after (and put back if a failure changed them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gantry_proto::cri::v1::{LinuxContainerResources, NamespaceMode, NamespaceOption, PodSandboxConfig};
use gantry_tests::pods::*;
use gantry_tests::{Cri, Daemon};
use tonic::Code;

/// A host sysctl, read at creation; written back on drop if it changed.
struct HostSysctl {
    path: PathBuf,
    before: String,
}

impl HostSysctl {
    fn read(name: &str) -> HostSysctl {
        let path = Path::new("/proc/sys").join(name.replace('.', "/"));
        let before = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        HostSysctl { path, before }
    }

    fn now(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    fn assert_unchanged(&self) {
        assert_eq!(self.now(), self.before, "the host's {} changed", self.path.display());
    }
}

impl Drop for HostSysctl {
    fn drop(&mut self) {
        if self.now() != self.before {
            let _ = std::fs::write(&self.path, self.before.trim_end());
        }
    }
}

/// A name no other test (or run) uses.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("gantry-{what}-{}-{nanos:x}", std::process::id())
}

fn with_sysctls(
    mut config: PodSandboxConfig,
    ipc: NamespaceMode,
    network: NamespaceMode,
    sysctls: &[(&str, &str)],
) -> PodSandboxConfig {
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.sysctls = sysctls.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
    let ns = linux
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(|| NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() });
    ns.ipc = ipc as i32;
    ns.network = network as i32;
    config
}

/// RunPodSandbox must refuse `config` with InvalidArgument naming `name`. Had
/// it accepted, a container is run in the pod first, so that a missing check
/// shows up as a changed host value too.
async fn assert_refused(cri: &mut Cri, config: PodSandboxConfig, name: &str) {
    match run_pod_config(cri, config).await {
        Err(err) => {
            assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
            assert!(err.message().contains(name), "{name}: {err}");
        }
        Ok(pod) => {
            if let Ok(id) = create(cri, &pod, container("c", &["true"])).await {
                let _ = cri
                    .runtime
                    .start_container(gantry_proto::cri::v1::StartContainerRequest { container_id: id })
                    .await;
            }
            remove_pod(cri, &pod).await;
            panic!("a pod with sysctl {name} was accepted");
        }
    }
}

#[tokio::test]
async fn sysctls_outside_the_pods_own_namespaces_are_refused_and_the_host_keeps_its_values() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    use NamespaceMode::{Node, Pod};
    let core_pattern = HostSysctl::read("kernel.core_pattern");
    let msgmax = HostSysctl::read("kernel.msgmax");
    let keepalive = HostSysctl::read("net.ipv4.tcp_keepalive_time");
    let hostname = HostSysctl::read("kernel.hostname");
    let pattern = format!("/tmp/{}-%p", unique("core"));
    let cases: [(&str, NamespaceMode, NamespaceMode, &str, &str); 5] = [
        // Belongs to no namespace: a `|` value would run a program as root.
        ("core", Pod, Pod, "kernel.core_pattern", &pattern),
        ("core-slash", Pod, Pod, "kernel/core_pattern", &pattern),
        ("msgmax", Node, Pod, "kernel.msgmax", "4321"),
        ("keepalive", Pod, Node, "net.ipv4.tcp_keepalive_time", "1234"),
        ("hostname", Pod, Node, "kernel.hostname", "gantry-not-the-host"),
    ];
    for (name, ipc, network, key, value) in cases {
        let config = with_sysctls(pod_config(&d, name, NamespaceMode::Container), ipc, network, &[(key, value)]);
        assert_refused(&mut cri, config, key).await;
    }
    for s in [&core_pattern, &msgmax, &keepalive, &hostname] {
        s.assert_unchanged();
    }
    assert_eq!(count(&d.state.join("sandboxes")), 0, "a refused pod left its sandbox dir");
}

#[tokio::test]
async fn values_that_smuggle_a_second_setting_are_refused() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let core_pattern = HostSysctl::read("kernel.core_pattern");
    let shmmax = HostSysctl::read("kernel.shmmax");
    for (i, value) in
        ["1\nkernel.core_pattern=/x", "1+kernel.core_pattern=/x", "1 kernel.core_pattern=/x"].into_iter().enumerate()
    {
        let config = with_sysctls(
            pod_config(&d, &format!("inject{i}"), NamespaceMode::Container),
            NamespaceMode::Pod,
            NamespaceMode::Pod,
            &[("kernel.shmmax", value)],
        );
        assert_refused(&mut cri, config, "kernel.shmmax").await;
    }
    core_pattern.assert_unchanged();
    shmmax.assert_unchanged();
}

#[tokio::test]
async fn namespaced_sysctls_are_applied_inside_the_pods_own_namespaces() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let guards: Vec<HostSysctl> =
        ["kernel.shmmax", "kernel.shm_rmid_forced", "kernel.sem", "net.ipv4.ip_unprivileged_port_start"]
            .into_iter()
            .map(HostSysctl::read)
            .collect();
    let config = with_sysctls(
        pod_config(&d, "inside", NamespaceMode::Container),
        NamespaceMode::Pod,
        NamespaceMode::Pod,
        &[
            ("kernel.shmmax", "123456789"),
            // The slash form names the same sysctl.
            ("kernel/shm_rmid_forced", "1"),
            ("kernel.sem", "250 32000\t32 128"),
            ("net.ipv4.ip_unprivileged_port_start", "123"),
        ],
    );
    let pod = run_pod_config(&mut cri, config).await.expect("run pod");
    let script = "cat /proc/sys/kernel/shmmax /proc/sys/kernel/shm_rmid_forced /proc/sys/kernel/sem \
                  /proc/sys/net/ipv4/ip_unprivileged_port_start";
    let id = create(&mut cri, &pod, container("read", &["sh", "-c", script])).await.expect("create");
    start(&mut cri, &id).await;
    let s = wait_exited(&mut cri, &id).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!(
        log_of(&pod, "read"),
        ["stdout F 123456789", "stdout F 1", "stdout F 250\t32000\t32\t128", "stdout F 123"]
    );
    remove_pod(&mut cri, &pod).await;
    for g in &guards {
        g.assert_unchanged();
    }
}

/// The mount points of the host's cgroup hierarchies (v1 and cgroup2).
fn hierarchies() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// Removes on drop whatever the cgroup parents `tmp/NAME` left, inside each
/// hierarchy and outside (where a climbing path would have landed). Made
/// before the daemon, so it runs after the daemon's drop ended its processes;
/// a killed process leaves its cgroup only once reaped, hence the retries.
struct ClimbCleanup {
    names: Vec<String>,
}

impl ClimbCleanup {
    fn remove_all(&self) -> bool {
        let mut clean = true;
        for root in hierarchies() {
            for name in &self.names {
                let ours = root.join("tmp").join(name);
                let mut dirs: Vec<PathBuf> = gantry_tests::tree(&ours).into_iter().map(|r| ours.join(r)).collect();
                dirs.retain(|p| p.is_dir());
                dirs.push(ours);
                dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
                for d in dirs.into_iter().filter(|d| d.exists()) {
                    clean &= std::fs::remove_dir(d).is_ok();
                }
                for outside in root.ancestors().skip(1) {
                    let p = outside.join("tmp").join(name);
                    if p.exists() {
                        let _ = std::fs::remove_dir_all(p);
                    }
                }
            }
            // Shared with other tests: removed by the last one.
            let _ = std::fs::remove_dir(root.join("tmp"));
        }
        clean
    }
}

impl Drop for ClimbCleanup {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !self.remove_all() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Where a path that climbed out of a hierarchy would land: `tmp/NAME` below
/// any ancestor of a hierarchy's mount point (`/tmp/NAME` among them).
fn outside_paths(name: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        hierarchies().iter().flat_map(|r| r.ancestors().skip(1).map(|a| a.join("tmp").join(name))).collect();
    out.sort();
    out.dedup();
    out
}

fn inside_paths(name: &str) -> Vec<PathBuf> {
    hierarchies().iter().map(|r| r.join("tmp").join(name)).filter(|p| p.exists()).collect()
}

#[tokio::test]
async fn a_cgroup_parent_cannot_climb_out_of_the_cgroup_hierarchies() {
    let patterns = ["../../../../../../tmp/NAME", "/../../../../tmp/NAME", "a/../../../../../../tmp/NAME"];
    let names: Vec<String> = (0..patterns.len()).map(|i| unique(&format!("climb{i}"))).collect();
    let _cleanup = ClimbCleanup { names: names.clone() };
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    for (i, (pattern, name)) in patterns.into_iter().zip(names).enumerate() {
        let mut config = pod_config(&d, &format!("climb{i}"), NamespaceMode::Container);
        config.linux.get_or_insert_with(Default::default).cgroup_parent = pattern.replace("NAME", &name);
        // Kept inside each hierarchy, at /tmp/NAME, as containerd does.
        let pod = run_pod_config(&mut cri, config).await;
        for p in outside_paths(&name) {
            assert!(!p.exists(), "{pattern}: {} was created outside the cgroup hierarchies", p.display());
        }
        let pod = pod.unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let id = create(&mut cri, &pod, container("where", &["cat", "/proc/self/cgroup"])).await.expect("create");
        start(&mut cri, &id).await;
        wait_exited(&mut cri, &id).await;
        // gantryd's spec names the clean path; the shim would clean it again.
        let spec = container_info(&mut cri, &id).await;
        assert_eq!(spec["runtimeSpec"]["linux"]["cgroupsPath"], format!("/tmp/{name}/gantry-{id}"), "{pattern}");
        let memory = log_of(&pod, "where").into_iter().find(|l| l.contains(":memory:")).unwrap_or_default();
        assert!(memory.ends_with(&format!(":memory:/tmp/{name}/gantry-{id}")), "{pattern}: {memory}");
        assert!(!inside_paths(&name).is_empty(), "{pattern}: no cgroup below tmp/{name}");
        remove_pod(&mut cri, &pod).await;
        for p in outside_paths(&name) {
            assert!(!p.exists(), "{pattern}: {} was created outside the cgroup hierarchies", p.display());
        }
        assert_eq!(inside_paths(&name), Vec::<PathBuf>::new(), "{pattern}: cgroups left behind");
    }
}

/// The cgroups below `parent` in every hierarchy (relative paths).
fn cgroups_below(parent: &str) -> Vec<String> {
    let rel = parent.trim_start_matches('/');
    let mut out: Vec<String> = hierarchies()
        .iter()
        .flat_map(|r| {
            let dir = r.join(rel);
            let found: Vec<String> = if dir.exists() {
                std::iter::once(dir.display().to_string())
                    .chain(
                        gantry_tests::tree(&dir)
                            .into_iter()
                            .filter(|p| dir.join(p).is_dir())
                            .map(|p| dir.join(p).display().to_string()),
                    )
                    .collect()
            } else {
                vec![]
            };
            found
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_failed_run_pod_sandbox_or_create_container_leaves_no_cgroup() {
    // A CNI plugin that always fails: RunPodSandbox fails after the pause
    // process is running in its cgroup.
    let cni = tempfile::Builder::new().prefix("gantry-failing-cni-").tempdir().expect("temp dir");
    let (conf, bin) = (cni.path().join("net.d"), cni.path().join("bin"));
    for dir in [&conf, &bin] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    let list = r#"{"cniVersion": "1.0.0", "name": "failing", "plugins": [{"type": "gantry-fail"}]}"#;
    std::fs::write(conf.join("10-failing.conflist"), list).expect("conflist");
    let plugin = bin.join("gantry-fail");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"fails on purpose\"}'\nexit 1\n",
    )
    .expect("plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let d = Daemon::start(&format!(
        "[cni]\nconf_dir = {:?}\nbin_dirs = [{:?}]\n",
        conf.display().to_string(),
        bin.display().to_string()
    ));
    let mut cri = setup(&d).await;
    // A parent no other cgroup uses: everything below it is this call's.
    let parent = format!("{}/{}", gantry_tests::cgroup_parent(&d), unique("failed"));
    let mut config = pod_config(&d, "failed", NamespaceMode::Container);
    config.linux.get_or_insert_with(Default::default).cgroup_parent = parent.clone();
    let err = run_pod_config(&mut cri, config).await.expect_err("the failing CNI plugin fails the pod");
    assert!(err.message().contains("fails on purpose"), "{err}");
    assert_eq!(cgroups_below(&parent), Vec::<String>::new(), "a failed RunPodSandbox left cgroups");
    assert_eq!(count(&d.state.join("sandboxes")), 0);

    // CreateContainer: the shim makes the cgroup, then a limit fails.
    std::fs::remove_file(conf.join("10-failing.conflist")).expect("rm conflist");
    let mut config = pod_config(&d, "ok", NamespaceMode::Container);
    config.linux.get_or_insert_with(Default::default).cgroup_parent = parent.clone();
    let pod = run_pod_config(&mut cri, config).await.expect("run pod");
    let before = cgroups_below(&parent);
    assert!(!before.is_empty(), "the pod has no cgroup below {parent}");
    let mut c = container("bad-cpuset", &["true"]);
    c.linux.get_or_insert_with(Default::default).resources =
        Some(LinuxContainerResources { cpuset_cpus: "4095".into(), ..Default::default() });
    create(&mut cri, &pod, c).await.expect_err("a cpuset of a CPU the machine lacks");
    assert_eq!(cgroups_below(&parent), before, "a failed CreateContainer left cgroups");
    remove_pod(&mut cri, &pod).await;
    assert_eq!(cgroups_below(&parent), Vec::<String>::new(), "a removed pod left cgroups");
}
