//! Builds a container's OCI runtime spec from the image config and the CRI
//! container config, with kubelet's rules for command and args.

use std::path::Path;

use gantry_proto::cri::v1::{ContainerConfig, NamespaceMode};
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::error::SpecError;

/// The parts of an image config (`config` in the OCI image config) a container uses.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// The `config` section of an OCI image config. A field of the wrong
    /// shape is an error naming it, never ignored (the container would run
    /// something other than what the image says) and never a panic.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        let whole: Value = serde_json::from_slice(bytes).map_err(|e| format!("the image config is not JSON: {e}"))?;
        let Some(section) = whole.get("config").filter(|c| !c.is_null()) else { return Ok(ImageConfig::default()) };
        let fields = section.as_object().ok_or("the image config's \"config\" is not an object")?;
        // Field by field, so the error names the one that is wrong.
        for (name, value) in fields {
            let checked = match name.as_str() {
                "Env" | "Entrypoint" | "Cmd" => serde_json::from_value::<Option<Vec<String>>>(value.clone()).map(drop),
                "WorkingDir" | "User" | "StopSignal" => {
                    serde_json::from_value::<Option<String>>(value.clone()).map(drop)
                }
                "Volumes" | "ExposedPorts" => {
                    serde_json::from_value::<Option<serde_json::Map<String, Value>>>(value.clone()).map(drop)
                }
                _ => Ok(()),
            };
            checked.map_err(|e| format!("the image config's {name} is malformed: {e}"))?;
        }
        serde_json::from_value(section.clone()).map_err(|e| format!("the image config is malformed: {e}"))
    }
}

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel headers name (CAP_LAST_CAP = 40).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn normalize_cap(name: &str) -> Result<String, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::UnknownCapability(name.to_string()))
    }
}

/// Every capability this host lets gantryd hand on: `ALL_CAPABILITIES`
/// (kernel order, index = capability number) within gantryd's own
/// bounding set. As containerd's "all capabilities" for privileged
/// containers: asking for one the host withholds (a VM's or sandbox's
/// bounding set without CAP_SYS_RESOURCE, say) fails capset in runc.
pub fn host_capabilities() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The container's capabilities: the default set (all the host allows when
/// privileged), then CRI's drops and adds, `ALL` meaning all the host allows.
pub fn capabilities(security: &gantry_proto::cri::v1::LinuxContainerSecurityContext) -> Result<Vec<String>, SpecError> {
    let mut caps: Vec<String> = if security.privileged {
        host_capabilities()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if let Some(c) = &security.capabilities {
        for d in &c.drop_capabilities {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else {
                let d = normalize_cap(d)?;
                caps.retain(|x| *x != d);
            }
        }
        for a in &c.add_capabilities {
            if a.eq_ignore_ascii_case("ALL") {
                caps = host_capabilities();
            } else {
                let a = normalize_cap(a)?;
                if !caps.contains(&a) {
                    caps.push(a);
                }
            }
        }
    }
    Ok(caps)
}

/// kubelet's rule: CRI `command` replaces the image entrypoint, CRI `args`
/// replace the image cmd; args alone run after the image entrypoint.
pub fn process_args(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    match (config.command.is_empty(), config.args.is_empty()) {
        (false, false) => config.command.iter().chain(&config.args).cloned().collect(),
        (false, true) => config.command.clone(),
        (true, false) => entrypoint.into_iter().chain(config.args.iter().cloned()).collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    }
}

/// Image env first, CRI env overriding by name. CRI values are bytes; an
/// OCI spec is JSON, so a value that is not UTF-8 is refused.
pub fn merge_env(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<String> = image.env.clone().unwrap_or_default();
    for kv in &config.envs {
        let value = std::str::from_utf8(&kv.value).map_err(|_| SpecError::EnvNotUtf8(kv.key.clone()))?;
        let entry = format!("{}={value}", kv.key);
        match env.iter_mut().find(|e| e.split('=').next() == Some(kv.key.as_str())) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    Ok(env)
}

/// Resolves `user[:group]` against the rootfs's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), SpecError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let entry = |name: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name).then(|| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
        })
    };
    let (uid, default_gid) = if u.is_empty() {
        (0, 0)
    } else if let Ok(uid) = u.parse::<u32>() {
        let gid = passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[2] == u).then(|| f[3].parse::<u32>().ok()).flatten()
            })
            .unwrap_or(0);
        (uid, gid)
    } else {
        match entry(u) {
            Some((Some(uid), Some(gid))) => (uid, gid),
            _ => return Err(SpecError::UnknownUser(u.to_string())),
        }
    };
    let gid = match g {
        None | Some("") => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok()).flatten()
                    })
                    .ok_or_else(|| SpecError::UnknownUser(user.to_string()))?
            }
        },
    };
    Ok((uid, gid))
}

/// What the spec needs from the pod.
pub struct PodContext<'a> {
    /// `/proc/PID/ns` of the pod's pause process.
    pub ns_dir: &'a Path,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// Files bind-mounted at /etc/hosts, /etc/resolv.conf, /etc/hostname.
    pub etc_files: &'a [(&'a str, std::path::PathBuf)],
    /// The pod's namespaced sysctls.
    pub sysctls: &'a std::collections::HashMap<String, String>,
    /// The pod's own user namespace, if any.
    pub id_maps: Option<crate::userns::PodIdMaps>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessIdentity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The groups the image's /etc/group lists user `uid` in (by the name
/// /etc/passwd gives that uid): what SupplementalGroupsPolicy Merge adds.
pub fn image_groups(rootfs: &Path, uid: u32) -> Vec<u32> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let uid = uid.to_string();
    let Some(name) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2] == uid).then(|| f[0].to_string())
    }) else {
        return vec![];
    };
    let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    groups
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let member = f.len() >= 4 && f[3].split(',').any(|m| m.trim() == name);
            member.then(|| f[2].parse().ok()).flatten()
        })
        .collect()
}

/// The cgroup resources of the OCI spec from CRI's.
fn resources(config: &ContainerConfig) -> Value {
    let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) else { return json!({}) };
    let mut memory = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(r.memory_limit_in_bytes));
        // No swap beyond the limit unless asked, as kubelet expects.
        let swap =
            if r.memory_swap_limit_in_bytes > 0 { r.memory_swap_limit_in_bytes } else { r.memory_limit_in_bytes };
        memory.insert("swap".into(), json!(swap));
    }
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    let hugepages: Vec<Value> =
        r.hugepage_limits.iter().map(|h| json!({"pageSize": h.page_size, "limit": h.limit})).collect();
    let mut resources = json!({"memory": memory, "cpu": cpu, "hugepageLimits": hugepages});
    if !r.unified.is_empty() {
        // cgroup2 files set as they are (kubelet's memory QoS, pids.max…);
        // the shim refuses them on a cgroup v1 host.
        resources["unified"] = json!(r.unified);
    }
    resources
}

pub fn build(
    config: &ContainerConfig,
    image_name: &str,
    image: &ImageConfig,
    pod: &PodContext<'_>,
    who: &ProcessIdentity,
    cgroups_path: &str,
) -> Result<Spec, SpecError> {
    let args = process_args(config, image);
    if args.is_empty() {
        return Err(SpecError::NoCommand { image: image_name.to_string() });
    }
    let cwd = Some(config.working_dir.clone())
        .filter(|w| !w.is_empty())
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let security = config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default();

    // The tty group (5) as the host knows it: devpts is mounted from the host's side.
    let tty_gid = format!("gid={}", pod.id_maps.map_or(Some(5), |m| m.gid.host_of(5)).unwrap_or(5));
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", tty_gid]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    ];
    for (dest, source) in pod.etc_files {
        if !config.mounts.iter().any(|m| m.container_path == *dest) {
            mounts.push(
                json!({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rprivate", "rw"]}),
            );
        }
    }
    for m in &config.mounts {
        if !m.container_path.starts_with('/') {
            return Err(SpecError::MountTarget(m.container_path.clone()));
        }
        if !Path::new(&m.host_path).exists() {
            return Err(SpecError::MountSource {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
            });
        }
        let propagation = match m.propagation {
            1 => "rslave",  // PROPAGATION_HOST_TO_CONTAINER
            2 => "rshared", // PROPAGATION_BIDIRECTIONAL
            _ => "rprivate",
        };
        let rw = if m.readonly { "ro" } else { "rw" };
        let mut options = vec!["rbind", propagation, rw];
        if m.recursive_read_only {
            // As containerd: only a private, read-only mount can be made read-only all the way down.
            if !m.readonly || m.propagation != 0 {
                return Err(SpecError::RecursiveReadOnly(m.container_path.clone()));
            }
            options.push("rro");
        }
        mounts
            .push(json!({"destination": m.container_path, "type": "bind", "source": m.host_path, "options": options}));
    }

    let ns_path = |name: &str| pod.ns_dir.join(name).display().to_string();
    let mut namespaces = vec![json!({"type": "mount"})];
    if !pod.host_network {
        namespaces.push(json!({"type": "network", "path": ns_path("net")}));
        namespaces.push(json!({"type": "uts", "path": ns_path("uts")}));
    }
    if !pod.host_ipc {
        namespaces.push(json!({"type": "ipc", "path": ns_path("ipc")}));
    }
    // The container's own pid mode decides (absent means POD, as in containerd).
    let pid_mode = security.namespace_options.as_ref().map(|n| n.pid).unwrap_or(NamespaceMode::Pod as i32);
    if pid_mode == NamespaceMode::Container as i32 {
        namespaces.push(json!({"type": "pid"}));
    } else if pid_mode == NamespaceMode::Pod as i32 && !pod.host_pid {
        namespaces.push(json!({"type": "pid", "path": ns_path("pid")}));
    }
    if pod.id_maps.is_some() {
        namespaces.push(json!({"type": "user", "path": ns_path("user")}));
    }

    let caps = capabilities(&security)?;
    let ambient: Vec<String> = security
        .capabilities
        .as_ref()
        .map(|c| c.add_ambient_capabilities.iter().map(|a| normalize_cap(a)).collect::<Result<_, _>>())
        .transpose()?
        .unwrap_or_default();
    let mut process = json!({
        "args": args,
        "env": merge_env(config, image)?,
        "cwd": cwd,
        "user": {"uid": who.uid, "gid": who.gid, "additionalGids": who.additional_gids},
        "terminal": config.tty,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": ambient},
        "noNewPrivileges": security.no_new_privs,
    });
    if let Some(adj) = config.linux.as_ref().and_then(|l| l.resources.as_ref()).map(|r| r.oom_score_adj) {
        if adj != 0 {
            process["oomScoreAdj"] = json!(adj);
        }
    }
    let devices = config.devices.as_slice();
    let (device_nodes, device_rules) = crate::devices::for_container(devices, security.privileged)?;
    let mut resources = resources(config);
    resources["devices"] = json!(device_rules);
    let seccomp = crate::seccomp::profile(&security, &caps)?;
    // A bidirectional mount needs the container's root shared with the
    // host's (as runc's rootfsPropagation), else its mounts cannot propagate.
    let any_bidirectional = config.mounts.iter().any(|m| m.propagation == 2);
    let rootfs_propagation = if any_bidirectional { "rshared" } else { "rslave" };
    let mut spec: Value = json!({
        "ociVersion": "1.1.0",
        "process": process,
        "root": {"path": "rootfs", "readonly": security.readonly_rootfs},
        "mounts": mounts,
        "annotations": annotations(config),
        "linux": {
            "sysctl": pod.sysctls,
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "rootfsPropagation": rootfs_propagation,
            "seccomp": seccomp,
            "devices": device_nodes,
            "namespaces": namespaces,
            "maskedPaths": paths_to_protect(security.privileged, &security.masked_paths, DEFAULT_MASKED_PATHS),
            "readonlyPaths": paths_to_protect(security.privileged, &security.readonly_paths, DEFAULT_READONLY_PATHS),
        },
    });
    if let Some(maps) = pod.id_maps {
        let (uids, gids) = maps.oci();
        // Volumes and the pod's /etc files are ID-mapped bind mounts (OCI
        // 1.1 mount mappings): root's files there are the container root's.
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for m in mounts.iter_mut().filter(|m| m["type"] == "bind") {
                m["uidMappings"] = uids.clone();
                m["gidMappings"] = gids.clone();
            }
        }
        spec["linux"]["uidMappings"] = uids;
        spec["linux"]["gidMappings"] = gids;
    }
    serde_json::from_value(spec).map_err(|e| SpecError::Oci(e.to_string()))
}

/// Paths masked and made read-only unless kubelet gives its own lists
/// (ProcMount Default sends these very ones; Unmasked sends none).
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const DEFAULT_READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

fn paths_to_protect(privileged: bool, from_cri: &[String], defaults: &[&str]) -> Vec<String> {
    if privileged {
        vec![]
    } else if from_cri.is_empty() {
        defaults.iter().map(|p| p.to_string()).collect()
    } else {
        from_cri.to_vec()
    }
}

/// Annotation telling the shim to keep a stdin for the container (CRI
/// `stdin`), and whether it closes after the first attach ends (`stdin_once`).
pub const STDIN_ANNOTATION: &str = "io.gantry.stdin";
pub const STDIN_ONCE_ANNOTATION: &str = "io.gantry.stdin-once";

fn annotations(config: &ContainerConfig) -> std::collections::HashMap<String, String> {
    let mut a = config.annotations.clone();
    if config.stdin {
        a.insert(STDIN_ANNOTATION.into(), "true".into());
        if config.stdin_once {
            a.insert(STDIN_ONCE_ANNOTATION.into(), "true".into());
        }
    }
    a
}

#[cfg(test)]
mod tests {

    #[test]
    fn malformed_image_config_fields_are_named() {
        let ok = ImageConfig::parse(br#"{"config":{"Env":["A=1"],"Cmd":["sh"],"User":"1000","Volumes":{"/v":{}}}}"#);
        assert_eq!(ok.expect("valid").cmd, Some(vec!["sh".to_string()]));
        assert!(ImageConfig::parse(br#"{"architecture":"amd64"}"#).is_ok(), "no config section");
        for (json, field) in [
            (r#"{"config":{"Env":"A=1"}}"#, "Env"),
            (r#"{"config":{"User":5}}"#, "User"),
            (r#"{"config":{"WorkingDir":["/"]}}"#, "WorkingDir"),
            (r#"{"config":{"Volumes":["/v"]}}"#, "Volumes"),
            (r#"{"config":{"ExposedPorts":"80/tcp"}}"#, "ExposedPorts"),
            (r#"{"config":{"Cmd":[1,2]}}"#, "Cmd"),
        ] {
            let err = ImageConfig::parse(json.as_bytes()).expect_err(json);
            assert!(err.contains(field), "{json}: {err}");
        }
        assert!(ImageConfig::parse(b"not json").is_err());
        assert!(ImageConfig::parse(br#"{"config":[1]}"#).is_err());
    }

    use super::*;

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubelet_rules() {
        let image = ImageConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["default".into()]),
            ..Default::default()
        };
        assert_eq!(process_args(&cfg(&[], &[]), &image), ["/entry", "default"]);
        assert_eq!(process_args(&cfg(&[], &["a"]), &image), ["/entry", "a"]);
        assert_eq!(process_args(&cfg(&["sh"], &[]), &image), ["sh"]);
        assert_eq!(process_args(&cfg(&["sh"], &["-c", "x"]), &image), ["sh", "-c", "x"]);
    }

    #[test]
    fn env_is_merged_by_name() {
        let image = ImageConfig { env: Some(vec!["PATH=/bin".into(), "A=1".into()]), ..Default::default() };
        let mut c = cfg(&[], &[]);
        c.envs = vec![
            gantry_proto::cri::v1::KeyValue { key: "A".into(), value: "2".into() },
            gantry_proto::cri::v1::KeyValue { key: "B".into(), value: "3".into() },
        ];
        assert_eq!(merge_env(&c, &image).unwrap(), ["PATH=/bin", "A=2", "B=3"]);
        c.envs.push(gantry_proto::cri::v1::KeyValue { key: "C".into(), value: vec![0xff] });
        assert!(matches!(merge_env(&c, &image), Err(SpecError::EnvNotUtf8(k)) if k == "C"));
    }

    #[test]
    fn capabilities_default_privileged_add_drop() {
        let mut sc = gantry_proto::cri::v1::LinuxContainerSecurityContext::default();
        assert_eq!(capabilities(&sc).unwrap().len(), DEFAULT_CAPABILITIES.len());
        sc.capabilities = Some(gantry_proto::cri::v1::Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["net_admin".into(), "CAP_SYS_TIME".into()],
            ..Default::default()
        });
        assert_eq!(capabilities(&sc).unwrap(), ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
        sc.capabilities.as_mut().unwrap().add_capabilities = vec!["BOGUS".into()];
        assert!(matches!(capabilities(&sc), Err(SpecError::UnknownCapability(_))));
        let privileged =
            gantry_proto::cri::v1::LinuxContainerSecurityContext { privileged: true, ..Default::default() };
        assert_eq!(capabilities(&privileged).unwrap(), host_capabilities());
        assert!(host_capabilities().contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn users_resolve_against_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\napp:x:1234:4321::/:/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(dir.path(), "").unwrap(), (0, 0));
        assert_eq!(resolve_user(dir.path(), "app").unwrap(), (1234, 4321));
        assert_eq!(resolve_user(dir.path(), "1234").unwrap(), (1234, 4321));
        assert_eq!(resolve_user(dir.path(), "999").unwrap(), (999, 0));
        assert_eq!(resolve_user(dir.path(), "app:staff").unwrap(), (1234, 50));
        assert!(resolve_user(dir.path(), "nobody").is_err());
    }
}
