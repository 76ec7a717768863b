//! A private CNI network for one test: its own conf dir, bridge name, subnet
//! and host-local data dir, fenced off by firewall rules so nothing is
//! forwarded between its bridge and any other interface. Everything it
//! created on the host (bridge, rules, the ip_forward setting the bridge
//! plugin turns on) is undone on drop, also when the test fails.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Debian's containernetworking-plugins.
pub const SYSTEM_CNI_BIN: &str = "/usr/lib/cni";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// What the first test network found on the host, put back by the last.
struct HostState {
    live: usize,
    /// The bridge plugin (isGateway) turns forwarding on for the whole host.
    ip_forward: Option<String>,
    /// Whether portmap's shared nat chains were there before our tests.
    portmap_chains: bool,
    /// Subnets of this process's networks: a new bridge has no route yet.
    prefixes: Vec<String>,
}

static LIVE: Mutex<HostState> =
    Mutex::new(HostState { live: 0, ip_forward: None, portmap_chains: true, prefixes: Vec::new() });

/// portmap's chains and the rules jumping to them that every network shares.
const PORTMAP_JUMPS: [&[&str]; 3] = [
    &["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    &["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    &["POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"],
];
const PORTMAP_CHAINS: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"];

/// Splits an `iptables -S` line into arguments (double quotes, `\"` inside).
fn split_rule(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut any) = (false, false, false);
    for ch in line.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
        } else if ch == '\\' && quoted {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
            any = true;
        } else if ch.is_whitespace() && !quoted {
            if any || !cur.is_empty() {
                args.push(std::mem::take(&mut cur));
            }
            any = false;
        } else {
            cur.push(ch);
        }
    }
    if any || !cur.is_empty() {
        args.push(cur);
    }
    args
}

fn nat_rules() -> String {
    run("iptables", &["-w", "-t", "nat", "-S"]).unwrap_or_default()
}

fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

pub struct TestNetwork {
    pub dir: tempfile::TempDir,
    /// The CNI conf dir gantryd is given (empty until `install`).
    pub conf_dir: PathBuf,
    /// Test plugins (scripts), searched before the system's.
    pub bin_dir: PathBuf,
    /// host-local's dataDir: one file per allocated IP under `NETWORK/`.
    pub ipam_dir: PathBuf,
    pub bridge: String,
    pub name: String,
    /// `10.A.B` of the /24.
    pub prefix: String,
    rules: Vec<Vec<String>>,
}

impl TestNetwork {
    pub fn new() -> TestNetwork {
        let dir = tempfile::Builder::new().prefix("gantry-test-net-").tempdir().expect("temp dir");
        let routes = run("ip", &["-4", "route", "show", "table", "all"]).unwrap_or_default();
        let addrs = run("ip", &["-4", "addr"]).unwrap_or_default();
        let mut host = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let (prefix, r) = loop {
            let r = random();
            let prefix = format!("10.{}.{}", 200 + r % 51, (r >> 8) % 256);
            // Not a subnet the host already uses (another test's, or a real one).
            let taken = routes.contains(&format!("{prefix}."))
                || addrs.contains(&format!("{prefix}."))
                || host.prefixes.contains(&prefix);
            if !taken {
                break (prefix, r);
            }
        };
        host.prefixes.push(prefix.clone());
        if host.live == 0 {
            host.ip_forward = std::fs::read_to_string(IP_FORWARD).ok();
            host.portmap_chains = nat_rules().lines().any(|l| l == "-N CNI-HOSTPORT-DNAT");
        }
        host.live += 1;
        drop(host);
        let bridge = format!("gt{:08x}", (r >> 16) as u32);
        let mut net = TestNetwork {
            conf_dir: dir.path().join("net.d"),
            bin_dir: dir.path().join("bin"),
            ipam_dir: dir.path().join("ipam"),
            name: format!("gantry-test-{bridge}"),
            bridge,
            prefix,
            rules: Vec::new(),
            dir,
        };
        for d in [&net.conf_dir, &net.bin_dir, &net.ipam_dir] {
            std::fs::create_dir_all(d).expect("create dir");
        }
        // Before any pod: the bridge does not exist yet, the rules hold for it anyway.
        for rule in [["-i", &net.bridge, "!", "-o", &net.bridge], ["!", "-i", &net.bridge, "-o", &net.bridge]] {
            let rule: Vec<String> = rule.iter().map(|s| s.to_string()).collect();
            let mut args = vec!["-w".to_string(), "-I".into(), "FORWARD".into()];
            args.extend(rule.iter().cloned());
            args.extend(["-j".into(), "DROP".into()]);
            let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
            run("iptables", &args_ref).expect("iptables");
            net.rules.push(rule);
        }
        net
    }

    /// The gantryd config that points at this network's dirs.
    pub fn gantryd_config(&self) -> String {
        format!(
            "[cni]\nconf_dir = {:?}\nbin_dirs = [{:?}, {:?}]\n",
            self.conf_dir.display().to_string(),
            self.bin_dir.display().to_string(),
            SYSTEM_CNI_BIN
        )
    }

    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    /// The bridge plugin's config for this network: gateway on the bridge,
    /// no masquerading, no default route in the pod.
    pub fn bridge_plugin(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet()}]],
                "dataDir": self.ipam_dir.display().to_string(),
            },
        })
    }

    /// loopback, bridge, portmap.
    pub fn standard_plugins(&self) -> Vec<serde_json::Value> {
        vec![
            serde_json::json!({"type": "loopback"}),
            self.bridge_plugin(),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ]
    }

    /// Writes the conflist gantryd will find.
    pub fn install(&self, plugins: Vec<serde_json::Value>) {
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": self.name, "plugins": plugins});
        std::fs::write(self.conf_dir.join("10-gantry-test.conflist"), list.to_string()).expect("write conflist");
    }

    pub fn uninstall(&self) {
        let _ = std::fs::remove_file(self.conf_dir.join("10-gantry-test.conflist"));
    }

    /// A plugin script in `bin_dir`.
    pub fn add_plugin(&self, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.bin_dir.join(name);
        std::fs::write(&path, script).expect("write plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod plugin");
        path
    }

    /// IPs host-local has handed out (its files named by address).
    pub fn allocated_ips(&self) -> Vec<String> {
        let mut ips: Vec<String> = std::fs::read_dir(self.ipam_dir.join(&self.name))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        ips.retain(|n| n.parse::<std::net::IpAddr>().is_ok());
        ips.sort();
        ips
    }

    /// Interfaces (host ends of pod veths) attached to the bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        let dir = Path::new("/sys/class/net").join(&self.bridge).join("brif");
        let mut ports: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        ports.sort();
        ports
    }
}

impl Default for TestNetwork {
    fn default() -> Self {
        TestNetwork::new()
    }
}

impl TestNetwork {
    /// portmap's rules for this network's pods, left when a test failed
    /// before the pods' DEL (their comment names the network).
    fn remove_port_mappings(&self) {
        let tag = format!("dnat name: \\\"{}\\\"", self.name);
        for line in nat_rules().lines().filter(|l| l.starts_with("-A CNI-HOSTPORT-DNAT ") && l.contains(&tag)) {
            let mut args = split_rule(line);
            let chain = args.last().cloned().unwrap_or_default();
            args[0] = "-D".into();
            let mut cmd = vec!["-w".to_string(), "-t".into(), "nat".into()];
            cmd.extend(args);
            let _ = run("iptables", &cmd.iter().map(String::as_str).collect::<Vec<_>>());
            if chain.starts_with("CNI-DN-") {
                let _ = run("iptables", &["-w", "-t", "nat", "-F", &chain]);
                let _ = run("iptables", &["-w", "-t", "nat", "-X", &chain]);
            }
        }
    }
}

/// portmap's shared chains, if our tests made them and nobody else uses them.
fn remove_portmap_chains() {
    if nat_rules().lines().any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT ")) {
        return;
    }
    for jump in PORTMAP_JUMPS {
        let mut args = vec!["-w", "-t", "nat", "-D"];
        args.extend(jump);
        let _ = run("iptables", &args);
    }
    for chain in PORTMAP_CHAINS {
        let _ = run("iptables", &["-w", "-t", "nat", "-F", chain]);
        let _ = run("iptables", &["-w", "-t", "nat", "-X", chain]);
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.remove_port_mappings();
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            if let Err(e) = run("ip", &["link", "del", &self.bridge]) {
                eprintln!("removing test bridge: {e}");
            }
        }
        for rule in &self.rules {
            let mut args = vec!["-w", "-D", "FORWARD"];
            args.extend(rule.iter().map(String::as_str));
            args.extend(["-j", "DROP"]);
            if let Err(e) = run("iptables", &args) {
                eprintln!("removing test firewall rule: {e}");
            }
        }
        let mut host = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        host.live = host.live.saturating_sub(1);
        host.prefixes.retain(|p| *p != self.prefix);
        if host.live == 0 {
            if let Some(v) = host.ip_forward.take() {
                let _ = std::fs::write(IP_FORWARD, v);
            }
            if !host.portmap_chains {
                remove_portmap_chains();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iptables_lines_split_like_a_shell() {
        let line = r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"n\" id: \"x\"" -j CNI-DN-1"#;
        let args = super::split_rule(line);
        assert_eq!(args[6], "--comment");
        assert_eq!(args[7], r#"dnat name: "n" id: "x""#);
        assert_eq!(args.last().map(String::as_str), Some("CNI-DN-1"));
    }
}
