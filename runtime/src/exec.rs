//! Running one more process in a container: `ExecSync` (output captured,
//! with a deadline) and the command behind streaming `Exec`. The process is
//! made by `gantry-shim exec`, which joins the container's cgroup and
//! namespaces and takes its process settings; see shim/src/exec.rs.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{internal, RuntimeError};
use crate::runtime::Runtime;
use crate::shim_client::Status;

/// Output kept per stream; the rest is read and dropped so the command never
/// blocks on a full pipe. CRI-O uses the same bound.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// How long output is still read once the command exited: a background
/// child may hold the pipe open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

async fn read_capped(mut r: impl AsyncRead + Unpin, into: &mut Vec<u8>) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_EXEC_OUTPUT.saturating_sub(into.len());
        into.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// Sends SIGTERM to a `gantry-shim exec` still running when its caller's
/// future is dropped (a gRPC call cancelled), so the command dies with it.
pub struct StopOnDrop(Option<u32>);

impl StopOnDrop {
    pub fn new(child: &tokio::process::Child) -> Self {
        StopOnDrop(child.id())
    }

    /// The helper was waited for: nothing to stop.
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }
}

/// Stops a `gantry-shim exec`: SIGTERM makes it kill the command and exit
/// once the command is dead; SIGKILL if it does not within 5 s.
pub async fn end_exec(child: &mut tokio::process::Child) {
    // The helper kills its command and exits once the command is reaped.
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

impl Runtime {
    /// The `gantry-shim exec` command for `cmd` in running container `id`;
    /// stdio is the caller's to set.
    pub async fn exec_command(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<tokio::process::Command, RuntimeError> {
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(RuntimeError::InvalidArgument(format!("exec in container {id}: the command is empty")));
        }
        self.container(id).await?;
        let state = self.container_state(id).await;
        if state.status != Status::Running as i32 || state.pid == 0 {
            let what = Status::try_from(state.status).map(|s| s.as_str_name().to_lowercase()).unwrap_or_default();
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running (state {what}): cannot exec in it"
            )));
        }
        let mut command = self.shim_command();
        command.arg("exec").arg("--bundle").arg(self.container_dir(id)).arg("--pid").arg(state.pid.to_string());
        if tty {
            command.arg("--tty");
        }
        command.arg("--").args(cmd);
        Ok(command)
    }

    /// The `gantry-shim port-forward` command connecting to `port` in the
    /// network namespace of `pid`; stdio is the caller's to set.
    pub fn port_forward_command(&self, pid: u32, port: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.shim_binary);
        command.arg("port-forward").arg("--pid").arg(pid.to_string()).arg("--port").arg(port);
        command
    }

    /// Runs `cmd` to completion, or kills it at `timeout` (None: no limit).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, RuntimeError> {
        let mut command = self.exec_command(id, cmd, false).await?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| internal("starting gantry-shim exec")(&e))?;
        let mut stop_on_drop = StopOnDrop::new(&child);
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(RuntimeError::Internal("gantry-shim exec has no output pipes".into()));
        };
        let mut output = ExecOutput::default();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = {
            let reading = async {
                tokio::join!(read_capped(out, &mut stdout), read_capped(err, &mut stderr));
            };
            tokio::pin!(reading);
            let run = async {
                tokio::select! {
                    status = child.wait() => {
                        let status = status.map_err(|e| internal("waiting for gantry-shim exec")(&e))?;
                        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reading).await;
                        Ok(status)
                    }
                    // The pipes closing first is the usual order; then wait.
                    _ = &mut reading => child.wait().await.map_err(|e| internal("waiting for gantry-shim exec")(&e)),
                }
            };
            match timeout {
                Some(t) => match tokio::time::timeout(t, run).await {
                    Ok(r) => r?,
                    Err(_) => {
                        end_exec(&mut child).await;
                        stop_on_drop.disarm();
                        return Err(RuntimeError::DeadlineExceeded(format!(
                            "command {cmd:?} in container {id} timed out after {t:?} and was killed"
                        )));
                    }
                },
                None => run.await?,
            }
        };
        stop_on_drop.disarm();
        output.exit_code = status.code().unwrap_or(-1);
        output.stdout = stdout;
        output.stderr = stderr;
        tracing::debug!(container = %id, exit_code = output.exit_code, "exec finished");
        Ok(output)
    }
}
