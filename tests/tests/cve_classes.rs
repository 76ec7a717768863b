//! The shapes of runc's and containerd's container-escape CVEs, each tried
//! for real against the built-in handler.

use gantry_proto::cri::v1::{Int64Value, NamespaceMode};
use gantry_tests::pods::*;
use gantry_tests::Daemon;

/// CVE-2024-21626: no descriptor of the host reaches the container's
/// process, and a working directory through `/proc/self/fd/N` cannot land
/// outside its root (runc leaked a host cgroup directory fd that way).
#[tokio::test]
async fn no_host_descriptor_reaches_the_container_and_its_cwd_stays_inside() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "fds", NamespaceMode::Container).await;
    // `ls` opens the directory it lists as fd 3: nothing else may be there.
    let c = create(&mut cri, &pod, container("fds", &["sh", "-c", "ls /proc/self/fd; readlink /proc/self/cwd"]))
        .await
        .expect("create");
    start(&mut cri, &c).await;
    assert_eq!(wait_exited(&mut cri, &c).await.exit_code, 0);
    let out: Vec<String> = log_of(&pod, "fds").iter().map(|l| l.trim_start_matches("stdout F ").to_string()).collect();
    assert_eq!(out, ["0", "1", "2", "3", "/"], "only stdio (and ls's own directory) are open");

    // The same for a process exec'd into a running container.
    let long = create(&mut cri, &pod, container("long", &["sleep", "60"])).await.expect("create");
    start(&mut cri, &long).await;
    let r = cri
        .runtime
        .exec_sync(gantry_proto::cri::v1::ExecSyncRequest {
            container_id: long.clone(),
            cmd: vec!["sh".into(), "-c".into(), "ls /proc/self/fd; readlink /proc/self/cwd".into()],
            timeout: 10,
        })
        .await
        .expect("exec")
        .into_inner();
    let out = String::from_utf8_lossy(&r.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(out, ["0", "1", "2", "3", "/"], "exec: only stdio (and ls's own directory)");

    for fd in 3..=12 {
        let name = format!("cwd{fd}");
        let mut c = container(&name, &["sh", "-c", "readlink /proc/self/cwd; ls -a . | head -3"]);
        c.working_dir = format!("/proc/self/fd/{fd}");
        let Ok(id) = create(&mut cri, &pod, c).await else { continue };
        // Refused at start, or run inside the container's root: never a
        // directory of the host's.
        if cri
            .runtime
            .start_container(gantry_proto::cri::v1::StartContainerRequest { container_id: id.clone() })
            .await
            .is_err()
        {
            continue;
        }
        let s = wait_exited(&mut cri, &id).await;
        let log = log_of(&pod, &name);
        let cwd = log.first().map(|l| l.trim_start_matches("stdout F ").to_string()).unwrap_or_default();
        assert!(
            s.exit_code != 0 || cwd.starts_with("/proc/") || cwd == "/",
            "working dir /proc/self/fd/{fd} ran in {cwd:?}: {log:?}"
        );
    }
    remove_pod(&mut cri, &pod).await;
}

/// CVE-2023-25173: the supplementary groups are set up from the image and
/// the CRI config alone; nothing of the runtime's own (root's) is kept,
/// also when the image has no group entry for the user.
#[tokio::test]
async fn supplementary_groups_never_keep_the_runtimes_own() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "groups", NamespaceMode::Container).await;
    let mut c = container("numeric", &["sh", "-c", "grep ^Groups: /proc/self/status; id -G"]);
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.run_as_user = Some(Int64Value { value: 4321 });
        sc.run_as_group = Some(Int64Value { value: 4321 });
    }
    let id = create(&mut cri, &pod, c).await.expect("create");
    start(&mut cri, &id).await;
    assert_eq!(wait_exited(&mut cri, &id).await.exit_code, 0);
    let log = log_of(&pod, "numeric");
    let groups = log.iter().find_map(|l| l.strip_prefix("stdout F Groups:")).map(str::trim).unwrap_or("?");
    assert_eq!(groups, "4321", "only the primary group: {log:?}");
    remove_pod(&mut cri, &pod).await;
}

fn sha256_of(path: &std::path::Path) -> String {
    gantry_tests::registry::sha256_hex(&std::fs::read(path).expect("read the shim binary"))
}

/// Tries to open `/proc/PID/exe` for writing (`<>`: read-write, never
/// truncating) for every process whose command line is `/proc/self/exe
/// pause`, i.e. whatever runs gantry-shim's code in the pod, once at least
/// `want` of them are there. One line per process: `PID: OPENED` or the error.
fn exe_attack(want: usize) -> String {
    format!(
        r#"for i in $(seq 100); do
  n=0; for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/proc/self/exe pause' && n=$((n+1)); done
  [ $n -ge {want} ] && break; sleep 0.1
done
for p in /proc/[0-9]*; do
  tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/proc/self/exe pause' || continue
  echo "${{p#/proc/}}: $( (exec 3<>$p/exe && echo OPENED) 2>&1)"
done"#
    )
}

fn with_caps(mut c: gantry_proto::cri::v1::ContainerConfig, caps: &[&str]) -> gantry_proto::cri::v1::ContainerConfig {
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.capabilities = Some(gantry_proto::cri::v1::Capability {
            add_capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        });
    }
    c
}

async fn exec_sync(cri: &mut gantry_tests::Cri, id: &str, script: &str) -> (i32, String) {
    let r = cri
        .runtime
        .exec_sync(gantry_proto::cri::v1::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 30,
        })
        .await
        .expect("exec")
        .into_inner();
    (r.exit_code, format!("{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr)))
}

/// A one-layer image: busybox and the applets the tests use, `links`
/// (path, symlink target) and `dirs`, and with `shim_libs` the dynamic
/// loader and libraries gantry-shim links (as an attacker's image would
/// carry them, to run the host's binary inside).
async fn push_test_image(repo: &str, shim_libs: bool, links: &[(&str, &str)], dirs: &[&str]) -> String {
    let mut libs = vec![];
    if shim_libs {
        let shim = gantry_tests::bin_dir().join("gantry-shim");
        let ldd = std::process::Command::new("ldd").arg(&shim).output().expect("ldd");
        libs = String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_string)
            .collect();
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut made = std::collections::BTreeSet::new();
    let mut add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], link: Option<&str>, dir: bool| {
        let rel = std::path::Path::new(path.trim_start_matches('/'));
        let mut parents: Vec<_> = rel.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()).collect();
        if dir {
            parents.insert(0, rel);
        }
        for p in parents.into_iter().rev() {
            if made.insert(p.to_path_buf()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).expect("tar");
            }
        }
        if dir {
            return;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, rel, target).expect("tar");
            }
            None => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, rel, data).expect("tar");
            }
        }
    };
    add(&mut b, "/bin/busybox", &std::fs::read("/bin/busybox").expect("busybox"), None, false);
    for applet in ["sh", "tr", "grep", "seq", "sleep", "readlink", "ls", "cat", "echo", "true", "mount"] {
        add(&mut b, &format!("/bin/{applet}"), &[], Some("busybox"), false);
    }
    for lib in &libs {
        add(&mut b, lib, &std::fs::read(lib).expect("library"), None, false);
    }
    for dir in dirs {
        add(&mut b, dir, &[], None, true);
    }
    for (path, target) in links {
        add(&mut b, path, &[], Some(target), false);
    }
    let tar = b.into_inner().expect("tar");
    let registry = gantry_tests::test_registry();
    let push = gantry_tests::registry::PushClient::new(&registry);
    let layer = gantry_tests::registry::Layer::gzip(&tar);
    push.push_image_with(repo, "latest", &[layer], serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]})).await;
    format!("{registry}/{repo}:latest")
}

async fn pull(cri: &mut gantry_tests::Cri, image: &str) {
    cri.images
        .pull_image(gantry_proto::cri::v1::PullImageRequest {
            image: Some(gantry_proto::cri::v1::ImageSpec { image: image.into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("pull");
}

fn in_image(mut c: gantry_proto::cri::v1::ContainerConfig, image: &str) -> gantry_proto::cri::v1::ContainerConfig {
    c.image = Some(gantry_proto::cri::v1::ImageSpec { image: image.into(), ..Default::default() });
    c
}

/// runc CVE-2019-5736: a process running gantry-shim's code inside the
/// container (the pod's pause process, a container whose command is
/// `/proc/self/exe`, the same through ExecSync) is reachable by its
/// `/proc/PID/exe`. Even with CAP_SYS_PTRACE, which gets past the helpers'
/// non-dumpable state, opening it for writing fails, and not only because
/// the kernel refuses writes to a running binary (ETXTBSY, gone once the
/// last shim exits): the binary they run is a read-only copy. The host's
/// binary is unchanged.
#[tokio::test]
async fn the_shim_binary_cannot_be_overwritten_through_proc_pid_exe() {
    let shim = gantry_tests::bin_dir().join("gantry-shim");
    let before = sha256_of(&shim);
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let image = push_test_image("gantry/selfexe", true, &[], &[]).await;
    pull(&mut cri, &image).await;
    let pod = run_pod(&mut cri, &d, "selfexe", NamespaceMode::Pod).await;
    // The container's init execs /proc/self/exe: gantry-shim's own binary.
    let victim = in_image(with_pid_mode("victim", &["/proc/self/exe", "pause"], NamespaceMode::Pod), &image);
    let victim = create(&mut cri, &pod, victim).await.expect("create");
    start(&mut cri, &victim).await;
    let attacker =
        in_image(with_caps(with_pid_mode("attacker", &["sleep", "60"], NamespaceMode::Pod), &["SYS_PTRACE"]), &image);
    let attacker = create(&mut cri, &pod, attacker).await.expect("create");
    start(&mut cri, &attacker).await;
    // The same through an exec: its helper execs /proc/self/exe.
    let mut cri2 = d.connect().await;
    let exec_id = attacker.clone();
    let background = tokio::spawn(async move {
        cri2.runtime
            .exec_sync(gantry_proto::cri::v1::ExecSyncRequest {
                container_id: exec_id,
                cmd: vec!["/proc/self/exe".into(), "pause".into()],
                timeout: 4,
            })
            .await
    });
    let (code, out) = exec_sync(&mut cri, &attacker, &exe_attack(3)).await;
    // Seen from the host: every process of the pod running gantry-shim's
    // code runs a read-only copy. (Inside, the kernel answers ETXTBSY before
    // EROFS while any shim runs the binary, so the errno cannot tell.)
    let pause = pod_info(&mut cri, &pod.id).await["pid"].as_i64().expect("pause pid");
    let pod_ns = std::fs::read_link(format!("/proc/{pause}/ns/pid")).expect("pod pid ns");
    let mut seen = vec![];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let dir = entry.path();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"/proc/self/exe\0pause")
            || std::fs::read_link(dir.join("ns/pid")).ok() != Some(pod_ns.clone())
        {
            continue;
        }
        let Ok(exe) = std::fs::File::open(dir.join("exe")) else { continue };
        let flags = nix::sys::statvfs::fstatvfs(&exe).expect("fstatvfs").flags();
        seen.push(format!("{}: read-only {}", dir.display(), flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY)));
    }
    let _ = background.await;
    assert!(seen.len() >= 3, "the pause process, the container and the exec: {seen:?}");
    assert!(seen.iter().all(|s| s.ends_with("true")), "gantry-shim runs from a writable mount: {seen:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(code, 0, "{out}");
    assert!(lines.len() >= 3, "the pause process, the container and the exec: {out}");
    assert!(!out.contains("OPENED"), "the shim's binary was opened for writing: {out}");

    // Without CAP_SYS_PTRACE the pause process (pid 1, the host's mount
    // namespace) is closed altogether: with the capabilities it has
    // (NET_ADMIN), its /proc/1/root would be the host's root directory.
    let peer = with_caps(with_pid_mode("peer", &["sleep", "60"], NamespaceMode::Pod), &["NET_ADMIN"]);
    let peer = create(&mut cri, &pod, peer).await.expect("create");
    start(&mut cri, &peer).await;
    let (code, out) =
        exec_sync(&mut cri, &peer, "ls /proc/1/root/ && echo LISTED; readlink /proc/1/exe && echo READ; true").await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("LISTED") && !out.contains("READ"), "the pause process is open to the pod: {out}");
    remove_pod(&mut cri, &pod).await;
    assert_eq!(sha256_of(&shim), before, "the host's gantry-shim changed");
}

/// CVE-2021-30465 shape: mount destinations that go through symlinks the
/// image planted, absolute (`/abs -> /HOST/PATH`) or climbing
/// (`/rel -> ../../../../HOST/PATH`), are resolved inside the container's
/// root: the mount lands in the image's copy of that path when it exists,
/// and nothing is ever created or mounted at the host's path.
#[tokio::test]
async fn mount_destinations_through_planted_symlinks_stay_inside_the_root() {
    let host = tempfile::tempdir().expect("tempdir");
    let h = host.path().display().to_string();
    let (abs_target, rel_target, existing) =
        (format!("{h}/abs-target"), format!("{h}/rel-target"), format!("{h}/existing"));
    std::fs::create_dir(&existing).expect("mkdir");
    let volume = host.path().join("volume");
    std::fs::create_dir(&volume).expect("mkdir");
    std::fs::write(volume.join("marker"), "VOLUME\n").expect("marker");
    let climb = format!("../../../../../../../../../../..{rel_target}");
    let image = push_test_image(
        "gantry/planted-links",
        false,
        &[("/abs", &abs_target), ("/rel", &climb), ("/exists", &existing), ("/dev-link", &format!("{h}/dev-target"))],
        &[&existing],
    )
    .await;

    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    pull(&mut cri, &image).await;
    let pod = run_pod(&mut cri, &d, "links", NamespaceMode::Container).await;
    let mount = |path: &str| gantry_proto::cri::v1::Mount {
        container_path: path.into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    };
    // Followed inside the root: the image's own copy of the path.
    let mut c =
        in_image(container("inside", &["sh", "-c", &format!("cat /exists/sub/marker {existing}/sub/marker")]), &image);
    c.mounts = vec![mount("/exists/sub")];
    let id = create(&mut cri, &pod, c).await.expect("create");
    start(&mut cri, &id).await;
    assert_eq!(wait_exited(&mut cri, &id).await.exit_code, 0, "{:?}", log_of(&pod, "inside"));
    let log = log_of(&pod, "inside");
    assert_eq!(log.iter().filter(|l| l.ends_with("VOLUME")).count(), 2, "{log:?}");

    // Dangling inside the image: refused or made inside, never on the host.
    for (name, path) in [("abs", "/abs/sub"), ("rel", "/rel/sub/deeper")] {
        let mut c = in_image(container(name, &["cat", &format!("{path}/marker")]), &image);
        c.mounts = vec![mount(path)];
        if let Ok(id) = create(&mut cri, &pod, c).await {
            if cri
                .runtime
                .start_container(gantry_proto::cri::v1::StartContainerRequest { container_id: id.clone() })
                .await
                .is_ok()
            {
                wait_exited(&mut cri, &id).await;
            }
        }
    }
    // A device node the same way (mknod is never namespaced).
    let mut c = in_image(container("dev", &["true"]), &image);
    if let Some(l) = c.linux.as_mut() {
        l.resources = None;
    }
    c.devices = vec![gantry_proto::cri::v1::Device {
        container_path: "/dev-link/null".into(),
        host_path: "/dev/null".into(),
        permissions: "rwm".into(),
    }];
    if let Ok(id) = create(&mut cri, &pod, c).await {
        if cri
            .runtime
            .start_container(gantry_proto::cri::v1::StartContainerRequest { container_id: id.clone() })
            .await
            .is_ok()
        {
            wait_exited(&mut cri, &id).await;
        }
    }
    remove_pod(&mut cri, &pod).await;
    for p in [&abs_target, &rel_target, &format!("{h}/dev-target")] {
        assert!(!std::path::Path::new(p).exists(), "{p} was made on the host");
    }
    assert_eq!(std::fs::read_dir(&existing).expect("existing").count(), 0, "something landed in the host's {existing}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(&h), "a mount under {h} on the host");
}
