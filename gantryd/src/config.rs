//! gantryd's configuration: embedded defaults, overridden by a TOML file,
//! overridden by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gantry_imageservice::RegistryHostConfig;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/gantry/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent state: images, layers, metadata.
    pub root: PathBuf,
    /// Runtime state that does not survive a reboot.
    pub state: PathBuf,
    /// The CRI unix socket.
    pub listen: PathBuf,
    /// Permissions of the socket (octal in the file, e.g. `0o660`).
    pub socket_mode: u32,
    /// A `tracing` filter, e.g. `info` or `gantry_imageservice=debug`.
    pub log_level: String,
    /// Per-registry settings (mirrors, plain HTTP, CA file), keyed by host.
    pub registries: BTreeMap<String, RegistryHostConfig>,
    /// Where the streaming server (exec, attach, port-forward URLs) listens;
    /// port 0 picks a free one. Keep it on loopback unless kubelet is elsewhere.
    pub stream_address: std::net::SocketAddr,
    /// PEM certificate chain and key: with both, the streaming URLs are HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_tls_key: Option<PathBuf>,
    /// The gantry-shim binary [default: next to gantryd].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shim_binary: Option<PathBuf>,
    /// Pod networking.
    pub cni: CniConfig,
}

/// Where the CNI network configs and plugin binaries are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// The first valid `*.conflist`/`*.conf`/`*.json` by name is the pod network.
    pub conf_dir: PathBuf,
    /// Searched in order for a plugin's binary (and passed as CNI_PATH).
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        let d = gantry_runtime::network::NetworkOptions::default();
        CniConfig { conf_dir: d.conf_dir, bin_dirs: d.bin_dirs }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/gantry".into(),
            state: "/run/gantry".into(),
            listen: "/run/gantry/gantry.sock".into(),
            socket_mode: 0o660,
            log_level: "info".into(),
            registries: BTreeMap::new(),
            stream_address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            stream_tls_cert: None,
            stream_tls_key: None,
            shim_binary: None,
            cni: CniConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing default config file is not an error, a missing
    /// explicitly named one is.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
        };
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str(
            r#"
            root = "/tmp/r"
            [registries."registry.k8s.io"]
            mirrors = ["http://127.0.0.1:5000"]
            skip_upstream = true
            "#,
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/r"));
        assert_eq!(c.listen, Config::default().listen);
        assert!(c.registries["registry.k8s.io"].skip_upstream);
        assert_eq!(c.cni.bin_dirs, vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
        let c: Config = toml::from_str("[cni]\nconf_dir = \"/tmp/net.d\"\n").unwrap();
        assert_eq!((c.cni.conf_dir, c.cni.bin_dirs), (PathBuf::from("/tmp/net.d"), CniConfig::default().bin_dirs));
        assert!(toml::from_str::<Config>("[cni]\nconfdir = \"/x\"").is_err());
        let err = toml::from_str::<Config>("rooot = \"/x\"").unwrap_err().to_string();
        assert!(err.contains("rooot"), "{err}");
    }
}
