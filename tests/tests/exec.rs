//! ExecSync: a command run inside a running container (its namespaces,
//! cgroup, user and environment), its output and exit code, the deadline,
//! and what is refused.

use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{
    ExecSyncRequest, ExecSyncResponse, Int64Value, KeyValue, NamespaceMode, StopContainerRequest,
};
use gantry_tests::pods::*;
use gantry_tests::Daemon;
use tonic::Code;

async fn exec(
    cri: &mut gantry_tests::Cri,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    cri.runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn exec_sync_runs_inside_the_container_with_its_identity() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "exec", NamespaceMode::Pod).await;
    let mut config = container("app", &["sh", "-c", "echo started; exec sleep 60"]);
    config.envs = vec![KeyValue { key: "GREETING".into(), value: "hello".into() }];
    config.working_dir = "/tmp".into();
    if let Some(sc) = config.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.run_as_user = Some(Int64Value { value: 1000 });
    }
    let id = create(&mut cri, &pod, config).await.expect("create");
    start(&mut cri, &id).await;

    let out = exec(&mut cri, &id, &["sh", "-c", "echo out $GREETING; echo err >&2; exit 3"], 0).await.expect("exec");
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).as_str(), out.exit_code), ("out hello\n", "err\n", 3));

    // The container's user, working dir, hostname, root and cgroup.
    let out = exec(&mut cri, &id, &["sh", "-c", "id -u; pwd; hostname; cat /proc/self/cgroup"], 5).await.unwrap();
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[..3], ["1000", "/tmp", "exec-host"], "{stdout}");
    assert!(
        lines[3..].iter().any(|l| l.ends_with(&format!("/gantry-{id}"))),
        "not in the container's cgroup: {stdout}"
    );
    // Its PID namespace: the container's processes are visible, the host's are not.
    let out = exec(&mut cri, &id, &["ps", "-o", "args"], 5).await.unwrap();
    let ps = text(&out.stdout);
    assert!(ps.contains("sleep 60") && !ps.contains("gantryd"), "{ps}");
    // A large output arrives whole.
    let out = exec(&mut cri, &id, &["sh", "-c", "head -c 3000000 /dev/zero"], 10).await.unwrap();
    assert_eq!(out.stdout.len(), 3_000_000);

    // A command that does not exist: exit 127 and a message, as a shell says it.
    let out = exec(&mut cri, &id, &["no-such-command"], 5).await.unwrap();
    assert_eq!(out.exit_code, 127);
    assert!(text(&out.stderr).contains("no-such-command"), "{}", text(&out.stderr));
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn exec_sync_is_killed_at_its_deadline() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "timeout", NamespaceMode::Pod).await;
    // The pod's PID namespace, as kubelet's default: an orphan there would
    // linger as a zombie, not vanish.
    let id = create(&mut cri, &pod, with_pid_mode("app", &["sleep", "60"], NamespaceMode::Pod)).await.expect("create");
    start(&mut cri, &id).await;

    let began = Instant::now();
    let err = exec(&mut cri, &id, &["sleep", "37"], 1).await.expect_err("must time out");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("timed out"), "{}", err.message());
    assert!(began.elapsed() < Duration::from_secs(5), "took {:?}", began.elapsed());
    // The command is dead by the time the answer comes (kubelet's probes and
    // critest look right away).
    // Not even as a zombie: only the container's own sleep is left.
    let ps = text(&exec(&mut cri, &id, &["ps", "-o", "stat,args"], 5).await.unwrap().stdout);
    assert_eq!(ps.lines().filter(|l| l.contains("sleep")).count(), 1, "the timed-out command is still there: {ps}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn exec_sync_refuses_bad_input() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "refuse", NamespaceMode::Pod).await;
    let id = create(&mut cri, &pod, container("app", &["sleep", "60"])).await.expect("create");

    let err = exec(&mut cri, &id, &["true"], 5).await.expect_err("created, not running");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    start(&mut cri, &id).await;
    let err = exec(&mut cri, &id, &[], 5).await.expect_err("empty command");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = exec(&mut cri, "no-such-container", &["true"], 5).await.expect_err("unknown container");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-container"), "{}", err.message());

    cri.runtime.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.expect("stop");
    let err = exec(&mut cri, &id, &["true"], 5).await.expect_err("exited");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&id), "{}", err.message());
    remove_pod(&mut cri, &pod).await;
}
