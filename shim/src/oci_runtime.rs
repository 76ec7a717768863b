//! An external OCI runtime (a RuntimeClass handler such as runc or crun)
//! driven through its runc-compatible command line, so that the shim model
//! stays the same for it: the shim keeps the stdio, the exit status and the
//! cgroup; the runtime makes the container (`create`), lets it run
//! (`start`) and forgets it (`delete`).
//!
//! The container's init is the runtime's child; the runtime exits after
//! `create` and the init is re-parented to the shim, a child subreaper, so
//! the shim's reaper sees its exit as for a built-in container.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use oci_spec::runtime::Spec;

use crate::container::{annotation, ShimIo, STDIN_ANNOTATION};

/// How the shim calls the runtime: `BINARY --root ROOT [OPTIONS…] SUBCOMMAND`.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub binary: PathBuf,
    pub root: PathBuf,
    /// Global options given before the subcommand (e.g. `--systemd-cgroup`).
    pub options: Vec<String>,
}

/// A container the runtime created, waiting for `start`.
pub struct Created {
    pub pid: u32,
    pub io: ShimIo,
}

/// How long one runtime command may take before it is treated as hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

impl OciRuntime {
    fn command(&self, log: &Path) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root).arg("--log").arg(log).arg("--log-format").arg("json");
        c.args(&self.options);
        c
    }

    fn name(&self) -> String {
        self.binary.display().to_string()
    }

    /// `create`: the container's namespaces, rootfs and init, stopped before
    /// the user's process runs. The init's stdio is ours: pipes, or the
    /// terminal the runtime sends over a console socket.
    pub fn create(&self, id: &str, bundle: &Path, spec: &Spec, console_socket: &Path) -> Result<Created, String> {
        fs::create_dir_all(&self.root).map_err(|e| format!("creating {}: {e}", self.root.display()))?;
        let log = bundle.join("runtime.log");
        let pid_file = bundle.join("init.pid");
        let _ = fs::remove_file(&pid_file);
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        let want_stdin = annotation(spec, STDIN_ANNOTATION);
        let mut cmd = self.command(&log);
        cmd.arg("create").arg("--bundle").arg(bundle).arg("--pid-file").arg(&pid_file);

        let (io, console) = if terminal {
            let _ = fs::remove_file(console_socket);
            let listener = UnixListener::bind(console_socket)
                .map_err(|e| format!("binding console socket {}: {e}", console_socket.display()))?;
            cmd.arg("--console-socket").arg(console_socket);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            (None, Some(listener))
        } else {
            let (stdout_r, stdout_w) = pipe()?;
            let (stderr_r, stderr_w) = pipe()?;
            let stdin_w = if want_stdin {
                let (r, w) = pipe()?;
                cmd.stdin(Stdio::from(r));
                Some(w)
            } else {
                cmd.stdin(Stdio::null());
                None
            };
            cmd.stdout(Stdio::from(stdout_w)).stderr(Stdio::from(stderr_w));
            (Some(ShimIo { stdout: stdout_r, stderr: Some(stderr_r), stdin: stdin_w, terminal: false }), None)
        };
        cmd.arg(id);

        let stderr = io.as_ref().and_then(|io| io.stderr.as_ref()).map(|fd| fd.as_fd());
        let result = self.run(cmd, &log, "create", console.as_ref(), stderr);
        // Our copies of the child's ends (held by `cmd`) close here.
        let master = match result {
            Ok(master) => master,
            Err(e) => {
                self.delete(id);
                return Err(e);
            }
        };
        let pid = fs::read_to_string(&pid_file)
            .map_err(|e| format!("reading {}: {e}", pid_file.display()))
            .and_then(|s| s.trim().parse::<u32>().map_err(|e| format!("{}: {e}", pid_file.display())));
        let pid = match pid {
            Ok(pid) if pid > 0 => pid,
            Ok(_) | Err(_) => {
                self.delete(id);
                return Err(format!("{} create left no init pid in {}", self.name(), pid_file.display()));
            }
        };
        let io = match (io, master) {
            (Some(io), _) => io,
            (None, Some(master)) => {
                let stdin =
                    if want_stdin { Some(master.try_clone().map_err(|e| format!("dup pty: {e}"))?) } else { None };
                ShimIo { stdout: master, stderr: None, stdin, terminal: true }
            }
            (None, None) => {
                self.delete(id);
                return Err(format!("{} create sent no terminal on the console socket", self.name()));
            }
        };
        Ok(Created { pid, io })
    }

    /// `start`: the created init execs the container's process.
    pub fn start(&self, id: &str, bundle: &Path) -> Result<(), String> {
        let mut cmd = self.command(&bundle.join("runtime.log"));
        cmd.arg("start").arg(id).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        self.run(cmd, &bundle.join("runtime.log"), "start", None, None).map(drop)
    }

    /// `delete`, then `delete --force` if that failed: the runtime's own
    /// state (and, for it, the cgroup) goes; best effort, as the container
    /// is over either way. Plain first because runc's `--force` signals and
    /// then sleeps 100 ms even when the container has already stopped, as
    /// it has whenever the shim shuts down.
    pub fn delete(&self, id: &str) {
        for force in [false, true] {
            let mut cmd = Command::new(&self.binary);
            cmd.arg("--root").arg(&self.root).args(&self.options).arg("delete");
            if force {
                cmd.arg("--force");
            }
            cmd.arg(id).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            match cmd.status() {
                Ok(status) if status.success() => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("gantry-shim: {} delete {id}: {e}", self.name());
                    return;
                }
            }
        }
    }

    /// Runs one runtime command to its end; on a terminal, takes the pty
    /// master the runtime sends meanwhile. An error carries the runtime's
    /// own message: its JSON log's last error, else what it wrote on its
    /// stderr (piped, or `stderr_pipe`: the container's, which `create`
    /// shares with the runtime).
    fn run(
        &self,
        mut cmd: Command,
        log: &Path,
        what: &str,
        console: Option<&UnixListener>,
        stderr_pipe: Option<BorrowedFd>,
    ) -> Result<Option<OwnedFd>, String> {
        let log_len = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let mut child = cmd.spawn().map_err(|e| format!("running {} {what}: {e}", self.name()))?;
        drop(cmd);
        let mut master = None;
        if let Some(listener) = console {
            // The runtime connects once the terminal exists, before it exits.
            let _ = listener.set_nonblocking(true);
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            while master.is_none() && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        master = crate::pty::receive_fd_blocking(stream.as_fd()).ok();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if matches!(child.try_wait(), Ok(Some(_))) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        }
        let status = wait_with_timeout(&mut child, COMMAND_TIMEOUT);
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        if !matches!(status, Some(s) if s.success()) {
            if let Some(fd) = stderr_pipe {
                stderr.push_str(&read_available(fd));
            }
        }
        match status {
            Some(s) if s.success() => Ok(master),
            Some(s) => {
                let why = last_error(log, log_len).unwrap_or_else(|| stderr.trim().to_string());
                let why = if why.is_empty() { format!("{s}") } else { why };
                Err(format!("{} {what}: {why}", self.name()))
            }
            None => Err(format!("{} {what}: no answer in {}s", self.name(), COMMAND_TIMEOUT.as_secs())),
        }
    }
}

/// What a pipe holds now (at most 4 KiB), without waiting for more.
fn read_available(fd: BorrowedFd) -> String {
    let mut buf = [0u8; 4096];
    let mut poll = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    match nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO) {
        Ok(n) if n > 0 => match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).trim().to_string(),
            Err(_) => String::new(),
        },
        _ => String::new(),
    }
}

/// Waits for the child; kills it when it takes longer than `limit`.
fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The last error the runtime logged after offset `from` of its JSON log
/// (runc and crun both write `{"level":"error","msg":…}` lines).
fn last_error(log: &Path, from: u64) -> Option<String> {
    let mut text = String::new();
    let mut f = File::open(log).ok()?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from)).ok()?;
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .find_map(|v| v["msg"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_after_the_offset_is_the_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("runtime.log");
        let old = "{\"level\":\"error\",\"msg\":\"old failure\"}\n";
        fs::write(&log, old).expect("write");
        let new = "{\"level\":\"warning\",\"msg\":\"a warning\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\n";
        fs::write(&log, format!("{old}{new}")).expect("write");
        assert_eq!(last_error(&log, old.len() as u64).as_deref(), Some("exec: \"nope\": not found"));
        assert_eq!(last_error(&log, (old.len() + new.len()) as u64), None);
    }
}
