//! Which pod sysctls may be applied: only those the kernel keeps per
//! namespace, and only when the pod has that namespace of its own (runc's
//! rule). Anything else would change the node's kernel for every process on
//! it (`kernel.core_pattern` beginning with `|` runs a program as root on the
//! next crash: CVE-2022-0811). Pure: checked at RunPodSandbox, before anything
//! is made; the shim checks the spec again before it writes (docs/security.md).

use std::collections::HashMap;
use std::fmt;

use gantry_proto::cri::v1::{NamespaceMode, PodSandboxConfig};

/// IPC-namespaced sysctls besides `fs.mqueue.*`.
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
const UTS: [&str; 2] = ["kernel.hostname", "kernel.domainname"];

/// The kernel takes at most a page per write; nothing namespaced needs more.
const MAX_VALUE: usize = 4095;

/// Which namespaces the pod has of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owned {
    pub ipc: bool,
    pub net: bool,
    pub uts: bool,
}

impl Owned {
    /// Gantry gives a pod its own UTS namespace exactly when it has its own network.
    pub fn of_pod(config: &PodSandboxConfig) -> Owned {
        let ns =
            config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref());
        let node = NamespaceMode::Node as i32;
        let ipc = ns.is_none_or(|n| n.ipc != node);
        let net = ns.is_none_or(|n| n.network != node);
        Owned { ipc, net, uts: net }
    }
}

/// A refused sysctl: its name as given and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlError {
    pub name: String,
    pub reason: String,
}

impl fmt::Display for SysctlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sysctl {:?}: {}", self.name, self.reason)
    }
}

impl std::error::Error for SysctlError {}

/// The dot form. A name whose first separator is `/` is the slash form, in
/// which a dot belongs to a component (`net/ipv4/conf/eth0.100/rp_filter`):
/// dots and slashes swap, as kubelet does (`net.ipv4.conf.eth0/100.rp_filter`).
pub fn normalize(name: &str) -> String {
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

/// The file below `/proc/sys` for a name in dot form.
pub fn proc_path(dotted: &str) -> String {
    dotted.split('.').map(|c| c.replace('/', ".")).collect::<Vec<_>>().join("/")
}

/// Every sysctl of the pod, against the namespaces it owns.
pub fn check_pod(config: &PodSandboxConfig) -> Result<(), SysctlError> {
    let Some(linux) = config.linux.as_ref() else { return Ok(()) };
    check_all(&linux.sysctls, Owned::of_pod(config))
}

/// Checks in name order, so that the same spec always names the same sysctl.
pub fn check_all(sysctls: &HashMap<String, String>, owned: Owned) -> Result<(), SysctlError> {
    let mut names: Vec<&String> = sysctls.keys().collect();
    names.sort();
    for name in names {
        check(name, &sysctls[name], owned)?;
    }
    Ok(())
}

pub fn check(name: &str, value: &str, owned: Owned) -> Result<(), SysctlError> {
    let refuse = |reason: String| Err(SysctlError { name: name.to_string(), reason });
    let dotted = normalize(name);
    if let Err(reason) = check_name(&dotted) {
        return refuse(reason);
    }
    let (owns, which, host) = if IPC.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
        (owned.ipc, "IPC", "the pod uses the node's IPC namespace")
    } else if dotted.starts_with("net.") {
        (owned.net, "network", "the pod uses the node's network")
    } else if UTS.contains(&dotted.as_str()) {
        (owned.uts, "UTS", "the pod uses the node's network and UTS namespace")
    } else {
        return refuse("not a namespaced sysctl: it would change the node's kernel".into());
    };
    if !owns {
        return refuse(format!("{which}-namespaced, but {host}: it would change the node's"));
    }
    if let Err(reason) = check_value(value) {
        return refuse(reason);
    }
    Ok(())
}

/// Non-empty dot-separated components of `[A-Za-z0-9_-]`; under `net.` a
/// component may hold `/` (a dot of an interface name), never only slashes
/// (which would be `.` or `..` in the path).
fn check_name(dotted: &str) -> Result<(), String> {
    if dotted.is_empty() || dotted.len() > 255 {
        return Err("the name is empty or too long".into());
    }
    let net = dotted.starts_with("net.");
    for part in dotted.split('.') {
        if part.is_empty() {
            return Err("the name has an empty component".into());
        }
        if let Some(c) =
            part.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || (net && c == '/')))
        {
            return Err(format!("the name has the character {c:?}"));
        }
        if part.chars().all(|c| c == '/') {
            return Err("the name has a component that names a parent directory".into());
        }
    }
    Ok(())
}

/// One line of text: tabs and spaces pass (`kernel.sem` is four numbers),
/// control characters do not. `=` and `+` are refused too: CRI-O's fix for
/// CVE-2022-0811, where `+` joined settings and `=` began a second one; no
/// namespaced sysctl takes either.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("the value is empty".into());
    }
    if value.len() > MAX_VALUE {
        return Err(format!("the value is longer than {MAX_VALUE} bytes"));
    }
    match value.chars().find(|&c| (c.is_control() && c != '\t') || c == '=' || c == '+') {
        Some(c) => Err(format!("the value has the character {c:?}, which could smuggle in another setting")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: Owned = Owned { ipc: true, net: true, uts: true };
    const NONE: Owned = Owned { ipc: false, net: false, uts: false };

    fn ok(name: &str, value: &str, owned: Owned) -> bool {
        check(name, value, owned).is_ok()
    }

    #[test]
    fn namespaced_sysctls_pass_when_the_pod_owns_the_namespace() {
        for name in IPC.iter().chain(["fs.mqueue.msg_max", "fs.mqueue.queues_max"].iter()) {
            assert!(ok(name, "4096", Owned { ipc: true, ..NONE }), "{name}");
            assert!(!ok(name, "4096", Owned { ipc: false, ..ALL }), "{name}");
        }
        assert!(ok("kernel.sem", "250 32000\t32 128", ALL));
        for name in ["net.ipv4.ip_unprivileged_port_start", "net.core.somaxconn", "net.ipv4.conf.eth0/100.rp_filter"] {
            assert!(ok(name, "1", Owned { net: true, ..NONE }), "{name}");
            assert!(!ok(name, "1", Owned { net: false, ..ALL }), "{name}");
        }
        for name in UTS {
            assert!(ok(name, "example", Owned { uts: true, ..NONE }), "{name}");
            assert!(!ok(name, "example", Owned { uts: false, ..ALL }), "{name}");
        }
    }

    #[test]
    fn host_wide_sysctls_are_refused_whatever_the_pod_owns() {
        for name in [
            "kernel.core_pattern",
            "kernel.modprobe",
            "kernel.msgmax2",
            "kernel.shm",
            "kernel.randomize_va_space",
            "vm.overcommit_memory",
            "fs.file-max",
            "fs.mqueue",
            "kernel",
            "net",
            "user.max_user_namespaces",
            "kernel/core_pattern",
        ] {
            let err = check(name, "1", ALL).expect_err(name);
            assert_eq!(err.name, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_error_names_the_sysctl_and_the_reason() {
        let err = check("kernel.core_pattern", "|/x", ALL).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sysctl \"kernel.core_pattern\": not a namespaced sysctl: it would change the node's kernel"
        );
        let err = check("kernel.msgmax", "4321", Owned { ipc: false, ..ALL }).unwrap_err();
        assert!(err.reason.contains("node's IPC namespace"), "{err}");
        let err = check("net.ipv4.tcp_keepalive_time", "1234", Owned { net: false, ..ALL }).unwrap_err();
        assert!(err.reason.contains("node's network"), "{err}");
    }

    #[test]
    fn slash_names_are_the_same_sysctls() {
        assert_eq!(normalize("kernel/shm_rmid_forced"), "kernel.shm_rmid_forced");
        assert_eq!(normalize("net/ipv4/conf/eth0.100/rp_filter"), "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(normalize("net.ipv4.conf.eth0/100.rp_filter"), "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(proc_path("net.ipv4.conf.eth0/100.rp_filter"), "net/ipv4/conf/eth0.100/rp_filter");
        assert!(ok("kernel/shmmax", "1", Owned { ipc: true, ..NONE }));
        assert!(!ok("kernel/shmmax", "1", Owned { ipc: false, ..ALL }));
        assert!(ok("net/ipv4/conf/eth0.100/rp_filter", "1", ALL));
        assert!(!ok("kernel/core_pattern", "1", ALL));
    }

    #[test]
    fn names_that_climb_or_hide_a_path_are_refused() {
        for name in [
            "net.ipv4.conf.//.rp_filter",
            "net.ipv4.conf./.rp_filter",
            "net/ipv4/../../kernel/core_pattern",
            "net.ipv4..x",
            "net.",
            ".net.x",
            "net.ipv4.x y",
            "net.ipv4.x=1",
            "net.ipv4.x\n",
            "fs.mqueue.a/b",
            "",
        ] {
            assert!(!ok(name, "1", ALL), "{name:?}");
        }
    }

    #[test]
    fn injection_values_are_refused() {
        for value in [
            "1\nkernel.core_pattern=/x",
            "1+kernel.core_pattern=/x",
            "1 kernel.core_pattern=/x",
            "1\0",
            "1\r",
            "",
            "a=b",
            "1+2",
        ] {
            assert!(!ok("kernel.shmmax", value, ALL), "{value:?}");
        }
        assert!(!ok("kernel.shmmax", &"1".repeat(MAX_VALUE + 1), ALL));
        assert!(ok("kernel.shmmax", &"1".repeat(MAX_VALUE), ALL));
    }

    #[test]
    fn a_pods_namespace_options_decide() {
        use gantry_proto::cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption};
        let pod = |ipc: NamespaceMode, network: NamespaceMode, sysctls: &[(&str, &str)]| PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                sysctls: sysctls.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        ipc: ipc as i32,
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        use NamespaceMode::{Node, Pod};
        assert!(check_pod(&pod(Pod, Pod, &[("kernel.msgmax", "1"), ("net.core.somaxconn", "1")])).is_ok());
        assert!(check_pod(&pod(Node, Pod, &[("kernel.msgmax", "4321")])).is_err());
        assert!(check_pod(&pod(Pod, Node, &[("net.ipv4.tcp_keepalive_time", "1234")])).is_err());
        assert!(check_pod(&pod(Pod, Node, &[("kernel.hostname", "x")])).is_err());
        assert!(check_pod(&pod(Pod, Pod, &[("kernel.core_pattern", "/tmp/x-%p")])).is_err());
        assert!(check_pod(&PodSandboxConfig::default()).is_ok());
        // The first refused name, in name order.
        let err = check_pod(&pod(Pod, Pod, &[("vm.b", "1"), ("kernel.a", "1")])).unwrap_err();
        assert_eq!(err.name, "kernel.a");
    }

    /// What may pass, written apart from the validator: the oracle.
    fn allowed(name: &str, value: &str, owned: Owned) -> bool {
        let n = normalize(name);
        let class_ok = (owned.ipc && (IPC.contains(&n.as_str()) || n.starts_with("fs.mqueue.")))
            || (owned.net && n.starts_with("net."))
            || (owned.uts && (n == "kernel.hostname" || n == "kernel.domainname"));
        let path = proc_path(&n);
        let path_ok = path.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        let value_ok = !value.is_empty()
            && value.len() <= MAX_VALUE
            && !value.contains(['\n', '\r', '\0', '=', '+'])
            && !value.chars().any(|c| c.is_control() && c != '\t');
        class_ok && path_ok && value_ok
    }

    fn owned() -> impl Strategy<Value = Owned> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(ipc, net, uts)| Owned { ipc, net, uts })
    }

    /// Strings over an alphabet that hits the interesting cases often.
    fn text(alphabet: &'static [char], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 0..max).prop_map(|v| v.into_iter().collect())
    }

    fn name() -> impl Strategy<Value = String> {
        let prefixes = prop::sample::select(
            &[
                "",
                "kernel.",
                "kernel/",
                "net.",
                "net/",
                "fs.mqueue.",
                "fs/mqueue/",
                "fs.",
                "vm.",
                "kernel.shm",
                "kernel.msg",
                "kernel.sem",
                "kernel.hostname",
                "user.",
            ][..],
        );
        let tail = text(&['a', 'x', 'm', '_', '-', '.', '/', '=', '+', ' ', '\n', '\0', '|', '1', 'é'], 12);
        (prefixes, tail).prop_map(|(p, t)| format!("{p}{t}"))
    }

    fn value() -> impl Strategy<Value = String> {
        text(&['1', '0', ' ', '\t', '\n', '\r', '\0', '=', '+', '|', '/', 'k', '.', '%', '\u{7f}'], 16)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn nothing_outside_the_allowed_sets_passes(name in name(), value in value(), owned in owned()) {
            if check(&name, &value, owned).is_ok() {
                prop_assert!(allowed(&name, &value, owned), "{name:?}={value:?} passed with {owned:?}");
            }
        }

        #[test]
        fn arbitrary_text_never_passes_outside_the_sets(name in any::<String>(), value in any::<String>(), owned in owned()) {
            if check(&name, &value, owned).is_ok() {
                prop_assert!(allowed(&name, &value, owned), "{name:?}={value:?} passed with {owned:?}");
            }
        }

        #[test]
        fn a_second_setting_in_the_value_never_passes(
            first in text(&['1', '2', ' ', '\t'], 6),
            sep in prop::sample::select(&["\n", "+", " ", "\t", ";", ",", "\0", "\r", ""][..]),
            rest in any::<String>(),
            owned in owned(),
        ) {
            let value = format!("{first}{sep}kernel.core_pattern={rest}");
            prop_assert!(check("kernel.shmmax", &value, owned).is_err());
        }

        #[test]
        fn the_allowed_sets_do_pass(
            name in prop::sample::select(&[
                "kernel.shmmax", "kernel/sem", "fs.mqueue.msg_max", "net.ipv4.ip_forward",
                "net/ipv4/conf/eth0.1/rp_filter", "kernel.hostname", "kernel.domainname",
            ][..]),
            value in text(&['1', '0', ' ', '\t', 'a'], 10).prop_filter("non-empty", |v| !v.is_empty()),
        ) {
            prop_assert!(check(name, &value, ALL).is_ok(), "{name}={value:?}");
        }
    }
}
