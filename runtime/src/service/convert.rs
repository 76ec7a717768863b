//! CRI status messages from gantryd's records and the shims' states, shared
//! by the pod, container and event RPCs.

use std::collections::HashMap;

use gantry_proto::cri::v1::{
    ContainerState, ContainerStatus, ContainerUser, ImageSpec, LinuxContainerUser, LinuxPodSandboxStatus, Namespace,
    PodIp, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};

use crate::listing::container_status_code;
use crate::records::{ContainerRecord, SandboxRecord};
use crate::runtime::Runtime;
use crate::shim_client::State as ShimState;

pub(super) fn pod_status(sandbox: &SandboxRecord) -> PodSandboxStatus {
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
        runtime_handler: sandbox.runtime_handler.clone(),
    }
}

pub(super) fn container_status_of(c: &ContainerRecord, shim: &ShimState) -> ContainerStatus {
    let state = container_status_code(shim.status);
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
        // kubelet and critest's image-ID consistency specs read this one.
        image_id: c.image_id.clone(),
        stop_signal: crate::stop_signal::to_cri(crate::stop_signal::parse(&c.stop_signal)) as i32,
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

/// The statuses of a pod's containers (from the cached states: no shim is asked).
pub(super) async fn pod_container_statuses(runtime: &Runtime, pod: &str) -> Vec<ContainerStatus> {
    let members: Vec<ContainerRecord> =
        runtime.containers.lock().await.values().filter(|c| c.sandbox_id == pod).cloned().collect();
    members.iter().map(|c| container_status_of(c, &runtime.cached_state(&c.id))).collect()
}

pub(super) fn sandbox_state(s: &SandboxRecord) -> i32 {
    if s.ready {
        PodSandboxState::SandboxReady as i32
    } else {
        PodSandboxState::SandboxNotready as i32
    }
}

/// Every selector label must be present with the same value.
pub(super) fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
