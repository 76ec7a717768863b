//! The container RPCs: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ListContainers, StreamContainers, ContainerStatus,
//! UpdateContainerResources, ReopenContainerLog, CheckpointContainer (the
//! lifecycle itself is `container/`).

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use gantry_proto::cri::v1::{
    CheckpointContainerRequest, CheckpointContainerResponse, ContainerStatusRequest, ContainerStatusResponse,
    CreateContainerRequest, CreateContainerResponse, ListContainersRequest, ListContainersResponse,
    RemoveContainerRequest, RemoveContainerResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
    StartContainerRequest, StartContainerResponse, StopContainerRequest, StopContainerResponse,
    StreamContainersRequest, StreamContainersResponse, UpdateContainerResourcesRequest,
    UpdateContainerResourcesResponse,
};
use tonic::{Request, Response, Status};

use super::convert::container_status_of;
use crate::runtime::Runtime;

pub(super) async fn create_container(
    runtime: &Runtime,
    request: Request<CreateContainerRequest>,
) -> Result<Response<CreateContainerResponse>, Status> {
    let req = request.into_inner();
    let config = req.config.ok_or_else(|| Status::invalid_argument("missing container config"))?;
    let container_id = runtime.create_container(&req.pod_sandbox_id, config).await?;
    Ok(Response::new(CreateContainerResponse { container_id }))
}

pub(super) async fn start_container(
    runtime: &Arc<Runtime>,
    request: Request<StartContainerRequest>,
) -> Result<Response<StartContainerResponse>, Status> {
    runtime.start_container(&request.into_inner().container_id).await?;
    Ok(Response::new(StartContainerResponse {}))
}

pub(super) async fn stop_container(
    runtime: &Runtime,
    request: Request<StopContainerRequest>,
) -> Result<Response<StopContainerResponse>, Status> {
    let req = request.into_inner();
    runtime.stop_container(&req.container_id, req.timeout).await?;
    Ok(Response::new(StopContainerResponse {}))
}

pub(super) async fn remove_container(
    runtime: &Runtime,
    request: Request<RemoveContainerRequest>,
) -> Result<Response<RemoveContainerResponse>, Status> {
    runtime.remove_container(&request.into_inner().container_id).await?;
    Ok(Response::new(RemoveContainerResponse {}))
}

pub(super) async fn list_containers(
    runtime: &Runtime,
    request: Request<ListContainersRequest>,
) -> Result<Response<ListContainersResponse>, Status> {
    // gantryd serves this RPC through `listing::ListingServer`, which
    // sends the same bytes without decoding them.
    let filter = request.into_inner().filter.unwrap_or_default();
    let selected = runtime.listing.select(&filter);
    let response = selected.into_response().map_err(|e| Status::internal(format!("listing containers: {e}")))?;
    Ok(Response::new(response))
}

pub(super) async fn stream_containers(
    runtime: &Runtime,
    request: Request<StreamContainersRequest>,
) -> Result<Response<BoxStream<'static, Result<StreamContainersResponse, Status>>>, Status> {
    // The same selection and order as ListContainers; chunks are decoded
    // only when the client takes them (h2 flow control paces the stream).
    let filter = request.into_inner().filter.unwrap_or_default();
    let chunks = runtime.listing.select(&filter).into_chunks(super::chunks::CHUNK);
    let stream = futures::stream::iter(chunks)
        .map(|chunk| chunk.map_err(|e| Status::internal(format!("listing containers: {e}"))));
    Ok(Response::new(Box::pin(stream)))
}

pub(super) async fn container_status(
    runtime: &Runtime,
    request: Request<ContainerStatusRequest>,
) -> Result<Response<ContainerStatusResponse>, Status> {
    let req = request.into_inner();
    let c = runtime.container(&req.container_id).await?;
    let shim = runtime.container_state(&c.id).await;
    let mut info = HashMap::new();
    if req.verbose {
        let spec: serde_json::Value = std::fs::read(runtime.bundle_dir(&c.id).join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let paused = runtime.is_paused(&c.id).await;
        let verbose =
            serde_json::json!({"pid": shim.pid, "sandboxID": c.sandbox_id, "paused": paused, "runtimeSpec": spec});
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(Response::new(ContainerStatusResponse { status: Some(container_status_of(&c, &shim)), info }))
}

pub(super) async fn update_container_resources(
    runtime: &Runtime,
    request: Request<UpdateContainerResourcesRequest>,
) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
    let req = request.into_inner();
    let resources = req.linux.ok_or_else(|| Status::invalid_argument("missing linux resources"))?;
    runtime.update_resources(&req.container_id, resources).await?;
    Ok(Response::new(UpdateContainerResourcesResponse {}))
}

pub(super) async fn reopen_container_log(
    runtime: &Runtime,
    request: Request<ReopenContainerLogRequest>,
) -> Result<Response<ReopenContainerLogResponse>, Status> {
    runtime.reopen_log(&request.into_inner().container_id).await?;
    Ok(Response::new(ReopenContainerLogResponse {}))
}

pub(super) async fn checkpoint_container(
    runtime: &Runtime,
    request: Request<CheckpointContainerRequest>,
) -> Result<Response<CheckpointContainerResponse>, Status> {
    let req = request.into_inner();
    runtime.checkpoint(&req.container_id, &req.location, req.timeout).await?;
    Ok(Response::new(CheckpointContainerResponse {}))
}
