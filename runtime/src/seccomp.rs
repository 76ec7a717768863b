//! The seccomp profile of a container's spec, from CRI's security context:
//! unconfined, a profile file on the node (`localhost`, checked here), or
//! the runtime's default. The shim compiles it to BPF (shim/src/seccomp.rs).
//!
//! The default profile is an allowlist at least as strict as containerd's
//! current one (contrib/seccomp/seccomp_default.go): everything else answers
//! EPERM (calls newer than the profile ENOSYS, see the shim). On top of it,
//! calls that are legitimate only with a capability are allowed when the
//! container holds that capability; `clone` is allowed only without
//! namespace flags unless the container has CAP_SYS_ADMIN, and `clone3`,
//! whose flags sit in memory a filter cannot read, answers ENOSYS so that
//! libc falls back to `clone`. Where Gantry gated a call that containerd
//! allows (ptrace and process_vm_*, adjtimex and clock_adjtime,
//! name_to_handle_at), the capability gate stays. docs/security.md has the
//! list of differences and a comparison with containerd 1.6.

use gantry_proto::cri::v1::security_profile::ProfileType;
use gantry_proto::cri::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompOperator};
use serde_json::{json, Value};

use crate::error::SpecError;

// The shim's syscall table: every architecture's call names.
#[path = "../../shim/src/syscall_table.rs"]
#[allow(dead_code)]
mod syscall_table;

/// Allowed for every container (containerd's list, less the calls below
/// that Gantry keeps behind a capability).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "map_shadow_stack",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // x86 only (names another ABI lacks are skipped by the shim).
    "arch_prctl",
    "modify_ldt",
];

/// (capability, the calls it allows).
const WITH_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex", "clock_adjtime", "clock_adjtime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// personality(2) values a container may set: PER_LINUX, UNAME26,
/// PER_LINUX32, PER_LINUX32 | UNAME26, and 0xffffffff (a query).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

fn architectures() -> Vec<&'static str> {
    if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64"]
    } else {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    }
}

fn default_profile(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|have| have == c);
    let mut syscalls = vec![json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"})];
    // socket for every family but AF_ALG and AF_VSOCK. The kernel reads an
    // int: the masks ignore the high half of the register, so a value
    // with high bits set cannot pass for another family.
    for family in [AF_ALG, AF_VSOCK] {
        syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
            "args": [{"index": 0, "value": 0xffff_ffffu64, "valueTwo": family, "op": "SCMP_CMP_MASKED_EQ"}]}));
    }
    syscalls.push(json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW"}));
    for p in PERSONALITIES {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
    }
    for (cap, names) in WITH_CAPABILITY {
        if has(cap) {
            syscalls.push(json!({"names": names, "action": "SCMP_ACT_ALLOW"}));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    json!({"defaultAction": "SCMP_ACT_ERRNO", "architectures": architectures(), "syscalls": syscalls})
}

/// Refuses what the shim could not honour: an unknown action, architecture
/// or operator, a call no architecture has, an argument past the sixth.
fn validate(path: &str, profile: &Value) -> Result<(), SpecError> {
    let bad = |what: String| SpecError::Seccomp(format!("localhost profile {path:?}: {what}"));
    let table = syscall_table::Table::load();
    let known_action = |v: &Value| serde_json::from_value::<LinuxSeccompAction>(v.clone()).is_ok();
    let obj = profile.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    match obj.get("defaultAction") {
        None => return Err(bad("no defaultAction".into())),
        Some(a) if !known_action(a) => return Err(bad(format!("unknown action {a} (defaultAction)"))),
        Some(_) => {}
    }
    for arch in obj.get("architectures").and_then(Value::as_array).into_iter().flatten() {
        if serde_json::from_value::<Arch>(arch.clone()).is_err() {
            return Err(bad(format!("unknown architecture {arch}")));
        }
    }
    for rule in obj.get("syscalls").and_then(Value::as_array).into_iter().flatten() {
        let names: Vec<&str> =
            rule.get("names").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        for name in &names {
            if !table.known(name) {
                return Err(bad(format!("unknown syscall {name:?}")));
            }
        }
        match rule.get("action") {
            Some(a) if known_action(a) => {}
            a => return Err(bad(format!("unknown action {} for {names:?}", a.unwrap_or(&Value::Null)))),
        }
        for arg in rule.get("args").and_then(Value::as_array).into_iter().flatten() {
            let op = arg.get("op").cloned().unwrap_or(Value::Null);
            if serde_json::from_value::<LinuxSeccompOperator>(op.clone()).is_err() {
                return Err(bad(format!("unknown operator {op} for {names:?}")));
            }
            match arg.get("index").and_then(Value::as_u64) {
                Some(0..=5) => {}
                i => {
                    return Err(bad(format!(
                        "argument index {} for {names:?}: 0 to 5",
                        i.map_or("none".into(), |i| i.to_string())
                    )))
                }
            }
        }
    }
    Ok(())
}

fn localhost(path: &str) -> Result<Value, SpecError> {
    let path = path.strip_prefix("localhost/").unwrap_or(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::Seccomp(format!("reading localhost profile {path:?}: {e}")))?;
    let profile: Value =
        serde_json::from_str(&text).map_err(|e| SpecError::Seccomp(format!("localhost profile {path:?}: {e}")))?;
    validate(path, &profile)?;
    Ok(profile)
}

/// `linux.seccomp` for the spec, or None for unconfined. `caps` are the
/// container's effective capabilities (`CAP_…`).
pub fn profile(security: &LinuxContainerSecurityContext, caps: &[String]) -> Result<Option<Value>, SpecError> {
    if security.privileged {
        return Ok(None);
    }
    if let Some(p) = &security.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(default_profile(caps))),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref).map(Some),
            Err(_) => Err(SpecError::Seccomp(format!("unknown seccomp profile type {}", p.profile_type))),
        };
    }
    // The deprecated string form, which older kubelets still send.
    #[allow(deprecated)]
    let path = security.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(default_profile(caps))),
        p if p.starts_with("localhost/") => localhost(p).map(Some),
        other => Err(SpecError::Seccomp(format!("unknown seccomp profile {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::cri::v1::SecurityProfile;

    fn with(profile_type: ProfileType, localhost_ref: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile { profile_type: profile_type as i32, localhost_ref: localhost_ref.into() }),
            ..Default::default()
        }
    }

    /// Unconditionally allowed names.
    fn allowed(p: &Value) -> Vec<String> {
        let rules = p["syscalls"].as_array().unwrap();
        let plain = rules.iter().filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none());
        plain.flat_map(|r| r["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string())).collect()
    }

    #[test]
    fn the_default_is_an_allowlist_and_capabilities_add_their_calls() {
        let p = profile(&with(ProfileType::RuntimeDefault, ""), &[]).unwrap().unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let names = allowed(&p);
        for refused in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "ptrace",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "open_by_handle_at",
            "userfaultfd",
            "personality",
            "adjtimex",
            "name_to_handle_at",
            "chroot",
            "reboot",
            "init_module",
        ] {
            assert!(!names.iter().any(|n| n == refused), "{refused} allowed");
        }
        for needed in ["read", "write", "openat", "execve", "newfstatat", "futex", "rt_sigreturn", "socketcall"] {
            assert!(names.iter().any(|n| n == needed), "{needed} refused");
        }
        let rules = p["syscalls"].as_array().unwrap();
        let socket: Vec<(&Value, &Value)> = rules
            .iter()
            .filter(|r| r["names"][0] == "socket")
            .map(|r| (&r["action"], &r["args"][0]["valueTwo"]))
            .collect();
        let (errno, allow) = (json!("SCMP_ACT_ERRNO"), json!("SCMP_ACT_ALLOW"));
        assert_eq!(socket, [(&errno, &json!(38)), (&errno, &json!(40)), (&allow, &Value::Null)]);
        let clone3 = rules.iter().find(|r| r["names"][0] == "clone3").unwrap();
        assert_eq!((&clone3["action"], &clone3["errnoRet"]), (&json!("SCMP_ACT_ERRNO"), &json!(38)));
        let admin = profile(&with(ProfileType::RuntimeDefault, ""), &["CAP_SYS_ADMIN".into()]).unwrap().unwrap();
        let names = allowed(&admin);
        for now in ["mount", "unshare", "setns", "clone", "clone3", "bpf"] {
            assert!(names.iter().any(|n| n == now), "{now} refused with CAP_SYS_ADMIN");
        }
        assert!(!admin["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["names"][0] == "clone3" && r["errnoRet"] == 38));
        let ptrace = profile(&with(ProfileType::RuntimeDefault, ""), &["CAP_SYS_PTRACE".into()]).unwrap().unwrap();
        assert!(allowed(&ptrace).iter().any(|n| n == "ptrace"));
        // Every name is one the shim's table knows.
        let table = syscall_table::Table::load();
        for n in ALLOWED.iter().chain(WITH_CAPABILITY.iter().flat_map(|(_, n)| n.iter())) {
            assert!(table.known(n), "{n}");
        }
        // And the spec's types take it.
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(admin).unwrap();
    }

    #[test]
    fn unconfined_and_privileged_have_none() {
        assert_eq!(profile(&with(ProfileType::Unconfined, ""), &[]).unwrap(), None);
        let mut privileged = with(ProfileType::RuntimeDefault, "");
        privileged.privileged = true;
        assert_eq!(profile(&privileged, &[]).unwrap(), None);
        assert_eq!(profile(&LinuxContainerSecurityContext::default(), &[]).unwrap(), None);
    }

    #[test]
    fn a_missing_localhost_profile_is_named() {
        let err = profile(&with(ProfileType::Localhost, "/no/such/profile.json"), &[]).unwrap_err().to_string();
        assert!(err.contains("/no/such/profile.json"), "{err}");
    }

    #[test]
    fn localhost_profiles_are_checked_and_the_bad_value_named() {
        let dir = tempfile::tempdir().unwrap();
        let check = |json: &str| {
            let path = dir.path().join("p.json");
            std::fs::write(&path, json).unwrap();
            profile(&with(ProfileType::Localhost, &path.display().to_string()), &[]).map_err(|e| e.to_string())
        };
        // Another architecture's calls are names, not mistakes.
        check(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_S390X"],
            "syscalls":[{"names":["read","s390_pci_mmio_read","arm_fadvise64_64","riscv_flush_icache"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":5,"value":1,"op":"SCMP_CMP_NE"}]}]}"#,
        )
        .unwrap();
        for (json, named) in [
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","chmood"],"action":"SCMP_ACT_ERRNO"}]}"#,
                "\"chmood\"",
            ),
            (r#"{"defaultAction":"SCMP_ACT_ALOW"}"#, "SCMP_ACT_ALOW"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_DENY"}]}"#,
                "SCMP_ACT_DENY",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_Z80"]}"#,
                "SCMP_ARCH_Z80",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_LIKE"}]}]}"#,
                "SCMP_CMP_LIKE",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "index 6",
            ),
            (r#"{"syscalls":[]}"#, "defaultAction"),
            (r#"["SCMP_ACT_ALLOW"]"#, "not a JSON object"),
        ] {
            let err = check(json).expect_err(json);
            assert!(err.contains(named) && err.contains("p.json"), "{err}");
        }
    }
}
