//! The `Runtime`: gantryd's pod sandboxes and containers, and what every
//! lifecycle step shares (the records, the paths of a sandbox's or
//! container's files, the shims, the cached states).
//!
//! A sandbox is a shim whose process is `gantry-shim pause`, holding the
//! pod's network, IPC and UTS namespaces (and PID with a pod-shared PID
//! namespace); containers join them through `/proc/PAUSE_PID/ns/*`. Each
//! container is a shim over a bundle in `STATE/containers/ID` whose rootfs is
//! an overlay of the image's layers and the container's writable layer.
//!
//! The steps themselves live with their lifecycle: `sandbox/` (run, stop,
//! remove), `container/` (create, start, stop, remove, update, pause,
//! commit), `recovery.rs` (start-up), `exec.rs`, `stats.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_imageservice::ImageStore;
use tokio::sync::Mutex;

use crate::cgroup_driver::CgroupDriver;
use crate::cgroupfs::CgroupLayout;
use crate::cpu_readings::CpuReadings;
use crate::error::{internal, RuntimeError};
use crate::events::EventBus;
use crate::handlers::Handlers;
use crate::listing::Listing;
use crate::network::NetworkManager;
use crate::records::{ContainerRecord, SandboxRecord};
use crate::shim_client::{ShimClient, ShimError, State};
use crate::shim_process;
use crate::systemd::Systemd;

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
    pub listing: Listing,
    /// Container and sandbox lifecycle events for GetContainerEvents.
    pub events: EventBus,
    /// Where the cgroup controllers are, for stats.
    pub(crate) cgroups: CgroupLayout,
    /// The previous CPU reading per container or pod, for CPU rates.
    pub(crate) cpu_readings: CpuReadings,
    pub counters: RuntimeCounters,
    /// The RuntimeClass handlers: the built-in shim and external OCI runtimes.
    pub handlers: Handlers,
    /// How pods' and containers' cgroups are made (kubelet's driver).
    pub cgroup_driver: CgroupDriver,
    /// systemd's D-Bus API, for the systemd cgroup driver's scope units.
    pub(crate) systemd: Systemd,
    /// Where CDI spec files are (`cdi.rs`), read at each CreateContainer
    /// that asks for a CDI device.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// criu, for CheckpointContainer: a path, or a name searched in PATH.
    pub criu_path: PathBuf,
}

/// Running totals for gantryd's metrics.
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// Containers the kernel's OOM killer ended, seen since gantryd started.
    pub oom_kills: std::sync::atomic::AtomicU64,
    /// Sandboxes and containers an earlier gantryd left, taken over at start-up.
    pub recovered_sandboxes: std::sync::atomic::AtomicU64,
    pub recovered_containers: std::sync::atomic::AtomicU64,
}

impl Runtime {
    /// Opens the state in `state_dir`, taking over what a previous gantryd
    /// left there (`recovery.rs`).
    pub async fn open(
        images: Arc<ImageStore>,
        state_dir: &Path,
        shim_binary: PathBuf,
        network: NetworkManager,
        handlers: Handlers,
        cgroup_driver: CgroupDriver,
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
            listing: Listing::default(),
            events: EventBus::default(),
            cgroups: CgroupLayout::detect(),
            cpu_readings: Default::default(),
            counters: RuntimeCounters::default(),
            handlers,
            cgroup_driver,
            systemd: Systemd::default(),
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
            criu_path: "criu".into(),
        };
        if cgroup_driver == CgroupDriver::Systemd && !rt.cgroups.is_unified() {
            return Err(RuntimeError::FailedPrecondition(
                "cgroup_driver = \"systemd\" needs a pure cgroup v2 host (cgroup2 mounted at /sys/fs/cgroup)".into(),
            ));
        }
        rt.load().await?;
        Ok(rt)
    }

    // ---- paths -------------------------------------------------------------

    /// The gantry-shim binary gantryd starts.
    pub fn shim_binary(&self) -> &Path {
        &self.shim_binary
    }

    /// `gantry-shim`, told where the cgroups are mounted.
    pub(crate) fn shim_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.shim_binary);
        command.env(gantry_proto::CGROUP_MOUNTINFO_ENV, self.cgroups.mount_lines());
        command
    }

    /// The shim's attach socket (see `gantry_proto::attach`).
    pub fn attach_socket_path(&self, id: &str) -> PathBuf {
        self.socket_path(id).with_extension("attach")
    }

    /// Shim sockets live apart from the bundles, under short names: a unix
    /// socket path must fit in 108 bytes.
    pub(crate) fn socket_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("s").join(format!("{}.sock", &id[..id.len().min(24)]))
    }

    pub(crate) fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(id)
    }

    pub(crate) fn sandboxes_dir(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }

    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    /// A container's OCI bundle (config.json, rootfs, shim state).
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id)
    }

    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    // ---- records -----------------------------------------------------------

    pub async fn sandbox(&self, id: &str) -> Result<SandboxRecord, RuntimeError> {
        self.sandboxes
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    pub async fn container(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        self.containers
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))
    }

    /// A full ID from a unique prefix.
    pub async fn container_by_prefix(&self, prefix: &str) -> Result<String, RuntimeError> {
        let containers = self.containers.lock().await;
        let matches: Vec<&String> = containers.keys().filter(|id| id.starts_with(prefix)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RuntimeError::NotFound(format!("container {prefix:?} not found"))),
            _ => Err(RuntimeError::InvalidArgument(format!("{prefix:?} names {} containers", matches.len()))),
        }
    }

    /// The IDs of a pod's containers.
    pub(crate) async fn members_of(&self, sandbox_id: &str) -> Vec<String> {
        self.containers.lock().await.values().filter(|c| c.sandbox_id == sandbox_id).map(|c| c.id.clone()).collect()
    }

    // ---- shims and their states ---------------------------------------------

    pub(crate) async fn shim(&self, id: &str) -> Result<ShimClient, ShimError> {
        ShimClient::connect(&self.socket_path(id)).await
    }

    /// SIGKILL to the shim's process, then (if `shutdown`) ends the shim.
    pub(crate) async fn kill_shim(&self, id: &str, shutdown: bool) {
        if let Ok(mut shim) = self.shim(id).await {
            let _ = shim.kill(9).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.wait()).await;
            if shutdown {
                let _ = shim.shutdown().await;
            }
        }
    }

    /// The container's state from its shim, or from the state file the shim
    /// left if it is gone. Also refreshes the cached state.
    pub async fn container_state(&self, id: &str) -> State {
        let mut state = None;
        if let Ok(mut shim) = self.shim(id).await {
            state = shim.state().await.ok();
        }
        let state = state.or_else(|| shim_process::read_state_file(&self.container_dir(id))).unwrap_or_default();
        self.cache_state(id, state.clone());
        state
    }

    pub(crate) fn cache_state(&self, id: &str, state: State) {
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
