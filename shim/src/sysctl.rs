//! The spec's sysctls, checked again by the shim (gantryd checked the pod's
//! at RunPodSandbox): each must be namespaced, and the spec must give the
//! container that namespace, as runc checks. So a case gantryd's check misses
//! still cannot change the host: IPC ones need an `ipc` entry, `net.*` a
//! `network` one, `kernel.hostname`/`kernel.domainname` a `uts` one;
//! everything else is refused. They are written after pivot_root, through the
//! container's own /proc (docs/security.md).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

const IPC: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The dot form (a name whose first separator is `/` has dots and slashes
/// swapped, kubelet's convention for dots inside a component).
fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The namespace a sysctl belongs to, and its file's name in /proc.
fn namespace_of(dotted: &str) -> Option<(LinuxNamespaceType, &'static str)> {
    if IPC.contains(&dotted) || dotted.starts_with("fs.mqueue.") {
        Some((LinuxNamespaceType::Ipc, "ipc"))
    } else if dotted.starts_with("net.") {
        Some((LinuxNamespaceType::Network, "net"))
    } else if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        Some((LinuxNamespaceType::Uts, "uts"))
    } else {
        None
    }
}

/// The file below /proc/sys: plain components only, so the path cannot
/// leave /proc/sys.
pub fn proc_path(name: &str) -> Result<PathBuf, String> {
    let dotted = normalize(name);
    let mut path = PathBuf::new();
    for part in dotted.split('.') {
        let ok = part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/');
        if part.is_empty() || part.chars().all(|c| c == '/') || !ok {
            return Err(format!("sysctl {name:?}: not a valid sysctl name"));
        }
        path.push(part.replace('/', "."));
    }
    Ok(path)
}

/// Every sysctl of the spec is namespaced and the spec gives the container
/// that namespace.
pub fn check(spec: &Spec) -> Result<(), String> {
    let Some(linux) = spec.linux() else { return Ok(()) };
    let Some(sysctls) = linux.sysctl() else { return Ok(()) };
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut names: Vec<&String> = sysctls.keys().collect();
    names.sort();
    for name in names {
        proc_path(name)?;
        let Some((typ, _)) = namespace_of(&normalize(name)) else {
            return Err(format!("sysctl {name:?}: not namespaced: it would change the host's kernel"));
        };
        if !namespaces.iter().any(|n| n.typ() == typ) {
            return Err(format!("sysctl {name:?}: the container has no {typ:?} namespace of its own"));
        }
    }
    Ok(())
}

/// At create, in the host's namespaces: a namespace the spec joins by path
/// must not be the shim's own, i.e. the host's.
pub fn check_not_hosts(spec: &Spec) -> Result<(), String> {
    let Some(linux) = spec.linux() else { return Ok(()) };
    let Some(sysctls) = linux.sysctl() else { return Ok(()) };
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for name in sysctls.keys() {
        let Some((typ, proc_name)) = namespace_of(&normalize(name)) else { continue };
        let joined = namespaces.iter().filter(|n| n.typ() == typ).filter_map(|n| n.path().as_ref());
        for path in joined {
            if same_file(path, &Path::new("/proc/self/ns").join(proc_name)) {
                return Err(format!("sysctl {name:?}: the container's {typ:?} namespace is the host's"));
            }
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Writes the sysctls through `proc_sys`, which must be a procfs (the
/// container's, mounted after pivot_root): never creates a file.
pub fn apply(spec: &Spec, proc_sys: &Path) -> Result<(), String> {
    let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()).filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    check(spec)?;
    let fs = nix::sys::statfs::statfs(proc_sys).map_err(|e| format!("sysctls: {}: {e}", proc_sys.display()))?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(format!("sysctls: {} is not a procfs", proc_sys.display()));
    }
    for (name, value) in sysctls {
        let path = proc_sys.join(proc_path(&name)?);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("sysctl {name}: {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut f, value.as_bytes()).map_err(|e| format!("sysctl {name}={value}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &[&str], sysctls: &[(&str, &str)]) -> Spec {
        let ns: Vec<serde_json::Value> = namespaces.iter().map(|t| serde_json::json!({"type": t})).collect();
        let sysctl: serde_json::Map<String, serde_json::Value> =
            sysctls.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.1.0",
            "linux": {"namespaces": ns, "sysctl": sysctl},
        }))
        .expect("spec")
    }

    #[test]
    fn sysctls_need_their_namespace_in_the_spec() {
        let all = ["mount", "ipc", "network", "uts", "pid"];
        assert!(check(&spec(&all, &[("kernel.shmmax", "1"), ("net.core.somaxconn", "1")])).is_ok());
        assert!(check(&spec(&all, &[("kernel.hostname", "x"), ("fs.mqueue.msg_max", "1")])).is_ok());
        assert!(check(&spec(&all, &[("kernel/sem", "1 2 3 4")])).is_ok());
        assert!(check(&spec(&all, &[("kernel.core_pattern", "/tmp/x")])).is_err());
        assert!(check(&spec(&all, &[("vm.overcommit_memory", "1")])).is_err());
        assert!(check(&spec(&["mount", "network", "uts"], &[("kernel.msgmax", "1")])).is_err());
        assert!(check(&spec(&["mount", "ipc", "uts"], &[("net.ipv4.tcp_keepalive_time", "1")])).is_err());
        assert!(check(&spec(&["mount", "ipc", "network"], &[("kernel.domainname", "x")])).is_err());
        assert!(check(&spec(&all, &[])).is_ok());
    }

    #[test]
    fn paths_stay_below_proc_sys() {
        assert_eq!(proc_path("net.ipv4.conf.eth0/100.rp_filter"), Ok("net/ipv4/conf/eth0.100/rp_filter".into()));
        assert_eq!(proc_path("net/ipv4/conf/eth0.100/rp_filter"), Ok("net/ipv4/conf/eth0.100/rp_filter".into()));
        assert_eq!(proc_path("kernel/shmmax"), Ok("kernel/shmmax".into()));
        for bad in ["net.ipv4.conf.//.x", "net.ipv4.conf./.x", "net/../../kernel/core_pattern", "net..x", "", "net.a b"]
        {
            assert!(proc_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn joining_the_hosts_own_namespace_is_refused() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.1.0",
            "linux": {"namespaces": [{"type": "ipc", "path": "/proc/self/ns/ipc"}], "sysctl": {"kernel.msgmax": "1"}},
        }))
        .expect("spec");
        assert!(check(&spec).is_ok());
        assert!(check_not_hosts(&spec).is_err());
    }
}
