//! Port forwarding over an upgraded connection (`portforward.k8s.io`): the
//! client opens a pair of streams per connection, `error` and `data`, tied
//! by a `requestID` header and naming the pod's `port`. Each pair is relayed
//! to 127.0.0.1:PORT inside the pod's network namespace by
//! `gantry-shim port-forward`; a failure (a closed port, say) is written on
//! the pair's error stream and the connection stays up for the next one.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::session::{pump_in, pump_out, Closer, SpdyStream};
use crate::runtime::Runtime;

#[derive(Default)]
struct Pair {
    data: Option<SpdyStream>,
    error: Option<SpdyStream>,
}

pub async fn serve(runtime: &Arc<Runtime>, sandbox_id: &str, mut incoming: mpsc::Receiver<SpdyStream>, closer: Closer) {
    let pause_pid = match runtime.sandbox(sandbox_id).await {
        Ok(s) if s.ready => s.pause_pid,
        _ => {
            tracing::debug!(pod = %sandbox_id, "port-forward to a pod that is not ready");
            closer.shutdown().await;
            return;
        }
    };
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Until the client closes the connection.
    while let Some(stream) = incoming.recv().await {
        let port = stream.header("port").unwrap_or("").to_string();
        let key = stream.header("requestid").map(String::from).unwrap_or_else(|| port.clone());
        let pair = pairs.entry(key.clone()).or_default();
        match stream.header("streamtype") {
            Some("data") => pair.data = Some(stream),
            Some("error") => pair.error = Some(stream),
            _ => continue,
        }
        if pair.data.is_some() && pair.error.is_some() {
            let Some(Pair { data: Some(data), error: Some(error) }) = pairs.remove(&key) else { continue };
            let command = runtime.port_forward_command(pause_pid, &port);
            let pod = sandbox_id.to_string();
            tokio::spawn(async move { forward(command, &pod, &port, data, error).await });
        }
    }
    closer.shutdown().await;
}

async fn forward(mut command: tokio::process::Command, pod: &str, port: &str, mut data: SpdyStream, error: SpdyStream) {
    let failure = match port.parse::<u16>() {
        Ok(p) if p > 0 => relay(&mut command, &mut data).await.err(),
        _ => Some(format!("invalid port {port:?}")),
    };
    if let Some(msg) = failure {
        tracing::debug!(pod = %pod, %port, error = %msg, "port-forward failed");
        error.out.send(format!("error forwarding port {port} to pod {pod}: {msg}").as_bytes()).await;
    }
    data.out.close().await;
    error.out.close().await;
}

async fn relay(command: &mut tokio::process::Command, data: &mut SpdyStream) -> Result<(), String> {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("starting gantry-shim port-forward: {e}"))?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("gantry-shim port-forward has no pipes".into());
    };
    let input = data.take_input();
    let feeding = tokio::spawn(pump_in(input, stdin));
    pump_out(stdout, data.out.clone()).await;
    let status = child.wait().await.map_err(|e| format!("waiting for gantry-shim port-forward: {e}"))?;
    feeding.abort();
    let mut msg = String::new();
    let _ = stderr.read_to_string(&mut msg).await;
    if status.success() {
        Ok(())
    } else {
        Err(msg.trim().trim_start_matches("gantry-shim port-forward: ").to_string())
    }
}
