//! Device nodes and the device cgroup of a container's spec: the CRI
//! `devices` (host node → container path, with permissions), every host
//! device for a privileged container, and an allowlist (runc's defaults plus
//! those) so that a container's CAP_MKNOD cannot reach other host devices.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use gantry_proto::cri::v1::Device;
use serde_json::{json, Value};

use crate::error::SpecError;

/// Character devices every container may use, as runc allows them:
/// (major, minor, access); -1 is any.
const DEFAULT_ALLOWED: &[(i64, i64, &str)] = &[
    (1, 3, "rwm"),    // null
    (1, 5, "rwm"),    // zero
    (1, 7, "rwm"),    // full
    (1, 8, "rwm"),    // random
    (1, 9, "rwm"),    // urandom
    (5, 0, "rwm"),    // tty
    (5, 2, "rwm"),    // ptmx
    (136, -1, "rwm"), // pts/*
    (10, 200, "rwm"), // net/tun
];

fn major(rdev: u64) -> i64 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as i64
}

fn minor(rdev: u64) -> i64 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as i64
}

/// The OCI `linux.devices` entry for host node `host` at `dest`, or None
/// when `host` is not a device node.
fn device_entry(host: &Path, dest: &str) -> Option<(Value, Value)> {
    let meta = std::fs::metadata(host).ok()?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return None;
    };
    let (maj, min) = (major(meta.rdev()), minor(meta.rdev()));
    let device = json!({
        "path": dest, "type": kind, "major": maj, "minor": min,
        "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid(),
    });
    let rule = json!({"allow": true, "type": kind, "major": maj, "minor": min, "access": "rwm"});
    Some((device, rule))
}

/// (linux.devices, linux.resources.devices) for a container.
pub fn for_container(devices: &[Device], privileged: bool) -> Result<(Vec<Value>, Vec<Value>), SpecError> {
    let mut nodes = vec![];
    let mut rules = vec![];
    if privileged {
        // All of the host's devices, as containerd gives a privileged container.
        host_devices(Path::new("/dev"), &mut nodes);
        rules.push(json!({"allow": true, "access": "rwm"}));
    } else {
        rules.push(json!({"allow": false, "access": "rwm"}));
        // As runc: making any node is allowed, using it is not.
        rules.push(json!({"allow": true, "type": "c", "major": -1, "minor": -1, "access": "m"}));
        rules.push(json!({"allow": true, "type": "b", "major": -1, "minor": -1, "access": "m"}));
        for (maj, min, access) in DEFAULT_ALLOWED {
            rules.push(json!({"allow": true, "type": "c", "major": maj, "minor": min, "access": access}));
        }
    }
    for d in devices {
        let host = Path::new(&d.host_path);
        let dest = if d.container_path.is_empty() { &d.host_path } else { &d.container_path };
        if !dest.starts_with('/') {
            return Err(SpecError::BadDevice(format!(
                "container path {dest:?} of device {:?} is not absolute",
                d.host_path
            )));
        }
        let Some((node, mut rule)) = device_entry(host, dest) else {
            return Err(SpecError::BadDevice(format!("{:?} is not a device node on this host", d.host_path)));
        };
        let access = if d.permissions.is_empty() { "rwm" } else { d.permissions.as_str() };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::BadDevice(format!(
                "permissions {access:?} of device {:?}: only r, w and m",
                d.host_path
            )));
        }
        rule["access"] = json!(access);
        nodes.retain(|n: &Value| n["path"] != node["path"]);
        nodes.push(node);
        if !privileged {
            rules.push(rule);
        }
    }
    Ok((nodes, rules))
}

/// Device nodes below `dir`, skipping the pseudo-terminal and shm trees the
/// container gets its own of.
fn host_devices(dir: &Path, out: &mut Vec<Value>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let name = e.file_name();
            if !matches!(name.to_str(), Some("pts" | "shm" | "mqueue" | "fd")) {
                host_devices(&path, out);
            }
        } else if let Some((node, _)) = path.to_str().and_then(|p| device_entry(&path, p)) {
            out.push(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cri_device_becomes_a_node_and_an_allow_rule() {
        let d =
            Device { host_path: "/dev/null".into(), container_path: "/dev/mynull".into(), permissions: "rw".into() };
        let (nodes, rules) = for_container(&[d], false).unwrap();
        assert_eq!(nodes[0]["path"], "/dev/mynull");
        assert_eq!((nodes[0]["major"].as_i64(), nodes[0]["minor"].as_i64()), (Some(1), Some(3)));
        assert_eq!(rules[0]["allow"], false, "deny everything first");
        assert_eq!(rules.last().unwrap()["access"], "rw");
    }

    #[test]
    fn bad_devices_are_refused_by_name() {
        let d =
            Device { host_path: "/etc/hostname".into(), container_path: "/dev/x".into(), permissions: String::new() };
        let err = for_container(&[d], false).unwrap_err().to_string();
        assert!(err.contains("/etc/hostname"), "{err}");
        let d = Device { host_path: "/dev/null".into(), container_path: "/dev/x".into(), permissions: "rwx".into() };
        assert!(for_container(&[d], false).is_err());
    }

    #[test]
    fn privileged_gets_the_host_devices_and_no_restriction() {
        let (nodes, rules) = for_container(&[], true).unwrap();
        assert!(nodes.iter().any(|n| n["path"] == "/dev/null"));
        assert_eq!(rules, vec![json!({"allow": true, "access": "rwm"})]);
    }
}
