//! The CRI v1 `RuntimeService`. This file only routes each RPC to the file
//! of its concern, where its CRI mapping lives:
//!
//! | file | RPCs |
//! |---|---|
//! | `runtime_status.rs` | Version, Status, RuntimeConfig, UpdateRuntimeConfig |
//! | `pods.rs` | RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox, StreamPodSandboxes, UpdatePodSandboxResources |
//! | `containers.rs` | CreateContainer, StartContainer, StopContainer, RemoveContainer, ListContainers, StreamContainers, ContainerStatus, UpdateContainerResources, ReopenContainerLog, CheckpointContainer |
//! | `streaming.rs` | ExecSync, Exec, Attach, PortForward |
//! | `stats.rs` | ContainerStats, ListContainerStats, StreamContainerStats, PodSandboxStats, ListPodSandboxStats, StreamPodSandboxStats, ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics |
//! | `events.rs` | GetContainerEvents |
//!
//! `listing_server.rs` answers ListContainers from pre-encoded messages in
//! front of this service; `convert.rs` builds the status messages.

mod chunks;
mod containers;
mod convert;
mod events;
pub mod listing_server;
mod pods;
mod runtime_status;
mod stats;
mod streaming;

use std::sync::Arc;

use gantry_proto::cri::v1::runtime_service_server::RuntimeService;
use gantry_proto::cri::v1::{
    AttachRequest, AttachResponse, CheckpointContainerRequest, CheckpointContainerResponse, ContainerStatsRequest,
    ContainerStatsResponse, ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest,
    CreateContainerResponse, ExecRequest, ExecResponse, ExecSyncRequest, ExecSyncResponse, GetEventsRequest,
    ListContainerStatsRequest, ListContainerStatsResponse, ListContainersRequest, ListContainersResponse,
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse, ListPodSandboxRequest, ListPodSandboxResponse, ListPodSandboxStatsRequest,
    ListPodSandboxStatsResponse, PodSandboxStatsRequest, PodSandboxStatsResponse, PodSandboxStatusRequest,
    PodSandboxStatusResponse, PortForwardRequest, PortForwardResponse, RemoveContainerRequest, RemoveContainerResponse,
    RemovePodSandboxRequest, RemovePodSandboxResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
    RunPodSandboxRequest, RunPodSandboxResponse, RuntimeConfigRequest, RuntimeConfigResponse, StartContainerRequest,
    StartContainerResponse, StatusRequest, StatusResponse, StopContainerRequest, StopContainerResponse,
    StopPodSandboxRequest, StopPodSandboxResponse, StreamContainerStatsRequest, StreamContainerStatsResponse,
    StreamContainersRequest, StreamContainersResponse, StreamPodSandboxMetricsRequest, StreamPodSandboxMetricsResponse,
    StreamPodSandboxStatsRequest, StreamPodSandboxStatsResponse, StreamPodSandboxesRequest, StreamPodSandboxesResponse,
    UpdateContainerResourcesRequest, UpdateContainerResourcesResponse, UpdatePodSandboxResourcesRequest,
    UpdatePodSandboxResourcesResponse, UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse, VersionRequest,
    VersionResponse,
};
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;
use crate::streaming::StreamServer;

pub use runtime_status::{CRI_API_VERSION, KUBELET_API_VERSION, RUNTIME_NAME};

pub struct CriRuntimeService {
    /// The daemon's effective configuration, returned by verbose `Status`.
    config_json: String,
    runtime: Arc<Runtime>,
    streams: Arc<StreamServer>,
}

impl CriRuntimeService {
    pub fn new(config_json: String, runtime: Arc<Runtime>, streams: Arc<StreamServer>) -> Self {
        CriRuntimeService { config_json, runtime, streams }
    }
}

type Answer<T> = Result<Response<T>, Status>;

/// The answer stream of a server-streaming RPC.
type AnswerStream<T> = futures::stream::BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl RuntimeService for CriRuntimeService {
    type GetContainerEventsStream = events::EventStream;
    type StreamPodSandboxesStream = AnswerStream<StreamPodSandboxesResponse>;
    type StreamContainersStream = AnswerStream<StreamContainersResponse>;
    type StreamContainerStatsStream = AnswerStream<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = AnswerStream<StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = AnswerStream<StreamPodSandboxMetricsResponse>;

    async fn version(&self, request: Request<VersionRequest>) -> Answer<VersionResponse> {
        runtime_status::version(request).await
    }

    async fn status(&self, request: Request<StatusRequest>) -> Answer<StatusResponse> {
        runtime_status::status(&self.runtime, &self.config_json, request).await
    }

    async fn runtime_config(&self, request: Request<RuntimeConfigRequest>) -> Answer<RuntimeConfigResponse> {
        runtime_status::runtime_config(&self.runtime, request).await
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Answer<UpdateRuntimeConfigResponse> {
        runtime_status::update_runtime_config(&self.runtime, request).await
    }

    async fn get_container_events(&self, request: Request<GetEventsRequest>) -> Answer<Self::GetContainerEventsStream> {
        events::get_container_events(&self.runtime, request).await
    }

    async fn run_pod_sandbox(&self, request: Request<RunPodSandboxRequest>) -> Answer<RunPodSandboxResponse> {
        pods::run_pod_sandbox(&self.runtime, request).await
    }

    async fn stop_pod_sandbox(&self, request: Request<StopPodSandboxRequest>) -> Answer<StopPodSandboxResponse> {
        pods::stop_pod_sandbox(&self.runtime, request).await
    }

    async fn remove_pod_sandbox(&self, request: Request<RemovePodSandboxRequest>) -> Answer<RemovePodSandboxResponse> {
        pods::remove_pod_sandbox(&self.runtime, request).await
    }

    async fn pod_sandbox_status(&self, request: Request<PodSandboxStatusRequest>) -> Answer<PodSandboxStatusResponse> {
        pods::pod_sandbox_status(&self.runtime, request).await
    }

    async fn list_pod_sandbox(&self, request: Request<ListPodSandboxRequest>) -> Answer<ListPodSandboxResponse> {
        pods::list_pod_sandbox(&self.runtime, request).await
    }

    async fn stream_pod_sandboxes(
        &self,
        request: Request<StreamPodSandboxesRequest>,
    ) -> Answer<Self::StreamPodSandboxesStream> {
        pods::stream_pod_sandboxes(&self.runtime, request).await
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Answer<UpdatePodSandboxResourcesResponse> {
        pods::update_pod_sandbox_resources(&self.runtime, request).await
    }

    async fn create_container(&self, request: Request<CreateContainerRequest>) -> Answer<CreateContainerResponse> {
        containers::create_container(&self.runtime, request).await
    }

    async fn start_container(&self, request: Request<StartContainerRequest>) -> Answer<StartContainerResponse> {
        containers::start_container(&self.runtime, request).await
    }

    async fn stop_container(&self, request: Request<StopContainerRequest>) -> Answer<StopContainerResponse> {
        containers::stop_container(&self.runtime, request).await
    }

    async fn remove_container(&self, request: Request<RemoveContainerRequest>) -> Answer<RemoveContainerResponse> {
        containers::remove_container(&self.runtime, request).await
    }

    async fn list_containers(&self, request: Request<ListContainersRequest>) -> Answer<ListContainersResponse> {
        containers::list_containers(&self.runtime, request).await
    }

    async fn stream_containers(
        &self,
        request: Request<StreamContainersRequest>,
    ) -> Answer<Self::StreamContainersStream> {
        containers::stream_containers(&self.runtime, request).await
    }

    async fn container_status(&self, request: Request<ContainerStatusRequest>) -> Answer<ContainerStatusResponse> {
        containers::container_status(&self.runtime, request).await
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Answer<UpdateContainerResourcesResponse> {
        containers::update_container_resources(&self.runtime, request).await
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Answer<ReopenContainerLogResponse> {
        containers::reopen_container_log(&self.runtime, request).await
    }

    async fn checkpoint_container(
        &self,
        request: Request<CheckpointContainerRequest>,
    ) -> Answer<CheckpointContainerResponse> {
        containers::checkpoint_container(&self.runtime, request).await
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> Answer<ExecSyncResponse> {
        streaming::exec_sync(&self.runtime, request).await
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Answer<ExecResponse> {
        streaming::exec(&self.runtime, &self.streams, request).await
    }

    async fn attach(&self, request: Request<AttachRequest>) -> Answer<AttachResponse> {
        streaming::attach(&self.runtime, &self.streams, request).await
    }

    async fn port_forward(&self, request: Request<PortForwardRequest>) -> Answer<PortForwardResponse> {
        streaming::port_forward(&self.runtime, &self.streams, request).await
    }

    async fn container_stats(&self, request: Request<ContainerStatsRequest>) -> Answer<ContainerStatsResponse> {
        stats::container_stats(&self.runtime, request).await
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Answer<ListContainerStatsResponse> {
        stats::list_container_stats(&self.runtime, request).await
    }

    async fn stream_container_stats(
        &self,
        request: Request<StreamContainerStatsRequest>,
    ) -> Answer<Self::StreamContainerStatsStream> {
        stats::stream_container_stats(&self.runtime, request).await
    }

    async fn pod_sandbox_stats(&self, request: Request<PodSandboxStatsRequest>) -> Answer<PodSandboxStatsResponse> {
        stats::pod_sandbox_stats(&self.runtime, request).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Answer<ListPodSandboxStatsResponse> {
        stats::list_pod_sandbox_stats(&self.runtime, request).await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<StreamPodSandboxStatsRequest>,
    ) -> Answer<Self::StreamPodSandboxStatsStream> {
        stats::stream_pod_sandbox_stats(&self.runtime, request).await
    }

    async fn list_metric_descriptors(
        &self,
        request: Request<ListMetricDescriptorsRequest>,
    ) -> Answer<ListMetricDescriptorsResponse> {
        stats::list_metric_descriptors(&self.runtime, request).await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        request: Request<ListPodSandboxMetricsRequest>,
    ) -> Answer<ListPodSandboxMetricsResponse> {
        stats::list_pod_sandbox_metrics(&self.runtime, request).await
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        request: Request<StreamPodSandboxMetricsRequest>,
    ) -> Answer<Self::StreamPodSandboxMetricsStream> {
        stats::stream_pod_sandbox_metrics(&self.runtime, request).await
    }
}
