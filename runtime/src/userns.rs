//! CRI user namespaces: which pods get one, with which ID mappings.
//!
//! A pod with `userns_options.mode = POD` gets one user namespace, made by
//! its pause process with the mappings kubelet chose; its containers join it
//! and see their image through ID-mapped mounts (`gantry-shim mount-rootfs`).
//! NODE (or nothing) means the host's. As containerd: one uid and one gid
//! mapping, starting at container ID 0; CONTAINER and TARGET are refused.

use gantry_proto::cri::v1::{ContainerConfig, IdMapping, NamespaceMode, PodSandboxConfig, UserNamespace};
use serde_json::{json, Value};

use crate::error::RuntimeError;

/// A pod's user namespace: where its IDs 0.. live on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIdMaps {
    pub uid: Range,
    pub gid: Range,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub host_id: u32,
    pub length: u32,
}

impl Range {
    /// The host ID of `id` inside, if mapped.
    pub fn host_of(&self, id: u32) -> Option<u32> {
        (id < self.length).then(|| self.host_id + id)
    }
}

impl PodIdMaps {
    /// For writing the container's files back with the IDs it saw.
    pub fn shift(&self) -> gantry_imageservice::tree_tar::IdShift {
        gantry_imageservice::tree_tar::IdShift {
            uid_host: self.uid.host_id,
            uid_length: self.uid.length,
            gid_host: self.gid.host_id,
            gid_length: self.gid.length,
        }
    }

    /// `uidMappings` and `gidMappings` for an OCI spec.
    pub fn oci(&self) -> (Value, Value) {
        let one = |r: &Range| json!([{"containerID": 0, "hostID": r.host_id, "size": r.length}]);
        (one(&self.uid), one(&self.gid))
    }
}

fn mode_name(mode: i32) -> String {
    NamespaceMode::try_from(mode).map(|m| m.as_str_name().to_string()).unwrap_or_else(|_| mode.to_string())
}

fn single_range(which: &str, maps: &[IdMapping]) -> Result<Range, RuntimeError> {
    let [m] = maps else {
        return Err(RuntimeError::InvalidArgument(format!(
            "user namespace: exactly one {which} mapping is supported, got {}",
            maps.len()
        )));
    };
    if m.container_id != 0 {
        return Err(RuntimeError::InvalidArgument(format!(
            "user namespace: the {which} mapping must start at container ID 0, not {}",
            m.container_id
        )));
    }
    if m.length == 0 || m.host_id.checked_add(m.length - 1).is_none() {
        return Err(RuntimeError::InvalidArgument(format!(
            "user namespace: {which} mapping of host ID {} with length {} is out of range",
            m.host_id, m.length
        )));
    }
    Ok(Range { host_id: m.host_id, length: m.length })
}

fn from_options(options: Option<&UserNamespace>) -> Result<Option<PodIdMaps>, RuntimeError> {
    let Some(u) = options else { return Ok(None) };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => Ok(None),
        Ok(NamespaceMode::Pod) => {
            Ok(Some(PodIdMaps { uid: single_range("uid", &u.uids)?, gid: single_range("gid", &u.gids)? }))
        }
        _ => Err(RuntimeError::InvalidArgument(format!(
            "user namespace mode {} is not supported: use POD or NODE",
            mode_name(u.mode)
        ))),
    }
}

/// The pod's user namespace, checked: `None` for the host's.
pub fn for_pod(config: &PodSandboxConfig) -> Result<Option<PodIdMaps>, RuntimeError> {
    let ns = config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref());
    let maps = from_options(ns.and_then(|n| n.userns_options.as_ref()))?;
    if let (Some(_), Some(ns)) = (maps, ns) {
        // The pod's namespaces belong to its user namespace; the node's cannot.
        let node = NamespaceMode::Node as i32;
        for (name, mode) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
            if mode == node {
                return Err(RuntimeError::InvalidArgument(format!(
                    "a pod with its own user namespace cannot use the node's {name} namespace"
                )));
            }
        }
    }
    Ok(maps)
}

/// Checks that a container asks for its pod's user namespace, if it asks.
pub fn check_container(config: &ContainerConfig, pod: Option<PodIdMaps>) -> Result<(), RuntimeError> {
    let asked = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    let Some(asked) = asked else { return Ok(()) };
    let wanted = from_options(Some(asked))?;
    if wanted != pod {
        return Err(RuntimeError::InvalidArgument(format!(
            "the container's user namespace ({}) differs from its pod's ({})",
            describe(wanted),
            describe(pod)
        )));
    }
    Ok(())
}

fn describe(maps: Option<PodIdMaps>) -> String {
    match maps {
        None => "the node's".into(),
        Some(m) => format!(
            "uids 0-{} at {}, gids 0-{} at {}",
            m.uid.length - 1,
            m.uid.host_id,
            m.gid.length - 1,
            m.gid.host_id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption};

    fn pod(userns: UserNamespace) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption { userns_options: Some(userns), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn map(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping { container_id, host_id, length }
    }

    #[test]
    fn pod_mode_takes_one_mapping_from_zero() {
        let ok = pod(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![map(0, 1000, 100000)],
            gids: vec![map(0, 2000, 65536)],
        });
        let maps = for_pod(&ok).unwrap().unwrap();
        assert_eq!(maps.uid, Range { host_id: 1000, length: 100000 });
        assert_eq!(maps.gid.host_of(5), Some(2005));
        assert_eq!(maps.gid.host_of(65536), None);

        let two = vec![map(0, 1000, 10), map(10, 5000, 10)];
        let cases = [
            UserNamespace { mode: NamespaceMode::Pod as i32, uids: two.clone(), gids: two },
            UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: vec![map(1, 1000, 10)],
                gids: vec![map(1, 1000, 10)],
            },
            UserNamespace { mode: NamespaceMode::Pod as i32, uids: vec![map(0, u32::MAX, 2)], gids: vec![] },
            UserNamespace { mode: NamespaceMode::Container as i32, ..Default::default() },
            UserNamespace { mode: NamespaceMode::Target as i32, ..Default::default() },
        ];
        for c in cases {
            let err = for_pod(&pod(c.clone())).unwrap_err();
            assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{c:?}: {err}");
        }
        let node = UserNamespace { mode: NamespaceMode::Node as i32, ..Default::default() };
        assert_eq!(for_pod(&pod(node)).unwrap(), None);
    }
}
