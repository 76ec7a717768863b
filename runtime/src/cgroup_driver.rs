//! The cgroup driver kubelet and gantryd agree on (CRI `RuntimeConfig`):
//! with `cgroupfs`, kubelet's `cgroup_parent` is a cgroup path and each pod
//! or container gets the cgroup `PARENT/gantry-ID`; with `systemd`, it is a
//! slice unit (`kubepods-burstable-pod<UID>.slice`) and each gets the
//! transient scope unit `gantry-ID.scope` in it (see `systemd.rs`).

use gantry_proto::systemd_cgroup::{self, Scope};
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

/// Where a pod's cgroups go when kubelet names no parent.
const CGROUPFS_DEFAULT_PARENT: &str = "/gantry";
const SYSTEMD_DEFAULT_SLICE: &str = "system.slice";
/// The scope units' prefix: `gantry-ID.scope`.
const SCOPE_PREFIX: &str = "gantry";

impl CgroupDriver {
    pub fn name(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }

    /// Refuses a `cgroup_parent` of the other driver's kind, naming it.
    pub fn check_parent(self, parent: &str) -> Result<(), RuntimeError> {
        if parent.is_empty() {
            return Ok(());
        }
        match self {
            CgroupDriver::Systemd => systemd_cgroup::slice_path(parent).map(drop).map_err(|e| {
                RuntimeError::InvalidArgument(format!(
                    "cgroup_parent {parent:?}: gantryd uses the systemd cgroup driver, which takes a slice \
                     unit name such as kubepods-burstable-pod<UID>.slice: {e}"
                ))
            }),
            CgroupDriver::Cgroupfs if !parent.contains('/') && parent.ends_with(".slice") => {
                Err(RuntimeError::InvalidArgument(format!(
                    "cgroup_parent {parent:?} is a systemd slice, but gantryd uses the cgroupfs cgroup driver \
                     (set cgroup_driver = \"systemd\" in its config to match kubelet's)"
                )))
            }
            CgroupDriver::Cgroupfs => Ok(()),
        }
    }

    /// The OCI `cgroupsPath` of pod or container `id` below `parent`.
    pub fn spec_path(self, parent: &str, id: &str) -> String {
        match self {
            CgroupDriver::Cgroupfs => {
                let parent = if parent.is_empty() { CGROUPFS_DEFAULT_PARENT } else { parent };
                // Cleaned as an absolute path: `..` cannot leave the hierarchy.
                crate::cgroup_path::child(parent, &format!("gantry-{id}"))
            }
            CgroupDriver::Systemd => {
                let slice = if parent.is_empty() { SYSTEMD_DEFAULT_SLICE } else { parent };
                format!("{slice}:{SCOPE_PREFIX}:{id}")
            }
        }
    }

    /// The scope unit of `id` (systemd driver only).
    pub fn scope(self, parent: &str, id: &str) -> Option<Scope> {
        match self {
            CgroupDriver::Cgroupfs => None,
            CgroupDriver::Systemd => systemd_cgroup::parse(&self.spec_path(parent, id)),
        }
    }

    /// The cgroup of `id` as a path from each hierarchy's root, for reading
    /// it (stats, freezer).
    pub fn fs_path(self, parent: &str, id: &str) -> String {
        match self.scope(parent, id) {
            // A slice that does not parse was refused at RunPodSandbox.
            Some(scope) => scope.cgroup_path().unwrap_or_else(|_| format!("/{}", scope.unit)),
            None => self.spec_path(parent, id),
        }
    }

    /// kubelet's pod cgroup itself, as a path from the root (PSI of the pod).
    pub fn parent_fs_path(self, parent: &str) -> Option<String> {
        if parent.is_empty() {
            return None;
        }
        match self {
            CgroupDriver::Cgroupfs => Some(crate::cgroup_path::clean(parent)),
            CgroupDriver::Systemd => systemd_cgroup::slice_path(parent).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_driver_refuses_the_other_kind_of_parent() {
        let slice = "kubepods-burstable-pod42.slice";
        assert!(CgroupDriver::Systemd.check_parent(slice).is_ok());
        assert!(CgroupDriver::Cgroupfs.check_parent("/kubepods/burstable/pod42").is_ok());
        let e = CgroupDriver::Cgroupfs.check_parent(slice).expect_err("slice under cgroupfs").to_string();
        assert!(e.contains(slice) && e.contains("cgroup_driver"), "{e}");
        let e = CgroupDriver::Systemd.check_parent("/kubepods/pod42").expect_err("path under systemd").to_string();
        assert!(e.contains("/kubepods/pod42") && e.contains("slice"), "{e}");
    }

    #[test]
    fn paths_under_each_driver() {
        let slice = "kubepods-besteffort-pod7.slice";
        assert_eq!(CgroupDriver::Systemd.spec_path(slice, "abc"), "kubepods-besteffort-pod7.slice:gantry:abc");
        assert_eq!(
            CgroupDriver::Systemd.fs_path(slice, "abc"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7.slice/gantry-abc.scope"
        );
        assert_eq!(CgroupDriver::Systemd.fs_path("", "abc"), "/system.slice/gantry-abc.scope");
        assert_eq!(CgroupDriver::Cgroupfs.spec_path("/kubepods/x", "abc"), "/kubepods/x/gantry-abc");
        assert_eq!(CgroupDriver::Cgroupfs.fs_path("", "abc"), "/gantry/gantry-abc");
        assert_eq!(CgroupDriver::Cgroupfs.scope("/kubepods/x", "abc"), None);
    }
}
