//! The CRI's streaming list calls (kubelet on nodes with many containers):
//! the same items, order and filters as the unary lists, in chunks of at
//! most 100; and UpdatePodSandboxResources.

use std::collections::HashMap;

use futures::StreamExt;
use gantry_proto::cri::v1::{
    ContainerFilter, ContainerStatsFilter, LinuxContainerResources, ListContainerStatsRequest, ListContainersRequest,
    ListImagesRequest, ListPodSandboxMetricsRequest, ListPodSandboxRequest, NamespaceMode, PodSandboxFilter,
    StreamContainerStatsRequest, StreamContainersRequest, StreamImagesRequest, StreamPodSandboxMetricsRequest,
    StreamPodSandboxesRequest, UpdatePodSandboxResourcesRequest,
};
use gantry_tests::pods::*;
use gantry_tests::Daemon;

/// Every chunk of a stream, checked to hold at most 100 items.
async fn collect<T, I>(stream: tonic::Streaming<T>, items: impl Fn(T) -> Vec<I>) -> Vec<I> {
    let chunks: Vec<T> = stream.map(|c| c.expect("chunk")).collect().await;
    assert!(!chunks.is_empty(), "at least one (maybe empty) answer");
    let mut all = Vec::new();
    for chunk in chunks {
        let got = items(chunk);
        assert!(got.len() <= 100, "a chunk of {}", got.len());
        all.extend(got);
    }
    all
}

#[tokio::test]
async fn streamed_lists_match_the_unary_ones_in_chunks() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "many", NamespaceMode::Pod).await;
    let other = run_pod(&mut cri, &d, "other", NamespaceMode::Pod).await;
    let mut ids = Vec::new();
    for i in 0..130 {
        let mut config = container(&format!("c{i}"), &["sleep", "600"]);
        config.labels = HashMap::from([("parity".to_string(), (i % 2).to_string())]);
        ids.push(create(&mut cri, &pod, config).await.expect("create"));
    }
    let lone = create(&mut cri, &other, container("lone", &["sleep", "600"])).await.expect("create");
    start(&mut cri, &lone).await;

    let filters = [
        ContainerFilter::default(),
        ContainerFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() },
        ContainerFilter {
            label_selector: HashMap::from([("parity".to_string(), "1".to_string())]),
            ..Default::default()
        },
        ContainerFilter { id: ids[7].clone(), ..Default::default() },
        ContainerFilter { pod_sandbox_id: "no-such-pod".into(), ..Default::default() },
    ];
    for filter in filters {
        let unary = cri
            .runtime
            .list_containers(ListContainersRequest { filter: Some(filter.clone()) })
            .await
            .expect("list")
            .into_inner()
            .containers;
        let stream = cri
            .runtime
            .stream_containers(StreamContainersRequest { filter: Some(filter.clone()) })
            .await
            .expect("stream")
            .into_inner();
        let streamed = collect(stream, |c| c.containers).await;
        assert_eq!(streamed, unary, "filter {filter:?}");
    }
    let all = cri.runtime.list_containers(ListContainersRequest::default()).await.expect("list").into_inner();
    assert_eq!(all.containers.len(), 131);

    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.expect("pods").into_inner().items;
    let stream = cri.runtime.stream_pod_sandboxes(StreamPodSandboxesRequest::default()).await.expect("s").into_inner();
    assert_eq!(collect(stream, |c| c.pod_sandboxes).await, pods);
    let only = PodSandboxFilter { id: other.id.clone(), ..Default::default() };
    let stream = cri
        .runtime
        .stream_pod_sandboxes(StreamPodSandboxesRequest { filter: Some(only) })
        .await
        .expect("s")
        .into_inner();
    let streamed = collect(stream, |c| c.pod_sandboxes).await;
    assert_eq!(streamed.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![other.id.clone()]);

    let images = cri.images.list_images(ListImagesRequest::default()).await.expect("images").into_inner().images;
    let stream = cri.images.stream_images(StreamImagesRequest::default()).await.expect("s").into_inner();
    assert_eq!(collect(stream, |c| c.images).await, images);

    let filter = ContainerStatsFilter { id: lone.clone(), ..Default::default() };
    let unary = cri
        .runtime
        .list_container_stats(ListContainerStatsRequest { filter: Some(filter.clone()) })
        .await
        .expect("stats")
        .into_inner()
        .stats;
    let stream =
        cri.runtime.stream_container_stats(StreamContainerStatsRequest { filter: Some(filter) }).await.expect("s");
    let streamed = collect(stream.into_inner(), |c| c.container_stats).await;
    assert_eq!(
        streamed.iter().map(|s| s.attributes.clone()).collect::<Vec<_>>(),
        unary.iter().map(|s| s.attributes.clone()).collect::<Vec<_>>()
    );
    let stream = cri.runtime.stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {}).await.expect("s");
    let streamed = collect(stream.into_inner(), |c| c.pod_sandbox_metrics).await;
    let unary = cri
        .runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("metrics")
        .into_inner()
        .pod_metrics;
    let ids = |m: &[gantry_proto::cri::v1::PodSandboxMetrics]| {
        m.iter()
            .map(|p| (p.pod_sandbox_id.clone(), p.container_metrics.iter().map(|c| c.container_id.clone()).collect()))
            .collect::<Vec<(String, Vec<String>)>>()
    };
    assert_eq!(ids(&streamed), ids(&unary));
    assert!(!streamed.is_empty());

    remove_pod(&mut cri, &pod).await;
    remove_pod(&mut cri, &other).await;
}

#[tokio::test]
async fn pod_resources_are_checked_and_recorded() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "resize", NamespaceMode::Pod).await;
    let resources = LinuxContainerResources { cpu_shares: 512, memory_limit_in_bytes: 256 << 20, ..Default::default() };
    cri.runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.id.clone(),
            overhead: None,
            resources: Some(resources.clone()),
        })
        .await
        .expect("update");
    let info = pod_info(&mut cri, &pod.id).await;
    assert_eq!(info["resources"]["memory_limit_in_bytes"], 256u64 << 20, "{info}");
    assert_eq!(info["resources"]["cpu_shares"], 512, "{info}");
    let err = cri
        .runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "no-such-pod".into(),
            overhead: None,
            resources: Some(resources),
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let err = cri
        .runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.id.clone(),
            overhead: Some(LinuxContainerResources { memory_limit_in_bytes: -1, ..Default::default() }),
            resources: None,
        })
        .await
        .expect_err("negative");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("overhead.memory_limit_in_bytes"), "{err}");
    remove_pod(&mut cri, &pod).await;
}
