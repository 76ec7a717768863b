//! Helpers shared by the integration tests: a `gantryd` started on its own
//! temp root and socket, a CRI client over that socket, and a small registry
//! client to push hand-crafted (including malicious) images to the test registry.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_proto::cri::v1::image_service_client::ImageServiceClient;
use gantry_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

pub mod network;
pub mod node_pass;
pub mod pods;
pub mod registry;
pub mod streaming;
pub mod token_auth;

pub use registry::{sha256_hex, PushClient};

/// The plain-HTTP test registry started by `tests/run.sh` (`127.0.0.1:PORT`).
pub fn test_registry() -> String {
    std::env::var("GANTRY_TEST_REGISTRY")
        .expect("GANTRY_TEST_REGISTRY is not set: run the integration tests through tests/run.sh")
}

/// Where the test registry keeps its blobs on disk (to corrupt one on purpose).
pub fn test_registry_storage() -> PathBuf {
    std::env::var("GANTRY_TEST_REGISTRY_STORAGE")
        .expect("GANTRY_TEST_REGISTRY_STORAGE is not set: run the integration tests through tests/run.sh")
        .into()
}

/// The test registry that requires HTTP basic auth, and its user and password.
pub fn auth_registry() -> (String, String, String) {
    let get = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run through tests/run.sh"));
    (get("GANTRY_TEST_AUTH_REGISTRY"), get("GANTRY_TEST_AUTH_USER"), get("GANTRY_TEST_AUTH_PASSWORD"))
}

/// The directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("GANTRY_BIN_DIR") {
        return d.into();
    }
    // target/debug/deps/this-test → target/debug
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A gantryd on a private root, state dir and socket. Stopped (by its pid)
/// and its directories removed on drop, also when a test fails.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Where its gantryd (and the gantry-shim beside it) is run from.
    pub bin: PathBuf,
}

impl Daemon {
    pub fn start(config_toml: &str) -> Daemon {
        let mut d = Daemon::prepare(config_toml);
        d.spawn();
        d
    }

    /// A daemon's directories and config, not started yet (`start_again`
    /// starts it): for tests that lay out state or binaries first.
    pub fn prepare(config_toml: &str) -> Daemon {
        let dir = tempfile::Builder::new().prefix("gantry-test-").tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        // Unless the test brings its own network: an empty CNI conf dir, so
        // that a CNI config on the host never attaches test pods to a real network.
        let config_toml = if config_toml.contains("[cni]") {
            config_toml.to_string()
        } else {
            format!("cni.conf_dir = {:?}\n{config_toml}", dir.path().join("no-cni").display().to_string())
        };
        std::fs::write(&config, config_toml).expect("write config");
        Daemon {
            child: None,
            socket: dir.path().join("gantry.sock"),
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            log: dir.path().join("gantryd.log"),
            config,
            dir,
            bin: bin_dir(),
        }
    }

    /// gantryd with this daemon's config, root, state dir and socket.
    fn gantryd(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("gantryd"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--listen")
            .arg(&self.socket)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs this daemon's gantryd in the foreground, to its exit: for tests
    /// of what stops it at start-up. Its stderr is in the output.
    pub fn run_to_exit(&self) -> std::process::Output {
        assert!(self.child.is_none(), "daemon already running");
        self.gantryd().output().expect("running gantryd")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut cmd = self.gantryd();
        cmd.arg("--log-level")
            .arg("info,gantry_imageservice=debug,gantryd=debug,gantry_runtime=debug")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // Its own process group, so that a test harness's signals do not reach it.
        cmd.process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.join("gantryd").display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("gantryd exited during start-up ({status}); log:\n{}", self.log_text());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("gantryd did not listen on {} within 30 s; log:\n{}", self.socket.display(), self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the clean shutdown path. Returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        self.spawn();
    }

    pub async fn connect(&self) -> Cri {
        connect(&self.socket).await.expect("connect to gantryd")
    }

    /// Appends to the daemon's config (takes effect on the next start).
    pub fn append_config(&self, toml: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.config).expect("config");
        f.write_all(toml.as_bytes()).expect("write config");
    }

    pub fn images_root(&self) -> PathBuf {
        self.root.join("images")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        reap_leftovers(self.dir.path());
    }
}

/// A cgroup parent private to this daemon, so a failed test's cgroups are
/// found and removed (see `reap_leftovers`).
pub fn cgroup_parent(d: &Daemon) -> String {
    let name = d.dir.path().file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    format!("/gantry-test/{name}")
}

/// Kills what a failed test left running under `dir` (shims started with a
/// bundle below it, and their children: containers and pause processes)
/// and unmounts whatever is mounted below it. Only our own processes match:
/// their command lines name our private temp directory.
pub fn reap_leftovers(dir: &Path) {
    let marker = dir.display().to_string();
    let mut procs: Vec<(i32, i32, String)> = Vec::new(); // pid, ppid, cmdline
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            procs.push((pid, ppid.unwrap_or(0), String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    let shims: Vec<i32> = procs.iter().filter(|(_, _, c)| c.contains(&marker)).map(|(p, _, _)| *p).collect();
    for (pid, ppid, _) in &procs {
        if shims.contains(ppid) {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
    for pid in &shims {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut ours: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(4)).filter(|m| m.starts_with(&marker)).collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    // Cgroups under this daemon's private parent, deepest first. A killed
    // process leaves its cgroup only once it is reaped: retry for a while.
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !remove_test_cgroups(&name) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Removes the cgroups below `gantry-test/NAME` in every hierarchy; true
/// when none is left.
fn remove_test_cgroups(name: &str) -> bool {
    let mut clean = true;
    let mut roots: Vec<PathBuf> =
        std::fs::read_dir("/sys/fs/cgroup").map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let ours = root.join("gantry-test").join(name);
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut stack = vec![ours.clone()];
        while let Some(p) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
                dirs.push(p);
            }
        }
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in dirs {
            if std::fs::remove_dir(&d).is_err() {
                clean = false;
            }
        }
        // Shared by the tests running at once: removed by the last one.
        let _ = std::fs::remove_dir(root.join("gantry-test"));
    }
    clean
}

/// A CRI client over a unix socket (gantryd's or containerd's).
pub async fn connect(socket: &Path) -> Result<Cri, tonic::transport::Error> {
    let channel = channel(socket).await?;
    Ok(Cri {
        images: ImageServiceClient::new(channel.clone()).max_decoding_message_size(16 << 20),
        runtime: RuntimeServiceClient::new(channel).max_decoding_message_size(16 << 20),
    })
}

/// A gRPC channel over the unix socket (for calls outside the CRI clients).
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://gantry.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
}

#[derive(Clone)]
pub struct Cri {
    pub images: ImageServiceClient<Channel>,
    pub runtime: RuntimeServiceClient<Channel>,
}

/// Lists regular files and directories below `dir` (relative paths), sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                let path = e.path();
                out.push(path.strip_prefix(dir).unwrap_or(&path).display().to_string());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

/// The chain IDs of an image's layers, bottom first (from verbose ImageStatus).
pub async fn image_chain_ids(cri: &mut Cri, image: &str) -> Vec<gantry_imageservice::Digest> {
    let spec = Some(gantry_proto::cri::v1::ImageSpec { image: image.to_string(), ..Default::default() });
    let resp = cri
        .images
        .image_status(gantry_proto::cri::v1::ImageStatusRequest { image: spec, verbose: true })
        .await
        .expect("image status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).expect("verbose info is JSON");
    info["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["chain_id"].as_str().expect("chain_id").parse().expect("digest"))
        .collect()
}

/// Unmounts on drop, so a failing test leaves no mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = gantry_imageservice::snapshot::unmount(&self.0);
    }
}
