//! The pod's /etc/hosts, /etc/resolv.conf and /etc/hostname: written once
//! in the sandbox's directory, bind-mounted into each of its containers.

use std::path::Path;

use gantry_imageservice::fsutil;
use gantry_proto::cri::v1::PodSandboxConfig;

use crate::error::{internal, RuntimeError};
use crate::runtime::Runtime;

impl Runtime {
    /// /etc/hosts, /etc/resolv.conf and /etc/hostname shared by the pod's containers.
    pub(super) fn write_etc_files(&self, dir: &Path, config: &PodSandboxConfig) -> Result<(), RuntimeError> {
        let hostname = if config.hostname.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n");
        let resolv = match &config.dns_config {
            Some(dns) if !dns.servers.is_empty() || !dns.searches.is_empty() || !dns.options.is_empty() => {
                let mut s = String::new();
                if !dns.searches.is_empty() {
                    s += &format!("search {}\n", dns.searches.join(" "));
                }
                for server in &dns.servers {
                    s += &format!("nameserver {server}\n");
                }
                if !dns.options.is_empty() {
                    s += &format!("options {}\n", dns.options.join(" "));
                }
                s
            }
            _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        for (name, content) in [("hosts", hosts), ("resolv.conf", resolv), ("hostname", format!("{hostname}\n"))] {
            fsutil::write_atomic(&dir.join(name), content.as_bytes()).map_err(|e| internal("writing etc files")(&e))?;
        }
        Ok(())
    }
}
