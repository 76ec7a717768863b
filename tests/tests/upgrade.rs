//! Upgrading gantryd on a node with pods running: a new binary over the old
//! one and a restart leave every container running, lose no log line, and
//! serve exec, attach and port-forward for pods the old binary started; the
//! state a release writes (tests/fixtures/state-format-1, written by this
//! one) loads in later ones, and a record of a newer format stops gantryd
//! instead of being misread or removed.

use std::path::Path;
use std::time::Duration;

use gantry_proto::cri::v1::{
    AttachRequest, ContainerState, ExecRequest, ExecSyncRequest, ListContainersRequest, ListPodSandboxRequest,
    NamespaceMode, PortForwardRequest, RemovePodSandboxRequest,
};
use gantry_tests::pods::*;
use gantry_tests::streaming::connect;
use gantry_tests::{bin_dir, Daemon};

const PODS: usize = 20;
const FIXTURE: &str = "tests/fixtures/state-format-1";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").join(FIXTURE)
}

/// Installs `name` from the build into `dir` as an installer does: written
/// beside it, then renamed over the running one.
fn install(name: &str, dir: &Path) {
    let staged = dir.join(format!(".{name}.new"));
    std::fs::copy(bin_dir().join(name), &staged).expect("stage binary");
    std::fs::rename(&staged, dir.join(name)).expect("replace binary");
}

/// The counter a container prints, line by line: 0, 1, 2…
fn counted(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect()
}

#[tokio::test]
async fn a_new_binary_and_a_restart_leave_running_pods_untouched() {
    let mut d = Daemon::prepare("");
    let bin = d.dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    install("gantryd", &bin);
    install("gantry-shim", &bin);
    d.bin = bin.clone();
    d.start_again();
    let mut cri = setup(&d).await;
    let counter = ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done"];
    let mut running = Vec::new();
    for n in 0..PODS {
        let pod = run_pod(&mut cri, &d, &format!("up-{n}"), NamespaceMode::Pod).await;
        let id = create(&mut cri, &pod, container("counter", &counter)).await.expect("create");
        start(&mut cri, &id).await;
        let started_at = status(&mut cri, &id).await.started_at;
        running.push((pod, id, started_at));
    }
    // A server in one pod for port-forward after the upgrade.
    let server = create(&mut cri, &running[0].0, container("echo", &["nc", "-ll", "-p", "8080", "-e", "cat"]))
        .await
        .expect("create server");
    start(&mut cri, &server).await;
    // And one with stdin to attach to.
    let mut cat = container("cat", &["cat"]);
    cat.stdin = true;
    cat.stdin_once = true;
    let cat = create(&mut cri, &running[2].0, cat).await.expect("create cat");
    start(&mut cri, &cat).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    install("gantryd", &bin);
    install("gantry-shim", &bin);
    d.restart();
    let mut cri = d.connect().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (pod, id, started_at) in &running {
        let s = status(&mut cri, id).await;
        assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{id}");
        assert_eq!(s.started_at, *started_at, "{id} was not restarted");
        // Every line the container printed across the restart is there, in order.
        let ticks = counted(&log_of(pod, "counter"));
        assert!(ticks.len() > 10, "{id}: {} lines", ticks.len());
        assert!(ticks.iter().enumerate().all(|(i, t)| *t == i as u64), "{id}: a line was lost: {ticks:?}");
        let out = cri
            .runtime
            .exec_sync(ExecSyncRequest { container_id: id.clone(), cmd: vec!["echo".into(), "ok".into()], timeout: 10 })
            .await
            .expect("exec_sync")
            .into_inner();
        assert_eq!(out.stdout, b"ok\n");
    }

    // The streaming server of the new binary, on pods of the old one.
    let id = &running[1].1;
    let url = cri
        .runtime
        .exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo upgraded".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .expect("exec")
        .into_inner()
        .url;
    let mut c = connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade to SPDY");
    let [error, stdout, stderr] = c.open_streams(["error", "stdout", "stderr"]).await;
    assert_eq!(c.receive(&[error, stdout, stderr]).await.text(stdout), "upgraded\n");

    let url = cri
        .runtime
        .attach(AttachRequest { container_id: cat.clone(), stdin: true, stdout: true, stderr: true, tty: false })
        .await
        .expect("attach")
        .into_inner()
        .url;
    let mut c = connect(&url, &["v4.channel.k8s.io"]).await.expect("attach upgrade");
    let [error, stdin, stdout, stderr] = c.open_streams(["error", "stdin", "stdout", "stderr"]).await;
    c.send(stdin, b"attached after the upgrade\n", true).await;
    assert_eq!(c.receive(&[error, stdout, stderr]).await.text(stdout), "attached after the upgrade\n");

    let url = cri
        .runtime
        .port_forward(PortForwardRequest { pod_sandbox_id: running[0].0.id.clone(), port: vec![8080] })
        .await
        .expect("port forward")
        .into_inner()
        .url;
    let mut c = connect(&url, &["portforward.k8s.io"]).await.expect("port-forward upgrade");
    let err = c.open(&[("streamtype", "error"), ("port", "8080"), ("requestid", "1")]).await;
    let data = c.open(&[("streamtype", "data"), ("port", "8080"), ("requestid", "1")]).await;
    c.send(data, b"through the new gantryd\n", false).await;
    c.send(data, b"", true).await;
    assert_eq!(c.receive(&[data, err]).await.text(data), "through the new gantryd\n");

    for (pod, _, _) in &running {
        remove_pod(&mut cri, pod).await;
    }
}

#[tokio::test]
async fn state_written_by_this_release_loads() {
    let mut d = Daemon::prepare("");
    copy_tree(&fixture(), &d.state);
    d.start_again();
    let mut cri = d.connect().await;
    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.expect("list pods").into_inner();
    assert_eq!(pods.items.len(), 1, "{pods:?}");
    let pod = &pods.items[0];
    let meta = pod.metadata.as_ref().expect("metadata");
    assert_eq!((meta.name.as_str(), meta.namespace.as_str()), ("fixture-pod", "upgrade"));
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("fixture"));
    let containers =
        cri.runtime.list_containers(ListContainersRequest::default()).await.expect("list").into_inner().containers;
    assert_eq!(containers.len(), 1, "{containers:?}");
    let c = &containers[0];
    assert_eq!(c.pod_sandbox_id, pod.id);
    let meta = c.metadata.as_ref().expect("metadata");
    assert_eq!((meta.name.as_str(), meta.attempt), ("fixture-app", 2));
    assert_eq!(c.annotations.get("io.kubernetes.container.restartCount").map(String::as_str), Some("2"));
    assert!(c.image.as_ref().is_some_and(|i| i.image.ends_with("/gantry/busybox:latest")), "{c:?}");
    // Its shim is long gone: it is removed like any other.
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() })
        .await
        .expect("remove the loaded pod");
    assert_eq!(count(&d.state.join("sandboxes")) + count(&d.state.join("containers")), 0);
}

#[test]
fn a_record_of_a_newer_format_stops_gantryd_and_stays() {
    let d = Daemon::prepare("");
    copy_tree(&fixture(), &d.state);
    let record = std::fs::read_dir(d.state.join("containers"))
        .expect("containers")
        .flatten()
        .next()
        .expect("one container")
        .path()
        .join("record.json");
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).expect("read")).expect("json");
    value["format"] = 2.into();
    value["a_field_of_the_future"] = "kept".into();
    let newer = serde_json::to_vec(&value).expect("json");
    std::fs::write(&record, &newer).expect("write");
    let out = d.run_to_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("newer gantryd") && stderr.contains(&record.display().to_string()), "{stderr}");
    assert_eq!(std::fs::read(&record).expect("still there"), newer, "neither removed nor rewritten");
    assert_eq!(count(&d.state.join("sandboxes")), 1, "nothing else removed");
}
