//! CheckpointContainer (Kubernetes' forensic container checkpointing):
//! criu dumps the container's processes with `--leave-running`, so the
//! container goes on as if nothing happened, and the dump becomes one tar
//! archive at the path kubelet gives, as CRI-O and containerd 2.x make it:
//!
//! - `checkpoint/`: criu's image files;
//! - `spec.dump`: the container's OCI spec (its bundle's config.json);
//! - `config.dump`: what the container is (id, name, image, times);
//! - `rootfs-diff.tar`: the container's writable layer (deletions as OCI
//!   whiteouts), so its file changes are in the archive too;
//! - `dump.log`: criu's log.
//!
//! The archive is written beside its final path and renamed into place; a
//! checkpoint that fails leaves nothing there and the container running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_imageservice::tree_tar::{append_tree, Marks};
use gantry_proto::cri::v1::NamespaceMode;
use tokio::process::Command;

use crate::error::{internal, RuntimeError};
use crate::runtime::Runtime;
use crate::shim_client::Status as ShimStatus;

/// How long criu may take when kubelet gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl Runtime {
    /// Checkpoints running container `id` into the archive `location`.
    pub async fn checkpoint(&self, id: &str, location: &str, timeout_secs: i64) -> Result<(), RuntimeError> {
        let c = self.container(id).await?;
        let location = PathBuf::from(location);
        if !location.is_absolute() || location.file_name().is_none() {
            return Err(RuntimeError::InvalidArgument(format!(
                "checkpoint location {location:?} is not an absolute path of a file"
            )));
        }
        let parent = location.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !parent.is_dir() {
            return Err(RuntimeError::InvalidArgument(format!(
                "checkpoint location {}: directory {} does not exist",
                location.display(),
                parent.display()
            )));
        }
        if location.is_dir() {
            return Err(RuntimeError::InvalidArgument(format!(
                "checkpoint location {} is a directory",
                location.display()
            )));
        }
        let sandbox = self.sandbox(&c.sandbox_id).await?;
        if self.handlers.resolve(&sandbox.runtime_handler)?.is_some() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} runs under RuntimeClass handler {:?}: gantry checkpoints containers of its built-in handler only",
                sandbox.runtime_handler
            )));
        }
        let state = self.container_state(id).await;
        if state.status != ShimStatus::Running as i32 || state.pid == 0 {
            let status = ShimStatus::try_from(state.status).unwrap_or(ShimStatus::Unknown);
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is {}, not running: only a running container can be checkpointed",
                status.as_str_name()
            )));
        }
        if self.is_paused(id).await {
            return Err(RuntimeError::FailedPrecondition(format!("container {id} is paused")));
        }
        if c.config.tty {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} has a terminal, whose other end the shim holds: criu cannot dump it"
            )));
        }
        if sandbox.id_maps().is_some() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} runs in a pod user namespace, which gantry does not checkpoint"
            )));
        }
        let pid_mode = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|n| n.pid);
        if pid_mode == Some(NamespaceMode::Pod as i32) {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} shares its pod's PID namespace: criu dumps a process tree only with the init of its PID namespace"
            )));
        }
        let criu = self.criu_binary()?;

        let work = tempfile::Builder::new()
            .prefix(&format!(".{}.gantry-", location.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()))
            .tempdir_in(&parent)
            .map_err(|e| internal("making the checkpoint's work directory")(&e))?;
        let images = work.path().join("checkpoint");
        std::fs::create_dir(&images).map_err(|e| internal("making the checkpoint's image directory")(&e))?;
        let log = work.path().join("dump.log");
        self.run_criu_dump(&criu, id, state.pid, &images, &log, timeout_secs).await?;
        let bundle = self.bundle_dir(id);

        // The archive, written beside its place and renamed there.
        let upper = self.images.snapshotter().rw_layout(id, &[]).upperdir;
        let config_dump = serde_json::json!({
            "id": id,
            "name": c.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            "rootfsImage": c.config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
            "rootfsImageRef": c.image_id,
            "rootfsImageName": c.image_name,
            "runtime": "gantry",
            "createdTime": rfc3339(c.created_at),
            "checkpointedTime": rfc3339(crate::records::now_nanos()),
            "podSandboxId": c.sandbox_id,
        });
        let shift = self.id_shift(id).await;
        let partial = work.path().join("archive.tar");
        let write = {
            let partial = partial.clone();
            let work = work.path().to_path_buf();
            move || -> std::io::Result<()> {
                let file = std::fs::File::create(&partial)?;
                let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
                tar.follow_symlinks(false);
                tar.append_dir_all("checkpoint", work.join("checkpoint"))?;
                tar.append_path_with_name(work.join("dump.log"), "dump.log")?;
                tar.append_path_with_name(bundle.join("config.json"), "spec.dump")?;
                append_bytes(&mut tar, "config.dump", config_dump.to_string().as_bytes())?;
                let diff = work.join("rootfs-diff.tar");
                {
                    let mut inner = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(&diff)?));
                    if upper.is_dir() {
                        append_tree(&mut inner, &upper, Marks::Whiteouts, shift)?;
                    }
                    inner.into_inner()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                }
                tar.append_path_with_name(&diff, "rootfs-diff.tar")?;
                let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()
            }
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| internal("writing the checkpoint archive")(&e))?
            .map_err(|e| internal("writing the checkpoint archive")(&e))?;
        std::fs::rename(&partial, &location).map_err(|e| internal("moving the checkpoint archive into place")(&e))?;
        if let Ok(dir) = std::fs::File::open(&parent) {
            let _ = dir.sync_all();
        }
        tracing::info!(container = %id, archive = %location.display(), "container checkpointed");
        Ok(())
    }

    /// The criu binary (`criu_path`, searched in PATH when a bare name), or
    /// FailedPrecondition saying it is missing.
    fn criu_binary(&self) -> Result<PathBuf, RuntimeError> {
        let configured = &self.criu_path;
        let found = if configured.components().count() > 1 {
            configured.is_file().then(|| configured.clone())
        } else {
            find_in_path(&configured.to_string_lossy())
        };
        found.ok_or_else(|| {
            RuntimeError::FailedPrecondition(format!(
                "checkpointing needs criu, and {} was not found (install criu, or set criu_path)",
                configured.display()
            ))
        })
    }

    async fn run_criu_dump(
        &self,
        criu: &Path,
        id: &str,
        pid: u32,
        images: &Path,
        log: &Path,
        timeout_secs: i64,
    ) -> Result<(), RuntimeError> {
        let mut cmd = Command::new(criu);
        cmd.arg("dump")
            .arg("--tree")
            .arg(pid.to_string())
            .arg("--images-dir")
            .arg(images)
            .arg("--log-file")
            .arg(log)
            .args(["-v4", "--leave-running", "--manage-cgroups=ignore", "--file-locks"])
            .args(["--ext-unix-sk", "--link-remap"])
            // Bind mounts from the host (volumes, /etc/hosts, masked paths)
            // are recorded as external, with their sharing, not dumped.
            .args(["--external", "mnt[]:sm"]);
        // Descriptors the shim opened before pivot_root (a missing stdin is
        // the host's /dev/null) are on mounts the container does not have:
        // criu cannot name them by path, so they are recorded as external
        // files (a restore hands them in with --inherit-fd).
        for file in host_files(pid) {
            cmd.arg("--external").arg(file);
        }
        // The pod's network namespace belongs to its pause process.
        let net = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
        if let (Some(theirs), Some(ours)) = (net(&format!("/proc/{pid}/ns/net")), net("/proc/self/ns/net")) {
            if theirs != ours {
                cmd.arg("--external").arg(format!("net[{theirs}]:extRootNetNS"));
            }
        }
        // criu locks the network with iptables unless told otherwise; a node
        // without the iptables tools (nftables-only) gets nftables instead.
        if find_in_path("iptables-restore").is_none() || find_in_path("ip6tables-restore").is_none() {
            cmd.args(["--network-lock", "nftables"]);
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let timeout = u64::try_from(timeout_secs).ok().filter(|t| *t > 0).map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let output = match tokio::time::timeout(timeout, cmd.output()).await {
            Err(_) => {
                return Err(RuntimeError::DeadlineExceeded(format!(
                    "checkpointing container {id}: criu did not finish within {} s",
                    timeout.as_secs()
                )))
            }
            Ok(Err(e)) => {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "checkpointing container {id}: running {}: {e}",
                    criu.display()
                )))
            }
            Ok(Ok(o)) => o,
        };
        if output.status.success() {
            return Ok(());
        }
        // criu's own words (see `failure_lines`), else its stderr.
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut errors = failure_lines(&text);
        if errors.is_empty() {
            errors = std::str::from_utf8(&output.stderr).unwrap_or("").lines().collect();
        }
        let tail = errors.iter().rev().take(7).rev().map(|l| l.trim()).collect::<Vec<_>>().join("; ");
        // The whole log stays with the container for the operator.
        let kept_log = self.bundle_dir(id).join("criu-dump.log");
        let kept = std::fs::copy(log, &kept_log).is_ok();
        Err(RuntimeError::FailedPrecondition(format!(
            "criu could not dump container {id} ({}): {tail}; the container keeps running{}",
            output.status,
            if kept { format!("; criu's log: {}", kept_log.display()) } else { String::new() }
        )))
    }
}

fn append_bytes<W: std::io::Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    h.set_cksum();
    tar.append_data(&mut h, name, bytes)
}

/// Nanoseconds since the epoch as RFC 3339 UTC (the dump files' format).
fn rfc3339(nanos: i64) -> String {
    gantry_imageservice::commit::rfc3339(nanos.div_euclid(1_000_000_000))
}

/// `file[MNT_ID:INODE]` (criu's hex notation) for every descriptor of
/// `pid`'s process tree that is open on a mount outside the process's mount
/// namespace.
fn host_files(pid: u32) -> Vec<String> {
    let mounts: std::collections::HashSet<u64> = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let mut out = vec![];
    if mounts.is_empty() {
        return out;
    }
    let mut pids = vec![pid];
    let mut seen = std::collections::HashSet::new();
    while let Some(p) = pids.pop() {
        if !seen.insert(p) {
            continue;
        }
        // Children of every thread: a process's threads can fork too.
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                pids.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else { continue };
        for fd in fds.flatten() {
            let name = fd.file_name();
            let fdinfo =
                std::fs::read_to_string(format!("/proc/{p}/fdinfo/{}", name.to_string_lossy())).unwrap_or_default();
            let Some(mnt_id) =
                fdinfo.lines().find_map(|l| l.strip_prefix("mnt_id:")).and_then(|v| v.trim().parse::<u64>().ok())
            else {
                continue;
            };
            if mounts.contains(&mnt_id) {
                continue;
            }
            // Pipes, sockets and anonymous inodes are on internal mounts that
            // no mountinfo lists; criu dumps those itself.
            let Ok(meta) = std::fs::metadata(fd.path()) else { continue };
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if !(t.is_file() || t.is_dir() || t.is_char_device() || t.is_block_device() || t.is_symlink()) {
                continue;
            }
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            // memfds live on an internal mount too, and criu dumps them.
            let target = target.to_string_lossy();
            if !target.starts_with('/') || target.starts_with("/memfd:") {
                continue;
            }
            let external = format!("file[{mnt_id:x}:{:x}]", std::os::unix::fs::MetadataExt::ino(&meta));
            if !out.contains(&external) {
                out.push(external);
            }
        }
    }
    out
}

/// What a failed dump's log says: its error lines, led by the three lines
/// before the last error other than criu's closing "Dumping FAILED" (the
/// step that failed; earlier errors can be harmless, e.g. an rlimit criu
/// may not raise).
fn failure_lines(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    let is_error = |l: &&str| l.contains("Error");
    let Some(cause) = lines
        .iter()
        .rposition(|l| is_error(l) && !l.contains("Dumping FAILED"))
        .or_else(|| lines.iter().position(is_error))
    else {
        return vec![];
    };
    let mut out: Vec<&str> = lines[cause.saturating_sub(3)..cause].to_vec();
    out.extend(lines.iter().copied().filter(is_error));
    out
}

/// `program`'s executable file in the first of `$PATH`'s directories that
/// has one (the usual directories when PATH is unset).
fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::{failure_lines, rfc3339};

    #[test]
    fn a_failed_dump_is_told_by_the_step_that_failed() {
        let log = "(00.01) Error (criu/util.c:1): Can't setup RLIMIT_NOFILE for self\n(00.02) a\n(00.03) b\n(00.04) c\n(00.05) Error (criu/files.c:9): Can't lookup mount=82 for fd=0\n(00.06) Unlock network\n(00.07) Error (criu/cr-dump.c:2): Dumping FAILED.\n";
        assert_eq!(
            failure_lines(log),
            [
                "(00.02) a",
                "(00.03) b",
                "(00.04) c",
                "(00.01) Error (criu/util.c:1): Can't setup RLIMIT_NOFILE for self",
                "(00.05) Error (criu/files.c:9): Can't lookup mount=82 for fd=0",
                "(00.07) Error (criu/cr-dump.c:2): Dumping FAILED.",
            ]
        );
        // Only the closing line: what led to it.
        assert_eq!(failure_lines("x\ny\nError: Dumping FAILED.\n"), ["x", "y", "Error: Dumping FAILED."]);
        assert!(failure_lines("all fine\n").is_empty());
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_300_000_123_000_000), "2026-12-03T12:13:20Z");
    }
}
