//! OCI hooks for the built-in handler (in a spec only through CDI devices,
//! e.g. a GPU driver's `nvidia-ctk hook ...`). Each runs with the state of
//! the container as JSON on its stdin and its own args/env, at the point the
//! OCI runtime spec names:
//! - `prestart` and `createRuntime`: in the shim (the runtime's namespaces)
//!   once the process exists, before it runs; a failure ends the container;
//! - `createContainer`: in the container's init, in its mount namespace
//!   before pivot_root (the path resolves on the host); a failure ends it;
//! - `startContainer`: in init after Start, before the process execs (the
//!   path resolves inside the container); a failure ends it;
//! - `poststart` and `poststop`: in the shim after Start and at removal;
//!   failures are only logged, as the spec says.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::Prestart => "prestart",
            Point::CreateRuntime => "createRuntime",
            Point::CreateContainer => "createContainer",
            Point::StartContainer => "startContainer",
            Point::Poststart => "poststart",
            Point::Poststop => "poststop",
        }
    }

    fn hooks(self, spec: &Spec) -> Vec<Hook> {
        let Some(h) = spec.hooks() else { return vec![] };
        #[allow(deprecated)]
        let list = match self {
            Point::Prestart => h.prestart(),
            Point::CreateRuntime => h.create_runtime(),
            Point::CreateContainer => h.create_container(),
            Point::StartContainer => h.start_container(),
            Point::Poststart => h.poststart(),
            Point::Poststop => h.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

/// The OCI state document a hook reads on stdin.
pub fn state_json(id: &str, status: &str, pid: u32, bundle: &std::path::Path, spec: &Spec) -> String {
    serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    })
    .to_string()
}

/// Whether the spec has hooks at `point` (so callers skip building state).
pub fn any(spec: &Spec, point: Point) -> bool {
    !point.hooks(spec).is_empty()
}

/// Runs the hooks of `point` in order; the first failure is the error.
pub fn run(spec: &Spec, point: Point, state: &str) -> Result<(), String> {
    for hook in point.hooks(spec) {
        run_one(&hook, state).map_err(|e| format!("{} hook {}: {e}", point.name(), hook.path().display()))?;
    }
    Ok(())
}

/// Runs the hooks of `point`, logging failures to stderr (the shim's log).
pub fn run_logged(spec: &Spec, point: Point, state: &str) {
    for hook in point.hooks(spec) {
        if let Err(e) = run_one(&hook, state) {
            eprintln!("gantry-shim: {} hook {} failed: {e}", point.name(), hook.path().display());
        }
    }
}

fn run_one(hook: &Hook, state: &str) -> Result<(), String> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1)).env_clear();
    for kv in hook.env().clone().unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its stdin may close it early: not an error.
        let _ = stdin.write_all(state.as_bytes());
    }
    // stderr is drained while waiting (a chatty hook must not fill the
    // pipe and stall); the first 4 KiB go into the error.
    let mut stderr_pipe = child.stderr.take();
    if let Some(e) = &stderr_pipe {
        let _ = nix::fcntl::fcntl(e.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
    }
    let mut stderr = Vec::new();
    let mut drain = |pipe: &mut Option<std::process::ChildStderr>| {
        let mut buf = [0u8; 4096];
        while let Some(p) = pipe.as_mut() {
            match p.read(&mut buf) {
                Ok(0) => *pipe = None,
                Ok(n) => stderr.extend_from_slice(&buf[..n.min(4096usize.saturating_sub(stderr.len()))]),
                Err(_) => break,
            }
        }
    };
    let deadline = hook.timeout().filter(|t| *t > 0).map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        drain(&mut stderr_pipe);
        match child.try_wait().map_err(|e| format!("waiting for it: {e}"))? {
            Some(status) => break status,
            None if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", hook.timeout().unwrap_or(0)));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    drain(&mut stderr_pipe);
    if status.success() {
        return Ok(());
    }
    Err(format!("{status}: {}", String::from_utf8_lossy(&stderr).trim()))
}
