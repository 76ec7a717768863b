//! The CRI v1 `RuntimeService`: pod sandboxes and containers through
//! `Runtime`; RPCs not built yet (exec, attach, stats, events...) answer
//! `Unimplemented`, never panicking.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use crate::runtime::{ContainerRecord, Runtime, RuntimeError, SandboxRecord};
use crate::shim_client::{State as ShimState, Status as ShimStatus};
use crate::streaming::{Pending, StreamServer};

use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::{
    AttachRequest, AttachResponse, CgroupDriver, CheckpointContainerRequest, CheckpointContainerResponse,
    ContainerEventResponse, ContainerState, ContainerStatsRequest, ContainerStatsResponse, ContainerStatus,
    ContainerStatusRequest, ContainerStatusResponse, ContainerUser, CreateContainerRequest, CreateContainerResponse,
    ExecRequest, ExecResponse, ExecSyncRequest, ExecSyncResponse, GetEventsRequest, ImageSpec, LinuxContainerUser,
    LinuxPodSandboxStatus, LinuxRuntimeConfiguration, ListContainerStatsRequest, ListContainerStatsResponse,
    ListContainersRequest, ListContainersResponse, ListMetricDescriptorsRequest, ListMetricDescriptorsResponse,
    ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse, ListPodSandboxRequest, ListPodSandboxResponse,
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, Namespace, PodIp, PodSandbox, PodSandboxNetworkStatus,
    PodSandboxState, PodSandboxStatsRequest, PodSandboxStatsResponse, PodSandboxStatus, PodSandboxStatusRequest,
    PodSandboxStatusResponse, PortForwardRequest, PortForwardResponse, RemoveContainerRequest, RemoveContainerResponse,
    RemovePodSandboxRequest, RemovePodSandboxResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
    RunPodSandboxRequest, RunPodSandboxResponse, RuntimeCondition, RuntimeConfigRequest, RuntimeConfigResponse,
    RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StartContainerRequest,
    StartContainerResponse, StatusRequest, StatusResponse, StopContainerRequest, StopContainerResponse,
    StopPodSandboxRequest, StopPodSandboxResponse, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
    UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse, VersionRequest, VersionResponse,
};
use tonic::{Request, Response, Status};

/// What CRI calls the runtime, and the API version it speaks.
pub const RUNTIME_NAME: &str = "gantry";
pub const CRI_API_VERSION: &str = "v1";
/// kubelet checks `version` against `v1alpha2`-era `0.1.0`; containerd answers the same.
pub const KUBELET_API_VERSION: &str = "0.1.0";

pub struct CriRuntimeService {
    /// The daemon's effective configuration, returned by verbose `Status`.
    config_json: String,
    runtime: Arc<Runtime>,
    streams: Arc<StreamServer>,
}

impl CriRuntimeService {
    /// The statuses of a pod's containers (from the cached states: no shim is asked).
    async fn pod_container_statuses(&self, pod: &str) -> Vec<ContainerStatus> {
        pod_container_statuses(&self.runtime, pod).await
    }

    /// FailedPrecondition unless the container runs (NotFound if unknown).
    async fn require_running(&self, id: &str) -> Result<(), Status> {
        self.runtime.container(id).await.map_err(status)?;
        let state = self.runtime.container_state(id).await;
        if state.status != ShimStatus::Running as i32 {
            return Err(Status::failed_precondition(format!("container {id} is not running")));
        }
        Ok(())
    }

    pub fn new(config_json: String, runtime: Arc<Runtime>, streams: Arc<StreamServer>) -> Self {
        CriRuntimeService { config_json, runtime, streams }
    }
}

pub(crate) fn status(e: RuntimeError) -> Status {
    match e {
        RuntimeError::InvalidArgument(m) => Status::invalid_argument(m),
        RuntimeError::NotFound(m) => Status::not_found(m),
        RuntimeError::AlreadyExists(m) => Status::already_exists(m),
        RuntimeError::FailedPrecondition(m) => Status::failed_precondition(m),
        RuntimeError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        RuntimeError::Internal(m) => Status::internal(m),
    }
}

fn pod_status(sandbox: &SandboxRecord) -> PodSandboxStatus {
    let options = sandbox
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    PodSandboxStatus {
        id: sandbox.id.clone(),
        metadata: sandbox.config.metadata.clone(),
        state: sandbox_state(sandbox),
        created_at: sandbox.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: sandbox.ips.first().cloned().unwrap_or_default(),
            additional_ips: sandbox.ips.iter().skip(1).map(|ip| PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus { namespaces: Some(Namespace { options }) }),
        labels: sandbox.config.labels.clone(),
        annotations: sandbox.config.annotations.clone(),
        runtime_handler: String::new(),
    }
}

fn container_status_of(c: &ContainerRecord, shim: &ShimState) -> ContainerStatus {
    let state = container_state(shim);
    let (reason, message) = if state == ContainerState::ContainerExited as i32 {
        let reason = if shim.oom_killed {
            "OOMKilled"
        } else if shim.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        (reason.to_string(), shim.error.clone())
    } else {
        (String::new(), String::new())
    };
    ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state,
        created_at: c.created_at,
        started_at: shim.started_at,
        finished_at: shim.finished_at,
        exit_code: shim.exit_code,
        image: Some(ImageSpec { image: c.image_name.clone(), ..Default::default() }),
        image_ref: c.image_id.clone(),
        reason,
        message,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.log_path.clone(),
        user: c.identity.as_ref().map(|who| ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: i64::from(who.uid),
                gid: i64::from(who.gid),
                supplemental_groups: who.additional_gids.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
        ..Default::default()
    }
}

async fn pod_container_statuses(runtime: &Runtime, pod: &str) -> Vec<ContainerStatus> {
    let members: Vec<ContainerRecord> =
        runtime.containers.lock().await.values().filter(|c| c.sandbox_id == pod).cloned().collect();
    members.iter().map(|c| container_status_of(c, &runtime.cached_state(&c.id))).collect()
}

/// An event with the status of the pod it concerns and of the pod's
/// containers, as kubelet's evented PLEG reads them.
async fn event_response(runtime: &Runtime, e: crate::runtime::Event) -> ContainerEventResponse {
    let pod_id = match runtime.containers.lock().await.get(&e.id) {
        Some(c) => Some(c.sandbox_id.clone()),
        None => runtime.sandboxes.lock().await.contains_key(&e.id).then(|| e.id.clone()),
    };
    let sandbox = match &pod_id {
        Some(p) => runtime.sandboxes.lock().await.get(p).cloned(),
        None => None,
    };
    let containers_statuses = match &pod_id {
        Some(p) => pod_container_statuses(runtime, p).await,
        None => vec![],
    };
    ContainerEventResponse {
        container_id: e.id,
        container_event_type: e.kind as i32,
        created_at: e.at,
        pod_sandbox_status: sandbox.as_ref().map(pod_status),
        containers_statuses,
    }
}

fn sandbox_state(s: &SandboxRecord) -> i32 {
    if s.ready {
        PodSandboxState::SandboxReady as i32
    } else {
        PodSandboxState::SandboxNotready as i32
    }
}

fn container_state(s: &ShimState) -> i32 {
    crate::listing::container_status_code(s.status)
}

/// Every selector label must be present with the same value.
fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by gantry yet"))
}

type EventStream = Pin<Box<dyn futures_core::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for CriRuntimeService {
    type GetContainerEventsStream = EventStream;

    async fn version(&self, _: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: KUBELET_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: CRI_API_VERSION.to_string(),
        }))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        // The config dir is read at each call: a CNI daemonset may install a config any time.
        let network = match self.runtime.network.ready() {
            Ok(_) => RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(why) => RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("gantry: network plugin is not ready: {why}"),
            },
        };
        let conditions = vec![
            RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            network,
        ];
        let mut info = HashMap::new();
        if request.into_inner().verbose {
            info.insert("config".to_string(), self.config_json.clone());
            info.insert("podCIDR".to_string(), self.runtime.network.pod_cidr());
        }
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            // The default (unnamed) handler; user namespaces are not done yet.
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures { recursive_read_only_mounts: true, user_namespaces: true }),
            }],
            features: Some(RuntimeFeatures { supplemental_groups_policy: true }),
        }))
    }

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let mut events = self.runtime.subscribe();
        let runtime = self.runtime.clone();
        let stream = async_stream::stream! {
            loop {
                match events.recv().await {
                    Ok(e) => yield Ok(event_response(&runtime, e).await),
                    // A slow reader missed some: go on with the newest.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event subscriber fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let config =
            request.into_inner().config.ok_or_else(|| Status::invalid_argument("missing pod sandbox config"))?;
        let pod_sandbox_id = self.runtime.run_sandbox(config).await.map_err(status)?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        self.runtime.stop_sandbox(&request.into_inner().pod_sandbox_id).await.map_err(status)?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        self.runtime.remove_sandbox(&request.into_inner().pod_sandbox_id).await.map_err(status)?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        let sandbox = self.runtime.sandbox(&req.pod_sandbox_id).await.map_err(status)?;
        let mut info = HashMap::new();
        if req.verbose {
            let verbose = serde_json::json!({"pid": sandbox.pause_pid, "config": sandbox.config, "ips": sandbox.ips});
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(pod_status(&sandbox)),
            containers_statuses: self.pod_container_statuses(&sandbox.id).await,
            info,
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let sandboxes = self.runtime.sandboxes.lock().await;
        let items = sandboxes
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
                runtime_handler: String::new(),
            })
            .collect();
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let req = request.into_inner();
        let config = req.config.ok_or_else(|| Status::invalid_argument("missing container config"))?;
        let container_id = self.runtime.create_container(&req.pod_sandbox_id, config).await.map_err(status)?;
        Ok(Response::new(CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        self.runtime.start_container(&request.into_inner().container_id).await.map_err(status)?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let req = request.into_inner();
        self.runtime.stop_container(&req.container_id, req.timeout).await.map_err(status)?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        self.runtime.remove_container(&request.into_inner().container_id).await.map_err(status)?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        // gantryd serves this RPC through `listing::ListingServer`, which
        // sends the same bytes without decoding them.
        let filter = request.into_inner().filter.unwrap_or_default();
        let selected = self.runtime.listing.select(&filter);
        let response = selected.into_response().map_err(|e| Status::internal(format!("listing containers: {e}")))?;
        Ok(Response::new(response))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        let c = self.runtime.container(&req.container_id).await.map_err(status)?;
        let shim = self.runtime.container_state(&c.id).await;
        let mut info = HashMap::new();
        if req.verbose {
            let spec: serde_json::Value = std::fs::read(self.runtime.bundle_dir(&c.id).join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let paused = self.runtime.is_paused(&c.id).await;
            let verbose =
                serde_json::json!({"pid": shim.pid, "sandboxID": c.sandbox_id, "paused": paused, "runtimeSpec": spec});
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(ContainerStatusResponse { status: Some(container_status_of(&c, &shim)), info }))
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        let resources = req.linux.ok_or_else(|| Status::invalid_argument("missing linux resources"))?;
        self.runtime.update_resources(&req.container_id, resources).await.map_err(status)?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        self.runtime.reopen_log(&request.into_inner().container_id).await.map_err(status)?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        let req = request.into_inner();
        // CRI: a timeout of 0 means none.
        let timeout = (req.timeout > 0).then(|| std::time::Duration::from_secs(req.timeout as u64));
        let out = self.runtime.exec_sync(&req.container_id, &req.cmd, timeout).await.map_err(status)?;
        Ok(Response::new(ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = request.into_inner();
        if req.cmd.is_empty() || req.cmd[0].is_empty() {
            return Err(Status::invalid_argument(format!(
                "exec in container {}: the command is empty",
                req.container_id
            )));
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument("exec needs at least one of stdin, stdout and stderr"));
        }
        self.require_running(&req.container_id).await?;
        let url = self.streams.register(Pending::Exec {
            container_id: req.container_id,
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        });
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(&self, request: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        let req = request.into_inner();
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument("attach needs at least one of stdin, stdout and stderr"));
        }
        self.require_running(&req.container_id).await?;
        let url = self.streams.register(Pending::Attach {
            container_id: req.container_id,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        });
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let req = request.into_inner();
        let sandbox = self.runtime.sandbox(&req.pod_sandbox_id).await.map_err(status)?;
        if !sandbox.ready {
            return Err(Status::failed_precondition(format!("pod sandbox {} is not ready", req.pod_sandbox_id)));
        }
        if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!("port {bad} is out of range")));
        }
        let url = self.streams.register(Pending::PortForward { sandbox_id: req.pod_sandbox_id });
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let stats = self.runtime.container_stats(&request.into_inner().container_id).await.map_err(status)?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let f = request.into_inner().filter.unwrap_or_default();
        let stats = self
            .runtime
            .list_container_stats(|c| {
                (f.id.is_empty() || c.id == f.id)
                    && (f.pod_sandbox_id.is_empty() || c.sandbox_id == f.pod_sandbox_id)
                    && labels_match(&f.label_selector, &c.config.labels)
            })
            .await;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let stats = self.runtime.pod_sandbox_stats(&request.into_inner().pod_sandbox_id).await.map_err(status)?;
        Ok(Response::new(PodSandboxStatsResponse { stats: Some(stats) }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let f = request.into_inner().filter.unwrap_or_default();
        let stats = self
            .runtime
            .list_pod_sandbox_stats(|s| {
                (f.id.is_empty() || s.id == f.id) && labels_match(&f.label_selector, &s.config.labels)
            })
            .await;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let cidr = request.into_inner().runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr);
        // kubelet sends it when it learns the node's pod CIDR; the CNI config has its own ranges.
        if let Some(cidr) = cidr.filter(|c| !c.is_empty()) {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            self.runtime.network.set_pod_cidr(&cidr);
        }
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(not_yet("CheckpointContainer"))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        // Gantry serves the CRI stats RPCs, not Prometheus-style pod metrics
        // (kubelet's PodAndContainerStatsFromCRI mode): no descriptors.
        Ok(Response::new(ListMetricDescriptorsResponse { descriptors: vec![] }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics: vec![] }))
    }

    async fn runtime_config(
        &self,
        _: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        // The shim creates cgroups directly in the cgroupfs.
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration { cgroup_driver: CgroupDriver::Cgroupfs as i32 }),
        }))
    }
}
