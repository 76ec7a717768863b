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
