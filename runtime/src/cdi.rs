//! CDI, the Container Device Interface (how DRA drivers and device plugins
//! hand GPUs and other devices to containers): spec files in the CDI
//! directories describe devices by fully qualified name
//! (`vendor.com/class=name`) and the edits a container needs for each
//! (device nodes, mounts, environment, hooks). A container asks for them
//! in CRI `CDI_devices` or `cdi.k8s.io/*` annotations; the edits become the
//! container's CRI devices, mounts and environment before its OCI spec is
//! built, so they go through the same checks and device allowlist as any.
//!
//! Spec files: `*.json`, `*.yaml`, `*.yml`, CDI versions 0.3.0 to 1.0.x; a
//! later directory's device of the same name wins (as the CDI cache's
//! priority), files in name order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gantry_proto::cri::v1::{ContainerConfig, Device, KeyValue, Mount};
use serde::Deserialize;

use crate::error::RuntimeError;

/// The annotation prefix kubelet's device plugins use for CDI devices.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<SpecDevice>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDevice {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

/// A device's (or a whole spec's) changes to the container.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<CdiMount>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Where the node is in the container (and on the host, without `hostPath`).
    pub path: String,
    #[serde(default)]
    pub host_path: Option<String>,
    /// `r`, `w`, `m` letters; default all three.
    #[serde(default)]
    pub permissions: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CdiMount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// OCI hook points a CDI hook may name.
const HOOK_POINTS: [&str; 6] =
    ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

/// Adds `hooks` to an OCI spec (JSON) at their points.
pub fn add_hooks(spec: &mut serde_json::Value, hooks: &[Hook]) -> Result<(), RuntimeError> {
    for h in hooks {
        if !HOOK_POINTS.contains(&h.hook_name.as_str()) {
            return Err(RuntimeError::InvalidArgument(format!(
                "CDI hook {}: unknown hook point {:?}",
                h.path, h.hook_name
            )));
        }
        let mut entry = serde_json::json!({"path": h.path});
        if !h.args.is_empty() {
            entry["args"] = serde_json::json!(h.args);
        }
        if !h.env.is_empty() {
            entry["env"] = serde_json::json!(h.env);
        }
        if let Some(t) = h.timeout {
            entry["timeout"] = serde_json::json!(t);
        }
        let list = spec["hooks"][h.hook_name.as_str()].as_array().cloned().unwrap_or_default();
        let mut list = list;
        list.push(entry);
        spec["hooks"][h.hook_name.as_str()] = serde_json::Value::Array(list);
    }
    Ok(())
}

/// Every device the CDI directories describe, by fully qualified name, and
/// the files that could not be read (named in errors).
#[derive(Debug, Default)]
pub struct Registry {
    devices: BTreeMap<String, (Edits, PathBuf)>,
    broken: Vec<String>,
}

/// `0.3.0` to `1.0.x`.
fn supported_version(v: &str) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    matches!((parts.next().flatten(), parts.next().flatten()), (Some(0), Some(3..)) | (Some(1), Some(0)))
}

fn parse_file(path: &Path) -> Result<SpecFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: SpecFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    if !supported_version(&spec.cdi_version) {
        return Err(format!("{}: cdiVersion {:?} is not one of 0.3.0 to 1.0.x", path.display(), spec.cdi_version));
    }
    let (vendor, class) = spec.kind.split_once('/').unwrap_or(("", ""));
    if vendor.is_empty() || class.is_empty() {
        return Err(format!("{}: kind {:?} is not VENDOR/CLASS", path.display(), spec.kind));
    }
    Ok(spec)
}

impl Registry {
    /// Reads the spec files of `dirs` (missing directories are skipped).
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut r = Registry::default();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "yaml" || e == "yml"))
                .collect();
            files.sort();
            for file in files {
                match parse_file(&file) {
                    Ok(spec) => {
                        for d in spec.devices {
                            let mut edits = spec.container_edits.clone();
                            edits.env.extend(d.container_edits.env);
                            edits.device_nodes.extend(d.container_edits.device_nodes);
                            edits.mounts.extend(d.container_edits.mounts);
                            edits.hooks.extend(d.container_edits.hooks);
                            r.devices.insert(format!("{}={}", spec.kind, d.name), (edits, file.clone()));
                        }
                    }
                    Err(e) => r.broken.push(e),
                }
            }
        }
        r
    }

    /// The edits of device `name`, or `InvalidArgument` naming it (and
    /// the spec files that could not be read, where it may have been).
    fn edits(&self, name: &str) -> Result<&Edits, RuntimeError> {
        if !name.contains('=') || !name.contains('/') {
            return Err(RuntimeError::InvalidArgument(format!(
                "CDI device {name:?} is not a fully qualified name (vendor.com/class=name)"
            )));
        }
        match self.devices.get(name) {
            Some((edits, _)) => Ok(edits),
            None if self.broken.is_empty() => Err(RuntimeError::InvalidArgument(format!(
                "unknown CDI device {name:?}: no CDI spec file describes it"
            ))),
            None => Err(RuntimeError::InvalidArgument(format!(
                "unknown CDI device {name:?}; these CDI spec files could not be read: {}",
                self.broken.join("; ")
            ))),
        }
    }
}

/// The CDI devices a container asks for: `CDI_devices`, then the
/// `cdi.k8s.io/*` annotations (comma-separated names), each once.
pub fn requested(config: &ContainerConfig) -> Vec<String> {
    let mut names: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    let mut keys: Vec<&String> = config.annotations.keys().filter(|k| k.starts_with(ANNOTATION_PREFIX)).collect();
    keys.sort();
    for k in keys {
        names.extend(config.annotations[k].split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// `config` with the edits of its CDI devices applied as CRI devices,
/// mounts and environment, and the OCI hooks they need (added to the spec
/// by the caller; the shim or the external runtime runs them).
pub fn apply(dirs: &[PathBuf], config: &ContainerConfig) -> Result<(ContainerConfig, Vec<Hook>), RuntimeError> {
    let names = requested(config);
    let mut out = config.clone();
    if names.is_empty() {
        return Ok((out, vec![]));
    }
    let registry = Registry::load(dirs);
    let mut hooks = vec![];
    for name in &names {
        let edits = registry.edits(name)?;
        for kv in &edits.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            out.envs.retain(|e| e.key != k);
            out.envs.push(KeyValue { key: k.to_string(), value: v.as_bytes().to_vec() });
        }
        for node in &edits.device_nodes {
            // As the CDI validator: a device node goes under /dev.
            let inside = Path::new(&node.path);
            if !inside.starts_with("/dev/") || inside.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(RuntimeError::InvalidArgument(format!(
                    "CDI device {name:?}: device node path {:?} is not under /dev",
                    node.path
                )));
            }
            let host = node.host_path.clone().unwrap_or_else(|| node.path.clone());
            let meta = std::fs::metadata(&host)
                .map_err(|e| RuntimeError::InvalidArgument(format!("CDI device {name:?}: device node {host}: {e}")))?;
            use std::os::unix::fs::FileTypeExt;
            if !(meta.file_type().is_char_device() || meta.file_type().is_block_device()) {
                return Err(RuntimeError::InvalidArgument(format!("CDI device {name:?}: {host} is not a device node")));
            }
            let permissions = node.permissions.clone().unwrap_or_else(|| "rwm".into());
            if permissions.is_empty() || !permissions.chars().all(|c| "rwm".contains(c)) {
                return Err(RuntimeError::InvalidArgument(format!(
                    "CDI device {name:?}: permissions {permissions:?} of {} are not r, w, m letters",
                    node.path
                )));
            }
            out.devices.push(Device { container_path: node.path.clone(), host_path: host, permissions });
        }
        for m in &edits.mounts {
            out.mounts.push(Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.options.iter().any(|o| o == "ro"),
                ..Default::default()
            });
        }
        hooks.extend(edits.hooks.iter().cloned());
    }
    Ok((out, hooks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::cri::v1::CdiDevice;
    use std::collections::HashMap;

    #[test]
    fn versions_from_0_3_to_1_0() {
        for v in ["0.3.0", "0.5.0", "0.8.0", "1.0.0", "1.0.1"] {
            assert!(supported_version(v), "{v}");
        }
        for v in ["0.2.0", "1.1.0", "2.0.0", "", "x"] {
            assert!(!supported_version(v), "{v}");
        }
    }

    #[test]
    fn json_and_yaml_specs_give_edits_and_unknowns_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"cdiVersion":"0.6.0","kind":"example.com/gpu","containerEdits":{"env":["ALL=1"]},
                "devices":[{"name":"g0","containerEdits":{"env":["G=0"],"deviceNodes":[{"path":"/dev/null"}]}}]}"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join("b.yaml"),
            "cdiVersion: 1.0.0\nkind: example.com/nic\ndevices:\n- name: n1\n  containerEdits:\n    mounts:\n    - hostPath: /tmp\n      containerPath: /nic\n      options: [ro, bind]\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("c.yaml"), "cdiVersion: [not: closed\n").expect("write");
        let dirs = vec![dir.path().to_path_buf()];
        let config = ContainerConfig {
            cdi_devices: vec![CdiDevice { name: "example.com/gpu=g0".into() }],
            annotations: HashMap::from([("cdi.k8s.io/nic".to_string(), "example.com/nic=n1".to_string())]),
            ..Default::default()
        };
        let (out, hooks) = apply(&dirs, &config).expect("applies");
        assert!(hooks.is_empty());
        let env: Vec<(String, String)> =
            out.envs.iter().map(|e| (e.key.clone(), String::from_utf8_lossy(&e.value).to_string())).collect();
        assert_eq!(env, [("ALL".to_string(), "1".to_string()), ("G".to_string(), "0".to_string())]);
        assert_eq!(out.devices.len(), 1);
        assert_eq!((out.devices[0].host_path.as_str(), out.devices[0].permissions.as_str()), ("/dev/null", "rwm"));
        assert_eq!((out.mounts[0].container_path.as_str(), out.mounts[0].readonly), ("/nic", true));

        let unknown = ContainerConfig {
            cdi_devices: vec![CdiDevice { name: "example.com/gpu=g9".into() }],
            ..Default::default()
        };
        let e = apply(&dirs, &unknown).expect_err("unknown").to_string();
        assert!(e.contains("example.com/gpu=g9") && e.contains("c.yaml"), "{e}");
        let bare = ContainerConfig { cdi_devices: vec![CdiDevice { name: "g0".into() }], ..Default::default() };
        assert!(apply(&dirs, &bare).expect_err("bare").to_string().contains("fully qualified"));
    }
}
