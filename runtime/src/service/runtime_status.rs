//! The runtime-wide RPCs: Version, Status, RuntimeConfig,
//! UpdateRuntimeConfig.

use std::collections::HashMap;

use gantry_proto::cri::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeCondition, RuntimeConfigRequest, RuntimeConfigResponse,
    RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusRequest, StatusResponse,
    UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse, VersionRequest, VersionResponse,
};
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;

/// What CRI calls the runtime, and the API version it speaks.
pub const RUNTIME_NAME: &str = "gantry";
pub const CRI_API_VERSION: &str = "v1";
/// kubelet checks `version` against `v1alpha2`-era `0.1.0`; containerd answers the same.
pub const KUBELET_API_VERSION: &str = "0.1.0";

pub(super) async fn version(_: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
    Ok(Response::new(VersionResponse {
        version: KUBELET_API_VERSION.to_string(),
        runtime_name: RUNTIME_NAME.to_string(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime_api_version: CRI_API_VERSION.to_string(),
    }))
}

pub(super) async fn status(
    runtime: &Runtime,
    config_json: &str,
    request: Request<StatusRequest>,
) -> Result<Response<StatusResponse>, Status> {
    // The config dir is read at each call: a CNI daemonset may install a config any time.
    let network = match runtime.network.ready() {
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
        RuntimeCondition { r#type: "RuntimeReady".into(), status: true, reason: String::new(), message: String::new() },
        network,
    ];
    let mut info = HashMap::new();
    if request.into_inner().verbose {
        info.insert("config".to_string(), config_json.to_string());
        info.insert("podCIDR".to_string(), runtime.network.pod_cidr());
    }
    Ok(Response::new(StatusResponse {
        status: Some(RuntimeStatus { conditions }),
        info,
        // The built-in shim (unnamed, the default) does both; external
        // runtimes are not asked for ID-mapped rootfs nor `rro` mounts.
        runtime_handlers: runtime
            .handlers
            .names()
            .into_iter()
            .map(|name| {
                let built_in = name.is_empty();
                RuntimeHandler {
                    name,
                    features: Some(RuntimeHandlerFeatures {
                        recursive_read_only_mounts: built_in,
                        user_namespaces: built_in,
                    }),
                }
            })
            .collect(),
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: true,
            // userns::for_pod refuses a user namespace with the node's network.
            user_namespaces_host_network: false,
        }),
    }))
}

pub(super) async fn update_runtime_config(
    runtime: &Runtime,
    request: Request<UpdateRuntimeConfigRequest>,
) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
    let cidr = request.into_inner().runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr);
    // kubelet sends it when it learns the node's pod CIDR; the CNI config has its own ranges.
    if let Some(cidr) = cidr.filter(|c| !c.is_empty()) {
        tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
        runtime.network.set_pod_cidr(&cidr);
    }
    Ok(Response::new(UpdateRuntimeConfigResponse {}))
}

pub(super) async fn runtime_config(
    runtime: &Runtime,
    _: Request<RuntimeConfigRequest>,
) -> Result<Response<RuntimeConfigResponse>, Status> {
    // kubelet (1.31+) takes its cgroup driver from this answer.
    let driver = match runtime.cgroup_driver {
        crate::cgroup_driver::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        crate::cgroup_driver::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    Ok(Response::new(RuntimeConfigResponse { linux: Some(LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) }))
}
