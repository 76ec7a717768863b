//! Which endpoints serve a registry host: configured mirrors first, then the
//! upstream; plain HTTP where configured and, as Docker does, on loopback.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Per-registry settings, keyed by registry host (`docker.io`, `registry.k8s.io`, `host:5000`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryHostConfig {
    /// Endpoints tried before the upstream, as URLs (`http://127.0.0.1:5000`).
    /// A mirror serves the same repository paths as the upstream.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to the upstream. Default: only for loopback hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_http: Option<bool>,
    /// Extra CA certificate (PEM) trusted for this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Never fall through to the upstream when no mirror has the image
    /// (air-gapped nodes, conformance runs).
    #[serde(default)]
    pub skip_upstream: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    pub mirror: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryHosts {
    hosts: BTreeMap<String, RegistryHostConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("registry {host:?}: mirror {mirror:?} must be an http:// or https:// URL with a host")]
pub struct BadMirror {
    pub host: String,
    pub mirror: String,
}

impl RegistryHosts {
    pub fn new(hosts: BTreeMap<String, RegistryHostConfig>) -> Result<Self, BadMirror> {
        for (host, cfg) in &hosts {
            for m in &cfg.mirrors {
                let rest = m.strip_prefix("http://").or_else(|| m.strip_prefix("https://"));
                if rest.is_none_or(|r| r.trim_end_matches('/').is_empty()) {
                    return Err(BadMirror { host: host.clone(), mirror: m.clone() });
                }
            }
        }
        Ok(RegistryHosts { hosts })
    }

    pub fn ca_files(&self) -> Vec<PathBuf> {
        self.hosts.values().filter_map(|c| c.ca_file.clone()).collect()
    }

    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let cfg = self.hosts.get(registry).cloned().unwrap_or_default();
        let mut out: Vec<Endpoint> =
            cfg.mirrors.iter().map(|m| Endpoint { base: m.trim_end_matches('/').to_string(), mirror: true }).collect();
        if !cfg.skip_upstream {
            let host = if registry == "docker.io" { "registry-1.docker.io" } else { registry };
            let plain = cfg.plain_http.unwrap_or_else(|| is_loopback(registry));
            let scheme = if plain { "http" } else { "https" };
            out.push(Endpoint { base: format!("{scheme}://{host}"), mirror: false });
        }
        out
    }
}

/// `localhost`, 127.0.0.0/8 and `::1`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first_and_loopback_is_plain_http() {
        let mut m = BTreeMap::new();
        m.insert(
            "registry.k8s.io".to_string(),
            RegistryHostConfig { mirrors: vec!["http://127.0.0.1:5000/".into()], ..Default::default() },
        );
        m.insert(
            "gcr.io".to_string(),
            RegistryHostConfig {
                mirrors: vec!["http://127.0.0.1:5000".into()],
                skip_upstream: true,
                ..Default::default()
            },
        );
        let h = RegistryHosts::new(m).unwrap();
        assert_eq!(
            h.endpoints("registry.k8s.io"),
            vec![
                Endpoint { base: "http://127.0.0.1:5000".into(), mirror: true },
                Endpoint { base: "https://registry.k8s.io".into(), mirror: false },
            ]
        );
        assert_eq!(h.endpoints("gcr.io").len(), 1);
        assert_eq!(h.endpoints("docker.io")[0].base, "https://registry-1.docker.io");
        assert_eq!(h.endpoints("127.0.0.1:5000")[0].base, "http://127.0.0.1:5000");
        assert_eq!(h.endpoints("localhost")[0].base, "http://localhost");
        assert_eq!(h.endpoints("[::1]:5000")[0].base, "http://[::1]:5000");
        assert!(!is_loopback("example.com:5000"));
    }

    #[test]
    fn bad_mirror_is_named() {
        let mut m = BTreeMap::new();
        m.insert("x.io".to_string(), RegistryHostConfig { mirrors: vec!["ftp://a".into()], ..Default::default() });
        assert_eq!(RegistryHosts::new(m).unwrap_err().mirror, "ftp://a");
    }
}
