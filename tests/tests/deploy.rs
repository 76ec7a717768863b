//! What deploy/ installs on a node: the systemd unit is one systemd accepts,
//! and gantryd tells systemd when it is ready and when it stops (Type=notify).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use gantry_tests::bin_dir;

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo().join("deploy/gantryd.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/gantryd"), "the unit runs the installed binary");
    // verify also checks that ExecStart exists: point it at the built one.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gantryd.service");
    let gantryd = bin_dir().join("gantryd");
    std::fs::write(&path, unit.replace("/usr/local/bin/gantryd", &gantryd.display().to_string())).expect("write");
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on most warnings; a warning about our unit is a failure too.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("gantryd.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn gantryd_notifies_systemd_ready_then_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let socket = dir.path().join("gantry.sock");
    let mut child = Command::new(bin_dir().join("gantryd"))
        .arg("--config")
        .arg("/dev/null")
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gantryd");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).expect("a readiness message");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    let serving = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let stopping = notify.recv(&mut buf).map(|n| String::from_utf8_lossy(&buf[..n]).to_string());
    let status = child.wait().expect("wait");
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    assert!(serving, "READY=1 came before the socket served");
    assert!(stopping.as_deref().is_ok_and(|m| m.lines().any(|l| l == "STOPPING=1")), "{stopping:?}");
    assert!(status.success(), "gantryd exited with {status}");
}
