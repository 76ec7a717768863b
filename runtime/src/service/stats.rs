//! The stats RPCs: ContainerStats, ListContainerStats, PodSandboxStats,
//! ListPodSandboxStats (the readings themselves are `crate::stats`), the
//! Prometheus-style pod metrics (`crate::pod_metrics`), and their Stream*
//! forms in chunks.

use futures::stream::BoxStream;
use gantry_proto::cri::v1::{
    ContainerStats, ContainerStatsFilter, ContainerStatsRequest, ContainerStatsResponse, ListContainerStatsRequest,
    ListContainerStatsResponse, ListMetricDescriptorsRequest, ListMetricDescriptorsResponse,
    ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse, ListPodSandboxStatsRequest,
    ListPodSandboxStatsResponse, PodSandboxStats, PodSandboxStatsFilter, PodSandboxStatsRequest,
    PodSandboxStatsResponse, StreamContainerStatsRequest, StreamContainerStatsResponse, StreamPodSandboxMetricsRequest,
    StreamPodSandboxMetricsResponse, StreamPodSandboxStatsRequest, StreamPodSandboxStatsResponse,
};
use tonic::{Request, Response, Status};

use super::chunks::chunked;
use super::convert::labels_match;
use crate::runtime::Runtime;

pub(super) async fn container_stats(
    runtime: &Runtime,
    request: Request<ContainerStatsRequest>,
) -> Result<Response<ContainerStatsResponse>, Status> {
    let stats = runtime.container_stats(&request.into_inner().container_id).await?;
    Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
}

pub(super) async fn list_container_stats(
    runtime: &Runtime,
    request: Request<ListContainerStatsRequest>,
) -> Result<Response<ListContainerStatsResponse>, Status> {
    let f = request.into_inner().filter.unwrap_or_default();
    Ok(Response::new(ListContainerStatsResponse { stats: select_container_stats(runtime, &f).await }))
}

async fn select_container_stats(runtime: &Runtime, f: &ContainerStatsFilter) -> Vec<ContainerStats> {
    runtime
        .list_container_stats(|c| {
            (f.id.is_empty() || c.id == f.id)
                && (f.pod_sandbox_id.is_empty() || c.sandbox_id == f.pod_sandbox_id)
                && labels_match(&f.label_selector, &c.config.labels)
        })
        .await
}

pub(super) async fn pod_sandbox_stats(
    runtime: &Runtime,
    request: Request<PodSandboxStatsRequest>,
) -> Result<Response<PodSandboxStatsResponse>, Status> {
    let stats = runtime.pod_sandbox_stats(&request.into_inner().pod_sandbox_id).await?;
    Ok(Response::new(PodSandboxStatsResponse { stats: Some(stats) }))
}

pub(super) async fn list_pod_sandbox_stats(
    runtime: &Runtime,
    request: Request<ListPodSandboxStatsRequest>,
) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
    let f = request.into_inner().filter.unwrap_or_default();
    Ok(Response::new(ListPodSandboxStatsResponse { stats: select_pod_stats(runtime, &f).await }))
}

async fn select_pod_stats(runtime: &Runtime, f: &PodSandboxStatsFilter) -> Vec<PodSandboxStats> {
    runtime
        .list_pod_sandbox_stats(|s| {
            (f.id.is_empty() || s.id == f.id) && labels_match(&f.label_selector, &s.config.labels)
        })
        .await
}

pub(super) async fn list_metric_descriptors(
    runtime: &Runtime,
    _: Request<ListMetricDescriptorsRequest>,
) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
    Ok(Response::new(ListMetricDescriptorsResponse { descriptors: runtime.metric_descriptors() }))
}

pub(super) async fn list_pod_sandbox_metrics(
    runtime: &Runtime,
    _: Request<ListPodSandboxMetricsRequest>,
) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
    Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics: runtime.list_pod_sandbox_metrics().await }))
}

pub(super) async fn stream_container_stats(
    runtime: &Runtime,
    request: Request<StreamContainerStatsRequest>,
) -> Result<Response<BoxStream<'static, Result<StreamContainerStatsResponse, Status>>>, Status> {
    let f = request.into_inner().filter.unwrap_or_default();
    let stats = select_container_stats(runtime, &f).await;
    Ok(Response::new(chunked(stats, |container_stats| StreamContainerStatsResponse { container_stats })))
}

pub(super) async fn stream_pod_sandbox_stats(
    runtime: &Runtime,
    request: Request<StreamPodSandboxStatsRequest>,
) -> Result<Response<BoxStream<'static, Result<StreamPodSandboxStatsResponse, Status>>>, Status> {
    let f = request.into_inner().filter.unwrap_or_default();
    let stats = select_pod_stats(runtime, &f).await;
    Ok(Response::new(chunked(stats, |pod_sandbox_stats| StreamPodSandboxStatsResponse { pod_sandbox_stats })))
}

/// The pods of ListPodSandboxMetrics, in chunks.
pub(super) async fn stream_pod_sandbox_metrics(
    runtime: &Runtime,
    _: Request<StreamPodSandboxMetricsRequest>,
) -> Result<Response<BoxStream<'static, Result<StreamPodSandboxMetricsResponse, Status>>>, Status> {
    let metrics = runtime.list_pod_sandbox_metrics().await;
    Ok(Response::new(chunked(metrics, |pod_sandbox_metrics| StreamPodSandboxMetricsResponse { pod_sandbox_metrics })))
}
