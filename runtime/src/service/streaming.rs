//! The RPCs that hand out streaming URLs (Exec, Attach, PortForward: the
//! streams themselves are `crate::streaming`) and ExecSync.

use gantry_proto::cri::v1::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, ExecSyncRequest, ExecSyncResponse, PortForwardRequest,
    PortForwardResponse,
};
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;
use crate::shim_client::Status as ShimStatus;
use crate::streaming::{Pending, StreamServer};

/// FailedPrecondition unless the container runs (NotFound if unknown).
async fn require_running(runtime: &Runtime, id: &str) -> Result<(), Status> {
    runtime.container(id).await?;
    let state = runtime.container_state(id).await;
    if state.status != ShimStatus::Running as i32 {
        return Err(Status::failed_precondition(format!("container {id} is not running")));
    }
    Ok(())
}

pub(super) async fn exec_sync(
    runtime: &Runtime,
    request: Request<ExecSyncRequest>,
) -> Result<Response<ExecSyncResponse>, Status> {
    let req = request.into_inner();
    // CRI: a timeout of 0 means none.
    let timeout = (req.timeout > 0).then(|| std::time::Duration::from_secs(req.timeout as u64));
    let out = runtime.exec_sync(&req.container_id, &req.cmd, timeout).await?;
    Ok(Response::new(ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }))
}

pub(super) async fn exec(
    runtime: &Runtime,
    streams: &StreamServer,
    request: Request<ExecRequest>,
) -> Result<Response<ExecResponse>, Status> {
    let req = request.into_inner();
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(Status::invalid_argument(format!("exec in container {}: the command is empty", req.container_id)));
    }
    if !(req.stdin || req.stdout || req.stderr) {
        return Err(Status::invalid_argument("exec needs at least one of stdin, stdout and stderr"));
    }
    require_running(runtime, &req.container_id).await?;
    let url = streams.register(Pending::Exec {
        container_id: req.container_id,
        cmd: req.cmd,
        tty: req.tty,
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
    });
    Ok(Response::new(ExecResponse { url }))
}

pub(super) async fn attach(
    runtime: &Runtime,
    streams: &StreamServer,
    request: Request<AttachRequest>,
) -> Result<Response<AttachResponse>, Status> {
    let req = request.into_inner();
    if !(req.stdin || req.stdout || req.stderr) {
        return Err(Status::invalid_argument("attach needs at least one of stdin, stdout and stderr"));
    }
    require_running(runtime, &req.container_id).await?;
    let url = streams.register(Pending::Attach {
        container_id: req.container_id,
        tty: req.tty,
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
    });
    Ok(Response::new(AttachResponse { url }))
}

pub(super) async fn port_forward(
    runtime: &Runtime,
    streams: &StreamServer,
    request: Request<PortForwardRequest>,
) -> Result<Response<PortForwardResponse>, Status> {
    let req = request.into_inner();
    let sandbox = runtime.sandbox(&req.pod_sandbox_id).await?;
    if !sandbox.ready {
        return Err(Status::failed_precondition(format!("pod sandbox {} is not ready", req.pod_sandbox_id)));
    }
    if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!("port {bad} is out of range")));
    }
    let url = streams.register(Pending::PortForward { sandbox_id: req.pod_sandbox_id });
    Ok(Response::new(PortForwardResponse { url }))
}
