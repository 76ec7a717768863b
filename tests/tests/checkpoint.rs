//! CheckpointContainer with criu: a running container dumped into an
//! archive at kubelet's path and left running; clear errors otherwise.
//!
//! A real dump needs a criu that works with the running kernel. Debian
//! bookworm's criu 3.17 fails its kernel checks on this VM's 6.18 kernel
//! (vdso layout), so tests/run.sh unpacks Debian unstable's criu (4.2) with
//! its own libraries and passes it as `GANTRY_TEST_CRIU`: with it the dump
//! must succeed (the archive's members, criu's images and log, the changed
//! file in rootfs-diff.tar, the container still counting afterwards, no work
//! dir left). Without it (`cargo test` alone) the `criu` in PATH is used and,
//! where that criu fails `criu check`, the dump is checked to fail cleanly.

use std::io::Read;
use std::path::Path;

use gantry_proto::cri::v1::{CheckpointContainerRequest, NamespaceMode, StopContainerRequest};
use gantry_tests::pods::*;
use gantry_tests::{Cri, Daemon};
use tonic::Code;

async fn checkpoint(cri: &mut Cri, id: &str, location: &Path) -> Result<(), tonic::Status> {
    cri.runtime
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.into(),
            location: location.display().to_string(),
            timeout: 60,
        })
        .await
        .map(|_| ())
}

/// The criu tests/run.sh prepares (Debian unstable's, which works on this
/// kernel), if any: then the dump must succeed.
fn test_criu() -> Option<String> {
    std::env::var("GANTRY_TEST_CRIU").ok().filter(|p| !p.is_empty())
}

fn criu_works() -> bool {
    std::process::Command::new("criu").arg("check").output().is_ok_and(|o| o.status.success())
}

/// The names in a tar archive.
fn names(archive: &Path) -> Vec<String> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("open archive"));
    tar.entries().expect("entries").map(|e| e.expect("entry").path().expect("path").display().to_string()).collect()
}

fn member(archive: &Path, name: &str) -> Vec<u8> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("open archive"));
    for e in tar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path().expect("path").to_str() == Some(name) {
            let mut v = vec![];
            e.read_to_end(&mut v).expect("read member");
            return v;
        }
    }
    panic!("{name} not in {}", archive.display());
}

async fn running(cri: &mut Cri, id: &str) -> bool {
    status(cri, id).await.state == gantry_proto::cri::v1::ContainerState::ContainerRunning as i32
}

#[tokio::test]
async fn a_running_container_is_checkpointed_and_keeps_running() {
    let criu = test_criu();
    let d = Daemon::start(&criu.as_ref().map(|c| format!("criu_path = {c:?}\n")).unwrap_or_default());
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "ckpt", NamespaceMode::Container).await;
    let script = "echo changed > /data.txt; rm /etc/motd 2>/dev/null; i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done";
    let mut c = container("counter", &["sh", "-c", script]);
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options =
        Some(gantry_proto::cri::v1::NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() });
    let id = create(&mut cri, &pod, c).await.expect("create");
    start(&mut cri, &id).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let location = d.dir.path().join("checkpoint-counter.tar");

    match checkpoint(&mut cri, &id, &location).await {
        Ok(()) => {
            let names = names(&location);
            for want in [
                "spec.dump",
                "config.dump",
                "rootfs-diff.tar",
                "dump.log",
                "checkpoint/inventory.img",
                "checkpoint/pstree.img",
            ] {
                assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
            }
            let config: serde_json::Value =
                serde_json::from_slice(&member(&location, "config.dump")).expect("config.dump JSON");
            assert_eq!(config["id"], id.as_str());
            let diff = member(&location, "rootfs-diff.tar");
            let mut inner = tar::Archive::new(diff.as_slice());
            let mut data = None;
            let mut inner_names = vec![];
            for e in inner.entries().expect("entries") {
                let mut e = e.expect("entry");
                let name = e.path().expect("path").display().to_string();
                if name == "data.txt" {
                    let mut v = String::new();
                    e.read_to_string(&mut v).expect("read data.txt");
                    data = Some(v);
                }
                inner_names.push(name);
            }
            assert_eq!(data.as_deref(), Some("changed\n"), "data.txt in {inner_names:?}");
            let log = String::from_utf8_lossy(&member(&location, "dump.log")).into_owned();
            assert!(log.contains("Dumping finished successfully"), "{log}");
        }
        Err(e) => {
            // Only where criu cannot work on this kernel.
            assert!(criu.is_none(), "the checkpoint with {criu:?} failed: {e}");
            assert!(!criu_works(), "criu works here, yet the checkpoint failed: {e}");
            assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
            assert!(e.message().contains("criu"), "{e}");
            assert!(!location.exists(), "a failed checkpoint leaves no archive");
            eprintln!("criu cannot dump on this kernel; the real dump is checked where criu works: {e}");
        }
    }
    // Unharmed either way, and nothing left beside the archive.
    assert!(running(&mut cri, &id).await);
    let n1: u64 = exec_out(&mut cri, &id, "cat /tmp/n").await.parse().expect("count");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let n2: u64 = exec_out(&mut cri, &id, "cat /tmp/n").await.parse().expect("count");
    assert!(n2 > n1, "the container goes on counting: {n1} then {n2}");
    let leftovers: Vec<_> = std::fs::read_dir(d.dir.path())
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".gantry-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    remove_pod(&mut cri, &pod).await;
}

async fn exec_out(cri: &mut Cri, id: &str, script: &str) -> String {
    let r = cri
        .runtime
        .exec_sync(gantry_proto::cri::v1::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("exec_sync")
        .into_inner();
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

#[tokio::test]
async fn checkpoints_that_cannot_be_made_are_clear_errors_and_harm_nothing() {
    let d = Daemon::start("criu_path = \"/nonexistent/criu\"\n");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "ckptbad", NamespaceMode::Container).await;
    let sleeper = create(&mut cri, &pod, container("sleeper", &["sleep", "600"])).await.expect("create");
    start(&mut cri, &sleeper).await;
    let created = create(&mut cri, &pod, container("created", &["true"])).await.expect("create");
    let exited = create(&mut cri, &pod, container("exited", &["true"])).await.expect("create");
    start(&mut cri, &exited).await;
    wait_exited(&mut cri, &exited).await;
    let mut tty = container("tty", &["sleep", "600"]);
    tty.tty = true;
    tty.stdin = true;
    let tty = create(&mut cri, &pod, tty).await.expect("create");
    start(&mut cri, &tty).await;
    let at = d.dir.path().join("out.tar");

    let cases: Vec<(&str, String, Code, &str)> = vec![
        ("no-such-container", at.display().to_string(), Code::NotFound, "no-such-container"),
        (&sleeper, "relative/out.tar".into(), Code::InvalidArgument, "relative/out.tar"),
        (&sleeper, d.dir.path().join("missing/out.tar").display().to_string(), Code::InvalidArgument, "does not exist"),
        (&sleeper, d.dir.path().display().to_string(), Code::InvalidArgument, "is a directory"),
        (&created, at.display().to_string(), Code::FailedPrecondition, "not running"),
        (&exited, at.display().to_string(), Code::FailedPrecondition, "not running"),
        (&tty, at.display().to_string(), Code::FailedPrecondition, "terminal"),
        (&sleeper, at.display().to_string(), Code::FailedPrecondition, "/nonexistent/criu"),
    ];
    for (id, location, code, words) in cases {
        let err = cri
            .runtime
            .checkpoint_container(CheckpointContainerRequest { container_id: id.into(), location, timeout: 10 })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{id}: {err}");
        assert!(err.message().contains(words), "{words:?} missing from {err}");
    }
    assert!(!at.exists());
    assert!(running(&mut cri, &sleeper).await, "the container is unharmed");
    cri.runtime.stop_container(StopContainerRequest { container_id: sleeper, timeout: 1 }).await.expect("stop");
    remove_pod(&mut cri, &pod).await;
}
