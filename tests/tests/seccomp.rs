//! seccomp for real: a static probe (tests/fixtures/seccomp-probe.c, built
//! here with gcc -static) tries the calls a profile decides on inside
//! containers under the runtime's default profile, Unconfined, added
//! capabilities and Localhost profiles, and prints what each call got.
//! The default's answers are containerd's (docs/security.md compares the
//! two on this probe). Also: a bad Localhost profile is refused at
//! CreateContainer, naming the bad value, with nothing left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_proto::cri::v1::security_profile::ProfileType;
use gantry_proto::cri::v1::{Capability, ContainerConfig, Mount, NamespaceMode, SecurityProfile};
use gantry_tests::pods::*;
use gantry_tests::Daemon;
use tonic::Code;

/// Builds the probe into `dir` (gcc and libc6-dev: tests/run.sh installs them).
fn build_probe(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seccomp-probe.c");
    let out = dir.join("seccomp-probe");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("running gcc (install gcc and libc6-dev)");
    assert!(status.success(), "gcc -static {} failed", source.display());
    out
}

fn probe_container(
    name: &str,
    probe_dir: &Path,
    profile: ProfileType,
    localhost: &str,
    add_caps: &[&str],
) -> ContainerConfig {
    let mut c = container(name, &["/probe/seccomp-probe"]);
    c.mounts = vec![Mount {
        container_path: "/probe".into(),
        host_path: probe_dir.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let sc = c.linux.as_mut().and_then(|l| l.security_context.as_mut()).expect("security context");
    sc.seccomp = Some(SecurityProfile { profile_type: profile as i32, localhost_ref: localhost.into() });
    if !add_caps.is_empty() {
        sc.capabilities = Some(Capability {
            add_capabilities: add_caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        });
    }
    c
}

/// Runs the probe in a container; its table, call → result.
async fn run_probe(cri: &mut gantry_tests::Cri, pod: &Pod, config: ContainerConfig) -> BTreeMap<String, String> {
    let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    let id = create(cri, pod, config).await.expect("create probe");
    start(cri, &id).await;
    let s = wait_exited(cri, &id).await;
    let log = log_of(pod, &name);
    assert_eq!(s.exit_code, 0, "{name}: {log:?}");
    let table: BTreeMap<String, String> = log
        .iter()
        .filter_map(|l| l.strip_prefix("stdout F "))
        .filter_map(|l| l.split_once(' '))
        .map(|(call, result)| (call.to_string(), result.to_string()))
        .collect();
    assert_eq!(table.len(), 23, "{name}: {log:?}");
    // Shown with --nocapture (and on failure): the Gantry column of docs/security.md.
    println!("{name}:\n{}", table.iter().map(|(c, r)| format!("  {c} {r}\n")).collect::<String>());
    table
}

fn check(name: &str, table: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(call, want)| table.get(*call).map(String::as_str) != Some(*want))
        .map(|(call, want)| format!("{call}: want {want}, got {:?}", table.get(*call)))
        .collect();
    assert!(wrong.is_empty(), "{name}: {wrong:#?}\nwhole table: {table:#?}");
}

#[tokio::test]
async fn the_probe_sees_the_default_profile_unconfined_capabilities_and_localhost_profiles() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let probe_dir = d.dir.path().join("probe");
    std::fs::create_dir_all(&probe_dir).unwrap();
    build_probe(&probe_dir);
    let pod = run_pod(&mut cri, &d, "seccomp-probe", NamespaceMode::Container).await;

    let default =
        run_probe(&mut cri, &pod, probe_container("default", &probe_dir, ProfileType::RuntimeDefault, "", &[])).await;
    // Whether this kernel runs i386 calls at all (ia32 emulation).
    let ia32 = default["getpid_i386"] == "0";
    let mut expected = vec![
        ("getpid", "0"),
        ("read", "0"),
        ("write", "0"),
        ("openat", "0"),
        ("fork", "0"),
        ("socket_inet", "0"),
        ("personality_query", "0"),
        ("unshare_newuser", "EPERM"),
        ("clone_newuser", "EPERM"),
        ("clone3", "ENOSYS"),
        // The filter answers before the kernel looks at an x32 call.
        ("unshare_newuser_x32", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("keyctl", "EPERM"),
        ("bpf", "EPERM"),
        ("socket_vsock", "EPERM"),
        ("socket_vsock_high_bits", "EPERM"),
        ("socket_alg", "EPERM"),
        ("personality_addr_no_randomize", "EPERM"),
        ("ptrace_traceme", "EPERM"),
        ("mount_tmpfs", "EPERM"),
        ("syscall_1000", "ENOSYS"),
    ];
    if ia32 {
        expected.push(("unshare_newuser_i386", "EPERM"));
    }
    check("RuntimeDefault", &default, &expected);

    // Unconfined: the same calls reach the kernel, which allows these.
    let unconfined =
        run_probe(&mut cri, &pod, probe_container("unconfined", &probe_dir, ProfileType::Unconfined, "", &[])).await;
    let mut expected = vec![
        ("getpid", "0"),
        ("fork", "0"),
        ("unshare_newuser", "0"),
        ("clone_newuser", "0"),
        ("clone3", "0"),
        ("keyctl", "0"),
        ("personality_addr_no_randomize", "0"),
        ("ptrace_traceme", "0"),
        // No CAP_SYS_ADMIN: the kernel refuses.
        ("mount_tmpfs", "EPERM"),
        ("syscall_1000", "ENOSYS"),
    ];
    if ia32 {
        expected.push(("unshare_newuser_i386", "0"));
    }
    check("Unconfined", &unconfined, &expected);
    assert_ne!(unconfined["unshare_newuser_x32"], "EPERM", "x32 is the kernel's to answer when unconfined");

    // CAP_SYS_ADMIN brings the namespace calls and mount back, as containerd's profile does.
    let admin = probe_container("admin", &probe_dir, ProfileType::RuntimeDefault, "", &["SYS_ADMIN"]);
    let admin = run_probe(&mut cri, &pod, admin).await;
    let mut expected = vec![
        ("unshare_newuser", "0"),
        ("clone_newuser", "0"),
        ("clone3", "0"),
        ("mount_tmpfs", "0"),
        ("io_uring_setup", "EPERM"),
        ("keyctl", "EPERM"),
        ("socket_vsock", "EPERM"),
        ("personality_addr_no_randomize", "EPERM"),
        ("ptrace_traceme", "EPERM"),
        ("syscall_1000", "ENOSYS"),
    ];
    if ia32 {
        expected.push(("unshare_newuser_i386", "0"));
    }
    check("RuntimeDefault + CAP_SYS_ADMIN", &admin, &expected);
    assert_ne!(admin["bpf"], "EPERM", "bpf reaches the kernel with CAP_SYS_ADMIN");
    let ptrace = probe_container("ptrace", &probe_dir, ProfileType::RuntimeDefault, "", &["SYS_PTRACE"]);
    let ptrace = run_probe(&mut cri, &pod, ptrace).await;
    check("RuntimeDefault + CAP_SYS_PTRACE", &ptrace, &[("ptrace_traceme", "0"), ("unshare_newuser", "EPERM")]);

    // A Localhost denylist that lists the three x86 ABIs holds on each.
    let all_abis = d.dir.path().join("no-unshare.json");
    std::fs::write(
        &all_abis,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{"names":["unshare"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let local = probe_container("local", &probe_dir, ProfileType::Localhost, &all_abis.display().to_string(), &[]);
    let local = run_probe(&mut cri, &pod, local).await;
    let mut expected = vec![
        ("unshare_newuser", "EACCES"),
        ("unshare_newuser_x32", "EACCES"),
        ("clone_newuser", "0"),
        ("clone3", "0"),
        ("syscall_1000", "ENOSYS"),
    ];
    if ia32 {
        expected.extend([("unshare_newuser_i386", "EACCES"), ("getpid_i386", "0")]);
    }
    check("Localhost, three ABIs", &local, &expected);

    // Without architectures, only the native ABI runs: an i386 call kills.
    let native_only = d.dir.path().join("native-only.json");
    std::fs::write(
        &native_only,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["unshare"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let native = probe_container("native", &probe_dir, ProfileType::Localhost, &native_only.display().to_string(), &[]);
    let native = run_probe(&mut cri, &pod, native).await;
    check(
        "Localhost, native only",
        &native,
        &[
            ("unshare_newuser", "EPERM"),
            ("getpid", "0"),
            ("getpid_i386", "SIGSYS"),
            ("unshare_newuser_i386", "SIGSYS"),
            ("unshare_newuser_x32", "SIGSYS"),
        ],
    );
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn a_bad_localhost_profile_is_refused_naming_the_bad_value_and_leaves_nothing() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "seccomp-bad", NamespaceMode::Container).await;
    let cases = [
        (
            "name",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","unshar"],"action":"SCMP_ACT_ERRNO"}]}"#,
            "\"unshar\"",
        ),
        (
            "action",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_REFUSE"}]}"#,
            "SCMP_ACT_REFUSE",
        ),
        ("default-action", r#"{"defaultAction":"SCMP_ACT_DENY"}"#, "SCMP_ACT_DENY"),
        (
            "architecture",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_PDP11"]}"#,
            "SCMP_ARCH_PDP11",
        ),
    ];
    for (name, json, named) in cases {
        let path = d.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, json).unwrap();
        let mut c = container(name, &["true"]);
        let sc = c.linux.as_mut().and_then(|l| l.security_context.as_mut()).expect("security context");
        sc.seccomp = Some(SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: path.display().to_string(),
        });
        let err = create(&mut cri, &pod, c).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert!(err.message().contains(named), "{name}: {err}");
        assert!(err.message().contains(&path.display().to_string()), "{name}: {err}");
    }
    assert_eq!(count(&d.state.join("containers")), 0);
    assert_eq!(count(&d.images_root().join("snapshots/active")), 0);
    remove_pod(&mut cri, &pod).await;
}
