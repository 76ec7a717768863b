//! CNI (spec 0.4.0 / 1.0.0): loading a network configuration list and
//! running its plugins as libcni does, with our own process invocation.
//!
//! A plugin is an executable named by its `type`, found in the bin dirs. It
//! gets its parameters in `CNI_*` environment variables and its config on
//! stdin: the plugin's object from the list plus the list's `name` and
//! `cniVersion`, the previous plugin's result as `prevResult`, and
//! `runtimeConfig` for the capabilities it declares. It answers a result
//! (ADD) or an error object `{code, msg, details}` on stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

/// A plugin that hangs must not hang the CRI call forever.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// CNI's well-known error code "unknown container or container does not exist".
const CODE_UNKNOWN_CONTAINER: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("reading CNI config dir {dir}: {source}")]
    ReadDir { dir: PathBuf, source: std::io::Error },
    #[error("no valid CNI network config (*.conflist, *.conf, *.json) in {dir}")]
    NoConfig { dir: PathBuf },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("running CNI plugin {plugin:?}: {source}")]
    Exec { plugin: String, source: std::io::Error },
    #[error("CNI plugin {plugin:?} (network {network:?}) timed out on {command}")]
    Timeout { plugin: String, network: String, command: &'static str },
    #[error("CNI plugin {plugin:?} (network {network:?}) failed on {command}: {message}")]
    Plugin { plugin: String, network: String, command: &'static str, message: String, code: Option<u64> },
    #[error("CNI plugin {plugin:?} (network {network:?}) returned an unreadable result: {error}")]
    BadResult { plugin: String, network: String, error: String },
}

impl CniError {
    /// A DEL that finds nothing to delete has nothing left to do.
    pub fn is_not_found(&self) -> bool {
        match self {
            CniError::Plugin { message, code, .. } => {
                let m = message.to_ascii_lowercase();
                *code == Some(CODE_UNKNOWN_CONTAINER) || m.contains("not found") || m.contains("no such")
            }
            _ => false,
        }
    }
}

/// A network configuration list (a `.conf` is wrapped as a one-plugin list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    /// The plugins' config objects, as written (unknown keys are the plugin's business).
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from, for messages.
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// Parses one config file; `Err` says why it is not a usable network.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<NetworkConfigList, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(obj) = value else { return Err("not a JSON object".into()) };
        let is_list = path.extension().is_some_and(|e| e == "conflist") || obj.contains_key("plugins");
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err("no \"name\"".into());
        }
        let cni_version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        if cni_version.is_empty() {
            return Err("no \"cniVersion\"".into());
        }
        let plugins: Vec<Map<String, Value>> = if is_list {
            let Some(Value::Array(list)) = obj.get("plugins") else { return Err("no \"plugins\" array".into()) };
            list.iter()
                .map(|p| p.as_object().cloned().ok_or_else(|| "a plugin is not a JSON object".to_string()))
                .collect::<Result<_, _>>()?
        } else {
            vec![obj.clone()]
        };
        if plugins.is_empty() {
            return Err("an empty \"plugins\" list".into());
        }
        if let Some(i) = plugins.iter().position(|p| p.get("type").and_then(Value::as_str).is_none_or(str::is_empty)) {
            return Err(format!("plugin {i} has no \"type\""));
        }
        Ok(NetworkConfigList { name, cni_version, plugins, source: path.to_path_buf() })
    }

    /// The first valid config in `dir` by file name, as libcni picks the
    /// default network. `Ok(None)`: none there (yet).
    pub fn load_first(dir: &Path) -> Result<Option<NetworkConfigList>, CniError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CniError::ReadDir { dir: dir.to_path_buf(), source: e }),
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conflist" || e == "conf" || e == "json"))
            .collect();
        files.sort();
        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable CNI config");
                    continue;
                }
            };
            match NetworkConfigList::parse(&path, &bytes) {
                Ok(list) => return Ok(Some(list)),
                Err(why) => tracing::warn!(file = %path.display(), %why, "skipping invalid CNI config"),
            }
        }
        Ok(None)
    }

    fn plugin_type(plugin: &Map<String, Value>) -> &str {
        plugin.get("type").and_then(Value::as_str).unwrap_or_default()
    }
}

/// Who the network is for: what goes into `CNI_*` and `runtimeConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// CNI_CONTAINERID: the sandbox ID.
    pub container_id: String,
    /// CNI_NETNS (empty when the namespace is gone).
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS pairs, in order.
    pub args: Vec<(String, String)>,
    /// `runtimeConfig.portMappings` for plugins with that capability.
    pub port_mappings: Vec<Value>,
}

impl Attachment {
    fn cni_args(&self) -> String {
        let mut s = String::from("IgnoreUnknown=1");
        for (k, v) in &self.args {
            s += &format!(";{k}={v}");
        }
        s
    }
}

/// Runs plugins from `bin_dirs`.
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// Where ADD of a list stopped: the result so far and how many plugins ran.
#[derive(Debug)]
pub struct AddFailure {
    pub error: CniError,
    /// Plugins 0..attempted were run (the last one failed, maybe half-way).
    pub attempted: usize,
    pub prev_result: Option<Value>,
}

impl Cni {
    /// ADD: every plugin in order, each getting the previous one's result.
    pub async fn add(&self, list: &NetworkConfigList, at: &Attachment) -> Result<Value, AddFailure> {
        let mut prev: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            match self.exec(list, plugin, at, Command::Add, prev.as_ref()).await {
                Ok(result) => prev = Some(result),
                Err(error) => return Err(AddFailure { error, attempted: i + 1, prev_result: prev }),
            }
        }
        // `add` ran at least one plugin: a list is never empty.
        prev.ok_or_else(|| AddFailure {
            error: CniError::BadResult {
                plugin: String::new(),
                network: list.name.clone(),
                error: "no plugins".into(),
            },
            attempted: 0,
            prev_result: None,
        })
    }

    /// DEL of the first `count` plugins, last first, with the ADD result as
    /// `prevResult`. Every plugin is asked even if one fails; "not found"
    /// counts as done. Returns the first error.
    pub async fn del(
        &self,
        list: &NetworkConfigList,
        count: usize,
        at: &Attachment,
        prev_result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_error = None;
        for plugin in list.plugins.iter().take(count).rev() {
            match self.exec(list, plugin, at, Command::Del, prev_result).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    tracing::debug!(pod = %at.container_id, error = %e, "CNI DEL: already gone");
                }
                Err(e) => {
                    tracing::warn!(pod = %at.container_id, error = %e, "CNI DEL failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        // A type is a file name, never a path.
        if !plugin.contains('/') && plugin != "." && plugin != ".." {
            for dir in &self.bin_dirs {
                let p = dir.join(plugin);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        Err(CniError::PluginNotFound { plugin: plugin.to_string(), dirs: self.path_var() })
    }

    fn path_var(&self) -> String {
        self.bin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    }

    /// The plugin's stdin: its own object plus what libcni injects.
    fn stdin_config(
        list: &NetworkConfigList,
        plugin: &Map<String, Value>,
        at: &Attachment,
        prev: Option<&Value>,
    ) -> Map<String, Value> {
        let mut conf = plugin.clone();
        conf.insert("name".into(), Value::String(list.name.clone()));
        conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let wants_ports =
            plugin.get("capabilities").and_then(|c| c.get("portMappings")).and_then(Value::as_bool).unwrap_or(false);
        if wants_ports {
            let mut runtime = match conf.remove("runtimeConfig") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            runtime.insert("portMappings".into(), Value::Array(at.port_mappings.clone()));
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        conf
    }

    async fn exec(
        &self,
        list: &NetworkConfigList,
        plugin: &Map<String, Value>,
        at: &Attachment,
        command: Command,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        let kind = NetworkConfigList::plugin_type(plugin).to_string();
        let binary = self.find(&kind)?;
        let stdin = Value::Object(Self::stdin_config(list, plugin, at, prev)).to_string();
        tracing::debug!(pod = %at.container_id, plugin = %kind, command = command.as_str(), "running CNI plugin");
        let exec_err = |source| CniError::Exec { plugin: kind.clone(), source };
        let mut child = tokio::process::Command::new(&binary)
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", &at.container_id)
            .env("CNI_NETNS", &at.netns)
            .env("CNI_IFNAME", &at.ifname)
            .env("CNI_ARGS", at.cni_args())
            .env("CNI_PATH", self.path_var())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(exec_err)?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit without reading its stdin: its error is what matters.
            let _ = pipe.write_all(stdin.as_bytes()).await;
        }
        let out = match tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output()).await {
            Ok(out) => out.map_err(exec_err)?,
            Err(_) => {
                return Err(CniError::Timeout { plugin: kind, network: list.name.clone(), command: command.as_str() })
            }
        };
        if !out.status.success() {
            let (message, code) = plugin_error(&out.stdout, &out.stderr, out.status);
            return Err(CniError::Plugin {
                plugin: kind,
                network: list.name.clone(),
                command: command.as_str(),
                message,
                code,
            });
        }
        match command {
            // DEL answers nothing (or an empty object).
            Command::Del => Ok(Value::Null),
            Command::Add => match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err(CniError::BadResult {
                    plugin: kind,
                    network: list.name.clone(),
                    error: "not a JSON object".into(),
                }),
                Err(e) => Err(CniError::BadResult { plugin: kind, network: list.name.clone(), error: e.to_string() }),
            },
        }
    }
}

/// The message of a failed plugin: its `{code, msg, details}` object if it
/// wrote one, else its stderr, else its exit status.
fn plugin_error(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> (String, Option<u64>) {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(stdout) {
        let msg = obj.get("msg").and_then(Value::as_str).unwrap_or_default();
        let details = obj.get("details").and_then(Value::as_str).unwrap_or_default();
        let code = obj.get("code").and_then(Value::as_u64);
        if !msg.is_empty() || code.is_some() {
            let mut m = msg.to_string();
            if !details.is_empty() {
                m += &format!(" ({details})");
            }
            if let Some(c) = code {
                m += &format!(" [code {c}]");
            }
            return (m, code);
        }
    }
    let err = String::from_utf8_lossy(stderr).trim().to_string();
    if !err.is_empty() {
        return (err, None);
    }
    let out = String::from_utf8_lossy(stdout).trim().to_string();
    if !out.is_empty() {
        return (out, None);
    }
    (format!("exited with {status}"), None)
}

/// The addresses (without prefix length) of a result's `ips` (0.3.0 and
/// later) or `ip4`/`ip6` (0.2.0).
pub fn result_ips(result: &Value) -> Vec<String> {
    let strip = |s: &str| s.split('/').next().unwrap_or_default().to_string();
    let mut ips: Vec<String> = result
        .get("ips")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|ip| ip.get("address").and_then(Value::as_str)).map(strip).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        for key in ["ip4", "ip6"] {
            if let Some(ip) = result.get(key).and_then(|v| v.get("ip")).and_then(Value::as_str) {
                ips.push(strip(ip));
            }
        }
    }
    ips.retain(|ip| !ip.is_empty());
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_is_wrapped_and_conflist_kept() {
        let conf = br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"b0"}"#;
        let l = NetworkConfigList::parse(Path::new("/x/10-n.conf"), conf).unwrap();
        assert_eq!((l.name.as_str(), l.cni_version.as_str(), l.plugins.len()), ("n", "1.0.0", 1));
        assert_eq!(l.plugins[0]["bridge"], "b0");
        let list = br#"{"cniVersion":"0.4.0","name":"m","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#;
        let l = NetworkConfigList::parse(Path::new("/x/10-m.conflist"), list).unwrap();
        assert_eq!(l.plugins.len(), 2);
        for bad in [&br#"{"cniVersion":"1.0.0","name":"m","plugins":[]}"#[..], br#"{"name":"m","type":"x"}"#, b"[]"] {
            assert!(NetworkConfigList::parse(Path::new("/x/a.conflist"), bad).is_err());
        }
        assert!(NetworkConfigList::parse(Path::new("/x/a.conf"), br#"{"cniVersion":"1.0.0","name":"m"}"#).is_err());
    }

    #[test]
    fn first_valid_file_by_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-broken.conflist"), "{").unwrap();
        std::fs::write(dir.path().join("05-ignored.txt"), "{}").unwrap();
        std::fs::write(dir.path().join("20-b.conf"), r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#).unwrap();
        std::fs::write(dir.path().join("10-a.json"), r#"{"cniVersion":"1.0.0","name":"a","type":"ptp"}"#).unwrap();
        let l = NetworkConfigList::load_first(dir.path()).unwrap().unwrap();
        assert_eq!(l.name, "a");
        assert!(NetworkConfigList::load_first(&dir.path().join("missing")).unwrap().is_none());
    }

    #[test]
    fn stdin_gets_name_version_prev_result_and_port_mappings() {
        let list = NetworkConfigList::parse(
            Path::new("/x/a.conflist"),
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let at = Attachment {
            container_id: "c".into(),
            netns: "/proc/1/ns/net".into(),
            ifname: "eth0".into(),
            args: vec![("K8S_POD_NAME".into(), "p".into())],
            port_mappings: vec![serde_json::json!({"hostPort": 80, "containerPort": 8080, "protocol": "tcp"})],
        };
        assert_eq!(at.cni_args(), "IgnoreUnknown=1;K8S_POD_NAME=p");
        let prev = serde_json::json!({"ips": [{"address": "10.0.0.2/24"}]});
        let first = Cni::stdin_config(&list, &list.plugins[0], &at, None);
        assert_eq!(first["name"], "net");
        assert!(!first.contains_key("prevResult") && !first.contains_key("runtimeConfig"));
        let second = Cni::stdin_config(&list, &list.plugins[1], &at, Some(&prev));
        assert_eq!(second["cniVersion"], "1.0.0");
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 80);
        assert_eq!(result_ips(&prev), vec!["10.0.0.2"]);
        assert_eq!(result_ips(&serde_json::json!({"ip4": {"ip": "10.1.0.3/16"}})), vec!["10.1.0.3"]);
    }

    #[test]
    fn plugin_errors_name_message_and_code() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let (m, code) = plugin_error(br#"{"code":7,"msg":"bad config","details":"x"}"#, b"", status);
        assert_eq!((m.as_str(), code), ("bad config (x) [code 7]", Some(7)));
        assert_eq!(plugin_error(b"", b"boom\n", status).0, "boom");
        assert!(plugin_error(b"", b"", status).0.contains("exit"));
        let e = CniError::Plugin {
            plugin: "p".into(),
            network: "n".into(),
            command: "DEL",
            message: "link not found".into(),
            code: None,
        };
        assert!(e.is_not_found());
    }
}
