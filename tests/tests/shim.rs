//! gantry-shim on its own: a real container (namespaces, overlay rootfs from
//! a pulled image, pivot_root) driven over the shim API.

use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_proto::cri::v1::{ImageSpec, PullImageRequest};
use gantry_runtime::shim_client::{ShimClient, Status};
use gantry_tests::{bin_dir, image_chain_ids, test_registry, Daemon, MountGuard};

/// One container's bundle: overlay rootfs mounted, config.json written.
struct Bundle {
    dir: PathBuf,
    _mount: MountGuard,
    snapshots: gantry_imageservice::snapshot::Snapshotter,
    key: String,
    /// (container pid, shim pid) once a shim runs: killed on drop if a test
    /// failed before shutting it down. The container pid is 0 until Start.
    pids: std::sync::Mutex<Option<(i32, i32)>>,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Some((container, shim)) = self.pids.lock().ok().and_then(|p| *p) {
            // Never pid 0: kill(0, …) would hit the test's own process group.
            for pid in [container, shim].into_iter().filter(|p| *p > 0) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = gantry_imageservice::snapshot::unmount(&self.dir.join("rootfs"));
        let _ = self.snapshots.remove_rw(&self.key);
    }
}

async fn bundle(d: &Daemon, name: &str, args: &[&str]) -> Bundle {
    let mut cri = d.connect().await;
    let image = format!("{}/gantry/busybox:latest", test_registry());
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec { image: image.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("pull busybox");
    let chains = image_chain_ids(&mut cri, &image).await;
    let snapshots =
        gantry_imageservice::snapshot::Snapshotter::open(&d.images_root().join("snapshots")).expect("snapshotter");
    let layout = snapshots.prepare_rw(name, &chains).expect("prepare rw");
    let dir = d.dir.path().join("bundles").join(name);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("mkdir rootfs");
    layout.mount(&rootfs).expect("mount rootfs");
    let mount = MountGuard(rootfs);
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hi"],
            "cwd": "/tmp",
            "user": {"uid": 0, "gid": 0},
        },
        "root": {"path": "rootfs"},
        "hostname": "shimtest",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).expect("json")).expect("config");
    Bundle { dir, _mount: mount, snapshots, key: name.to_string(), pids: Default::default() }
}

/// Starts a shim for the bundle; returns its socket and the log path.
fn run_shim(b: &Bundle, id: &str) -> Result<(PathBuf, PathBuf), String> {
    run_shim_in(b, id, &[])
}

/// `run_shim`, the shim started through `wrapper` (a command that ends by
/// exec'ing its arguments).
fn run_shim_in(b: &Bundle, id: &str, wrapper: &[&str]) -> Result<(PathBuf, PathBuf), String> {
    let socket = b.dir.join("shim.sock");
    let log = b.dir.join("logs").join(format!("{id}.log"));
    let shim = bin_dir().join("gantry-shim");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&shim);
            c
        }
        None => Command::new(&shim),
    };
    let out = command
        .args(["--id", id, "--bundle"])
        .arg(&b.dir)
        .arg("--socket")
        .arg(&socket)
        .arg("--log")
        .arg(&log)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run gantry-shim");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let words: Vec<i32> = stdout.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    if out.status.success() && stdout.starts_with("ready ") && words.len() == 2 {
        *b.pids.lock().expect("lock") = Some((words[0], words[1]));
        Ok((socket, log))
    } else {
        Err(stdout)
    }
}

/// Fails the test instead of hanging it.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(30), f).await.expect("timed out after 30 s")
}

fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_once(' ').map_or("", |x| x.1).to_string())
        .collect()
}

#[tokio::test]
async fn container_runs_in_its_own_namespaces_and_logs_in_cri_format() {
    let d = Daemon::start("");
    let script = "echo hello; echo oops >&2; echo pid=$$ host=$(hostname) cwd=$(pwd) g=$GREETING; \
                  test -e /proc/kcore && echo kcore-visible; touch /proc/sys/x 2>/dev/null || echo sys-ro; \
                  ls /dev; exit 3";
    let b = bundle(&d, "print", &["sh", "-c", script]).await;
    let (socket, log) = run_shim(&b, "print").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect shim");
    let created = shim.state().await.expect("state");
    assert_eq!(created.status, Status::Created as i32);
    // As runc: no process before Start.
    assert!(created.pid == 0 && created.created_at > 0);
    assert!(log_lines(&log).is_empty(), "nothing runs before Start");

    let started = shim.start().await.expect("start");
    assert_eq!(started.status, Status::Running as i32);
    assert!(started.pid > 1);
    let done = within(shim.wait()).await.expect("wait");
    assert_eq!((done.status, done.exit_code, done.exit_signal), (Status::Stopped as i32, 3, 0));
    assert!(done.finished_at >= done.started_at && done.started_at > 0);

    let lines = log_lines(&log);
    // Each stream keeps its order; the two interleave as the pipes are read.
    assert_eq!(lines.iter().find(|l| l.starts_with("stdout")).map(String::as_str), Some("stdout F hello"));
    assert!(lines.contains(&"stderr F oops".to_string()), "{lines:?}");
    assert!(lines.contains(&"stdout F pid=1 host=shimtest cwd=/tmp g=hi".to_string()), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("kcore-visible")), "masked path is hidden: {lines:?}");
    assert!(lines.contains(&"stdout F sys-ro".to_string()), "{lines:?}");
    for dev in ["null", "zero", "urandom", "tty", "pts", "shm", "mqueue"] {
        assert!(lines.contains(&format!("stdout F {dev}")), "/dev/{dev} missing: {lines:?}");
    }
    // The exit is on disk for a gantryd that restarts later.
    let state = std::fs::read(b.dir.join("state.pb")).expect("state file");
    assert!(!state.is_empty());

    shim.shutdown().await.expect("shutdown");
    drop(shim);
    // The shim is gone and removed its socket.
    for _ in 0..100 {
        if !socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!socket.exists());
}

#[tokio::test]
async fn a_terminal_comes_from_the_containers_devpts_or_else_the_hosts() {
    let d = Daemon::start("");
    let script = "test -t 0 && echo is-a-tty; tty; ls -l /proc/self/fd/1";
    for with_devpts in [true, false] {
        let name = if with_devpts { "devpts" } else { "nodevpts" };
        let b = bundle(&d, name, &["sh", "-c", script]).await;
        let config_path = b.dir.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config_path).expect("read")).expect("json");
        config["process"]["terminal"] = true.into();
        if !with_devpts {
            config["mounts"].as_array_mut().expect("mounts").retain(|m| m["destination"] != "/dev/pts");
        }
        std::fs::write(&config_path, config.to_string()).expect("write");
        let (socket, log) = run_shim(&b, name).expect("shim ready");
        let mut shim = ShimClient::connect(&socket).await.expect("connect");
        shim.start().await.expect("start");
        let done = within(shim.wait()).await.expect("wait");
        assert_eq!(done.exit_code, 0, "{name}");
        let lines: Vec<String> = log_lines(&log).iter().map(|l| l.trim_end_matches('\r').to_string()).collect();
        assert!(lines.contains(&"stdout F is-a-tty".to_string()), "{name}: {lines:?}");
        if with_devpts {
            assert!(lines.contains(&"stdout F /dev/pts/0".to_string()), "{lines:?}");
            assert!(lines.iter().any(|l| l.ends_with("/proc/self/fd/1 -> /dev/pts/0")), "{lines:?}");
        } else {
            // No devpts of its own: the host's pty, which has no name inside.
            assert!(lines.contains(&"stdout F not a tty".to_string()), "{lines:?}");
        }
        shim.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn kill_stops_a_running_container_and_shutdown_waits_for_it() {
    let d = Daemon::start("");
    let b = bundle(&d, "sleeper", &["sleep", "1000"]).await;
    let (socket, _log) = run_shim(&b, "sleeper").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    shim.start().await.expect("start");
    let err = shim.shutdown().await.expect_err("running");
    assert!(err.to_string().contains("still running"), "{err}");
    let mut waiter = ShimClient::connect(&socket).await.expect("second connection");
    let wait = tokio::spawn(async move { waiter.wait().await });
    shim.kill(9).await.expect("kill");
    let done = within(wait).await.expect("join").expect("wait");
    assert_eq!((done.exit_code, done.exit_signal), (137, 9));
    shim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_missing_command_fails_start_clearly() {
    let d = Daemon::start("");
    let b = bundle(&d, "missing", &["no-such-command"]).await;
    let (socket, _log) = run_shim(&b, "missing").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    let err = shim.start().await.expect_err("exec fails");
    assert!(err.to_string().contains("no-such-command"), "{err}");
    let done = within(shim.wait()).await.expect("wait");
    assert_eq!(done.status, Status::Stopped as i32);
    assert_ne!(done.exit_code, 0);
    shim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_bind_mount_of_a_missing_source_fails_start() {
    let d = Daemon::start("");
    let b = bundle(&d, "badmount", &["true"]).await;
    let config_path = b.dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("read")).expect("json");
    config["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/data", "type": "bind", "source": "/nonexistent/gantry-test", "options": ["rbind", "ro"]
    }));
    std::fs::write(&config_path, config.to_string()).expect("write");
    // The rootfs is set up at Start (as runc does), so that is where it fails.
    let (socket, _log) = run_shim(&b, "badmount").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    let err = shim.start().await.expect_err("start fails");
    assert!(err.to_string().contains("/nonexistent/gantry-test"), "{err}");
    let done = within(shim.wait()).await.expect("wait");
    assert_eq!((done.status, done.exit_code, done.pid), (Status::Stopped as i32, 128, 0));
    assert!(done.error.contains("/nonexistent/gantry-test"), "{}", done.error);
    shim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn kill_before_start_stops_a_container_that_never_ran() {
    let d = Daemon::start("");
    let b = bundle(&d, "never", &["sleep", "1000"]).await;
    let (socket, log) = run_shim(&b, "never").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    let err = shim.shutdown().await.expect_err("created");
    assert!(err.to_string().contains("still running"), "{err}");
    let mut waiter = ShimClient::connect(&socket).await.expect("second connection");
    let wait = tokio::spawn(async move { waiter.wait().await });
    let killed = shim.kill(9).await.expect("kill");
    assert_eq!((killed.status, killed.exit_code, killed.exit_signal, killed.pid), (Status::Stopped as i32, 137, 9, 0));
    let done = within(wait).await.expect("join").expect("wait");
    assert_eq!(done.status, Status::Stopped as i32);
    let err = shim.start().await.expect_err("stopped");
    assert!(err.to_string().contains("not created"), "{err}");
    assert!(log_lines(&log).is_empty());
    shim.shutdown().await.expect("shutdown");
}

/// The first cgroup2 mount and its controllers.
fn cgroup2() -> Option<(PathBuf, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mountpoint = PathBuf::from(left.split(' ').nth(4)?);
        let controllers = std::fs::read_to_string(mountpoint.join("cgroup.controllers")).unwrap_or_default();
        right.starts_with("cgroup2 ").then_some((mountpoint, controllers))
    })
}

/// Without a v1 devices controller (pure cgroup v2; here, the hybrid
/// layout's devices hierarchy unmounted in the shim's own mount namespace)
/// the device rules become an eBPF program on the container's cgroup2
/// cgroup: allowed devices open, others are refused.
#[tokio::test]
async fn device_rules_without_a_devices_controller_are_an_ebpf_program() {
    let Some((v2_root, controllers)) = cgroup2() else {
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let pure_v2 = v2_root == Path::new("/sys/fs/cgroup");
    // On a hybrid host the shim has a cgroup2 cgroup only where hugetlb lives.
    if !pure_v2 && !controllers.split_whitespace().any(|c| c == "hugetlb") {
        eprintln!("skipped: the cgroup2 tree has no hugetlb controller, so no container cgroup in it");
        return;
    }
    let d = Daemon::start("");
    let script = "echo x > /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null 2>&1 || echo zero-denied; \
                  head -c1 /dev/urandom >/dev/null && echo urandom-ok";
    let b = bundle(&d, "devices", &["sh", "-c", script]).await;
    let config_path = b.dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("read")).expect("json");
    let cgroup = format!("{}/gantry-devices", gantry_tests::cgroup_parent(&d));
    config["linux"]["cgroupsPath"] = cgroup.clone().into();
    config["linux"]["resources"] = serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "r"},
    ]});
    std::fs::write(&config_path, config.to_string()).expect("write");
    let wrapper: &[&str] = if Path::new("/sys/fs/cgroup/devices/devices.list").exists() {
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/cgroup/devices && exec \"$0\" \"$@\"",
        ]
    } else {
        &[]
    };
    let (socket, log) = run_shim_in(&b, "devices", wrapper).expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    shim.start().await.expect("start");
    let done = within(shim.wait()).await.expect("wait");
    assert_eq!(done.exit_code, 0);
    assert_eq!(log_lines(&log), ["stdout F null-ok", "stdout F zero-denied", "stdout F urandom-ok"]);
    let dir = v2_root.join(cgroup.trim_start_matches('/'));
    assert!(dir.is_dir(), "the container's cgroup2 cgroup {}", dir.display());
    shim.shutdown().await.expect("shutdown");
    for _ in 0..100 {
        if !dir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Rewrites the bundle's config.json.
fn patch(b: &Bundle, f: impl FnOnce(&mut serde_json::Value)) {
    let path = b.dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    f(&mut config);
    std::fs::write(&path, config.to_string()).expect("write");
}

/// A host file under /proc/sys, written back on drop if a failure changed it.
struct HostValue(PathBuf, String);

impl HostValue {
    fn read(path: &str) -> HostValue {
        HostValue(path.into(), std::fs::read_to_string(path).expect("read host value"))
    }

    fn unchanged(&self) -> bool {
        std::fs::read_to_string(&self.0).unwrap_or_default() == self.1
    }
}

impl Drop for HostValue {
    fn drop(&mut self) {
        if !self.unchanged() {
            let _ = std::fs::write(&self.0, self.1.trim_end());
        }
    }
}

/// Behind gantryd's own check: the shim refuses what would reach the host
/// (a sysctl or hostname whose namespace the spec does not give the
/// container), so the host keeps its values even for a spec gantryd let by.
#[tokio::test]
async fn the_shim_refuses_sysctls_and_a_hostname_outside_the_containers_namespaces() {
    let d = Daemon::start("");
    let guards = ["kernel/core_pattern", "kernel/msgmax", "net/ipv4/tcp_keepalive_time", "kernel/hostname"]
        .map(|p| HostValue::read(&format!("/proc/sys/{p}")));
    let all = ["pid", "mount", "ipc", "uts", "network"];
    // TYPE, or TYPE=PATH for a namespace joined by path (here the host's own).
    let cases: [(&str, &[&str], (&str, &str)); 5] = [
        ("core", &all, ("kernel.core_pattern", "/tmp/gantry-shim-core-%p")),
        ("msgmax", &["pid", "mount", "uts", "network"], ("kernel.msgmax", "4321")),
        ("hostipc", &["pid", "mount", "uts", "network", "ipc=/proc/self/ns/ipc"], ("kernel.msgmax", "4322")),
        ("keepalive", &["pid", "mount", "ipc", "uts"], ("net.ipv4.tcp_keepalive_time", "1234")),
        ("domain", &["pid", "mount", "ipc", "network"], ("kernel.hostname", "gantry-shim-not-the-host")),
    ];
    for (name, namespaces, (key, value)) in cases {
        let b = bundle(&d, name, &["true"]).await;
        patch(&b, |c| {
            let ns: Vec<serde_json::Value> = namespaces
                .iter()
                .map(|t| match t.split_once('=') {
                    Some((typ, path)) => serde_json::json!({"type": typ, "path": path}),
                    None => serde_json::json!({"type": t}),
                })
                .collect();
            c["linux"]["namespaces"] = ns.into();
            c["linux"]["sysctl"] = serde_json::json!({ key: value });
            c["hostname"] = "".into();
        });
        match run_shim(&b, name) {
            Err(out) => assert!(out.contains(key), "{name}: {out}"),
            Ok((socket, _)) => {
                let mut shim = ShimClient::connect(&socket).await.expect("connect");
                let _ = shim.start().await;
                let _ = within(shim.wait()).await;
                let _ = shim.shutdown().await;
                panic!("{name}: the shim took sysctl {key}");
            }
        }
    }
    // Written only through a procfs: here /proc/sys is a plain directory.
    let b = bundle(&d, "noproc", &["true"]).await;
    let fake = b.dir.join("rootfs/proc/sys/kernel");
    std::fs::create_dir_all(&fake).expect("mkdir");
    std::fs::write(fake.join("shmmax"), "1").expect("write");
    patch(&b, |c| {
        c["mounts"].as_array_mut().expect("mounts").retain(|m| m["destination"] != "/proc");
        c["linux"]["readonlyPaths"] = serde_json::json!([]);
        c["linux"]["maskedPaths"] = serde_json::json!([]);
        c["linux"]["sysctl"] = serde_json::json!({"kernel.shmmax": "123456789"});
    });
    let (socket, _) = run_shim(&b, "noproc").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    let err = shim.start().await.expect_err("sysctls without a procfs");
    assert!(err.to_string().contains("not a procfs"), "{err}");
    let _ = within(shim.wait()).await;
    shim.shutdown().await.expect("shutdown");
    // A hostname without a UTS namespace would be the host's name.
    let b = bundle(&d, "hostname", &["true"]).await;
    patch(&b, |c| c["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "mount"}]));
    let (socket, _) = run_shim(&b, "hostname").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    let err = shim.start().await.expect_err("a hostname without a UTS namespace");
    assert!(err.to_string().contains("UTS"), "{err}");
    let _ = within(shim.wait()).await;
    shim.shutdown().await.expect("shutdown");
    for g in &guards {
        assert!(g.unchanged(), "the host's {} changed", g.0.display());
    }
}

/// What the shim does apply lands inside: a namespaced sysctl read back in
/// the container, and a climbing cgroupsPath kept inside every hierarchy.
#[tokio::test]
async fn the_shim_applies_namespaced_sysctls_inside_and_keeps_its_cgroup_in_the_hierarchies() {
    let d = Daemon::start("");
    let shmmax = HostValue::read("/proc/sys/kernel/shmmax");
    let name = format!("gantry-shim-climb-{}", std::process::id());
    let roots: Vec<PathBuf> = {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mount_point = left.split(' ').nth(4)?;
                (right.starts_with("cgroup ") || right.starts_with("cgroup2 ")).then(|| PathBuf::from(mount_point))
            })
            .collect()
    };
    // Removes what a failure left, inside the hierarchies and out; dropped
    // after the bundle, which kills the shim and container (a killed process
    // leaves its cgroup once reaped: retried).
    struct Cleanup(Vec<PathBuf>, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(Path::new("/tmp").join(&self.1));
            for _ in 0..50 {
                let mut clean = true;
                for root in &self.0 {
                    let _ = std::fs::remove_dir(root.join("tmp").join(&self.1).join("c"));
                    clean &= std::fs::remove_dir(root.join("tmp").join(&self.1)).is_ok()
                        || !root.join("tmp").join(&self.1).exists();
                    let _ = std::fs::remove_dir(root.join("tmp"));
                }
                if clean {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    let _cleanup = Cleanup(roots.clone(), name.clone());
    let script = "cat /proc/sys/kernel/shmmax; grep :memory: /proc/self/cgroup";
    let b = bundle(&d, "inside", &["sh", "-c", script]).await;
    patch(&b, |c| {
        c["linux"]["sysctl"] = serde_json::json!({"kernel/shmmax": "123456789"});
        c["linux"]["cgroupsPath"] = format!("../../../../../../tmp/{name}/c").into();
    });
    let (socket, log) = run_shim(&b, "inside").expect("shim ready");
    assert!(!Path::new("/tmp").join(&name).exists(), "the cgroup climbed out to /tmp");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    shim.start().await.expect("start");
    let done = within(shim.wait()).await.expect("wait");
    assert_eq!(done.exit_code, 0);
    assert_eq!(log_lines(&log).first().map(String::as_str), Some("stdout F 123456789"));
    assert!(log_lines(&log).iter().any(|l| l.ends_with(&format!(":memory:/tmp/{name}/c"))), "{:?}", log_lines(&log));
    assert!(shmmax.unchanged(), "the host's kernel.shmmax changed");
    shim.shutdown().await.expect("shutdown");
    for root in &roots {
        let p = root.join("tmp").join(&name);
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(!Path::new("/tmp").join(&name).exists(), "the cgroup climbed out to /tmp");
}

/// CVE-2025-31133: masked paths are bound from a /dev/null checked to be
/// the null device. Here the spec has no /dev tmpfs, so /dev/null is the
/// image's: a planted regular file, which a mask bound from it would make
/// readable (and writable) as /proc/kcore. The start is refused.
/// CVE-2025-52881: a masked or read-only path under /proc that the image
/// redirects off procfs (here /proc itself a tmpfs the spec mounts) is
/// refused rather than masked in the wrong place.
#[tokio::test]
async fn masks_come_only_from_a_verified_null_device_and_only_onto_procfs() {
    let d = Daemon::start("");
    let b = bundle(&d, "planted-null", &["sh", "-c", "cat /proc/kcore /proc/keys; echo END"]).await;
    patch(&b, |c| {
        c["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
    });
    let dev = b.dir.join("rootfs/dev");
    std::fs::create_dir_all(&dev).expect("mkdir dev");
    let _ = std::fs::remove_file(dev.join("null"));
    std::fs::write(dev.join("null"), "PLANTED\n").expect("plant /dev/null");
    let (socket, log) = run_shim(&b, "planted-null").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    let err = shim.start().await.expect_err("refused");
    assert!(err.to_string().contains("/dev/null is not the null device"), "{err}");
    let _ = within(shim.wait()).await;
    let lines = log_lines(&log);
    assert!(!lines.iter().any(|l| l.contains("PLANTED")), "a mask came from the container's /dev/null: {lines:?}");
    shim.shutdown().await.expect("shutdown");

    // /proc a tmpfs: /proc/sysrq-trigger there is not procfs's.
    let b = bundle(&d, "fake-proc", &["true"]).await;
    patch(&b, |c| {
        for m in c["mounts"].as_array_mut().expect("mounts") {
            if m["destination"] == "/proc" {
                *m = serde_json::json!({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"});
            }
        }
        c["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
            "destination": "/proc/sysrq-trigger", "type": "tmpfs", "source": "tmpfs"
        }));
    });
    let (socket, _log) = run_shim(&b, "fake-proc").expect("shim ready");
    let mut shim = ShimClient::connect(&socket).await.expect("connect");
    let err = shim.start().await.expect_err("refused");
    assert!(err.to_string().contains("not on procfs"), "{err}");
    let _ = within(shim.wait()).await;
    shim.shutdown().await.expect("shutdown");
}
