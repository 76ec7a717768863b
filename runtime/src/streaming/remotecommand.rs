//! Exec over an upgraded connection (kubelet's remotecommand protocol):
//! the client opens an error stream, then stdin/stdout/stderr as asked, and
//! a resize stream for a TTY (v3 and later). The command runs through
//! `gantry-shim exec` with pipes, or for a TTY with a pty the helper makes
//! from the container's devpts and sends us the master of; when it ends,
//! the error stream carries its status (v4: a JSON `Status` with the exit
//! code, as kubelet writes it) and every stream is closed.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::session::{pump_in, pump_out, Closer, SpdyStream};
use crate::runtime::Runtime;

/// How long the client has to open the streams it announced.
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// Output still relayed once the command exited (a background child may
/// hold the pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

pub struct Options {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub version: String,
}

#[derive(Default)]
struct Streams {
    error: Option<SpdyStream>,
    stdin: Option<SpdyStream>,
    stdout: Option<SpdyStream>,
    stderr: Option<SpdyStream>,
    resize: Option<SpdyStream>,
}

impl Streams {
    fn count(&self) -> usize {
        [&self.error, &self.stdin, &self.stdout, &self.stderr, &self.resize].iter().filter(|s| s.is_some()).count()
    }
}

/// The terminal size a resize stream sends, one JSON object per change.
#[derive(serde::Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Decodes the resize stream: JSON objects, one per change, possibly split
/// across frames or several in one.
#[derive(Default)]
struct SizeDecoder {
    pending: Vec<u8>,
}

impl SizeDecoder {
    fn feed(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.pending.extend_from_slice(data);
        let mut de = serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
        let (mut sizes, mut used) = (vec![], 0);
        while let Some(Ok(size)) = de.next() {
            sizes.push(size);
            used = de.byte_offset();
        }
        self.pending.drain(..used);
        sizes
    }
}

async fn collect(opts: &Options, incoming: &mut mpsc::Receiver<SpdyStream>) -> Option<Streams> {
    let resizable =
        opts.tty && matches!(opts.version.as_str(), "v3.channel.k8s.io" | "v4.channel.k8s.io" | "v5.channel.k8s.io");
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr && !opts.tty)
        + usize::from(resizable);
    let mut s = Streams::default();
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    while s.count() < expected {
        let stream = tokio::time::timeout_at(deadline, incoming.recv()).await.ok()??;
        let slot = match stream.header("streamtype") {
            Some("error") => &mut s.error,
            Some("stdin") => &mut s.stdin,
            Some("stdout") => &mut s.stdout,
            Some("stderr") => &mut s.stderr,
            Some("resize") => &mut s.resize,
            _ => continue,
        };
        *slot = Some(stream);
    }
    Some(s)
}

/// The error stream's last word. v4 carries a JSON `Status` with the exit
/// code in its causes; older versions a plain message, only on failure.
fn status_message(version: &str, cmd: &[String], exit_code: Option<i32>, error: Option<&str>) -> Vec<u8> {
    let failure = match (exit_code, error) {
        (_, Some(e)) => Some((e.to_string(), None)),
        (Some(0), None) => None,
        (Some(c), None) => Some((
            format!("command terminated with non-zero exit code: error executing command {cmd:?}, exit code {c}"),
            Some(c),
        )),
        (None, None) => Some(("the command's exit status is unknown".to_string(), None)),
    };
    if !matches!(version, "v4.channel.k8s.io" | "v5.channel.k8s.io") {
        return failure.map(|(m, _)| m.into_bytes()).unwrap_or_default();
    }
    let status = match failure {
        None => serde_json::json!({"metadata": {}, "status": "Success"}),
        Some((message, Some(code))) => serde_json::json!({
            "metadata": {}, "status": "Failure", "message": message, "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Some((message, None)) => {
            serde_json::json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
        }
    };
    status.to_string().into_bytes()
}

/// Receives the pty master `gantry-shim exec --tty` sends on the socket that
/// is its stdin once it made the terminal in the container; None when it
/// failed before (it closed the socket; its stderr says why).
async fn receive_master(socket: std::os::unix::net::UnixStream) -> std::io::Result<Option<std::fs::File>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UnixStream::from_std(socket)?;
    socket
        .async_io(tokio::io::Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let iov = &mut [std::io::IoSliceMut::new(&mut byte)];
            rustix::net::recvmsg(&socket, iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
            let master = control.drain().find_map(|m| match m {
                RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                _ => None,
            });
            Ok(master.map(std::fs::File::from))
        })
        .await
}

fn set_size(master: &std::fs::File, size: &TerminalSize) {
    let ws = rustix::termios::Winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
    if let Err(e) = rustix::termios::tcsetwinsize(master, ws) {
        tracing::debug!(error = %e, "resizing the terminal");
    }
}

pub async fn exec(
    runtime: &Arc<Runtime>,
    id: &str,
    cmd: &[String],
    opts: Options,
    mut incoming: mpsc::Receiver<SpdyStream>,
    closer: Closer,
) {
    let Some(mut streams) = collect(&opts, &mut incoming).await else {
        tracing::debug!(container = %id, "exec client did not open its streams");
        closer.shutdown().await;
        return;
    };
    let (exit_code, error) = match run(runtime, id, cmd, &opts, &mut streams, &mut incoming).await {
        Ok(code) => (Some(code), None),
        Err(e) => (None, Some(e)),
    };
    let outputs = [&streams.stdout, &streams.stderr];
    for s in outputs.into_iter().flatten() {
        s.out.close().await;
    }
    if let Some(err) = &streams.error {
        let msg = status_message(&opts.version, cmd, exit_code, error.as_deref());
        if !msg.is_empty() {
            err.out.send(&msg).await;
        }
        err.out.close().await;
    }
    tracing::debug!(container = %id, ?exit_code, "streaming exec finished");
    closer.shutdown().await;
}

/// Attach: the client joins the container's own stdio, held by its shim
/// (see `gantry_proto::attach`), until the container exits or the client
/// leaves. The error stream reports success at the container's exit, as
/// kubelet's attach does.
pub async fn attach(
    runtime: &Arc<Runtime>,
    id: &str,
    opts: Options,
    mut incoming: mpsc::Receiver<SpdyStream>,
    closer: Closer,
) {
    let Some(mut streams) = collect(&opts, &mut incoming).await else {
        closer.shutdown().await;
        return;
    };
    let result = relay_attach(runtime, id, &mut streams).await;
    for s in [&streams.stdout, &streams.stderr].into_iter().flatten() {
        s.out.close().await;
    }
    if let Some(err) = &streams.error {
        let msg = status_message(
            &opts.version,
            &[],
            result.as_ref().ok().map(|_| 0),
            result.as_ref().err().map(String::as_str),
        );
        if !msg.is_empty() {
            err.out.send(&msg).await;
        }
        err.out.close().await;
    }
    closer.shutdown().await;
}

async fn relay_attach(runtime: &Arc<Runtime>, id: &str, s: &mut Streams) -> Result<(), String> {
    use gantry_proto::attach;
    let path = runtime.attach_socket_path(id);
    let conn = tokio::net::UnixStream::connect(&path).await.map_err(|e| format!("attaching to container {id}: {e}"))?;
    let (mut from_shim, to_shim) = conn.into_split();
    let to_shim = Arc::new(tokio::sync::Mutex::new(to_shim));
    let mut inputs = tokio::task::JoinSet::new();
    if let Some(stdin) = s.stdin.as_mut() {
        let mut input = stdin.take_input();
        let to_shim = to_shim.clone();
        inputs.spawn(async move {
            while let Some(data) = input.recv().await {
                for chunk in data.chunks(attach::MAX_PAYLOAD) {
                    if to_shim.lock().await.write_all(&attach::frame(attach::STDIN, chunk)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = to_shim.lock().await.write_all(&attach::frame(attach::CLOSE_STDIN, &[])).await;
        });
    }
    if let Some(resize) = s.resize.as_mut() {
        let mut sizes = resize.take_input();
        let to_shim = to_shim.clone();
        inputs.spawn(async move {
            let mut decoder = SizeDecoder::default();
            while let Some(data) = sizes.recv().await {
                for size in decoder.feed(&data) {
                    let mut payload = size.width.to_be_bytes().to_vec();
                    payload.extend_from_slice(&size.height.to_be_bytes());
                    let _ = to_shim.lock().await.write_all(&attach::frame(attach::RESIZE, &payload)).await;
                }
            }
        });
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 32 << 10];
    let outcome = 'relay: loop {
        let n = match from_shim.read(&mut chunk).await {
            Ok(0) | Err(_) => break 'relay Ok(()),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some((kind, payload)) = attach::take_frame(&mut buf) {
            let target = match kind {
                attach::STDOUT => &s.stdout,
                attach::STDERR => &s.stderr,
                attach::EXITED => break 'relay Ok(()),
                _ => continue,
            };
            if let Some(stream) = target {
                if !stream.out.send(&payload).await {
                    break 'relay Ok(()); // the client left
                }
            }
        }
    };
    inputs.abort_all();
    outcome
}

/// Relays the exec's terminal: output to the client's stdout, its stdin
/// and resizes to the master.
fn wire_terminal(master: std::fs::File, s: &mut Streams, tasks: &mut tokio::task::JoinSet<()>) -> Result<(), String> {
    let clone = |f: &std::fs::File| f.try_clone().map_err(|e| format!("terminal: {e}"));
    if let Some(stdout) = &s.stdout {
        tasks.spawn(pump_out(tokio::fs::File::from_std(clone(&master)?), stdout.out.clone()));
    }
    if let Some(stdin) = s.stdin.as_mut() {
        let input = stdin.take_input();
        let to = tokio::fs::File::from_std(clone(&master)?);
        // Not joined: the client may keep stdin open after the command ended.
        tokio::spawn(pump_in(input, to));
    }
    if let Some(resize) = s.resize.as_mut() {
        let mut sizes = resize.take_input();
        tokio::spawn(async move {
            let mut decoder = SizeDecoder::default();
            while let Some(data) = sizes.recv().await {
                for size in decoder.feed(&data) {
                    set_size(&master, &size);
                }
            }
        });
    }
    Ok(())
}

/// Runs the command with the streams attached; its exit code.
async fn run(
    runtime: &Arc<Runtime>,
    id: &str,
    cmd: &[String],
    opts: &Options,
    s: &mut Streams,
    connection: &mut mpsc::Receiver<SpdyStream>,
) -> Result<i32, String> {
    let mut command = runtime.exec_command(id, cmd, opts.tty).await.map_err(|e| e.to_string())?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut child = if opts.tty {
        // The helper makes the terminal in the container (its own devpts)
        // and sends us the master over this socket, its stdin.
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("allocating a terminal: {e}"))?;
        command.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
        command.stdout(Stdio::null());
        command.stderr(if s.stdout.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.spawn().map_err(|e| format!("starting gantry-shim exec: {e}"))?;
        // Our copy of its end must go, or a helper that fails early never reads as EOF.
        drop(command);
        // What the helper says before the terminal exists: to the client's
        // terminal output, where it would have shown on a terminal.
        if let (Some(err), Some(stdout)) = (child.stderr.take(), &s.stdout) {
            tasks.spawn(pump_out(err, stdout.out.clone()));
        }
        let master = match tokio::time::timeout(STREAM_WAIT, receive_master(ours)).await {
            Ok(Ok(master)) => master,
            Ok(Err(e)) => {
                crate::exec::end_exec(&mut child).await;
                return Err(format!("receiving the terminal from gantry-shim exec: {e}"));
            }
            Err(_) => {
                crate::exec::end_exec(&mut child).await;
                return Err("gantry-shim exec made no terminal in time".into());
            }
        };
        // None: the helper failed first; its exit code and message follow.
        if let Some(master) = master {
            wire_terminal(master, s, &mut tasks)?;
        }
        child
    } else {
        command.stdin(if s.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(if s.stdout.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stderr(if s.stderr.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.spawn().map_err(|e| format!("starting gantry-shim exec: {e}"))?;
        if let (Some(out), Some(stream)) = (child.stdout.take(), &s.stdout) {
            tasks.spawn(pump_out(out, stream.out.clone()));
        }
        if let (Some(err), Some(stream)) = (child.stderr.take(), &s.stderr) {
            tasks.spawn(pump_out(err, stream.out.clone()));
        }
        if let (Some(input), Some(stream)) = (child.stdin.take(), s.stdin.as_mut()) {
            tokio::spawn(pump_in(stream.take_input(), input));
        }
        child
    };
    let mut stop_on_drop = crate::exec::StopOnDrop::new(&child);
    // Until the command ends, or the client goes away (its connection's
    // stream channel closes): then the command is ended too.
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            more = connection.recv() => if more.is_none() {
                tracing::debug!(container = %id, "exec client left; ending the command");
                crate::exec::end_exec(&mut child).await;
                break child.wait().await;
            },
        }
    };
    stop_on_drop.disarm();
    let status = status.map_err(|e| format!("waiting for gantry-shim exec: {e}"))?;
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    Ok(status.code().unwrap_or(-1))
}
