//! Pod sandboxes and containers: their records, their shims, their rootfs.
//!
//! A sandbox is a shim whose process is `gantry-shim pause`, holding the
//! pod's network, IPC and UTS namespaces (and PID with a pod-shared PID
//! namespace); containers join them through `/proc/PAUSE_PID/ns/*`. Each
//! container is a shim over a bundle in `STATE/containers/ID` whose rootfs is
//! an overlay of the image's layers and the container's writable layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gantry_imageservice::{fsutil, Digest, ImageSelector, ImageStore};
use k8s_cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::network::{NetworkManager, PodNetwork};
use crate::shim_client::{ShimClient, ShimError, State, Status};
use crate::spec::{self, ImageConfig, PodContext, ProcessIdentity};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
}

pub(crate) fn internal(what: &str) -> impl Fn(&dyn std::fmt::Display) -> RuntimeError + '_ {
    move |e| RuntimeError::Internal(format!("{what}: {e}"))
}

pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn new_id() -> String {
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
}

/// Cgroup `gantry-ID` below the pod's cgroup parent (kubelet's pod cgroup),
/// `/gantry` when kubelet gives none: for its containers and its pause process.
fn pod_cgroup(config: &PodSandboxConfig, id: &str) -> String {
    let parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or_default();
    let parent = if parent.is_empty() { "/gantry" } else { parent };
    // Cleaned as an absolute path: `..` cannot leave the cgroup hierarchy.
    crate::cgroup_path::child(parent, &format!("gantry-{id}"))
}

impl SandboxRecord {
    /// The cgroup (an OCI `cgroupsPath`) of this pod's container `id`:
    /// below the pod's cgroup parent, `/gantry` when kubelet gives none.
    pub fn container_cgroup(&self, id: &str) -> String {
        pod_cgroup(&self.config, id)
    }

    /// The pod's own user namespace, if it has one (checked at RunPodSandbox).
    pub fn id_maps(&self) -> Option<crate::userns::PodIdMaps> {
        crate::userns::for_pod(&self.config).ok().flatten()
    }

    pub fn namespace_mode(&self, which: fn(&k8s_cri::v1::NamespaceOption) -> i32) -> i32 {
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
    /// The user and groups its process runs as (ContainerStatus.user).
    #[serde(default)]
    pub identity: Option<ProcessIdentity>,
}

pub struct Runtime {
    pub images: Arc<ImageStore>,
    state_dir: PathBuf,
    pub(crate) shim_binary: PathBuf,
    pub network: NetworkManager,
    pub sandboxes: Mutex<HashMap<String, SandboxRecord>>,
    pub containers: Mutex<HashMap<String, ContainerRecord>>,
    /// Each container's last known state, kept current by a watcher task
    /// per started container, and its encoded listing entry: listing never
    /// asks a shim nor takes `containers`' lock.
    pub listing: crate::listing::Listing,
    /// Container and sandbox lifecycle events for GetContainerEvents.
    events: tokio::sync::broadcast::Sender<Event>,
    /// Where the cgroup controllers are, for stats.
    pub(crate) cgroups: crate::cgroupfs::CgroupLayout,
    /// The previous CPU reading per container or pod, for CPU rates.
    pub(crate) cpu_readings: crate::stats::CpuReadings,
}

/// A lifecycle event: the container (or sandbox) ID and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: k8s_cri::v1::ContainerEventType,
    pub at: i64,
}

/// Start a shim for `bundle`. The container's process is only made at
/// Start, so the shim's `ready CONTAINER_PID SHIM_PID` names pid 0.
async fn launch_shim(
    mut command: tokio::process::Command,
    id: &str,
    bundle: &Path,
    socket: &Path,
    log: &Path,
) -> Result<(), RuntimeError> {
    let out = command
        .arg("--id")
        .arg(id)
        .arg("--bundle")
        .arg(bundle)
        .arg("--socket")
        .arg(socket)
        .arg("--log")
        .arg(log)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::Internal(format!("starting gantry-shim: {e}")))?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match line.strip_prefix("ready ") {
        Some(rest) => match rest.split_whitespace().next().map(str::parse::<u32>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(RuntimeError::Internal(format!("shim answered {line:?}"))),
        },
        None => Err(RuntimeError::FailedPrecondition(line.strip_prefix("error: ").unwrap_or(&line).to_string())),
    }
}

fn shim_state_file(bundle: &Path) -> Option<State> {
    use prost::Message;
    let bytes = std::fs::read(bundle.join("state.pb")).ok()?;
    State::decode(bytes.as_slice()).ok()
}

impl Runtime {
    pub async fn open(
        images: Arc<ImageStore>,
        state_dir: &Path,
        shim_binary: PathBuf,
        network: NetworkManager,
    ) -> Result<Self, RuntimeError> {
        for d in ["sandboxes", "containers", "s"] {
            tokio::fs::create_dir_all(state_dir.join(d)).await.map_err(|e| internal("creating state dirs")(&e))?;
        }
        let rt = Runtime {
            images,
            state_dir: state_dir.to_path_buf(),
            shim_binary,
            network,
            sandboxes: Mutex::new(HashMap::new()),
            containers: Mutex::new(HashMap::new()),
            listing: crate::listing::Listing::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            cgroups: crate::cgroupfs::CgroupLayout::detect(),
            cpu_readings: Default::default(),
        };
        rt.load().await;
        Ok(rt)
    }

    /// Reads the records a previous gantryd left (it may have been killed).
    async fn load(&self) {
        let mut sandboxes = self.sandboxes.lock().await;
        let mut containers = self.containers.lock().await;
        let mut half_made = Vec::new();
        for (kind, dir) in
            [("sandboxes", self.state_dir.join("sandboxes")), ("containers", self.state_dir.join("containers"))]
        {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                let bytes = std::fs::read(e.path().join("record.json")).unwrap_or_default();
                if kind == "sandboxes" {
                    match serde_json::from_slice::<SandboxRecord>(&bytes) {
                        Ok(r) => {
                            sandboxes.insert(r.id.clone(), r);
                        }
                        Err(_) => half_made.push((id, e.path())),
                    }
                } else {
                    match serde_json::from_slice::<ContainerRecord>(&bytes) {
                        Ok(r) => {
                            // The record's own copy: the image may be gone by now.
                            self.images.hold_layers(&r.id, r.chain_ids.clone());
                            self.listing.insert(&r);
                            containers.insert(r.id.clone(), r);
                        }
                        Err(_) => half_made.push((id, e.path())),
                    }
                }
            }
        }
        // A crash between creating and recording a sandbox or container
        // leaves a bundle without a record: undo it.
        for (id, dir) in &half_made {
            tracing::warn!(id = %id, "removing a sandbox or container a crash left half-made");
            // A crash during CNI ADD: DEL what it may have set up.
            if dir.join("network.json").exists() {
                if let Err(e) = self.teardown_network(id, dir).await {
                    tracing::error!(pod = %id, error = %e, "tearing down a half-made pod's network");
                }
            }
            self.discard_container_files(id, dir).await;
        }
        // Writable layers whose container is gone.
        if let Ok(rd) = std::fs::read_dir(self.images.snapshotter().root().join("active")) {
            for e in rd.flatten() {
                let key = e.file_name().to_string_lossy().to_string();
                if !containers.contains_key(&key) {
                    tracing::warn!(key = %key, "removing an orphaned writable layer");
                    let _ = self.images.snapshotter().remove_rw(&key);
                }
            }
        }
        tracing::info!(sandboxes = sandboxes.len(), containers = containers.len(), "runtime state loaded");
    }

    /// Shim sockets live apart from the bundles, under short names: a unix
    /// socket path must fit in 108 bytes.
    /// The shim's attach socket (see `gantry_proto::attach`).
    /// `gantry-shim`, told where the cgroups are mounted.
    pub(crate) fn shim_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.shim_binary);
        command.env(gantry_proto::CGROUP_MOUNTINFO_ENV, self.cgroups.mount_lines());
        command
    }

    pub fn attach_socket_path(&self, id: &str) -> PathBuf {
        self.socket_path(id).with_extension("attach")
    }

    fn socket_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("s").join(format!("{}.sock", &id[..id.len().min(24)]))
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(id)
    }

    /// A container's OCI bundle (config.json, rootfs, shim state).
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id)
    }

    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    fn persist<T: Serialize>(dir: &Path, record: &T) -> Result<(), RuntimeError> {
        let bytes = serde_json::to_vec(record).map_err(|e| internal("encoding record")(&e))?;
        fsutil::write_atomic(&dir.join("record.json"), &bytes).map_err(|e| internal("writing record")(&e))
    }

    // ---- sandboxes -------------------------------------------------------

    pub async fn run_sandbox(&self, config: PodSandboxConfig) -> Result<String, RuntimeError> {
        let meta = config.metadata.clone().unwrap_or_default();
        if meta.name.is_empty() || meta.namespace.is_empty() {
            return Err(RuntimeError::InvalidArgument("pod sandbox metadata needs a name and a namespace".into()));
        }
        crate::sysctl::check_pod(&config).map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let id_maps = crate::userns::for_pod(&config)?;
        {
            let sandboxes = self.sandboxes.lock().await;
            if let Some(other) = sandboxes.values().find(|s| s.config.metadata.as_ref() == Some(&meta)) {
                return Err(RuntimeError::AlreadyExists(format!(
                    "pod sandbox {}/{} attempt {} already exists as {}",
                    meta.namespace, meta.name, meta.attempt, other.id
                )));
            }
        }
        let id = new_id();
        let dir = self.sandbox_dir(&id);
        let t = std::time::Instant::now();
        let result = self.create_sandbox(&id, &dir, config, id_maps).await;
        tracing::debug!(pod = %id, elapsed_us = t.elapsed().as_micros() as u64, "sandbox created");
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        let record = result?;
        self.sandboxes.lock().await.insert(id.clone(), record);
        self.emit(&id, k8s_cri::v1::ContainerEventType::ContainerCreatedEvent);
        self.emit(&id, k8s_cri::v1::ContainerEventType::ContainerStartedEvent);
        tracing::info!(pod = %id, name = %meta.name, namespace = %meta.namespace, "pod sandbox running");
        Ok(id)
    }

    async fn create_sandbox(
        &self,
        id: &str,
        dir: &Path,
        config: PodSandboxConfig,
        id_maps: Option<crate::userns::PodIdMaps>,
    ) -> Result<SandboxRecord, RuntimeError> {
        tokio::fs::create_dir_all(dir).await.map_err(|e| internal("creating sandbox dir")(&e))?;
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let node = NamespaceMode::Node as i32;
        let mut namespaces = vec![];
        // First, so that the pod's other namespaces belong to it.
        if id_maps.is_some() {
            namespaces.push(serde_json::json!({"type": "user"}));
        }
        if opts.network != node {
            namespaces.push(serde_json::json!({"type": "network"}));
            namespaces.push(serde_json::json!({"type": "uts"}));
        }
        if opts.ipc != node {
            namespaces.push(serde_json::json!({"type": "ipc"}));
        }
        // As containerd's pause container: the pod always has its own PID
        // namespace (unless it uses the node's), which containers with pid
        // mode POD join.
        if opts.pid != node {
            namespaces.push(serde_json::json!({"type": "pid"}));
        }
        let hostname = if opts.network == node { String::new() } else { config.hostname.clone() };
        let mut spec = serde_json::json!({
            "ociVersion": "1.1.0",
            // Only what bringing up loopback needs.
            "process": {
                "args": ["/proc/self/exe", "pause"], "env": [], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "capabilities": {"bounding": ["CAP_NET_ADMIN"], "effective": ["CAP_NET_ADMIN"], "permitted": ["CAP_NET_ADMIN"]},
                "noNewPrivileges": true,
            },
            "root": {"path": "/"},
            "hostname": hostname,
            // In the pod's cgroup, as containerd's pause container: the pod's
            // usage and limits include it.
            "linux": {"namespaces": namespaces, "cgroupsPath": pod_cgroup(&config, id)},
        });
        if let Some(maps) = id_maps {
            let (uids, gids) = maps.oci();
            spec["linux"]["uidMappings"] = uids;
            spec["linux"]["gidMappings"] = gids;
        }
        fsutil::write_atomic(&dir.join("config.json"), spec.to_string().as_bytes())
            .map_err(|e| internal("writing sandbox spec")(&e))?;
        self.write_etc_files(dir, &config)?;
        let t = std::time::Instant::now();
        launch_shim(self.shim_command(), id, dir, &self.socket_path(id), &dir.join("pause.log")).await?;
        tracing::debug!(pod = %id, elapsed_us = t.elapsed().as_micros() as u64, "sandbox shim launched");
        let with_network = opts.network != node;
        match self.start_sandbox(id, dir, config, with_network).await {
            Ok(record) => Ok(record),
            Err(e) => {
                // Nothing of a failed pod may stay: its pause process and shim go too.
                self.kill_shim(id, true).await;
                Err(e)
            }
        }
    }

    /// Starts the pause process, sets up the pod network, records the pod.
    async fn start_sandbox(
        &self,
        id: &str,
        dir: &Path,
        config: PodSandboxConfig,
        with_network: bool,
    ) -> Result<SandboxRecord, RuntimeError> {
        let mut shim =
            ShimClient::connect(&self.socket_path(id)).await.map_err(|e| internal("connecting to sandbox shim")(&e))?;
        // The pause process exists from Start on: its pid names the pod's namespaces.
        let t = std::time::Instant::now();
        let pid = shim.start().await.map_err(|e| internal("starting pause process")(&e))?.pid;
        tracing::debug!(pod = %id, elapsed_us = t.elapsed().as_micros() as u64, "pause process started");
        if pid == 0 {
            return Err(RuntimeError::Internal("the sandbox shim reported no pause process".into()));
        }
        let mut record = SandboxRecord {
            id: id.to_string(),
            config,
            created_at: now_nanos(),
            pause_pid: pid,
            ready: true,
            ips: vec![],
            network_attached: false,
        };
        let network = if with_network {
            self.network.prepare(id, pid, &record.config).map_err(|e| internal("loading the CNI config")(&e))?
        } else {
            None
        };
        if let Some(mut net) = network {
            // Written before ADD, so that a crash during ADD can still be undone by DEL.
            Self::persist_network(dir, &net)?;
            self.network.add(&mut net).await.map_err(|e| internal("setting up the pod network")(&e))?;
            Self::persist_network(dir, &net)?;
            record.ips = net.ips();
            record.network_attached = true;
        }
        Self::persist(dir, &record)?;
        Ok(record)
    }

    fn persist_network(dir: &Path, net: &PodNetwork) -> Result<(), RuntimeError> {
        let bytes = serde_json::to_vec(net).map_err(|e| internal("encoding network state")(&e))?;
        fsutil::write_atomic(&dir.join("network.json"), &bytes).map_err(|e| internal("writing network state")(&e))
    }

    /// CNI DEL with what ADD was given (`network.json`); no file, nothing added.
    async fn teardown_network(&self, id: &str, dir: &Path) -> Result<(), RuntimeError> {
        let bytes = match tokio::fs::read(dir.join("network.json")).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(internal("reading network state")(&e)),
        };
        let net: PodNetwork = serde_json::from_slice(&bytes).map_err(|e| internal("decoding network state")(&e))?;
        tracing::debug!(pod = %id, network = %net.list.name, "CNI DEL");
        self.network.del(&net).await.map_err(|e| internal("tearing down the pod network")(&e))
    }

    /// SIGKILL to the shim's process, then (if `shutdown`) ends the shim.
    async fn kill_shim(&self, id: &str, shutdown: bool) {
        if let Ok(mut shim) = ShimClient::connect(&self.socket_path(id)).await {
            let _ = shim.kill(9).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.wait()).await;
            if shutdown {
                let _ = shim.shutdown().await;
            }
        }
    }

    /// /etc/hosts, /etc/resolv.conf and /etc/hostname shared by the pod's containers.
    fn write_etc_files(&self, dir: &Path, config: &PodSandboxConfig) -> Result<(), RuntimeError> {
        let hostname = if config.hostname.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n");
        let resolv = match &config.dns_config {
            Some(dns) if !dns.servers.is_empty() || !dns.searches.is_empty() || !dns.options.is_empty() => {
                let mut s = String::new();
                if !dns.searches.is_empty() {
                    s += &format!("search {}\n", dns.searches.join(" "));
                }
                for server in &dns.servers {
                    s += &format!("nameserver {server}\n");
                }
                if !dns.options.is_empty() {
                    s += &format!("options {}\n", dns.options.join(" "));
                }
                s
            }
            _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        for (name, content) in [("hosts", hosts), ("resolv.conf", resolv), ("hostname", format!("{hostname}\n"))] {
            fsutil::write_atomic(&dir.join(name), content.as_bytes()).map_err(|e| internal("writing etc files")(&e))?;
        }
        Ok(())
    }

    pub async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.sandboxes.lock().await.get(id).cloned() else {
            // CRI: stopping an unknown or removed sandbox is not an error.
            return Ok(());
        };
        let members: Vec<String> =
            self.containers.lock().await.values().filter(|c| c.sandbox_id == id).map(|c| c.id.clone()).collect();
        // All of the pod's containers at once, not one by one.
        let stops = members.iter().map(|c| self.stop_container(c, 0));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        let dir = self.sandbox_dir(id);
        // While the pause process still holds the netns, so plugins can clean inside it.
        if record.network_attached {
            self.teardown_network(id, &dir).await?;
        }
        self.kill_shim(id, false).await;
        let mut sandboxes = self.sandboxes.lock().await;
        if let Some(r) = sandboxes.get_mut(id) {
            r.ready = false;
            r.network_attached = false;
            Self::persist(&dir, r)?;
        }
        if record.ready {
            self.emit(id, k8s_cri::v1::ContainerEventType::ContainerStoppedEvent);
        }
        tracing::info!(pod = %record.id, "pod sandbox stopped");
        Ok(())
    }

    pub async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        if !self.sandboxes.lock().await.contains_key(id) {
            return Ok(());
        }
        self.stop_sandbox(id).await?;
        let members: Vec<String> =
            self.containers.lock().await.values().filter(|c| c.sandbox_id == id).map(|c| c.id.clone()).collect();
        for c in members {
            self.remove_container(&c).await?;
        }
        let dir = self.sandbox_dir(id);
        if let Ok(mut shim) = ShimClient::connect(&self.socket_path(id)).await {
            let _ = shim.shutdown().await;
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        self.sandboxes.lock().await.remove(id);
        self.emit(id, k8s_cri::v1::ContainerEventType::ContainerDeletedEvent);
        tracing::info!(pod = %id, "pod sandbox removed");
        Ok(())
    }

    pub async fn sandbox(&self, id: &str) -> Result<SandboxRecord, RuntimeError> {
        self.sandboxes
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    // ---- containers ------------------------------------------------------

    pub async fn create_container(&self, sandbox_id: &str, config: ContainerConfig) -> Result<String, RuntimeError> {
        let sandbox = self.sandbox(sandbox_id).await?;
        if !sandbox.ready {
            return Err(RuntimeError::FailedPrecondition(format!("pod sandbox {sandbox_id} is not ready")));
        }
        let meta = config.metadata.clone().unwrap_or_default();
        if meta.name.is_empty() {
            return Err(RuntimeError::InvalidArgument("container metadata needs a name".into()));
        }
        if let Some(other) = self
            .containers
            .lock()
            .await
            .values()
            .find(|c| c.sandbox_id == sandbox_id && c.config.metadata.as_ref() == Some(&meta))
        {
            return Err(RuntimeError::AlreadyExists(format!(
                "container {:?} attempt {} already exists in pod sandbox {sandbox_id} as {}",
                meta.name, meta.attempt, other.id
            )));
        }
        let image_ref = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let selector = ImageSelector::parse(&image_ref)
            .map_err(|e| RuntimeError::InvalidArgument(format!("container image: {e}")))?;
        let image = self
            .images
            .resolve(&selector)
            .map_err(|e| internal("resolving image")(&e))?
            .ok_or_else(|| RuntimeError::NotFound(format!("image {image_ref:?} not found: pull it first")))?;
        let image_config: ImageConfig = self
            .images
            .content()
            .read(&image.config.digest)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| serde_json::from_value(v.get("config").cloned().unwrap_or_default()).ok())
            .unwrap_or_default();

        let id = new_id();
        let dir = self.container_dir(&id);
        let chains = image.chain_ids();
        self.images.hold_layers(&id, chains.clone());
        let result = self.prepare_container(&id, &dir, &sandbox, &config, &image_ref, &image_config, &chains).await;
        let (log_path, stop_signal, identity) = match result {
            Ok(v) => v,
            Err(e) => {
                self.discard_container_files(&id, &dir).await;
                return Err(e);
            }
        };
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_string(),
            config,
            image_id: image.id.to_string(),
            image_name: image_ref,
            created_at: now_nanos(),
            log_path,
            stop_signal,
            chain_ids: chains,
            identity: Some(identity),
        };
        if let Err(e) = Self::persist(&dir, &record) {
            self.discard_container_files(&id, &dir).await;
            return Err(e);
        }
        // Listed only once its record can be read (ContainerStatus after
        // ListContainers must find it).
        self.containers.lock().await.insert(id.clone(), record.clone());
        self.listing.insert(&record);
        self.container_state(&id).await;
        self.emit(&id, k8s_cri::v1::ContainerEventType::ContainerCreatedEvent);
        tracing::info!(container = %id, pod = %sandbox_id, name = %meta.name, "container created");
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare_container(
        &self,
        id: &str,
        dir: &Path,
        sandbox: &SandboxRecord,
        config: &ContainerConfig,
        image_ref: &str,
        image_config: &ImageConfig,
        chains: &[Digest],
    ) -> Result<(String, String, ProcessIdentity), RuntimeError> {
        let rootfs = dir.join("rootfs");
        tokio::fs::create_dir_all(&rootfs).await.map_err(|e| internal("creating bundle")(&e))?;
        let layout = self
            .images
            .snapshotter()
            .prepare_rw(id, chains)
            .map_err(|e| internal("preparing the writable layer")(&e))?;
        let id_maps = sandbox.id_maps();
        crate::userns::check_container(config, id_maps)?;
        if id_maps.is_some() {
            // Every layer ID-mapped into the pod's user namespace.
            self.mount_idmapped_rootfs(&layout, &rootfs, sandbox.pause_pid, id_maps).await?;
        } else {
            layout.mount(&rootfs).map_err(|e| internal("mounting the rootfs")(&e))?;
        }

        let security = config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default();
        if let Some(g) = security.run_as_group.as_ref() {
            // As containerd: a group alone would pair with whatever user the image names.
            if security.run_as_user.is_none() && security.run_as_username.is_empty() {
                return Err(RuntimeError::InvalidArgument(format!(
                    "run_as_group {} is set without run_as_user or run_as_username",
                    g.value
                )));
            }
        }
        let user = if let Some(uid) = security.run_as_user.as_ref() {
            uid.value.to_string()
        } else if !security.run_as_username.is_empty() {
            security.run_as_username.clone()
        } else {
            image_config.user.clone().unwrap_or_default()
        };
        let (uid, mut gid) =
            spec::resolve_user(&rootfs, &user).map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        if let Some(g) = security.run_as_group.as_ref() {
            gid = g.value as u32;
        }
        // The primary group, the CRI's supplemental groups and, unless the
        // policy is Strict, the groups the image lists the user in.
        let mut groups = vec![gid];
        groups.extend(security.supplemental_groups.iter().map(|g| *g as u32));
        if security.supplemental_groups_policy != k8s_cri::v1::SupplementalGroupsPolicy::Strict as i32 {
            groups.extend(spec::image_groups(&rootfs, uid));
        }
        groups.sort_unstable();
        groups.dedup();
        let who = ProcessIdentity { uid, gid, additional_gids: groups };
        let sdir = self.sandbox_dir(&sandbox.id);
        let etc = [
            ("/etc/hosts", sdir.join("hosts")),
            ("/etc/resolv.conf", sdir.join("resolv.conf")),
            ("/etc/hostname", sdir.join("hostname")),
        ];
        let ns_dir = PathBuf::from(format!("/proc/{}/ns", sandbox.pause_pid));
        let sysctls = sandbox.config.linux.as_ref().map(|l| l.sysctls.clone()).unwrap_or_default();
        let node = NamespaceMode::Node as i32;
        let pod = PodContext {
            ns_dir: &ns_dir,
            host_network: sandbox.namespace_mode(|n| n.network) == node,
            host_ipc: sandbox.namespace_mode(|n| n.ipc) == node,
            host_pid: sandbox.namespace_mode(|n| n.pid) == node,
            etc_files: &etc,
            sysctls: &sysctls,
            id_maps,
        };
        let cgroups_path = sandbox.container_cgroup(id);
        let oci = spec::build(config, image_ref, image_config, &pod, &who, &cgroups_path).map_err(|e| match e {
            spec::SpecError::Oci(m) => RuntimeError::Internal(m),
            other => RuntimeError::InvalidArgument(other.to_string()),
        })?;
        oci.save(dir.join("config.json")).map_err(|e| internal("writing config.json")(&e))?;

        let log_dir = sandbox.config.log_directory.clone();
        let log_path = if !log_dir.is_empty() && !config.log_path.is_empty() {
            Path::new(&log_dir).join(&config.log_path)
        } else {
            dir.join("container.log")
        };
        launch_shim(self.shim_command(), id, dir, &self.socket_path(id), &log_path).await?;
        let stop_signal = image_config.stop_signal.clone().unwrap_or_default();
        Ok((log_path.display().to_string(), stop_signal, who))
    }

    /// `gantry-shim mount-rootfs`: the overlay with every layer ID-mapped
    /// into the user namespace of the pod's pause process.
    async fn mount_idmapped_rootfs(
        &self,
        layout: &gantry_imageservice::snapshot::RootfsLayout,
        target: &Path,
        pause_pid: u32,
        id_maps: Option<crate::userns::PodIdMaps>,
    ) -> Result<(), RuntimeError> {
        let rw =
            layout.upperdir.parent().ok_or_else(|| RuntimeError::Internal("writable layer has no parent".into()))?;
        // The writable layer is not ID-mapped (see gantry-shim's userns):
        // its root, the container's `/`, belongs to the container's root.
        if let Some(maps) = id_maps {
            std::os::unix::fs::chown(&layout.upperdir, Some(maps.uid.host_id), Some(maps.gid.host_id))
                .map_err(|e| internal("giving the writable layer to the container's root")(&e))?;
        }
        let mut cmd = tokio::process::Command::new(&self.shim_binary);
        cmd.arg("mount-rootfs").arg("--userns").arg(format!("/proc/{pause_pid}/ns/user")).arg("--rw").arg(rw);
        for lower in &layout.lowerdirs {
            cmd.arg("--lower").arg(lower);
        }
        let out = cmd.arg(target).output().await.map_err(|e| internal("running gantry-shim mount-rootfs")(&e))?;
        if !out.status.success() {
            return Err(RuntimeError::Internal(format!(
                "mounting the ID-mapped rootfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Undoes a container's files: shim, mount, writable layer, bundle.
    async fn discard_container_files(&self, id: &str, dir: &Path) {
        if let Ok(mut shim) = ShimClient::connect(&self.socket_path(id)).await {
            let _ = shim.kill(9).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.wait()).await;
            let _ = shim.shutdown().await;
        }
        let _ = gantry_imageservice::snapshot::unmount(&dir.join("rootfs"));
        let _ = self.images.snapshotter().remove_rw(id);
        let _ = tokio::fs::remove_dir_all(dir).await;
        self.images.release_layers(id);
    }

    pub async fn container(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        self.containers
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))
    }

    async fn shim(&self, id: &str) -> Result<ShimClient, ShimError> {
        ShimClient::connect(&self.socket_path(id)).await
    }

    /// The container's state from its shim, or from the state file the shim
    /// left if it is gone.
    /// The container's state from its shim, or from the state file the shim
    /// left if it is gone. Also refreshes the cached state.
    pub async fn container_state(&self, id: &str) -> State {
        let mut state = None;
        if let Ok(mut shim) = self.shim(id).await {
            state = shim.state().await.ok();
        }
        let state = state.or_else(|| shim_state_file(&self.container_dir(id))).unwrap_or_default();
        self.cache_state(id, state.clone());
        state
    }

    /// Subscribes to lifecycle events (GetContainerEvents).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, id: &str, kind: k8s_cri::v1::ContainerEventType) {
        // No subscriber is fine: nobody is listening.
        let _ = self.events.send(Event { id: id.to_string(), kind, at: now_nanos() });
    }

    fn cache_state(&self, id: &str, state: State) {
        self.listing.set_state(id, state);
    }

    /// The last known state, without asking the shim.
    pub fn cached_state(&self, id: &str) -> State {
        self.listing.state(id)
    }

    /// The last known shim status (`Status` as i32), without cloning the state.
    pub fn cached_status(&self, id: &str) -> i32 {
        self.listing.status(id)
    }

    /// Learns every container's state (after a restart) and watches the
    /// running ones for their exit.
    pub async fn watch_all(self: &Arc<Self>) {
        let ids: Vec<String> = self.containers.lock().await.keys().cloned().collect();
        for id in ids {
            if self.container_state(&id).await.status == Status::Running as i32 {
                self.watch(id);
            }
        }
    }

    /// Waits (in the background) for the container to exit and records it.
    fn watch(self: &Arc<Self>, id: String) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let exited = match this.shim(&id).await {
                Ok(mut shim) => shim.wait().await.ok(),
                Err(_) => None,
            };
            let state = exited.or_else(|| shim_state_file(&this.container_dir(&id))).unwrap_or_default();
            if this.containers.lock().await.contains_key(&id) {
                this.cache_state(&id, state);
                this.emit(&id, k8s_cri::v1::ContainerEventType::ContainerStoppedEvent);
            }
        });
    }

    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<(), RuntimeError> {
        self.container(id).await?;
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        let result = shim.start().await;
        // Whatever happened, the shim knows the state now.
        self.container_state(id).await;
        result.map_err(|e| match e {
            ShimError::Shim(m) => RuntimeError::FailedPrecondition(format!("starting container {id}: {m}")),
            other => internal("starting container")(&other),
        })?;
        self.watch(id.to_string());
        self.emit(id, k8s_cri::v1::ContainerEventType::ContainerStartedEvent);
        tracing::info!(container = %id, "container started");
        Ok(())
    }

    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), RuntimeError> {
        let result = self.stop_container_process(id, timeout_secs).await;
        if self.containers.lock().await.contains_key(id) {
            self.container_state(id).await;
        }
        result
    }

    async fn stop_container_process(&self, id: &str, timeout_secs: i64) -> Result<(), RuntimeError> {
        let Ok(record) = self.container(id).await else { return Ok(()) };
        let Ok(mut shim) = self.shim(id).await else { return Ok(()) };
        let state = shim.state().await.map_err(|e| internal("container state")(&e))?;
        // As containerd, a container never started has nothing to stop and
        // stays CREATED (RemoveContainer still removes it).
        if state.status == Status::Stopped as i32 || state.status == Status::Created as i32 {
            return Ok(());
        }
        // A frozen process takes no signal: thaw a paused container first.
        if self.is_paused(id).await {
            let _ = self.pause(id, false).await;
        }
        if state.status == Status::Running as i32 && timeout_secs > 0 {
            let sig = parse_signal(&record.stop_signal).unwrap_or(libc_sigterm());
            shim.kill(sig).await.map_err(|e| internal("signalling container")(&e))?;
            if tokio::time::timeout(Duration::from_secs(timeout_secs as u64), shim.wait()).await.is_ok() {
                tracing::info!(container = %id, "container stopped");
                return Ok(());
            }
            shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        }
        shim.kill(9).await.map_err(|e| internal("killing container")(&e))?;
        tokio::time::timeout(Duration::from_secs(30), shim.wait())
            .await
            .map_err(|_| RuntimeError::Internal(format!("container {id} did not die from SIGKILL")))?
            .map_err(|e| internal("waiting for container")(&e))?;
        tracing::info!(container = %id, "container killed");
        Ok(())
    }

    /// kubelet's log rotation renamed the file: the shim opens a new one.
    pub async fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        self.container(id).await?;
        if self.container_state(id).await.status != Status::Running as i32 {
            return Err(RuntimeError::FailedPrecondition(format!("container {id} is not running")));
        }
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        shim.reopen_log().await.map_err(|e| internal("reopening the log")(&e))?;
        Ok(())
    }

    /// New cgroup limits for a container, remembered in its record.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: k8s_cri::v1::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let mut record = self.container(id).await?;
        let update = crate::shim_client::UpdateRequest {
            memory_limit: resources.memory_limit_in_bytes,
            memory_swap: if resources.memory_swap_limit_in_bytes > 0 {
                resources.memory_swap_limit_in_bytes
            } else {
                resources.memory_limit_in_bytes
            },
            cpu_shares: resources.cpu_shares.max(0) as u64,
            cpu_quota: resources.cpu_quota,
            cpu_period: resources.cpu_period.max(0) as u64,
            cpuset_cpus: resources.cpuset_cpus.clone(),
            cpuset_mems: resources.cpuset_mems.clone(),
            hugepage_limits: resources
                .hugepage_limits
                .iter()
                .map(|h| gantry_proto::shim::HugepageLimit { page_size: h.page_size.clone(), limit: h.limit })
                .collect(),
        };
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to shim")(&e))?;
        shim.update(update).await.map_err(|e| match e {
            ShimError::Shim(m) => RuntimeError::InvalidArgument(format!("updating container {id}: {m}")),
            other => internal("updating container")(&other),
        })?;
        let linux = record.config.linux.get_or_insert_with(Default::default);
        linux.resources = Some(resources);
        Self::persist(&self.container_dir(id), &record)?;
        self.listing.insert(&record);
        self.containers.lock().await.insert(id.to_string(), record);
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        if self.container(id).await.is_err() {
            return Ok(());
        }
        self.stop_container(id, 0).await?;
        let dir = self.container_dir(id);
        self.discard_container_files(id, &dir).await;
        // Unlisted first, for the same reason.
        self.listing.remove(id);
        self.containers.lock().await.remove(id);
        self.emit(id, k8s_cri::v1::ContainerEventType::ContainerDeletedEvent);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

/// `SIGTERM`, `TERM` or `15`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = if s.starts_with("SIG") { s.to_string() } else { format!("SIG{s}") };
    name.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

/// For the Gantry image API: which containers were created from an image.
#[tonic::async_trait]
impl gantry_imageservice::api::ContainerIndex for Runtime {
    async fn containers_using(&self, image_id: &str) -> Vec<String> {
        let mut ids: Vec<String> =
            self.containers.lock().await.values().filter(|c| c.image_id == image_id).map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    }
}
