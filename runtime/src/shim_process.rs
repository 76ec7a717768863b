//! A shim as a process: starting `gantry-shim` for a bundle, and the state
//! file it leaves behind when it is gone.

use std::path::Path;

use prost::Message;

use crate::error::RuntimeError;
use crate::shim_client::State;

/// Starts a shim for `bundle`. The container's process is only made at
/// Start, so the shim's `ready CONTAINER_PID SHIM_PID` names pid 0.
pub(crate) async fn launch(
    mut command: tokio::process::Command,
    id: &str,
    bundle: &Path,
    socket: &Path,
    log: &Path,
) -> Result<(), RuntimeError> {
    let out = command
        .arg("--id")
        .arg(id)
        .arg("--bundle")
        .arg(bundle)
        .arg("--socket")
        .arg(socket)
        .arg("--log")
        .arg(log)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::Internal(format!("starting gantry-shim: {e}")))?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match line.strip_prefix("ready ") {
        Some(rest) => match rest.split_whitespace().next().map(str::parse::<u32>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(RuntimeError::Internal(format!("shim answered {line:?}"))),
        },
        None => Err(RuntimeError::FailedPrecondition(line.strip_prefix("error: ").unwrap_or(&line).to_string())),
    }
}

/// The last state the shim of `bundle` wrote (`state.pb`), if any.
pub(crate) fn read_state_file(bundle: &Path) -> Option<State> {
    let bytes = std::fs::read(bundle.join("state.pb")).ok()?;
    State::decode(bytes.as_slice()).ok()
}
