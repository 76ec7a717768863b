//! Pods and containers for the integration tests: a pod with its own log
//! directory and the test's cgroup parent, busybox containers, and waiting
//! for their state through the CRI client.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PullImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};

use crate::{test_registry, Cri, Daemon};

pub fn busybox() -> String {
    format!("{}/gantry/busybox:latest", test_registry())
}

#[derive(Debug)]
pub struct Pod {
    pub id: String,
    pub logs: PathBuf,
}

pub async fn setup(d: &Daemon) -> Cri {
    let mut cri = d.connect().await;
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec { image: busybox(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("pull busybox");
    cri
}

pub async fn run_pod(cri: &mut Cri, d: &Daemon, name: &str, pid: NamespaceMode) -> Pod {
    run_pod_config(cri, pod_config(d, name, pid)).await.expect("run pod sandbox")
}

/// The pod `run_pod` makes, for tests that change something first.
pub fn pod_config(d: &Daemon, name: &str, pid: NamespaceMode) -> PodSandboxConfig {
    let logs = d.dir.path().join("pod-logs").join(name);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: logs.display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: crate::cgroup_parent(d),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption { pid: pid as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn run_pod_config(cri: &mut Cri, config: PodSandboxConfig) -> Result<Pod, tonic::Status> {
    let logs = PathBuf::from(&config.log_directory);
    std::fs::create_dir_all(&logs).expect("log dir");
    let id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), ..Default::default() })
        .await?
        .into_inner()
        .pod_sandbox_id;
    Ok(Pod { id, logs })
}

/// A container as kubelet describes one: its own PID namespace.
pub fn container(name: &str, command: &[&str]) -> ContainerConfig {
    with_pid_mode(name, command, NamespaceMode::Container)
}

pub fn with_pid_mode(name: &str, command: &[&str], pid: NamespaceMode) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: busybox(), ..Default::default() }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption { pid: pid as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create(cri: &mut Cri, pod: &Pod, config: ContainerConfig) -> Result<String, tonic::Status> {
    cri.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().container_id)
}

pub async fn start(cri: &mut Cri, id: &str) {
    cri.runtime.start_container(StartContainerRequest { container_id: id.into() }).await.expect("start");
}

pub async fn status(cri: &mut Cri, id: &str) -> gantry_proto::cri::v1::ContainerStatus {
    cri.runtime
        .container_status(ContainerStatusRequest { container_id: id.into(), verbose: false })
        .await
        .expect("container status")
        .into_inner()
        .status
        .expect("status")
}

/// ContainerStatus's verbose `info` (pid, runtimeSpec…) as JSON.
pub async fn container_info(cri: &mut Cri, id: &str) -> serde_json::Value {
    let verbose = cri
        .runtime
        .container_status(ContainerStatusRequest { container_id: id.into(), verbose: true })
        .await
        .expect("verbose container status")
        .into_inner();
    serde_json::from_str(verbose.info.get("info").map_or("{}", |s| s.as_str())).expect("container info JSON")
}

/// PodSandboxStatus's verbose `info` (pid of the pause process, config…) as JSON.
pub async fn pod_info(cri: &mut Cri, id: &str) -> serde_json::Value {
    let verbose = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .expect("verbose pod status")
        .into_inner();
    serde_json::from_str(verbose.info.get("info").map_or("{}", |s| s.as_str())).expect("pod info JSON")
}

pub async fn wait_exited(cri: &mut Cri, id: &str) -> gantry_proto::cri::v1::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(cri, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(Instant::now() < deadline, "container {id} did not exit: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn log_of(pod: &Pod, name: &str) -> Vec<String> {
    std::fs::read_to_string(pod.logs.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_once(' ').map_or("", |x| x.1).to_string())
        .collect()
}

pub async fn remove_pod(cri: &mut Cri, pod: &Pod) {
    cri.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await.expect("stop pod");
    cri.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await.expect("rm pod");
}

pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}
