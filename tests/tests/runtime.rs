//! gantryd's CRI RuntimeService: pods and containers for real (namespaces,
//! overlay rootfs, gantry-shim), driven through the CRI client.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{
    ContainerState, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, ListContainersRequest, ListPodSandboxRequest, Mount, NamespaceMode, NamespaceOption,
    PodSandboxStatusRequest, RemoveContainerRequest, StopContainerRequest,
};
use gantry_tests::pods::*;
use gantry_tests::{test_registry, Daemon};
use tonic::Code;

#[tokio::test]
async fn containers_run_exit_and_log_with_codes_and_reasons() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "exits", NamespaceMode::Container).await;

    let ok = create(&mut cri, &pod, container("ok", &["sh", "-c", "echo hello; echo warn >&2"])).await.expect("create");
    assert_eq!(status(&mut cri, &ok).await.state, ContainerState::ContainerCreated as i32);
    start(&mut cri, &ok).await;
    let s = wait_exited(&mut cri, &ok).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    assert_eq!(s.log_path, pod.logs.join("ok.log").display().to_string());
    let log = log_of(&pod, "ok");
    assert!(log.contains(&"stdout F hello".to_string()) && log.contains(&"stderr F warn".to_string()), "{log:?}");

    let bad = create(&mut cri, &pod, container("bad", &["sh", "-c", "exit 3"])).await.expect("create");
    start(&mut cri, &bad).await;
    let s = wait_exited(&mut cri, &bad).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));

    let listed =
        cri.runtime.list_containers(ListContainersRequest::default()).await.expect("list").into_inner().containers;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|c| c.pod_sandbox_id == pod.id));
    assert!(listed.iter().all(|c| c.state == ContainerState::ContainerExited as i32), "{listed:?}");

    // A container that exits on its own shows as exited in the list, without
    // anyone asking for its status.
    let later = create(&mut cri, &pod, container("later", &["sleep", "1"])).await.expect("create");
    start(&mut cri, &later).await;
    let running_filter = |state: ContainerState| ListContainersRequest {
        filter: Some(gantry_proto::cri::v1::ContainerFilter {
            state: Some(gantry_proto::cri::v1::ContainerStateValue { state: state as i32 }),
            ..Default::default()
        }),
    };
    let running = cri.runtime.list_containers(running_filter(ContainerState::ContainerRunning)).await.expect("list");
    assert_eq!(running.into_inner().containers.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let exited = cri.runtime.list_containers(running_filter(ContainerState::ContainerExited)).await.expect("list");
        if exited.into_inner().containers.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the exit never showed in ListContainers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = container_info(&mut cri, &later).await;
    assert_eq!(info["runtimeSpec"]["process"]["args"][0], "sleep");
    remove_pod(&mut cri, &pod).await;
    assert!(cri
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .containers
        .is_empty());
    assert_eq!(count(&d.images_root().join("snapshots/active")), 0, "writable layers removed");
    assert_eq!(count(&d.state.join("containers")), 0, "bundles removed");
}

#[tokio::test]
async fn stop_uses_sigterm_then_sigkill_after_the_timeout() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "stops", NamespaceMode::Container).await;
    // Exits on SIGTERM.
    let polite = create(&mut cri, &pod, container("polite", &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]))
        .await
        .expect("create");
    // Ignores SIGTERM: only SIGKILL ends it.
    let stubborn =
        create(&mut cri, &pod, container("stubborn", &["sh", "-c", "trap '' TERM; sleep 1000"])).await.expect("create");
    start(&mut cri, &polite).await;
    start(&mut cri, &stubborn).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t = Instant::now();
    cri.runtime.stop_container(StopContainerRequest { container_id: polite.clone(), timeout: 10 }).await.expect("stop");
    assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM was enough: {:?}", t.elapsed());
    assert_eq!(status(&mut cri, &polite).await.exit_code, 0);

    let t = Instant::now();
    cri.runtime
        .stop_container(StopContainerRequest { container_id: stubborn.clone(), timeout: 1 })
        .await
        .expect("stop");
    assert!(t.elapsed() >= Duration::from_secs(1), "waited for the timeout");
    let s = status(&mut cri, &stubborn).await;
    assert_eq!((s.state, s.exit_code), (ContainerState::ContainerExited as i32, 137));
    // As containerd: stopping a container never started leaves it CREATED.
    let idle = create(&mut cri, &pod, container("idle", &["true"])).await.expect("create");
    cri.runtime.stop_container(StopContainerRequest { container_id: idle.clone(), timeout: 1 }).await.expect("stop");
    assert_eq!(status(&mut cri, &idle).await.state, ContainerState::ContainerCreated as i32);
    // Stopping again, and stopping or removing unknown containers, is fine.
    cri.runtime
        .stop_container(StopContainerRequest { container_id: stubborn.clone(), timeout: 1 })
        .await
        .expect("again");
    cri.runtime
        .stop_container(StopContainerRequest { container_id: "nope".into(), timeout: 1 })
        .await
        .expect("unknown");
    cri.runtime.remove_container(RemoveContainerRequest { container_id: "nope".into() }).await.expect("unknown");
    remove_pod(&mut cri, &pod).await;
    // Removing a removed pod is not an error either.
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn containers_of_a_pod_share_its_namespaces() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "shared", NamespaceMode::Pod).await;
    let server = create(&mut cri, &pod, with_pid_mode("server", &["sh", "-c", "sleep 1000"], NamespaceMode::Pod))
        .await
        .expect("create");
    start(&mut cri, &server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = create(
        &mut cri,
        &pod,
        with_pid_mode(
            "client",
            &["sh", "-c", "hostname; ps -o comm | grep -c sleep; ip addr show lo | grep -c UP"],
            NamespaceMode::Pod,
        ),
    )
    .await
    .expect("create");
    start(&mut cri, &client).await;
    let s = wait_exited(&mut cri, &client).await;
    let log = log_of(&pod, "client");
    assert_eq!(s.exit_code, 0, "{log:?}");
    assert_eq!(log.first().map(String::as_str), Some("stdout F shared-host"), "UTS shared: {log:?}");
    assert_eq!(log.get(1).map(String::as_str), Some("stdout F 1"), "PID namespace shared: {log:?}");
    assert_eq!(log.get(2).map(String::as_str), Some("stdout F 1"), "loopback up in the pod netns: {log:?}");

    // A container without its own PID namespace takes its background
    // processes with it when its main process ends.
    let leaver =
        create(&mut cri, &pod, with_pid_mode("leaver", &["sh", "-c", "sleep 313 & sleep 0.2"], NamespaceMode::Pod))
            .await
            .expect("create");
    start(&mut cri, &leaver).await;
    wait_exited(&mut cri, &leaver).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00313\x00"))
    };
    while running() {
        assert!(Instant::now() < deadline, "the background sleep outlived its container");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The pause process lives in the pod's cgroup, as containerd's does.
    let info = pod_info(&mut cri, &pod.id).await;
    let pause = info["pid"].as_u64().expect("pause pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pause}/cgroup")).expect("pause cgroup");
    let expected = format!("{}/gantry-{}", gantry_tests::cgroup_parent(&d), pod.id);
    assert!(cgroups.lines().any(|l| l.ends_with(&expected)), "{cgroups}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn env_args_workdir_user_readonly_rootfs_and_mounts_are_applied() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "config", NamespaceMode::Container).await;
    let host = d.dir.path().join("host-data");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("file"), "from-host").expect("host file");
    let mut c = container(
        "cfg",
        &["sh", "-c", "echo $FOO $(pwd) $(id -u):$(id -g); cat /data/file; echo; touch /data/x || echo data-ro; touch /y || echo root-ro"],
    );
    c.envs = vec![KeyValue { key: "FOO".into(), value: "bar".into() }];
    c.working_dir = "/tmp".into();
    c.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: host.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1234 }),
            readonly_rootfs: true,
            namespace_options: Some(NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&mut cri, &pod, c).await.expect("create");
    start(&mut cri, &id).await;
    wait_exited(&mut cri, &id).await;
    let log = log_of(&pod, "cfg");
    for want in ["stdout F bar /tmp 1234:1234", "stdout F from-host", "stdout F data-ro", "stdout F root-ro"] {
        assert!(log.contains(&want.to_string()), "{want:?} missing from {log:?}");
    }
    assert!(!host.join("x").exists());
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn a_tty_container_gets_its_terminal_from_its_own_devpts() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "tty", NamespaceMode::Container).await;
    // As runc: the slave is /dev/pts/0 of the container's devpts (gid=5,
    // mode=0620), owned by the process's user, and its stdio and
    // controlling terminal.
    let mut c = container(
        "tty",
        &["sh", "-c", "tty; stat -c owner=%u:%g,mode=%a $(tty); ls -l /proc/self/fd/0; : </dev/tty && echo ctty-ok"],
    );
    c.tty = true;
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.run_as_user = Some(Int64Value { value: 1234 });
    }
    let id = create(&mut cri, &pod, c).await.expect("create");
    start(&mut cri, &id).await;
    assert_eq!(wait_exited(&mut cri, &id).await.exit_code, 0);
    // A terminal ends lines with CR LF.
    let log: Vec<String> = log_of(&pod, "tty").iter().map(|l| l.trim_end_matches('\r').to_string()).collect();
    for want in ["stdout F /dev/pts/0", "stdout F owner=1234:5,mode=620", "stdout F ctty-ok"] {
        assert!(log.contains(&want.to_string()), "{want:?} missing from {log:?}");
    }
    assert!(log.iter().any(|l| l.ends_with("/proc/self/fd/0 -> /dev/pts/0")), "{log:?}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing_behind() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "bad", NamespaceMode::Container).await;

    let mut c = container("x", &["true"]);
    c.image =
        Some(ImageSpec { image: format!("{}/gantry/never-pulled:latest", test_registry()), ..Default::default() });
    let err = create(&mut cri, &pod, c).await.expect_err("unknown image");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("never-pulled"), "{err}");

    let other = Pod { id: "no-such-pod".into(), logs: pod.logs.clone() };
    let err = create(&mut cri, &other, container("x", &["true"])).await.expect_err("unknown pod");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("no-such-pod"), "{err}");

    let mut c = container("x", &["true"]);
    c.mounts =
        vec![Mount { container_path: "/data".into(), host_path: "/nonexistent/gantry".into(), ..Default::default() }];
    let err = create(&mut cri, &pod, c).await.expect_err("missing mount source");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("/nonexistent/gantry"), "{err}");

    create(&mut cri, &pod, container("dup", &["true"])).await.expect("first");
    let err = create(&mut cri, &pod, container("dup", &["true"])).await.expect_err("name conflict");
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");

    let err = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: "no-such-pod".into(), verbose: false })
        .await
        .expect_err("unknown pod status");
    assert_eq!(err.code(), Code::NotFound);
    // Only the one good container exists.
    assert_eq!(count(&d.state.join("containers")), 1);
    assert_eq!(count(&d.images_root().join("snapshots/active")), 1);
    remove_pod(&mut cri, &pod).await;
    assert_eq!(count(&d.state.join("containers")), 0);
    assert_eq!(count(&d.images_root().join("snapshots/active")), 0);
}

#[tokio::test]
async fn containers_outlive_a_killed_gantryd() {
    let mut d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "survivor", NamespaceMode::Container).await;
    let long = create(&mut cri, &pod, container("long", &["sleep", "1000"])).await.expect("create");
    let short = create(&mut cri, &pod, container("short", &["sh", "-c", "sleep 1; exit 7"])).await.expect("create");
    start(&mut cri, &long).await;
    start(&mut cri, &short).await;
    d.kill9();
    // `short` exits while gantryd is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.start_again();
    let mut cri = d.connect().await;
    assert_eq!(status(&mut cri, &long).await.state, ContainerState::ContainerRunning as i32);
    let s = wait_exited(&mut cri, &short).await;
    assert_eq!((s.state, s.exit_code), (ContainerState::ContainerExited as i32, 7));
    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.expect("list").into_inner().items;
    assert_eq!(pods.len(), 1);
    cri.runtime.stop_container(StopContainerRequest { container_id: long.clone(), timeout: 1 }).await.expect("stop");
    assert_eq!(status(&mut cri, &long).await.state, ContainerState::ContainerExited as i32);
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn cgroup_limits_apply_and_oom_kills_are_reported() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "limits", NamespaceMode::Container).await;
    let limited = |name: &str, command: &[&str]| {
        let mut c = container(name, command);
        c.linux = Some(LinuxContainerConfig {
            security_context: c.linux.and_then(|l| l.security_context),
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                cpu_shares: 512,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
        });
        c
    };
    let sleeper = create(&mut cri, &pod, limited("sleeper", &["sleep", "1000"])).await.expect("create");
    start(&mut cri, &sleeper).await;
    let cgroup = format!("{}/gantry-{sleeper}", gantry_tests::cgroup_parent(&d));
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{cgroup}/{file}")).map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(read("memory", "memory.limit_in_bytes").expect("memory limit"), (32u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.shares").expect("shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us").expect("quota"), "50000");
        let procs = read("memory", "cgroup.procs").expect("procs");
        assert!(!procs.is_empty(), "the container runs in its cgroup");
    } else {
        assert_eq!(read("", "memory.max").expect("memory.max"), (32u64 << 20).to_string());
    }

    let hog = create(
        &mut cri,
        &pod,
        limited("hog", &["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\000' a); echo survived"]),
    )
    .await
    .expect("create");
    start(&mut cri, &hog).await;
    let s = wait_exited(&mut cri, &hog).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}, log {:?}", log_of(&pod, "hog"));
    assert_eq!(s.exit_code, 137);
    remove_pod(&mut cri, &pod).await;
    assert!(read("memory", "memory.limit_in_bytes").is_err(), "cgroup removed with the container");
}

/// Where this host's hugetlb controller is: a v1 hierarchy, or a cgroup2
/// mount that lists it (the hybrid's /sys/fs/cgroup/unified, or pure v2).
fn hugetlb_hierarchy() -> Option<(std::path::PathBuf, bool)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut v2 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mountpoint = left.split(' ').nth(4).unwrap_or_default().to_string();
        let mut r = right.split(' ');
        let (fstype, opts) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
        if fstype == "cgroup" && opts.split(',').any(|o| o == "hugetlb") {
            return Some((mountpoint.into(), false));
        }
        let controllers = std::fs::read_to_string(Path::new(&mountpoint).join("cgroup.controllers"));
        if fstype == "cgroup2"
            && v2.is_none()
            && controllers.is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"))
        {
            v2 = Some((mountpoint.into(), true));
        }
    }
    v2
}

#[tokio::test]
async fn hugepage_limits_apply_in_the_hugetlb_hierarchy_and_update() {
    let Some((root, v2)) = hugetlb_hierarchy() else {
        eprintln!("skipped: no hugetlb cgroup controller on this host");
        return;
    };
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir() {
        eprintln!("skipped: no 2MB huge pages in this kernel");
        return;
    }
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "hugepages", NamespaceMode::Container).await;
    let with_hugepages = |name: &str, limits: &[(&str, u64)]| {
        let mut c = container(name, &["sleep", "1000"]);
        c.linux = Some(LinuxContainerConfig {
            security_context: c.linux.and_then(|l| l.security_context),
            resources: Some(LinuxContainerResources {
                hugepage_limits: limits
                    .iter()
                    .map(|(size, limit)| gantry_proto::cri::v1::HugepageLimit {
                        page_size: size.to_string(),
                        limit: *limit,
                    })
                    .collect(),
                ..Default::default()
            }),
        });
        c
    };
    let id = create(&mut cri, &pod, with_hugepages("huge", &[("2MB", 4 << 20)])).await.expect("create");
    start(&mut cri, &id).await;
    let dir = root.join(format!("{}/gantry-{id}", gantry_tests::cgroup_parent(&d)).trim_start_matches('/'));
    let limit_file = dir.join(if v2 { "hugetlb.2MB.max" } else { "hugetlb.2MB.limit_in_bytes" });
    let read = |f: &Path| std::fs::read_to_string(f).map(|s| s.trim().to_string());
    assert_eq!(read(&limit_file).expect("hugetlb limit"), (4u64 << 20).to_string());

    // The container's process is in that cgroup (in the hybrid layout: in
    // the unified tree's as well as in the v1 hierarchies').
    let info = container_info(&mut cri, &id).await;
    let pid = info["pid"].as_u64().expect("pid");
    let procs = read(&dir.join("cgroup.procs")).expect("procs");
    assert!(procs.lines().any(|p| p == pid.to_string()), "pid {pid} not in {}: {procs:?}", dir.display());
    // So is an exec'd command.
    let mut runtime = cri.runtime.clone();
    let exec_id = id.clone();
    let exec = tokio::spawn(async move {
        runtime
            .exec_sync(gantry_proto::cri::v1::ExecSyncRequest {
                container_id: exec_id,
                cmd: vec!["sleep".into(), "3".into()],
                timeout: 20,
            })
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while read(&dir.join("cgroup.procs")).expect("procs").lines().count() < 2 {
        assert!(Instant::now() < deadline, "the exec never showed up in {}", dir.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(exec.await.expect("join").expect("exec").into_inner().exit_code, 0);

    // New limits for the running container.
    cri.runtime
        .update_container_resources(gantry_proto::cri::v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                hugepage_limits: vec![gantry_proto::cri::v1::HugepageLimit { page_size: "2MB".into(), limit: 8 << 20 }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("update");
    assert_eq!(read(&limit_file).expect("hugetlb limit"), (8u64 << 20).to_string());

    // A page size the kernel does not have is refused, by name.
    let err = create(&mut cri, &pod, with_hugepages("odd", &[("3MB", 6 << 20)])).await.expect_err("no 3MB pages");
    assert!(err.message().contains("3MB"), "{err}");
    let err = cri
        .runtime
        .update_container_resources(gantry_proto::cri::v1::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                hugepage_limits: vec![gantry_proto::cri::v1::HugepageLimit { page_size: "3MB".into(), limit: 6 << 20 }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("no 3MB pages");
    assert!(err.message().contains("3MB"), "{err}");

    cri.runtime.remove_container(RemoveContainerRequest { container_id: id.clone() }).await.expect("remove");
    assert!(!dir.exists(), "{} left behind", dir.display());
    remove_pod(&mut cri, &pod).await;
    let parent = root.join(gantry_tests::cgroup_parent(&d).trim_start_matches('/'));
    let left: Vec<_> = std::fs::read_dir(&parent)
        .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cgroups left in {}: {left:?}", parent.display());
}

#[tokio::test]
async fn devices_are_mapped_and_other_host_devices_denied() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "devices", NamespaceMode::Container).await;
    // A host block device to try to reach: the machine's disk.
    let disk = std::fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .find(|e| e.file_type().is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_block_device(&t)))
        .map(|e| e.path().display().to_string())
        .expect("a block device on the host");
    let (maj, min) = {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&disk).unwrap().rdev();
        (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
    };
    // Mapped device: usable at its container path. Unmapped host disk: even
    // with CAP_MKNOD, the node is made but cannot be opened.
    let script = format!(
        "echo hi > /dev/mynull && echo mapped-ok; mknod /dev/disk b {maj} {min} && head -c1 /dev/disk >/dev/null 2>&1 || echo disk-denied"
    );
    let mut plain = container("plain", &["sh", "-c", &script]);
    plain.devices = vec![gantry_proto::cri::v1::Device {
        host_path: "/dev/null".into(),
        container_path: "/dev/mynull".into(),
        permissions: "rw".into(),
    }];
    let plain = create(&mut cri, &pod, plain).await.expect("create");
    let mut privileged = container("privileged", &["sh", "-c", &format!("test -b {disk} && echo host-disk-visible")]);
    if let Some(sc) = privileged.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let privileged = create(&mut cri, &pod, privileged).await.expect("create");
    for id in [&plain, &privileged] {
        start(&mut cri, id).await;
        wait_exited(&mut cri, id).await;
    }
    assert_eq!(log_of(&pod, "plain"), ["stdout F mapped-ok", "stdout F disk-denied"]);
    assert_eq!(log_of(&pod, "privileged"), ["stdout F host-disk-visible"]);

    let mut bad = container("bad", &["true"]);
    bad.devices = vec![gantry_proto::cri::v1::Device {
        host_path: "/etc/hostname".into(),
        container_path: "/dev/x".into(),
        permissions: "rw".into(),
    }];
    let err = create(&mut cri, &pod, bad).await.expect_err("not a device");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("/etc/hostname"), "{err}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn masked_and_readonly_paths_mount_propagation_and_group_without_user() {
    use nix::mount::{mount, MsFlags};
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "paths", NamespaceMode::Container).await;

    // kubelet's own masked and read-only lists replace the defaults.
    let mut paths =
        container("paths", &["sh", "-c", "cat /etc/passwd | wc -c; touch /tmp/x 2>/dev/null || echo tmp-ro"]);
    if let Some(sc) = paths.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.masked_paths = vec!["/etc/passwd".into()];
        sc.readonly_paths = vec!["/tmp".into()];
    }
    let paths = create(&mut cri, &pod, paths).await.expect("create");
    start(&mut cri, &paths).await;
    wait_exited(&mut cri, &paths).await;
    assert_eq!(log_of(&pod, "paths"), ["stdout F 0", "stdout F tmp-ro"]);

    // A bidirectional mount: what the container mounts below it shows on the host.
    let shared = d.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    mount(Some(&shared), &shared, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind");
    let _unmount_shared = gantry_tests::MountGuard(shared.clone());
    mount(None::<&str>, &shared, None::<&str>, MsFlags::MS_SHARED, None::<&str>).expect("make shared");
    let _unmount_sub = gantry_tests::MountGuard(shared.join("sub"));
    let mut prop = container(
        "prop",
        &["sh", "-c", "mkdir -p /mnt/shared/sub && mount -t tmpfs tmpfs /mnt/shared/sub && touch /mnt/shared/sub/seen && sleep 60"],
    );
    prop.mounts = vec![Mount {
        container_path: "/mnt/shared".into(),
        host_path: shared.display().to_string(),
        propagation: gantry_proto::cri::v1::MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    if let Some(sc) = prop.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let prop = create(&mut cri, &pod, prop).await.expect("create");
    start(&mut cri, &prop).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.join("sub/seen").exists() {
        assert!(Instant::now() < deadline, "the container's mount did not reach the host: {:?}", log_of(&pod, "prop"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Read-only, and recursively read-only: a tmpfs mounted below the host path
    // stays writable through the first, not the second.
    let rro_host = d.dir.path().join("rro");
    std::fs::create_dir_all(rro_host.join("tmpfs")).unwrap();
    mount(Some("none"), &rro_host.join("tmpfs"), Some("tmpfs"), MsFlags::empty(), None::<&str>).expect("tmpfs");
    let _unmount_tmpfs = gantry_tests::MountGuard(rro_host.join("tmpfs"));
    for (name, rro, expected) in [("ro", false, "touched"), ("rro", true, "read-only")] {
        let mut c = container(name, &["sh", "-c", "touch /mnt/tmpfs/f 2>/dev/null && echo touched || echo read-only"]);
        c.mounts = vec![Mount {
            container_path: "/mnt".into(),
            host_path: rro_host.display().to_string(),
            readonly: true,
            recursive_read_only: rro,
            ..Default::default()
        }];
        let id = create(&mut cri, &pod, c).await.expect("create");
        start(&mut cri, &id).await;
        wait_exited(&mut cri, &id).await;
        assert_eq!(log_of(&pod, name), [format!("stdout F {expected}")], "{name}");
    }
    let mut rro_rw = container("rro-rw", &["true"]);
    rro_rw.mounts = vec![Mount {
        container_path: "/mnt".into(),
        host_path: rro_host.display().to_string(),
        recursive_read_only: true,
        ..Default::default()
    }];
    let err = create(&mut cri, &pod, rro_rw).await.expect_err("rro without readonly");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let mut group_only = container("group-only", &["true"]);
    if let Some(sc) = group_only.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.run_as_group = Some(Int64Value { value: 1234 });
    }
    let err = create(&mut cri, &pod, group_only).await.expect_err("group without user");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("1234"), "{err}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn seccomp_default_localhost_unconfined_and_privileged() {
    use gantry_proto::cri::v1::security_profile::ProfileType;
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "seccomp", NamespaceMode::Container).await;
    let no_chmod = d.dir.path().join("no-chmod.json");
    std::fs::write(
        &no_chmod,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let show = "grep Seccomp: /proc/self/status; touch /tmp/f; chmod 600 /tmp/f 2>/dev/null && echo chmod-ok || echo chmod-denied";
    let with = |name: &str, kind: ProfileType, path: &str, privileged: bool| {
        let mut c = container(name, &["sh", "-c", show]);
        if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.seccomp =
                Some(gantry_proto::cri::v1::SecurityProfile { profile_type: kind as i32, localhost_ref: path.into() });
            sc.privileged = privileged;
        }
        c
    };
    let cases = [
        (
            "default",
            with("default", ProfileType::RuntimeDefault, "", false),
            ["stdout F Seccomp:\t2", "stdout F chmod-ok"],
        ),
        (
            "localhost",
            with("localhost", ProfileType::Localhost, &no_chmod.display().to_string(), false),
            ["stdout F Seccomp:\t2", "stdout F chmod-denied"],
        ),
        (
            "unconfined",
            with("unconfined", ProfileType::Unconfined, "", false),
            ["stdout F Seccomp:\t0", "stdout F chmod-ok"],
        ),
        (
            "privileged",
            with("privileged", ProfileType::RuntimeDefault, "", true),
            ["stdout F Seccomp:\t0", "stdout F chmod-ok"],
        ),
    ];
    for (name, config, expected) in cases {
        let id = create(&mut cri, &pod, config).await.expect("create");
        start(&mut cri, &id).await;
        wait_exited(&mut cri, &id).await;
        assert_eq!(log_of(&pod, name), expected, "{name}");
    }
    let missing = with("missing", ProfileType::Localhost, "/no/such/profile.json", false);
    let err = create(&mut cri, &pod, missing).await.expect_err("missing profile");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("/no/such/profile.json"), "{err}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn supplemental_groups_merge_the_images_unless_strict_and_status_reports_the_user() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let image = format!("{}/gantry/user:groups", test_registry());
    cri.images
        .pull_image(gantry_proto::cri::v1::PullImageRequest {
            image: Some(ImageSpec { image: image.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("pull");
    let pod = run_pod(&mut cri, &d, "groups", NamespaceMode::Container).await;
    let with_policy = |name: &str, strict: bool| {
        let mut c = container(name, &["sh", "-c", "id -G; sleep 60"]);
        c.image = Some(ImageSpec { image: image.clone(), ..Default::default() });
        if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.run_as_user = Some(Int64Value { value: 1234 });
            sc.supplemental_groups = vec![777];
            if strict {
                sc.supplemental_groups_policy = gantry_proto::cri::v1::SupplementalGroupsPolicy::Strict as i32;
            }
        }
        c
    };
    for (name, strict, expected) in [("merge", false, vec![777, 1234, 50000]), ("strict", true, vec![777, 1234])] {
        let id = create(&mut cri, &pod, with_policy(name, strict)).await.expect("create");
        start(&mut cri, &id).await;
        let user = status(&mut cri, &id).await.user.and_then(|u| u.linux).expect("ContainerStatus.user");
        assert_eq!((user.uid, user.gid, user.supplemental_groups.clone()), (1234, 1234, expected.clone()), "{name}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_of(&pod, name).is_empty() {
            assert!(Instant::now() < deadline, "{name}: no output");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut groups: Vec<i64> =
            log_of(&pod, name)[0].trim_start_matches("stdout F ").split(' ').map(|g| g.parse().unwrap()).collect();
        groups.sort();
        assert_eq!(groups, expected, "{name}");
    }
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn capabilities_and_no_new_privs_are_applied() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "caps", NamespaceMode::Container).await;
    let show = ["sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"];
    let default = create(&mut cri, &pod, container("default", &show)).await.expect("create");
    let mut narrow = container("narrow", &show);
    if let Some(sc) = narrow.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.capabilities = Some(gantry_proto::cri::v1::Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["NET_ADMIN".into()],
            ..Default::default()
        });
        sc.no_new_privs = true;
    }
    let narrow = create(&mut cri, &pod, narrow).await.expect("create");
    for id in [&default, &narrow] {
        start(&mut cri, id).await;
        wait_exited(&mut cri, id).await;
    }
    let d_log = log_of(&pod, "default");
    // containerd's default set: chown, dac_override, fowner, fsetid, kill, setgid, setuid,
    // setpcap, net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap.
    assert!(d_log.contains(&"stdout F CapEff:\t00000000a80425fb".to_string()), "{d_log:?}");
    assert!(d_log.contains(&"stdout F CapBnd:\t00000000a80425fb".to_string()), "{d_log:?}");
    assert!(d_log.contains(&"stdout F NoNewPrivs:\t0".to_string()), "{d_log:?}");
    let n_log = log_of(&pod, "narrow");
    assert!(n_log.contains(&"stdout F CapEff:\t0000000000001000".to_string()), "{n_log:?}");
    assert!(n_log.contains(&"stdout F NoNewPrivs:\t1".to_string()), "{n_log:?}");

    let mut bogus = container("bogus", &["true"]);
    if let Some(sc) = bogus.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.capabilities =
            Some(gantry_proto::cri::v1::Capability { add_capabilities: vec!["FLY".into()], ..Default::default() });
    }
    let err = create(&mut cri, &pod, bogus).await.expect_err("unknown capability");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("FLY"), "{err}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn a_containers_layers_outlive_its_image_and_a_restart() {
    let mut d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "keeps", NamespaceMode::Container).await;
    let id = create(&mut cri, &pod, container("c", &["cat", "/bin/busybox"])).await.expect("create");
    cri.images
        .remove_image(gantry_proto::cri::v1::RemoveImageRequest {
            image: Some(ImageSpec { image: busybox(), ..Default::default() }),
        })
        .await
        .expect("rmi");
    assert_eq!(count(&d.images_root().join("snapshots/layers")), 1, "the container still needs the layer");
    d.restart();
    let mut cri = d.connect().await;
    assert_eq!(count(&d.images_root().join("snapshots/layers")), 1, "and still after a restart");
    start(&mut cri, &id).await;
    assert_eq!(wait_exited(&mut cri, &id).await.exit_code, 0);
    remove_pod(&mut cri, &pod).await;
    cri.images.image_fs_info(gantry_proto::cri::v1::ImageFsInfoRequest {}).await.expect("fs info");
}

#[tokio::test]
async fn a_restart_removes_what_a_crash_left_half_made() {
    let mut d = Daemon::start("");
    let _ = setup(&d).await;
    d.kill9();
    // A bundle without a record, its rootfs still mounted, and a writable
    // layer nobody owns: what a crash in the middle of CreateContainer leaves.
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let bundle = d.state.join("containers").join(id);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("bundle");
    nix::mount::mount(Some("tmpfs"), &rootfs, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>)
        .expect("mount");
    let _guard = gantry_tests::MountGuard(rootfs.clone());
    let active = d.images_root().join("snapshots/active").join(id);
    std::fs::create_dir_all(active.join("upper")).expect("active");
    d.start_again();
    let mut cri = d.connect().await;
    // The socket is bound before the state is loaded: an answer means loading is over.
    cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.expect("list");
    assert!(!bundle.exists(), "half-made bundle removed");
    assert!(!active.exists(), "orphaned writable layer removed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&rootfs.display().to_string()), "its mount is gone");
}

#[tokio::test]
async fn events_log_reopen_resource_updates_and_runtime_config() {
    use gantry_proto::cri::v1::{ContainerEventType, GetEventsRequest, ReopenContainerLogRequest};
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let cfg = cri.runtime.runtime_config(gantry_proto::cri::v1::RuntimeConfigRequest {}).await.expect("runtime config");
    assert_eq!(
        cfg.into_inner().linux.map(|l| l.cgroup_driver),
        Some(gantry_proto::cri::v1::CgroupDriver::Cgroupfs as i32)
    );

    let mut events = cri.runtime.get_container_events(GetEventsRequest {}).await.expect("events").into_inner();
    let pod = run_pod(&mut cri, &d, "events", NamespaceMode::Container).await;

    // A log rotated by renaming, then reopened, keeps every line.
    let counter = "i=0; while [ $i -lt 40 ]; do echo line$i; i=$((i+1)); sleep 0.05; done";
    let talker = create(&mut cri, &pod, container("talker", &["sh", "-c", counter])).await.expect("create");
    start(&mut cri, &talker).await;
    let log = pod.logs.join("talker.log");
    // Rotate once some lines are written and most are still to come.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 5 {
        assert!(Instant::now() < deadline, "the talker never talked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&log, pod.logs.join("talker.log.1")).expect("rotate");
    cri.runtime.reopen_container_log(ReopenContainerLogRequest { container_id: talker.clone() }).await.expect("reopen");
    wait_exited(&mut cri, &talker).await;
    let mut lines: Vec<String> = Vec::new();
    for f in ["talker.log.1", "talker.log"] {
        let text = std::fs::read_to_string(pod.logs.join(f)).expect("log part");
        assert!(!text.is_empty(), "{f} is empty: the rotation did not split the log");
        lines.extend(text.lines().map(|l| l.rsplit(' ').next().unwrap_or("").to_string()));
    }
    let want: Vec<String> = (0..40).map(|i| format!("line{i}")).collect();
    assert_eq!(lines, want);
    let err = cri
        .runtime
        .reopen_container_log(ReopenContainerLogRequest { container_id: talker.clone() })
        .await
        .expect_err("not running");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    // New limits for a running container.
    let sleeper = create(&mut cri, &pod, container("sleeper", &["sleep", "1000"])).await.expect("create");
    start(&mut cri, &sleeper).await;
    cri.runtime
        .update_container_resources(gantry_proto::cri::v1::UpdateContainerResourcesRequest {
            container_id: sleeper.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("update");
    let cgroup = format!("{}/gantry-{sleeper}", gantry_tests::cgroup_parent(&d));
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        let read = |c: &str, f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{c}{cgroup}/{f}")).expect(f);
        assert_eq!(read("memory", "memory.limit_in_bytes").trim(), (64u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.shares").trim(), "256");
    }
    remove_pod(&mut cri, &pod).await;

    // Every container's lifecycle arrives in order, the sandbox's too.
    let mut seen: HashMap<String, Vec<i32>> = HashMap::new();
    let mut started_with_status = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    // The pod's containers are removed in no particular order: wait for both.
    while seen.get(&sleeper).map_or(0, |v| v.len()) < 4 || seen.get(&talker).map_or(0, |v| v.len()) < 4 {
        let next = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), events.message())
            .await
            .expect("events in time")
            .expect("event stream")
            .expect("stream open");
        // For kubelet's evented PLEG: the pod's status and its containers' come along.
        if next.container_id == sleeper && next.container_event_type == ContainerEventType::ContainerStartedEvent as i32
        {
            assert_eq!(next.pod_sandbox_status.as_ref().map(|p| p.id.as_str()), Some(pod.id.as_str()));
            let mine = next.containers_statuses.iter().find(|c| c.id == sleeper).expect("own status");
            assert_eq!(mine.state, ContainerState::ContainerRunning as i32);
            started_with_status = true;
        }
        seen.entry(next.container_id).or_default().push(next.container_event_type);
    }
    assert!(started_with_status);
    let lifecycle = vec![
        ContainerEventType::ContainerCreatedEvent as i32,
        ContainerEventType::ContainerStartedEvent as i32,
        ContainerEventType::ContainerStoppedEvent as i32,
        ContainerEventType::ContainerDeletedEvent as i32,
    ];
    assert_eq!(seen[&talker], lifecycle);
    assert_eq!(seen[&sleeper], lifecycle);
    assert_eq!(seen[&pod.id][..2], lifecycle[..2]);
}

/// ListContainers answers from pre-encoded messages (runtime `listing`):
/// every filter, the same fields ContainerStatus reports, states as they
/// change, and the same answer after a restart.
#[tokio::test]
async fn list_containers_filters_and_matches_container_status() {
    use gantry_proto::cri::v1::{ContainerFilter, ContainerStateValue};
    let mut d = Daemon::start("");
    let mut cri = setup(&d).await;
    let web = run_pod(&mut cri, &d, "listweb", NamespaceMode::Container).await;
    let db = run_pod(&mut cri, &d, "listdb", NamespaceMode::Container).await;
    let kubelet_like = |name: &str, app: &str, command: &[&str]| {
        let mut c = container(name, command);
        c.labels = HashMap::from([
            ("io.kubernetes.container.name".to_string(), name.to_string()),
            ("app".to_string(), app.to_string()),
        ]);
        c.annotations = HashMap::from([
            ("io.kubernetes.container.hash".to_string(), "4f1e5b3a".to_string()),
            ("io.kubernetes.container.restartCount".to_string(), "0".to_string()),
        ]);
        c
    };
    let a = create(&mut cri, &web, kubelet_like("a", "web", &["sleep", "1000"])).await.expect("create a");
    let b = create(&mut cri, &web, kubelet_like("b", "web", &["true"])).await.expect("create b");
    let c = create(&mut cri, &db, kubelet_like("c", "db", &["sleep", "1000"])).await.expect("create c");
    start(&mut cri, &a).await;
    start(&mut cri, &b).await;
    wait_exited(&mut cri, &b).await;

    async fn list(cri: &mut gantry_tests::Cri, filter: ContainerFilter) -> Vec<gantry_proto::cri::v1::Container> {
        let mut listed = cri
            .runtime
            .list_containers(ListContainersRequest { filter: Some(filter) })
            .await
            .expect("list")
            .into_inner()
            .containers;
        listed.sort_by(|x, y| x.id.cmp(&y.id));
        listed
    }
    let ids = |listed: Vec<gantry_proto::cri::v1::Container>| {
        let mut ids: Vec<String> = listed.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let all = list(&mut cri, ContainerFilter::default()).await;
    assert_eq!(all.len(), 3);
    for listed in &all {
        let s = status(&mut cri, &listed.id).await;
        assert_eq!(listed.metadata, s.metadata);
        assert_eq!((&listed.labels, &listed.annotations), (&s.labels, &s.annotations));
        assert_eq!((&listed.image, &listed.image_ref, listed.created_at), (&s.image, &s.image_ref, s.created_at));
        assert_eq!(listed.state, s.state, "{}", listed.id);
        assert_eq!(listed.image_id, s.image_ref);
        assert_eq!(s.image_id, s.image_ref, "ContainerStatus.image_id, which kubelet and critest read");
        let pod = if listed.id == c { &db.id } else { &web.id };
        assert_eq!(&listed.pod_sandbox_id, pod);
    }
    let state_of = |id: &str| all.iter().find(|x| x.id == id).map(|x| x.state);
    assert_eq!(state_of(&a), Some(ContainerState::ContainerRunning as i32));
    assert_eq!(state_of(&b), Some(ContainerState::ContainerExited as i32));
    assert_eq!(state_of(&c), Some(ContainerState::ContainerCreated as i32));

    let by_id = ContainerFilter { id: a[..12].to_string(), ..Default::default() };
    assert_eq!(ids(list(&mut cri, by_id).await), [a.as_str()]);
    let by_pod = ContainerFilter { pod_sandbox_id: db.id[..12].to_string(), ..Default::default() };
    assert_eq!(ids(list(&mut cri, by_pod).await), [c.as_str()]);
    let web_label = HashMap::from([("app".to_string(), "web".to_string())]);
    let by_label = ContainerFilter { label_selector: web_label.clone(), ..Default::default() };
    assert_eq!(ids(list(&mut cri, by_label).await), sorted(vec![a.clone(), b.clone()]));
    let state = |s: ContainerState| Some(ContainerStateValue { state: s as i32 });
    let running = ContainerFilter { state: state(ContainerState::ContainerRunning), ..Default::default() };
    assert_eq!(ids(list(&mut cri, running).await), [a.as_str()]);
    let created = ContainerFilter { state: state(ContainerState::ContainerCreated), ..Default::default() };
    assert_eq!(ids(list(&mut cri, created).await), [c.as_str()]);
    let nothing = ContainerFilter {
        label_selector: web_label,
        state: state(ContainerState::ContainerCreated),
        ..Default::default()
    };
    assert!(list(&mut cri, nothing).await.is_empty());

    // After a restart the records are read back: the same answer.
    d.restart();
    let mut cri = d.connect().await;
    assert_eq!(list(&mut cri, ContainerFilter::default()).await, all);

    // Removed: gone from the list at once.
    cri.runtime.remove_container(RemoveContainerRequest { container_id: b.clone() }).await.expect("remove b");
    assert_eq!(ids(list(&mut cri, ContainerFilter::default()).await), sorted(vec![a.clone(), c.clone()]));
    remove_pod(&mut cri, &web).await;
    remove_pod(&mut cri, &db).await;
    assert!(list(&mut cri, ContainerFilter::default()).await.is_empty());
}

#[tokio::test]
async fn a_malformed_image_config_is_refused_at_create_naming_the_field() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let push = gantry_tests::PushClient::new(&gantry_tests::test_registry());
    let layer =
        gantry_tests::registry::Layer::gzip(&gantry_tests::registry::tar_of(&[gantry_tests::registry::Entry::File(
            "x", b"x",
        )]));
    let repo = format!("gantry/badconfig-{}", std::process::id());
    push.push_image_with(&repo, "latest", &[layer], serde_json::json!({"Cmd": ["sh"], "Env": "PATH=/bin"})).await;
    let image = format!("{}/{repo}:latest", gantry_tests::test_registry());
    cri.images
        .pull_image(gantry_proto::cri::v1::PullImageRequest {
            image: Some(gantry_proto::cri::v1::ImageSpec { image: image.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("the pull itself is fine");
    let pod = run_pod(&mut cri, &d, "badconfig", NamespaceMode::Pod).await;
    let mut config = container("bad", &["sh"]);
    config.image = Some(gantry_proto::cri::v1::ImageSpec { image, ..Default::default() });
    let err = create(&mut cri, &pod, config).await.expect_err("malformed Env");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("Env"), "{err}");
    assert_eq!(count(&d.state.join("containers")), 0, "nothing left behind");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn the_cri_stop_signal_overrides_the_images_and_is_reported() {
    use gantry_proto::cri::v1::Signal;
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "stopsig", NamespaceMode::Pod).await;
    let mut config = container("usr1", &["sh", "-c", "trap 'echo got-usr1; exit 3' USR1; while :; do sleep 0.1; done"]);
    config.stop_signal = Signal::Sigusr1 as i32;
    let id = create(&mut cri, &pod, config).await.expect("create");
    start(&mut cri, &id).await;
    assert_eq!(status(&mut cri, &id).await.stop_signal, Signal::Sigusr1 as i32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cri.runtime.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 20 }).await.expect("stop");
    let s = status(&mut cri, &id).await;
    assert_eq!((s.state, s.exit_code), (ContainerState::ContainerExited as i32, 3), "ended by its trap, not SIGKILL");
    assert!(log_of(&pod, "usr1").iter().any(|l| l.ends_with("got-usr1")));
    // No stop signal anywhere: the runtime's default, reported as such.
    let plain = create(&mut cri, &pod, container("plain", &["sleep", "60"])).await.expect("create");
    assert_eq!(status(&mut cri, &plain).await.stop_signal, Signal::RuntimeDefault as i32);
    // A value outside the enum is refused, naming it.
    let mut config = container("bad", &["sleep", "60"]);
    config.stop_signal = 99;
    let err = create(&mut cri, &pod, config).await.expect_err("unknown signal");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("99"), "{err}");
    remove_pod(&mut cri, &pod).await;
}

/// Evented PLEG: a container that exits while gantryd is down is reported
/// after the restart, with its status, to every subscriber, and only once
/// across later restarts.
#[tokio::test]
async fn exits_while_gantryd_is_down_are_reported_after_the_restart() {
    use gantry_proto::cri::v1::{ContainerEventType, GetEventsRequest};
    let mut d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "downtime", NamespaceMode::Container).await;
    let short = create(&mut cri, &pod, container("short", &["sh", "-c", "sleep 1; exit 5"])).await.expect("create");
    start(&mut cri, &short).await;
    d.kill9();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    d.start_again();
    let mut cri = d.connect().await;

    let stopped_events = |cri: &mut gantry_tests::Cri| {
        let mut runtime = cri.runtime.clone();
        let short = short.clone();
        async move {
            let mut events = runtime.get_container_events(GetEventsRequest {}).await.expect("events").into_inner();
            let mut found = vec![];
            while let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_millis(1500), events.message()).await {
                if e.container_id == short && e.container_event_type == ContainerEventType::ContainerStoppedEvent as i32
                {
                    found.push(e);
                }
            }
            found
        }
    };
    for subscriber in ["first", "second"] {
        let found = stopped_events(&mut cri).await;
        assert_eq!(found.len(), 1, "{subscriber} subscriber: {found:?}");
        let status = found[0].containers_statuses.iter().find(|s| s.id == short).expect("its status in the event");
        assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 5));
        assert_eq!(found[0].pod_sandbox_status.as_ref().map(|p| p.id.as_str()), Some(pod.id.as_str()));
    }
    // Reported once: a further restart does not report it again.
    d.restart();
    let mut cri = d.connect().await;
    assert!(stopped_events(&mut cri).await.is_empty());
    remove_pod(&mut cri, &pod).await;
}
