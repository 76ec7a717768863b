//! What deploy/ installs on a node: the systemd unit is one systemd accepts,
//! and gantryd tells systemd when it is ready and when it stops (Type=notify).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
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

/// The Kubernetes versions whose API the manifests must satisfy.
const KUBERNETES: [&str; 5] = ["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"];

fn validate(files: &[&Path], version: &str) -> std::process::Output {
    let python = std::env::var("GANTRY_TEST_PYTHON")
        .expect("GANTRY_TEST_PYTHON is not set: run the integration tests through tests/run.sh");
    Command::new(python)
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate")
}

#[test]
fn the_manifests_match_the_kubernetes_schema_of_every_supported_release() {
    let install = repo().join("deploy/daemonset.yaml");
    let uninstall = repo().join("deploy/uninstall-daemonset.yaml");
    let classes = repo().join("deploy/runtimeclasses.yaml");
    for version in KUBERNETES {
        let out = validate(&[&install, &uninstall, &classes], version);
        assert!(out.status.success(), "Kubernetes {version}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // The validator does refuse a wrong manifest.
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&install).expect("read").replace("hostPID: true", "hostPid: true");
    std::fs::write(&broken, text).expect("write");
    assert!(!validate(&[&broken], KUBERNETES[0]).status.success(), "an unknown field must fail validation");
}

/// A throwaway node root: what the DaemonSet mounts, and a stand-in for
/// systemctl that records its calls.
struct Node {
    root: tempfile::TempDir,
}

impl Node {
    fn new(with_systemd: bool) -> Node {
        let root = tempfile::tempdir().expect("temp dir");
        for d in ["usr/local/bin", "etc/systemd/system", "etc/gantry", "run"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        if with_systemd {
            std::fs::create_dir_all(root.path().join("run/systemd/system")).expect("mkdir");
        }
        let fake = root.path().join("run/fake-systemctl");
        std::fs::write(&fake, "#!/bin/sh\necho \"$@\" >> /host/run/systemctl.log\n").expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        Node { root }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.root.path().join(p)
    }

    fn systemctl_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("run/systemctl.log")).unwrap_or_default().lines().map(String::from).collect()
    }
}

/// Runs the installer image's entrypoint with `action` as the DaemonSet
/// does, in a pod of the test's gantryd; its exit code and log.
async fn run_installer(
    cri: &mut gantry_tests::Cri,
    d: &gantry_tests::Daemon,
    node: &Node,
    image: &str,
    action: &str,
) -> (i32, String) {
    use gantry_tests::pods::*;
    let pod = run_pod(
        cri,
        d,
        &format!("installer-{action}-{}", std::process::id()),
        gantry_proto::cri::v1::NamespaceMode::Pod,
    )
    .await;
    let mount = |host: &str, container: &str| gantry_proto::cri::v1::Mount {
        container_path: container.into(),
        host_path: node.path(host).display().to_string(),
        ..Default::default()
    };
    let mut config = container("installer", &[]);
    config.image = Some(gantry_proto::cri::v1::ImageSpec { image: image.into(), ..Default::default() });
    config.command = vec![];
    config.args = vec![action.into()];
    config.envs =
        vec![gantry_proto::cri::v1::KeyValue { key: "SYSTEMCTL".into(), value: "/host/run/fake-systemctl".into() }];
    config.mounts = vec![
        mount("usr/local/bin", "/host/usr/local/bin"),
        mount("etc/systemd/system", "/host/etc/systemd/system"),
        mount("etc/gantry", "/host/etc/gantry"),
        mount("run", "/host/run"),
    ];
    let id = create(cri, &pod, config).await.expect("create the installer container");
    start(cri, &id).await;
    let status = wait_exited(cri, &id).await;
    let log = log_of(&pod, "installer").join("\n");
    remove_pod(cri, &pod).await;
    (status.exit_code, log)
}

#[tokio::test]
async fn the_installer_image_installs_upgrades_and_uninstalls_on_a_node() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = gantry_tests::Daemon::start("");
    let mut cri = d.connect().await;
    let out_dir = d.dir.path().join("installer");
    let build = Command::new("bash")
        .arg(repo().join("deploy/build-installer.sh"))
        .arg(&out_dir)
        .env("BIN_DIR", bin_dir())
        .env("TAG", "test")
        .output()
        .expect("build-installer.sh");
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let load = Command::new(bin_dir().join("gantry"))
        .arg("--address")
        .arg(&d.socket)
        .args(["load", "-i"])
        .arg(out_dir.join("gantry-installer-test.tar"))
        .output()
        .expect("gantry load");
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let image = "gantry-installer:test";

    // A node without systemd: refused, nothing written.
    let bare = Node::new(false);
    let (code, log) = run_installer(&mut cri, &d, &bare, image, "install").await;
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("does not run systemd"), "{log}");
    assert_eq!(std::fs::read_dir(bare.path("usr/local/bin")).expect("bin").count(), 0, "nothing installed");
    assert!(bare.systemctl_calls().is_empty());

    let node = Node::new(true);
    let (code, log) = run_installer(&mut cri, &d, &node, image, "install").await;
    assert_eq!(code, 0, "{log}");
    for f in ["gantryd", "gantry-shim", "gantry"] {
        let meta = std::fs::metadata(node.path(&format!("usr/local/bin/{f}"))).expect(f);
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{f}");
        assert!(meta.len() > 100_000, "{f}");
    }
    let unit = std::fs::read(node.path("etc/systemd/system/gantryd.service")).expect("unit");
    assert_eq!(unit, std::fs::read(repo().join("deploy/gantryd.service")).expect("repo unit"));
    let config = node.path("etc/gantry/config.toml");
    assert_eq!(std::fs::read(&config).expect("config"), std::fs::read(repo().join("deploy/config.toml")).expect("x"));
    assert_eq!(node.systemctl_calls(), ["daemon-reload", "enable gantryd.service", "restart gantryd.service"]);

    // The operator's config survives an upgrade; the binaries are new files.
    std::fs::write(&config, "log_level = \"debug\"\n").expect("edit config");
    let inode = std::fs::metadata(node.path("usr/local/bin/gantryd")).expect("gantryd").ino();
    let (code, log) = run_installer(&mut cri, &d, &node, image, "install").await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("keeping the node's"), "{log}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), "log_level = \"debug\"\n");
    assert_ne!(std::fs::metadata(node.path("usr/local/bin/gantryd")).expect("gantryd").ino(), inode, "renamed over");
    let leftovers: Vec<_> = std::fs::read_dir(node.path("usr/local/bin"))
        .expect("bin")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (code, log) = run_installer(&mut cri, &d, &node, image, "uninstall").await;
    assert_eq!(code, 0, "{log}");
    assert_eq!(std::fs::read_dir(node.path("usr/local/bin")).expect("bin").count(), 0);
    assert!(!node.path("etc/systemd/system/gantryd.service").exists());
    assert!(config.exists(), "a changed config stays");
    assert!(node.systemctl_calls().ends_with(&["disable --now gantryd.service".into(), "daemon-reload".into()]));
}

#[test]
fn a_bad_drop_in_stops_gantryd_naming_the_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "log_level = \"info\"\n").expect("write");
    std::fs::create_dir(dir.path().join("config.d")).expect("mkdir");
    let drop_in = dir.path().join("config.d/50-typo.toml");
    std::fs::write(&drop_in, "# a comment\n[cni]\nbin_dir = [\"/opt/cni/bin\"]\n").expect("write");
    let out = Command::new(bin_dir().join("gantryd"))
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .output()
        .expect("gantryd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for part in [drop_in.display().to_string(), "line 3".into(), "bin_dir".into()] {
        assert!(stderr.contains(&part), "{part:?} missing from: {stderr}");
    }
}
