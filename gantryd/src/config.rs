//! gantryd's configuration: embedded defaults, overridden by a TOML file,
//! then by the drop-in files of its `config.d` directory in name order (as
//! CRI-O's `crio.conf.d`), then by command-line flags. Every file is checked
//! on its own first, so an unknown key or a wrong type is reported with the
//! file, line and key. `deploy/config.toml` is the documented default
//! (`gantryd config default`); docs/config.md lists every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gantry_imageservice::RegistryHostConfig;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/gantry/config.toml";

/// Every key with its default value and what it does: `gantryd config default`.
pub const DEFAULT_TOML: &str = include_str!("../../deploy/config.toml");

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
    /// Where Prometheus metrics are served (`HOST:PORT`, `/metrics`); empty: off.
    pub metrics_address: String,
    /// Images the node keeps: reported pinned to kubelet, refused by
    /// RemoveImage (references, or prefixes ending in `*`).
    pub pinned_images: Vec<String>,
    /// kubelet's cgroup driver: `cgroupfs` (cgroup paths) or `systemd`
    /// (slices and transient scope units); reported by RuntimeConfig.
    pub cgroup_driver: gantry_runtime::cgroup_driver::CgroupDriver,
    /// Directories of CDI spec files (devices for `CDI_devices` and the
    /// `cdi.k8s.io/` annotations), later ones taking precedence.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// criu for CheckpointContainer: a path, or a name searched in PATH.
    pub criu_path: PathBuf,
    /// Pod networking.
    pub cni: CniConfig,
    /// RuntimeClass handlers besides the built-in shim: external OCI
    /// runtimes with a runc-compatible command line, by handler name.
    pub runtimes: BTreeMap<String, RuntimeHandlerConfig>,
}

/// One external OCI runtime (`[runtimes.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandlerConfig {
    /// The runtime's executable (runc, crun, runsc…), an absolute path.
    pub binary: PathBuf,
    /// Its state directory (`--root`) [default: STATE/runtimes/NAME].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Global options given before each subcommand (`--systemd-cgroup`…).
    #[serde(default)]
    pub options: Vec<String>,
}

impl Config {
    /// The runtime's handlers as gantryd's runtime takes them; names and
    /// paths checked.
    pub fn handlers(&self) -> anyhow::Result<gantry_runtime::handlers::Handlers> {
        let external = self
            .runtimes
            .iter()
            .map(|(name, h)| {
                let handler = gantry_runtime::handlers::OciHandler {
                    binary: h.binary.clone(),
                    root: h.root.clone().unwrap_or_else(|| self.state.join("runtimes").join(name)),
                    options: h.options.clone(),
                };
                (name.clone(), handler)
            })
            .collect();
        gantry_runtime::handlers::Handlers::new(external).map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }
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
            metrics_address: String::new(),
            pinned_images: vec![],
            cgroup_driver: Default::default(),
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
            criu_path: "criu".into(),
            cni: CniConfig::default(),
            runtimes: BTreeMap::new(),
        }
    }
}

/// Where the effective configuration came from, in the order applied.
#[derive(Debug, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
}

impl Config {
    /// Reads the main file `path` (or the default one, if present) and the
    /// drop-ins of `drop_in_dir` (default: `config.d` beside the main file).
    /// A missing default file or directory is not an error; a missing file
    /// or directory named explicitly is.
    pub fn load(path: Option<&Path>, drop_in_dir: Option<&Path>) -> anyhow::Result<(Config, Sources)> {
        let (main, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut merged = toml::Table::new();
        let mut sources = Sources::default();
        match std::fs::read_to_string(&main) {
            Ok(text) => {
                merge(&mut merged, parse_checked(&main, &text)?);
                sources.files.push(main.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
            Err(e) => return Err(e).with_context(|| format!("reading config file {}", main.display())),
        }
        let (dir, explicit_dir) = match drop_in_dir {
            Some(d) => (d.to_path_buf(), true),
            None => (main.parent().unwrap_or(Path::new("/")).join("config.d"), false),
        };
        for file in drop_ins(&dir, explicit_dir)? {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading config file {}", file.display()))?;
            merge(&mut merged, parse_checked(&file, &text)?);
            sources.files.push(file);
        }
        let config = Config::deserialize(merged).context("combining the config files")?;
        Ok((config, sources))
    }

    /// The effective configuration as TOML (`gantryd config dump`).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("encoding the configuration")
    }
}

/// `*.toml` in `dir`, by name.
fn drop_ins(dir: &Path, explicit: bool) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading config directory {}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// One file's table, after checking that it makes a valid configuration on
/// its own: unknown keys and wrong types are reported with this file's name
/// and the line.
fn parse_checked(file: &Path, text: &str) -> anyhow::Result<toml::Table> {
    if let Err(e) = toml::from_str::<Config>(text) {
        anyhow::bail!("config file {}: {e}", file.display());
    }
    toml::from_str(text).with_context(|| format!("config file {}", file.display()))
}

/// `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
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

    #[test]
    fn the_documented_default_is_the_default() {
        let c: Config = toml::from_str(DEFAULT_TOML).expect("deploy/config.toml parses");
        assert_eq!(c, Config::default());
    }

    /// Every key a configuration can hold, dotted (`cni.conf_dir`,
    /// `registries.HOST.mirrors`), from a configuration with every optional
    /// key set.
    fn all_keys() -> Vec<String> {
        let mut c = Config {
            stream_tls_cert: Some("/c".into()),
            stream_tls_key: Some("/k".into()),
            shim_binary: Some("/s".into()),
            ..Config::default()
        };
        c.registries.insert(
            "HOST".into(),
            RegistryHostConfig {
                mirrors: vec!["http://m".into()],
                plain_http: Some(true),
                ca_file: Some("/ca".into()),
                skip_upstream: true,
            },
        );
        c.runtimes.insert(
            "NAME".into(),
            RuntimeHandlerConfig { binary: "/b".into(), root: Some("/r".into()), options: vec!["--o".into()] },
        );
        fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    toml::Value::Table(inner) => walk(&key, inner, out),
                    _ => out.push(key),
                }
            }
        }
        let table: toml::Table = toml::from_str(&toml::to_string(&c).expect("encode")).expect("decode");
        let mut keys = vec![];
        walk("", &table, &mut keys);
        keys.sort();
        keys
    }

    #[test]
    fn docs_and_the_default_file_name_every_key() {
        let doc = include_str!("../../docs/config.md");
        let documented: std::collections::BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        let keys: std::collections::BTreeSet<String> = all_keys().into_iter().collect();
        assert_eq!(documented, keys, "docs/config.md's table and the Config struct disagree");
        for key in &keys {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            let named = DEFAULT_TOML.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{leaf} =")) || l.starts_with(&format!("{leaf}="))
            });
            assert!(named, "deploy/config.toml does not show {key}");
        }
    }

    #[test]
    fn drop_ins_merge_in_name_order_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "root = \"/a\"\n[registries.\"r.io\"]\nmirrors = [\"http://m1\"]\n").expect("write");
        let d = dir.path().join("config.d");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("20-b.toml"), "state = \"/s2\"\n").expect("write");
        std::fs::write(d.join("10-a.toml"), "state = \"/s1\"\n[registries.\"r.io\"]\nskip_upstream = true\n")
            .expect("write");
        std::fs::write(d.join("ignored.conf"), "not toml at all").expect("write");
        let (c, sources) = Config::load(Some(&main), None).expect("load");
        assert_eq!(c.root, PathBuf::from("/a"));
        assert_eq!(c.state, PathBuf::from("/s2"), "the later drop-in wins");
        let r = &c.registries["r.io"];
        assert_eq!((r.mirrors.clone(), r.skip_upstream), (vec!["http://m1".to_string()], true), "tables merge");
        assert_eq!(sources.files, vec![main.clone(), d.join("10-a.toml"), d.join("20-b.toml")]);

        std::fs::write(d.join("30-bad.toml"), "\n[cni]\nconfdir = \"/x\"\n").expect("write");
        let err = format!("{:#}", Config::load(Some(&main), None).unwrap_err());
        assert!(err.contains("30-bad.toml") && err.contains("confdir") && err.contains("line 3"), "{err}");
        std::fs::write(d.join("30-bad.toml"), "socket_mode = \"rw\"\n").expect("write");
        let err = format!("{:#}", Config::load(Some(&main), None).unwrap_err());
        assert!(err.contains("30-bad.toml") && err.contains("socket_mode"), "{err}");
        std::fs::write(d.join("30-bad.toml"), "[cni\n").expect("write");
        let err = format!("{:#}", Config::load(Some(&main), None).unwrap_err());
        assert!(err.contains("30-bad.toml") && err.contains("line 1"), "{err}");
        std::fs::remove_file(d.join("30-bad.toml")).expect("rm");
        assert!(Config::load(Some(&main), Some(&dir.path().join("missing"))).is_err(), "an explicit dir must exist");
        assert!(Config::load(Some(&dir.path().join("missing.toml")), None).is_err(), "an explicit file must exist");
    }
}
