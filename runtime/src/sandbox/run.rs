//! RunPodSandbox: the pause process in the pod's new namespaces (inside
//! the pod's cgroup), the pod's /etc files, then CNI; undone whole when any
//! step fails.

use std::path::Path;

use gantry_imageservice::fsutil;
use gantry_proto::cri::v1::{ContainerEventType, NamespaceMode, PodSandboxConfig};

use crate::error::{internal, RuntimeError};
use crate::records::{new_id, now_nanos, persist, SandboxRecord};
use crate::runtime::Runtime;
use crate::sandbox::network::persist_network;
use crate::shim_process;
use crate::userns::PodIdMaps;

impl Runtime {
    pub async fn run_sandbox(&self, config: PodSandboxConfig, handler: &str) -> Result<String, RuntimeError> {
        let meta = config.metadata.clone().unwrap_or_default();
        if meta.name.is_empty() || meta.namespace.is_empty() {
            return Err(RuntimeError::InvalidArgument("pod sandbox metadata needs a name and a namespace".into()));
        }
        crate::sysctl::check_pod(&config).map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let external = self.handlers.check_usable(handler)?.is_some();
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or_default();
        self.cgroup_driver.check_parent(parent)?;
        let id_maps = crate::userns::for_pod(&config)?;
        if external && id_maps.is_some() {
            // Its Status features say so: the rootfs would need ID-mapped
            // mounts the external runtime is not asked to make.
            return Err(RuntimeError::InvalidArgument(format!(
                "runtime handler {handler:?} does not support pods with a user namespace"
            )));
        }
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
        let result = self.create_sandbox(&id, &dir, config, id_maps, handler).await;
        tracing::debug!(pod = %id, elapsed_us = t.elapsed().as_micros() as u64, "sandbox created");
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        let record = result?;
        self.sandboxes.lock().await.insert(id.clone(), record);
        self.events.emit(&id, ContainerEventType::ContainerCreatedEvent);
        self.events.emit(&id, ContainerEventType::ContainerStartedEvent);
        tracing::info!(pod = %id, name = %meta.name, namespace = %meta.namespace, "pod sandbox running");
        Ok(id)
    }

    async fn create_sandbox(
        &self,
        id: &str,
        dir: &Path,
        config: PodSandboxConfig,
        id_maps: Option<PodIdMaps>,
        handler: &str,
    ) -> Result<SandboxRecord, RuntimeError> {
        tokio::fs::create_dir_all(dir).await.map_err(|e| internal("creating sandbox dir")(&e))?;
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let node = NamespaceMode::Node as i32;
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        let parent = parent.as_str();
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
            "linux": {"namespaces": namespaces, "cgroupsPath": self.cgroup_driver.spec_path(parent, id)},
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
        shim_process::launch(self.shim_command(), id, dir, &self.socket_path(id), &dir.join("pause.log")).await?;
        tracing::debug!(pod = %id, elapsed_us = t.elapsed().as_micros() as u64, "sandbox shim launched");
        let with_network = opts.network != node;
        match self.start_sandbox(id, dir, config, with_network, handler).await {
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
        handler: &str,
    ) -> Result<SandboxRecord, RuntimeError> {
        let mut shim = self.shim(id).await.map_err(|e| internal("connecting to sandbox shim")(&e))?;
        // The pause process exists from Start on: its pid names the pod's namespaces.
        let t = std::time::Instant::now();
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        let scope = self.cgroup_driver.scope(&parent, id);
        let pid =
            self.start_shim_process(&mut shim, id, scope, &Default::default(), "starting pause process").await?.pid;
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
            overhead: None,
            resources: None,
            runtime_handler: handler.to_string(),
            cgroup_driver: self.cgroup_driver,
        };
        let network = if with_network {
            self.network.prepare(id, pid, &record.config).map_err(|e| internal("loading the CNI config")(&e))?
        } else {
            None
        };
        if let Some(mut net) = network {
            // Written before ADD, so that a crash during ADD can still be undone by DEL.
            persist_network(dir, &net)?;
            self.network.add(&mut net).await.map_err(|e| internal("setting up the pod network")(&e))?;
            persist_network(dir, &net)?;
            record.ips = net.ips();
            record.network_attached = true;
        }
        persist(dir, &record)?;
        Ok(record)
    }
}
