//! What gantryd remembers of each pod sandbox and container, and how it is
//! stored: one `record.json` per sandbox or container directory, written
//! atomically, read back at start-up (`recovery.rs`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use gantry_imageservice::{fsutil, Digest};
use gantry_proto::cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use serde::{Deserialize, Serialize};

use crate::cgroup_driver::CgroupDriver;
use crate::error::{internal, RuntimeError};
use crate::spec::ProcessIdentity;
use crate::userns::PodIdMaps;

pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// A new sandbox or container ID: 64 hex digits, as containerd's.
pub(crate) fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::thread_rng().gen();
    hex::encode(bytes)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub created_at: i64,
    pub pause_pid: u32,
    pub ready: bool,
    /// The pod's IPs from CNI, first is the primary one.
    #[serde(default)]
    pub ips: Vec<String>,
    /// CNI ADD happened (`network.json`) and DEL has not yet succeeded.
    #[serde(default)]
    pub network_attached: bool,
    /// The pod's overhead and resources kubelet last gave (UpdatePodSandboxResources).
    #[serde(default)]
    pub overhead: Option<gantry_proto::cri::v1::LinuxContainerResources>,
    #[serde(default)]
    pub resources: Option<gantry_proto::cri::v1::LinuxContainerResources>,
    /// The RuntimeClass handler that runs the pod's containers ("": built-in).
    #[serde(default)]
    pub runtime_handler: String,
    /// The cgroup driver the pod's cgroups were made with (kept, so a
    /// changed configuration never misreads an existing pod).
    #[serde(default)]
    pub cgroup_driver: CgroupDriver,
}

impl SandboxRecord {
    /// kubelet's pod cgroup: a path (cgroupfs) or a slice (systemd); "" if none.
    pub fn cgroup_parent(&self) -> &str {
        self.config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or_default()
    }

    /// The OCI `cgroupsPath` of this pod's container (or pause process) `id`.
    pub fn container_cgroups_path(&self, id: &str) -> String {
        self.cgroup_driver.spec_path(self.cgroup_parent(), id)
    }

    /// The cgroup of container `id` as a path from each hierarchy's root.
    pub fn container_cgroup(&self, id: &str) -> String {
        self.cgroup_driver.fs_path(self.cgroup_parent(), id)
    }

    /// The pod's own user namespace, if it has one (checked at RunPodSandbox).
    pub fn id_maps(&self) -> Option<PodIdMaps> {
        crate::userns::for_pod(&self.config).ok().flatten()
    }

    pub fn namespace_mode(&self, which: fn(&gantry_proto::cri::v1::NamespaceOption) -> i32) -> i32 {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(which)
            .unwrap_or(NamespaceMode::Pod as i32)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub image_id: String,
    pub image_name: String,
    pub created_at: i64,
    pub log_path: String,
    pub stop_signal: String,
    /// The image's layers, held while the container exists.
    #[serde(default)]
    pub chain_ids: Vec<Digest>,
    /// The layers of the images it mounts as volumes (held as `ID/volumes`).
    #[serde(default)]
    pub volume_chain_ids: Vec<Digest>,
    /// The user and groups its process runs as (ContainerStatus.user).
    #[serde(default)]
    pub identity: Option<ProcessIdentity>,
}

/// The format of the records this gantryd writes, stored in each as
/// `format` (records from before it was stored are format 1). A gantryd
/// refuses records of a newer format rather than misread them: fields it
/// does not know would be dropped, and a record it cannot read would be
/// taken for a half-made one and removed.
pub const RECORD_FORMAT: u64 = 1;

/// Writes `record` as `dir/record.json`, atomically: a crash leaves the old
/// record or the new one, never half of one.
pub(crate) fn persist<T: Serialize>(dir: &Path, record: &T) -> Result<(), RuntimeError> {
    let mut value = serde_json::to_value(record).map_err(|e| internal("encoding record")(&e))?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("format".into(), RECORD_FORMAT.into());
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| internal("encoding record")(&e))?;
    fsutil::write_atomic(&dir.join("record.json"), &bytes).map_err(|e| internal("writing record")(&e))
}

/// Why a `record.json` was not read.
#[derive(Debug)]
pub(crate) enum Unreadable {
    /// Written by a newer gantryd: never to be misread, nor removed.
    Newer(u64),
    /// Missing or cut short: a crash between making a bundle and recording it.
    HalfMade,
}

/// Reads a record written by `persist`, of this format or an older one.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Unreadable> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| Unreadable::HalfMade)?;
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
    if format > RECORD_FORMAT {
        return Err(Unreadable::Newer(format));
    }
    serde_json::from_value(value).map_err(|_| Unreadable::HalfMade)
}
