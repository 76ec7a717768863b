//! What the passes on booted test nodes share (`cgroup2_pass` on the pure
//! cgroup v2 node, `systemd_pass` on the systemd node): cgroupfs reads,
//! checks that say why they failed, gantryd started with the node's OCI
//! runtimes as handlers and the busybox image loaded, and the PASS/FAIL
//! lines the node scripts count.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{
    ContainerState, ContainerStatus, ContainerStatusRequest, ExecSyncRequest, ListImagesRequest,
    RemovePodSandboxRequest, StopPodSandboxRequest,
};

use crate::{Cri, Daemon};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The external OCI runtimes the passes run as RuntimeClass handlers: Debian's
/// runc and crun, copied into the node at the host's paths.
pub const HANDLERS: [(&str, &str); 2] = [("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")];

/// One check's outcome: why it failed, if it did.
pub type Check = Result<(), String>;

/// A path in the node's cgroup2 hierarchy.
pub fn cg(rel: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(rel.trim_start_matches('/'))
}

/// A file's content, trimmed; the error names the file.
pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn ensure(ok: bool, why: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

pub fn expect_file(dir: &Path, file: &str, want: &str) -> Check {
    let got = read(&dir.join(file))?;
    ensure(got == want, || format!("{}/{file} is {got:?}, want {want:?}", dir.display()))
}

/// gantryd with `config` and every runtime of `HANDLERS` as a handler,
/// connected, with the image archive loaded: the daemon, its client and the
/// image's tag. Exits the pass with a FAIL line if the image does not load.
pub async fn start(config: &str, archive: &str) -> (Daemon, Cri, String) {
    let mut d = Daemon::prepare(config);
    let mut handlers = String::new();
    for (name, binary) in HANDLERS {
        let root = d.dir.path().join("runtime-roots").join(name);
        handlers
            .push_str(&format!("[runtimes.{name}]\nbinary = {binary:?}\nroot = {:?}\n", root.display().to_string()));
    }
    d.append_config(&handlers);
    d.start_again();
    let mut cri = d.connect().await;
    match load_image(&d, archive, &mut cri).await {
        Ok(image) => (d, cri, image),
        Err(e) => {
            println!("FAIL load image: {e}");
            std::process::exit(1);
        }
    }
}

/// `gantry load` of the archive, then the busybox tag ListImages shows.
async fn load_image(d: &Daemon, archive: &str, cri: &mut Cri) -> Result<String, String> {
    let out = Command::new(crate::bin_dir().join("gantry"))
        .arg("--address")
        .arg(&d.socket)
        .args(["load", "-i", archive])
        .output()
        .map_err(|e| format!("gantry load: {e}"))?;
    ensure(out.status.success(), || format!("gantry load: {}", String::from_utf8_lossy(&out.stderr)))?;
    let images = cri
        .images
        .list_images(ListImagesRequest { filter: None })
        .await
        .map_err(|e| format!("ListImages: {}", e.message()))?
        .into_inner()
        .images;
    images
        .iter()
        .flat_map(|i| i.repo_tags.iter())
        .find(|t| t.contains("busybox"))
        .cloned()
        .ok_or_else(|| format!("no busybox image after gantry load: {images:?}"))
}

/// The PASS/FAIL lines and their counts.
#[derive(Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

impl Tally {
    pub fn report(&mut self, name: &str, r: Check) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {}", why.replace('\n', " | "));
            }
        }
    }

    /// The summary line the node script reads (with the tail of gantryd's
    /// log when something failed), then the pass's exit status.
    pub fn finish(&self, pass: &str, daemon_log: &str, started: Instant) -> i32 {
        if self.failed > 0 {
            eprintln!("gantryd log (tail):");
            let lines: Vec<&str> = daemon_log.lines().collect();
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("  {l}");
            }
        }
        eprintln!("{pass}: {} passed, {} failed in {:?}", self.passed, self.failed, started.elapsed());
        i32::from(self.failed > 0)
    }
}

/// ContainerStatus of `id`.
pub async fn status(cri: &mut Cri, id: &str) -> Result<ContainerStatus, String> {
    cri.runtime
        .container_status(ContainerStatusRequest { container_id: id.into(), verbose: false })
        .await
        .map_err(|e| format!("ContainerStatus: {}", e.message()))?
        .into_inner()
        .status
        .ok_or_else(|| "ContainerStatus: no status".to_string())
}

/// ExecSync of `cmd` in `id`: exit code, stdout and stderr (trimmed).
pub async fn exec(cri: &mut Cri, id: &str, cmd: &[&str]) -> Result<(i32, String, String), String> {
    let r = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 60,
        })
        .await
        .map_err(|e| format!("ExecSync {cmd:?}: {}", e.message()))?
        .into_inner();
    Ok((
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
        String::from_utf8_lossy(&r.stderr).trim().to_string(),
    ))
}

/// The status of `id` once it has exited, polled for at most `within`.
pub async fn wait_exited(cri: &mut Cri, id: &str, within: Duration) -> Result<ContainerStatus, String> {
    let deadline = Instant::now() + within;
    loop {
        let s = status(cri, id).await?;
        if s.state == ContainerState::ContainerExited as i32 {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!("container still {:?} after {within:?}", s.state));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// StopPodSandbox then RemovePodSandbox.
pub async fn remove_pod(cri: &mut Cri, id: &str) -> Check {
    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() })
        .await
        .map_err(|e| format!("StopPodSandbox: {}", e.message()))?;
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() })
        .await
        .map_err(|e| format!("RemovePodSandbox: {}", e.message()))?;
    Ok(())
}
