//! The pod sandbox RPCs: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus, ListPodSandbox, StreamPodSandboxes,
//! UpdatePodSandboxResources (the lifecycle itself is `sandbox/`).

use std::collections::HashMap;

use futures::stream::BoxStream;
use gantry_proto::cri::v1::{
    ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxFilter, PodSandboxStatusRequest,
    PodSandboxStatusResponse, RemovePodSandboxRequest, RemovePodSandboxResponse, RunPodSandboxRequest,
    RunPodSandboxResponse, StopPodSandboxRequest, StopPodSandboxResponse, StreamPodSandboxesRequest,
    StreamPodSandboxesResponse, UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse,
};
use tonic::{Request, Response, Status};

use super::chunks::chunked;
use super::convert::{labels_match, pod_container_statuses, pod_status, sandbox_state};
use crate::runtime::Runtime;

pub(super) async fn run_pod_sandbox(
    runtime: &Runtime,
    request: Request<RunPodSandboxRequest>,
) -> Result<Response<RunPodSandboxResponse>, Status> {
    let request = request.into_inner();
    let config = request.config.ok_or_else(|| Status::invalid_argument("missing pod sandbox config"))?;
    let pod_sandbox_id = runtime.run_sandbox(config, &request.runtime_handler).await?;
    Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
}

pub(super) async fn stop_pod_sandbox(
    runtime: &Runtime,
    request: Request<StopPodSandboxRequest>,
) -> Result<Response<StopPodSandboxResponse>, Status> {
    runtime.stop_sandbox(&request.into_inner().pod_sandbox_id).await?;
    Ok(Response::new(StopPodSandboxResponse {}))
}

pub(super) async fn remove_pod_sandbox(
    runtime: &Runtime,
    request: Request<RemovePodSandboxRequest>,
) -> Result<Response<RemovePodSandboxResponse>, Status> {
    runtime.remove_sandbox(&request.into_inner().pod_sandbox_id).await?;
    Ok(Response::new(RemovePodSandboxResponse {}))
}

pub(super) async fn pod_sandbox_status(
    runtime: &Runtime,
    request: Request<PodSandboxStatusRequest>,
) -> Result<Response<PodSandboxStatusResponse>, Status> {
    let req = request.into_inner();
    let sandbox = runtime.sandbox(&req.pod_sandbox_id).await?;
    let mut info = HashMap::new();
    if req.verbose {
        let verbose = serde_json::json!({
            "pid": sandbox.pause_pid, "config": sandbox.config, "ips": sandbox.ips,
            "resources": sandbox.resources, "overhead": sandbox.overhead,
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(Response::new(PodSandboxStatusResponse {
        status: Some(pod_status(&sandbox)),
        containers_statuses: pod_container_statuses(runtime, &sandbox.id).await,
        info,
        ..Default::default()
    }))
}

pub(super) async fn list_pod_sandbox(
    runtime: &Runtime,
    request: Request<ListPodSandboxRequest>,
) -> Result<Response<ListPodSandboxResponse>, Status> {
    let filter = request.into_inner().filter.unwrap_or_default();
    Ok(Response::new(ListPodSandboxResponse { items: select_pods(runtime, &filter).await }))
}

async fn select_pods(runtime: &Runtime, filter: &PodSandboxFilter) -> Vec<PodSandbox> {
    let sandboxes = runtime.sandboxes.lock().await;
    sandboxes
        .values()
        .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
        .filter(|s| filter.state.as_ref().is_none_or(|f| f.state == sandbox_state(s)))
        .filter(|s| labels_match(&filter.label_selector, &s.config.labels))
        .map(|s| PodSandbox {
            id: s.id.clone(),
            metadata: s.config.metadata.clone(),
            state: sandbox_state(s),
            created_at: s.created_at,
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
            runtime_handler: s.runtime_handler.clone(),
        })
        .collect()
}

pub(super) async fn stream_pod_sandboxes(
    runtime: &Runtime,
    request: Request<StreamPodSandboxesRequest>,
) -> Result<Response<BoxStream<'static, Result<StreamPodSandboxesResponse, Status>>>, Status> {
    let filter = request.into_inner().filter.unwrap_or_default();
    let items = select_pods(runtime, &filter).await;
    Ok(Response::new(chunked(items, |pod_sandboxes| StreamPodSandboxesResponse { pod_sandboxes })))
}

pub(super) async fn update_pod_sandbox_resources(
    runtime: &Runtime,
    request: Request<UpdatePodSandboxResourcesRequest>,
) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
    let req = request.into_inner();
    runtime.update_sandbox_resources(&req.pod_sandbox_id, req.overhead, req.resources).await?;
    Ok(Response::new(UpdatePodSandboxResourcesResponse {}))
}
