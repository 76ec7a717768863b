//! RuntimeClass handlers: Debian's runc and crun as external OCI runtimes
//! under gantry-shim, beside the built-in handler, driven through the CRI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_proto::cri::v1::{
    ContainerState, LinuxContainerConfig, LinuxContainerResources, ListPodSandboxRequest, NamespaceMode,
    PodSandboxStatusRequest, RunPodSandboxRequest, StatusRequest, StopContainerRequest,
};
use gantry_tests::pods::*;
use gantry_tests::{Cri, Daemon};
use tonic::Code;

const HANDLERS: [(&str, &str); 2] = [("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")];

/// A daemon offering runc and crun (each with its own root in the test's dir).
fn daemon_with_handlers(extra: &str) -> Daemon {
    let d = Daemon::prepare("");
    let mut toml = String::new();
    for (name, binary) in HANDLERS {
        let root = d.dir.path().join("runtime-roots").join(name);
        toml.push_str(&format!("[runtimes.{name}]\nbinary = {binary:?}\nroot = {:?}\n", root.display().to_string()));
    }
    toml.push_str(extra);
    d.append_config(&toml);
    let mut d = d;
    d.start_again();
    d
}

/// Debian bookworm's crun (1.8) refuses a hybrid host whose cgroup2 tree
/// holds controllers, whatever its cgroup manager (this VM's holds
/// hugetlb): it runs only in the pure cgroup v2 pass (tests/cgroup2) there.
fn runs_here(handler: &str) -> bool {
    handler != "crun" || !hybrid_with_v2_controllers()
}

fn hybrid_with_v2_controllers() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").is_ok_and(|c| !c.trim().is_empty())
}

fn runtime_root(d: &Daemon, name: &str) -> PathBuf {
    d.dir.path().join("runtime-roots").join(name)
}

async fn run_pod_with(cri: &mut Cri, d: &Daemon, name: &str, handler: &str) -> Result<Pod, tonic::Status> {
    let config = pod_config(d, name, NamespaceMode::Container);
    std::fs::create_dir_all(&config.log_directory).expect("log dir");
    let logs = PathBuf::from(&config.log_directory);
    let id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: handler.into() })
        .await?
        .into_inner()
        .pod_sandbox_id;
    Ok(Pod { id, logs })
}

async fn exec(cri: &mut Cri, id: &str, cmd: &[&str]) -> (i32, String) {
    let (code, stdout, _) = gantry_tests::node_pass::exec(cri, id, cmd).await.expect("exec_sync");
    (code, stdout)
}

/// The runtime's state directory holds no container (runc and crun keep
/// one subdirectory per container there).
fn runtime_state_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root).map(|r| r.filter_map(Result::ok).all(|e| !e.path().is_dir())).unwrap_or(true)
}

#[tokio::test]
async fn runc_and_crun_run_containers_with_logs_exec_limits_and_exit_codes() {
    let d = daemon_with_handlers("");
    let mut cri = setup(&d).await;
    let offered = cri.runtime.status(StatusRequest { verbose: false }).await.expect("status").into_inner();
    let names: Vec<&str> = offered.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["", "crun", "runc"], "{offered:?}");
    let runc = offered.runtime_handlers.iter().find(|h| h.name == "runc").and_then(|h| h.features).expect("runc");
    assert!(!runc.user_namespaces && !runc.recursive_read_only_mounts);

    for (name, _) in HANDLERS {
        if !runs_here(name) {
            eprintln!("{name} refuses this host's hybrid cgroup layout: checked by tests/cgroup2 instead");
            continue;
        }
        let pod = run_pod_with(&mut cri, &d, &format!("pod-{name}"), name).await.expect("run pod");
        let pod_status = cri
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: false })
            .await
            .expect("pod status")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(pod_status.runtime_handler, name);
        let listed = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.expect("list");
        assert!(listed.into_inner().items.iter().any(|p| p.id == pod.id && p.runtime_handler == name));

        // Output to the CRI log, the exit code, the process the runtime made.
        let ok = create(&mut cri, &pod, container("ok", &["sh", "-c", "echo hello; echo warn >&2; exit 3"]))
            .await
            .expect("create");
        assert!(
            runtime_root(&d, name).join(&ok).is_dir(),
            "{name} create made its state for the container (it is the {name} handler's)"
        );
        start(&mut cri, &ok).await;
        let s = wait_exited(&mut cri, &ok).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"), "{name}");
        let log = log_of(&pod, "ok");
        assert!(log.contains(&"stdout F hello".to_string()) && log.contains(&"stderr F warn".to_string()), "{log:?}");

        // A long-running one: exec inside it, its memory limit, then stop.
        let mut long = container("long", &["sleep", "1000"]);
        long.linux = Some(LinuxContainerConfig {
            security_context: long.linux.and_then(|l| l.security_context),
            resources: Some(LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() }),
        });
        let long = create(&mut cri, &pod, long).await.expect("create long");
        start(&mut cri, &long).await;
        assert_eq!(status(&mut cri, &long).await.state, ContainerState::ContainerRunning as i32);
        assert_eq!(
            exec(&mut cri, &long, &["sh", "-c", "echo in-$(hostname)"]).await,
            (0, format!("in-pod-{name}-host"))
        );
        let (code, pid1) = exec(&mut cri, &long, &["cat", "/proc/1/cmdline"]).await;
        assert_eq!(
            (code, pid1.replace('\0', " ").trim()),
            (0, "sleep 1000"),
            "{name}: the container's own PID namespace"
        );
        // `sleep` is PID 1 of its namespace: SIGTERM leaves it, SIGKILL follows.
        cri.runtime
            .stop_container(StopContainerRequest { container_id: long.clone(), timeout: 1 })
            .await
            .expect("stop");
        let s = status(&mut cri, &long).await;
        assert_eq!((s.state, s.exit_code), (ContainerState::ContainerExited as i32, 137), "{name}");

        // A terminal comes over the runtime's console socket.
        let mut tty = container("tty", &["sh", "-c", "tty"]);
        tty.tty = true;
        let tty = create(&mut cri, &pod, tty).await.expect("create tty");
        start(&mut cri, &tty).await;
        assert_eq!(wait_exited(&mut cri, &tty).await.exit_code, 0);
        let log: Vec<String> = log_of(&pod, "tty").iter().map(|l| l.trim_end_matches('\r').to_string()).collect();
        assert!(log.iter().any(|l| l.starts_with("stdout F /dev/pts/")), "{name}: {log:?}");

        // An OOM kill is reported as for the built-in handler.
        let mut oom = container("oom", &["sh", "-c", "tail /dev/zero"]);
        oom.linux = Some(LinuxContainerConfig {
            security_context: oom.linux.and_then(|l| l.security_context),
            resources: Some(LinuxContainerResources { memory_limit_in_bytes: 16 << 20, ..Default::default() }),
        });
        let oom = create(&mut cri, &pod, oom).await.expect("create oom");
        start(&mut cri, &oom).await;
        assert_eq!(wait_exited(&mut cri, &oom).await.reason, "OOMKilled", "{name}");

        remove_pod(&mut cri, &pod).await;
        assert!(runtime_state_is_empty(&runtime_root(&d, name)), "{name} delete ran for every container");
    }
    assert_eq!(count(&d.state.join("containers")), 0, "bundles removed");
    assert_eq!(count(&d.images_root().join("snapshots/active")), 0, "writable layers removed");
}

#[tokio::test]
async fn a_runc_container_outlives_a_killed_gantryd() {
    let mut d = daemon_with_handlers("");
    let mut cri = setup(&d).await;
    let pod = run_pod_with(&mut cri, &d, "survivor", "runc").await.expect("run pod");
    let long = create(&mut cri, &pod, container("long", &["sleep", "1000"])).await.expect("create");
    let short = create(&mut cri, &pod, container("short", &["sh", "-c", "sleep 1; exit 7"])).await.expect("create");
    start(&mut cri, &long).await;
    start(&mut cri, &short).await;
    d.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.start_again();
    let mut cri = d.connect().await;
    assert_eq!(status(&mut cri, &long).await.state, ContainerState::ContainerRunning as i32);
    let s = wait_exited(&mut cri, &short).await;
    assert_eq!(s.exit_code, 7);
    assert_eq!(exec(&mut cri, &long, &["echo", "still-here"]).await, (0, "still-here".to_string()));
    cri.runtime.stop_container(StopContainerRequest { container_id: long.clone(), timeout: 1 }).await.expect("stop");
    remove_pod(&mut cri, &pod).await;
    assert!(runtime_state_is_empty(&runtime_root(&d, "runc")));
}

#[tokio::test]
async fn unknown_missing_and_failing_handlers_are_clear_errors_that_leave_nothing() {
    let d = Daemon::prepare("");
    // A runtime that fails every command, as a broken install would.
    let broken = d.dir.path().join("broken-runtime");
    std::fs::write(&broken, "#!/bin/sh\necho \"broken-runtime: cannot create anything\" >&2\nexit 1\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d.append_config(&format!(
        "[runtimes.broken]\nbinary = {:?}\n[runtimes.gone]\nbinary = \"/nonexistent/gantry-test-runtime\"\n",
        broken.display().to_string()
    ));
    let mut d = d;
    d.start_again();
    let mut cri = setup(&d).await;

    let err = run_pod_with(&mut cri, &d, "unknown", "kata").await.expect_err("unknown handler");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    for name in ["\"kata\"", "\"broken\"", "\"gone\"", "built-in"] {
        assert!(err.message().contains(name), "{name} missing from {err}");
    }
    let err = run_pod_with(&mut cri, &d, "missing", "gone").await.expect_err("missing binary");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("/nonexistent/gantry-test-runtime"), "{err}");
    assert_eq!(count(&d.state.join("sandboxes")), 0, "no pod left by a refused RunPodSandbox");

    let pod = run_pod_with(&mut cri, &d, "broken", "broken").await.expect("the pod itself runs");
    let err = create(&mut cri, &pod, container("c", &["true"])).await.expect_err("the runtime fails create");
    assert!(err.message().contains("broken-runtime: cannot create anything"), "{err}");
    assert_eq!(count(&d.state.join("containers")), 0, "no bundle left");
    assert_eq!(count(&d.images_root().join("snapshots/active")), 0, "no writable layer left");
    remove_pod(&mut cri, &pod).await;
}
