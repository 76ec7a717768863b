//! The seccomp profile of a container's spec, from CRI's security context:
//! unconfined, a profile file on the node (`localhost`), or the runtime's
//! default. The shim compiles it to BPF (shim/src/seccomp.rs).
//!
//! The default profile here is a denylist: every syscall is allowed except
//! those that reach past the container (kernel modules, kexec, reboot,
//! clock setting, keyrings, namespaces and mounts, ptrace, raw I/O …), each
//! allowed again when the container holds the capability that makes it
//! legitimate, as Docker's and containerd's profiles do. Their allowlist is
//! stricter; this one keeps the same dangerous calls out.

use gantry_proto::cri::v1::security_profile::ProfileType;
use gantry_proto::cri::v1::LinuxContainerSecurityContext;
use serde_json::{json, Value};

use crate::error::SpecError;

/// (syscalls, the capability that allows them again, if any).
const DENIED: &[(&[&str], Option<&str>)] = &[
    (
        &["create_module", "init_module", "finit_module", "delete_module", "query_module", "get_kernel_syms"],
        Some("CAP_SYS_MODULE"),
    ),
    (&["kexec_load", "kexec_file_load", "reboot"], Some("CAP_SYS_BOOT")),
    (&["clock_settime", "clock_adjtime", "settimeofday", "stime", "adjtimex"], Some("CAP_SYS_TIME")),
    (&["acct"], Some("CAP_SYS_PACCT")),
    (&["iopl", "ioperm"], Some("CAP_SYS_RAWIO")),
    (&["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"], Some("CAP_SYS_PTRACE")),
    (
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "swapon",
            "swapoff",
            "quotactl",
            "lookup_dcookie",
            "perf_event_open",
            "fanotify_init",
            "open_by_handle_at",
            "name_to_handle_at",
            "bpf",
            "sethostname",
            "setdomainname",
            "vhangup",
            "nfsservctl",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
        ],
        Some("CAP_SYS_ADMIN"),
    ),
    (&["mbind", "set_mempolicy", "move_pages"], Some("CAP_SYS_NICE")),
    (
        &["add_key", "request_key", "keyctl", "userfaultfd", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old"],
        None,
    ),
];

fn default_profile(caps: &[String]) -> Value {
    let names: Vec<&str> = DENIED
        .iter()
        .filter(|(_, cap)| cap.is_none_or(|c| !caps.iter().any(|have| have == c)))
        .flat_map(|(names, _)| names.iter().copied())
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    })
}

fn localhost(path: &str) -> Result<Value, SpecError> {
    let path = path.strip_prefix("localhost/").unwrap_or(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::Seccomp(format!("reading localhost profile {path:?}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| SpecError::Seccomp(format!("localhost profile {path:?}: {e}")))
}

/// `linux.seccomp` for the spec, or None for unconfined. `caps` are the
/// container's effective capabilities (`CAP_…`).
pub fn profile(security: &LinuxContainerSecurityContext, caps: &[String]) -> Result<Option<Value>, SpecError> {
    if security.privileged {
        return Ok(None);
    }
    if let Some(p) = &security.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(default_profile(caps))),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref).map(Some),
            Err(_) => Err(SpecError::Seccomp(format!("unknown seccomp profile type {}", p.profile_type))),
        };
    }
    // The deprecated string form, which older kubelets still send.
    #[allow(deprecated)]
    let path = security.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(default_profile(caps))),
        p if p.starts_with("localhost/") => localhost(p).map(Some),
        other => Err(SpecError::Seccomp(format!("unknown seccomp profile {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::cri::v1::SecurityProfile;

    fn with(profile_type: ProfileType, localhost_ref: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile { profile_type: profile_type as i32, localhost_ref: localhost_ref.into() }),
            ..Default::default()
        }
    }

    #[test]
    fn default_unconfined_privileged_and_capabilities() {
        let p = profile(&with(ProfileType::RuntimeDefault, ""), &[]).unwrap().unwrap();
        let denied = p["syscalls"][0]["names"].as_array().unwrap();
        assert!(denied.iter().any(|n| n == "mount") && denied.iter().any(|n| n == "kexec_load"));
        let admin = profile(&with(ProfileType::RuntimeDefault, ""), &["CAP_SYS_ADMIN".into()]).unwrap().unwrap();
        assert!(!admin["syscalls"][0]["names"].as_array().unwrap().iter().any(|n| n == "mount"));
        assert_eq!(profile(&with(ProfileType::Unconfined, ""), &[]).unwrap(), None);
        let mut privileged = with(ProfileType::RuntimeDefault, "");
        privileged.privileged = true;
        assert_eq!(profile(&privileged, &[]).unwrap(), None);
        assert_eq!(profile(&LinuxContainerSecurityContext::default(), &[]).unwrap(), None);
    }

    #[test]
    fn a_missing_localhost_profile_is_named() {
        let err = profile(&with(ProfileType::Localhost, "/no/such/profile.json"), &[]).unwrap_err().to_string();
        assert!(err.contains("/no/such/profile.json"), "{err}");
    }
}
