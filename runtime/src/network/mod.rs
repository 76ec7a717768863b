//! Pod networking: what the runtime asks of the network (attach a pod,
//! detach it, is the network ready, the node's pod CIDR), done through CNI.
//!
//! What ADD was given is kept in the sandbox dir (`network.json`), written
//! before ADD runs, so that DEL can be run with the same config and
//! arguments later: after the config dir changed, after a gantryd restart,
//! or after a crash in the middle of ADD.

pub mod cni;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use gantry_proto::cri::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use cni::{Attachment, Cni, CniError, NetworkConfigList};

/// The pod's interface, as kubelet and every CNI setup expect it.
pub const POD_IFNAME: &str = "eth0";

/// Where CNI configs and plugins are.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkOptions {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            conf_dir: "/etc/cni/net.d".into(),
            // The upstream location, then Debian's containernetworking-plugins.
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

/// A pod's attachment as persisted in `network.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodNetwork {
    pub list: NetworkConfigList,
    pub attachment: Attachment,
    /// Device and inode of the netns at ADD: a later DEL passes the netns
    /// path only if it still names that namespace, never one a reused pid
    /// now names.
    pub netns_id: Option<(u64, u64)>,
    /// The list's ADD result, `None` while ADD has not finished.
    pub result: Option<Value>,
}

impl PodNetwork {
    pub fn ips(&self) -> Vec<String> {
        self.result.as_ref().map(cni::result_ips).unwrap_or_default()
    }
}

fn netns_id(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub struct NetworkManager {
    options: NetworkOptions,
    cni: Cni,
    /// From UpdateRuntimeConfig; plugins take their ranges from their own
    /// config, so it is only kept and reported.
    pod_cidr: std::sync::Mutex<String>,
}

impl NetworkManager {
    pub fn new(options: NetworkOptions) -> Self {
        let cni = Cni { bin_dirs: options.bin_dirs.clone() };
        NetworkManager { options, cni, pod_cidr: std::sync::Mutex::new(String::new()) }
    }

    pub fn options(&self) -> &NetworkOptions {
        &self.options
    }

    /// Read at each call, so a config installed later (by a CNI daemonset)
    /// is used without a restart. `Ok(None)`: no config yet.
    pub fn config(&self) -> Result<Option<NetworkConfigList>, CniError> {
        NetworkConfigList::load_first(&self.options.conf_dir)
    }

    /// NetworkReady: `Ok(network name)` or why not.
    pub fn ready(&self) -> Result<String, String> {
        match self.config() {
            Ok(Some(list)) => Ok(list.name),
            Ok(None) => Err(CniError::NoConfig { dir: self.options.conf_dir.clone() }.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn set_pod_cidr(&self, cidr: &str) {
        if let Ok(mut c) = self.pod_cidr.lock() {
            *c = cidr.to_string();
        }
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// What ADD will be given for a pod whose pause process is `pause_pid`;
    /// `Ok(None)` when there is no CNI config (the pod has loopback only).
    pub fn prepare(
        &self,
        sandbox_id: &str,
        pause_pid: u32,
        config: &PodSandboxConfig,
    ) -> Result<Option<PodNetwork>, CniError> {
        let Some(list) = self.config()? else {
            tracing::warn!(pod = %sandbox_id, dir = %self.options.conf_dir.display(), "no CNI config: the pod gets loopback only");
            return Ok(None);
        };
        let meta = config.metadata.clone().unwrap_or_default();
        let netns = format!("/proc/{pause_pid}/ns/net");
        let port_mappings = config
            .port_mappings
            .iter()
            // As kubelet's hostport handling: without a host port there is nothing to map.
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let protocol = gantry_proto::cri::v1::Protocol::try_from(p.protocol)
                    .map(|p| p.as_str_name().to_ascii_lowercase())
                    .unwrap_or_else(|_| "tcp".into());
                let mut m = serde_json::json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": protocol,
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = Value::String(p.host_ip.clone());
                }
                m
            })
            .collect();
        let attachment = Attachment {
            container_id: sandbox_id.to_string(),
            netns: netns.clone(),
            ifname: POD_IFNAME.to_string(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), meta.namespace),
                ("K8S_POD_NAME".into(), meta.name),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id.to_string()),
                ("K8S_POD_UID".into(), meta.uid),
            ],
            port_mappings,
        };
        Ok(Some(PodNetwork { list, attachment, netns_id: netns_id(&netns), result: None }))
    }

    /// ADD of the whole list. If a plugin fails, DEL undoes the plugins that
    /// ran (the failed one too: it may have done half its work).
    pub async fn add(&self, net: &mut PodNetwork) -> Result<(), CniError> {
        let pod = net.attachment.container_id.clone();
        match self.cni.add(&net.list, &net.attachment).await {
            Ok(result) => {
                net.result = Some(result);
                tracing::info!(pod = %pod, network = %net.list.name, ips = ?net.ips(), "pod network set up");
                Ok(())
            }
            Err(failure) => {
                tracing::warn!(pod = %pod, error = %failure.error, "CNI ADD failed, undoing it");
                let at = self.del_attachment(net);
                if let Err(e) = self.cni.del(&net.list, failure.attempted, &at, failure.prev_result.as_ref()).await {
                    // The ADD error is the one to report; this one is for the operator.
                    tracing::error!(pod = %pod, error = %e, "undoing a failed CNI ADD failed too");
                }
                Err(failure.error)
            }
        }
    }

    /// DEL of the whole list as it was added (idempotent: plugins treat a
    /// second DEL as done). The netns may be gone: plugins get an empty
    /// CNI_NETNS then and release what lives outside it (IPs, host veths,
    /// port mappings).
    pub async fn del(&self, net: &PodNetwork) -> Result<(), CniError> {
        let at = self.del_attachment(net);
        self.cni.del(&net.list, net.list.plugins.len(), &at, net.result.as_ref()).await?;
        tracing::info!(pod = %net.attachment.container_id, network = %net.list.name, "pod network torn down");
        Ok(())
    }

    fn del_attachment(&self, net: &PodNetwork) -> Attachment {
        let mut at = net.attachment.clone();
        if net.netns_id.is_none() || netns_id(&at.netns) != net.netns_id {
            tracing::debug!(pod = %at.container_id, netns = %at.netns, "pod netns is gone; DEL without it");
            at.netns = String::new();
        }
        at
    }
}
