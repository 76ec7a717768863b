//! CreateContainer: the image resolved and its layers held, the writable
//! layer and rootfs (ID-mapped in a pod user namespace), the user and
//! groups resolved from the image, the OCI spec, then the shim; undone whole
//! when any step fails.

use std::path::{Path, PathBuf};

use gantry_imageservice::{fsutil, Digest, ImageSelector};
use gantry_proto::cri::v1::{ContainerConfig, ContainerEventType, NamespaceMode};

use crate::error::{internal, RuntimeError};
use crate::records::{new_id, now_nanos, persist, ContainerRecord, SandboxRecord};
use crate::runtime::Runtime;
use crate::shim_process;
use crate::spec::{self, ImageConfig, PodContext, ProcessIdentity};
use crate::userns::PodIdMaps;

impl Runtime {
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
        let config_bytes = self
            .images
            .content()
            .read(&image.config.digest)
            .map_err(|e| internal(&format!("reading the config of image {image_ref:?}"))(&e))?;
        let image_config = ImageConfig::parse(&config_bytes)
            .map_err(|e| RuntimeError::FailedPrecondition(format!("image {image_ref:?}: {e}")))?;

        let id = new_id();
        let dir = self.container_dir(&id);
        let chains = image.chain_ids();
        self.images.hold_layers(&id, chains.clone());
        let result = self.prepare_container(&id, &dir, &sandbox, &config, &image_ref, &image_config, &chains).await;
        let (log_path, stop_signal, identity, volume_chain_ids) = match result {
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
            volume_chain_ids,
        };
        if let Err(e) = persist(&dir, &record) {
            self.discard_container_files(&id, &dir).await;
            return Err(e);
        }
        // Listed only once its record can be read (ContainerStatus after
        // ListContainers must find it).
        self.containers.lock().await.insert(id.clone(), record.clone());
        self.listing.insert(&record);
        self.container_state(&id).await;
        self.events.emit(&id, ContainerEventType::ContainerCreatedEvent);
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
    ) -> Result<(String, String, ProcessIdentity, Vec<Digest>), RuntimeError> {
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
        if security.supplemental_groups_policy != gantry_proto::cri::v1::SupplementalGroupsPolicy::Strict as i32 {
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
        let cgroups_path = sandbox.container_cgroups_path(id);
        // CDI devices become CRI devices, mounts and environment; image
        // volumes read-only binds of their own mounts.
        let (config, cdi_hooks) = crate::cdi::apply(&self.cdi_spec_dirs, config)?;
        let (config, volume_chain_ids) = self.mount_image_volumes(id, dir, &config).await?;
        let config = &config;
        let oci = spec::build(config, image_ref, image_config, &pod, &who, &cgroups_path)?;
        if cdi_hooks.is_empty() {
            oci.save(dir.join("config.json")).map_err(|e| internal("writing config.json")(&e))?;
        } else {
            let mut json = serde_json::to_value(&oci).map_err(|e| internal("encoding the spec")(&e))?;
            crate::cdi::add_hooks(&mut json, &cdi_hooks)?;
            fsutil::write_atomic(&dir.join("config.json"), json.to_string().as_bytes())
                .map_err(|e| internal("writing config.json")(&e))?;
        }

        let log_dir = sandbox.config.log_directory.clone();
        let log_path = if !log_dir.is_empty() && !config.log_path.is_empty() {
            Path::new(&log_dir).join(&config.log_path)
        } else {
            dir.join("container.log")
        };
        let mut shim = self.shim_command();
        // The pod's RuntimeClass handler makes the container (the pause
        // process only holds namespaces: it stays the built-in one's).
        if let Some(handler) = self.handlers.resolve(&sandbox.runtime_handler)? {
            shim.args(crate::handlers::Handlers::shim_args(handler));
            // It makes the container's scope unit itself, as runc's and
            // crun's systemd drivers do from a `SLICE:PREFIX:NAME` path.
            if sandbox.cgroup_driver == crate::cgroup_driver::CgroupDriver::Systemd {
                shim.args(["--runtime-option", "--systemd-cgroup"]);
            }
        }
        shim_process::launch(shim, id, dir, &self.socket_path(id), &log_path).await?;
        // The CRI's stop signal over the image's; recorded as a number.
        let stop_signal =
            match crate::stop_signal::from_cri(config.stop_signal).map_err(RuntimeError::InvalidArgument)? {
                Some(n) => n.to_string(),
                None => image_config.stop_signal.clone().unwrap_or_default(),
            };
        Ok((log_path.display().to_string(), stop_signal, who, volume_chain_ids))
    }

    /// `gantry-shim mount-rootfs`: the overlay with every layer ID-mapped
    /// into the user namespace of the pod's pause process.
    async fn mount_idmapped_rootfs(
        &self,
        layout: &gantry_imageservice::snapshot::RootfsLayout,
        target: &Path,
        pause_pid: u32,
        id_maps: Option<PodIdMaps>,
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
}
