//! User namespaces (CRI NamespaceMode POD): the pod's IDs mapped to a host
//! range, its namespaces owned by it, the image seen through ID-mapped
//! layers, exec joining it; and the configurations that are refused.

use gantry_proto::cri::v1::{
    ExecSyncRequest, IdMapping, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, StatusRequest,
    UserNamespace,
};
use gantry_tests::pods::*;
use gantry_tests::Daemon;
use tonic::Code;

const HOST_UID: u32 = 310_000;
const HOST_GID: u32 = 320_000;
const LENGTH: u32 = 65_536;

fn userns(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
    UserNamespace { mode: mode as i32, uids, gids }
}

fn pod_mapping() -> UserNamespace {
    userns(
        NamespaceMode::Pod,
        vec![IdMapping { host_id: HOST_UID, container_id: 0, length: LENGTH }],
        vec![IdMapping { host_id: HOST_GID, container_id: 0, length: LENGTH }],
    )
}

fn namespace_options(config: &mut PodSandboxConfig) -> &mut NamespaceOption {
    config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("pod namespace options")
}

/// A log line without its stream and tag (`stdout F `).
fn content(line: &str) -> &str {
    line.splitn(3, ' ').nth(2).unwrap_or_default()
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

async fn exec(cri: &mut gantry_tests::Cri, id: &str, script: &str) -> String {
    let out = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("exec")
        .into_inner();
    assert_eq!(out.exit_code, 0, "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gantry ARGS…` against the test's daemon; it must succeed.
fn gantry(d: &Daemon, args: &[&str]) {
    let out = std::process::Command::new(gantry_tests::bin_dir().join("gantry"))
        .arg("--address")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run gantry");
    assert!(out.status.success(), "gantry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Each entry's uid:gid in a tar.
fn tar_owners(bytes: &[u8]) -> std::collections::HashMap<String, (u64, u64)> {
    let mut owners = std::collections::HashMap::new();
    if let Ok(entries) = tar::Archive::new(bytes).entries() {
        for e in entries.flatten() {
            let (Ok(path), Ok(uid), Ok(gid)) = (e.path(), e.header().uid(), e.header().gid()) else { continue };
            owners.insert(path.display().to_string().trim_start_matches("./").to_string(), (uid, gid));
        }
    }
    owners
}

#[tokio::test]
async fn a_pod_user_namespace_maps_ids_and_owns_the_pods_namespaces() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let status = cri.runtime.status(StatusRequest { verbose: false }).await.expect("status").into_inner();
    assert!(
        status.runtime_handlers.iter().any(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces)),
        "user namespaces not advertised: {:?}",
        status.runtime_handlers
    );

    let mut config = pod_config(&d, "userns", NamespaceMode::Pod);
    namespace_options(&mut config).userns_options = Some(pod_mapping());
    let pod = run_pod_config(&mut cri, config).await.expect("run a pod with a user namespace");
    // A volume: root's files on the host are the container root's, and
    // what it writes there is root's on the host.
    let volume = d.dir.path().join("userns-volume");
    std::fs::create_dir(&volume).expect("volume dir");
    std::fs::write(volume.join("owned"), "host root's").expect("volume file");
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
                  stat -c %u:%g /bin/busybox / /dev /vol/owned /etc/hosts; echo x > /vol/new; \
                  touch /written && echo wrote; exec sleep 60";
    let mut ctr = container("app", &["sh", "-c", script]);
    ctr.mounts = vec![gantry_proto::cri::v1::Mount {
        container_path: "/vol".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    }];
    let sc = ctr.linux.as_mut().and_then(|l| l.security_context.as_mut()).expect("security context");
    sc.namespace_options.as_mut().expect("namespace options").userns_options = Some(pod_mapping());
    let id = create(&mut cri, &pod, ctr).await.expect("create a container in the pod's user namespace");
    start(&mut cri, &id).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = log_of(&pod, "app");
        if log.iter().any(|l| l.ends_with("wrote")) || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = log.iter().map(|l| content(l)).collect();
    let expected_uid_map = ["0".to_string(), HOST_UID.to_string(), LENGTH.to_string()];
    let expected_gid_map = ["0".to_string(), HOST_GID.to_string(), LENGTH.to_string()];
    assert_eq!(lines.len(), 10, "{log:?}");
    assert_eq!(words(lines[0]), expected_uid_map, "{log:?}");
    assert_eq!(words(lines[1]), expected_gid_map, "{log:?}");
    // Root inside; the image's files and the writable root belong to it.
    assert_eq!(&lines[2..], ["0", "0", "0:0", "0:0", "0:0", "0:0", "0:0", "wrote"], "{log:?}");

    // On the host the process runs as the mapped user, and what it wrote is
    // stored with the mapped IDs.
    let info = container_info(&mut cri, &id).await;
    let pid = info["pid"].as_u64().expect("pid");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let uids = proc_status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    let host_uid = HOST_UID.to_string();
    assert_eq!(words(uids)[1..], [host_uid.as_str(); 4], "{uids}");
    let written = d.images_root().join("snapshots/active").join(&id).join("upper/written");
    let meta = std::fs::metadata(&written).expect("the written file in the writable layer");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (HOST_UID, HOST_GID));
    let meta = std::fs::metadata(volume.join("new")).expect("the file written to the volume");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "the volume is ID-mapped");

    // Exec joins the same user namespace. The pod's network namespace is
    // the user namespace's: its root may bind a privileged port.
    let out = exec(&mut cri, &id, "id -u; cat /proc/self/uid_map").await;
    let out: Vec<&str> = out.lines().collect();
    assert_eq!(out[0], "0");
    assert_eq!(words(out[1]), expected_uid_map);
    let out = exec(&mut cri, &id, "nc -l -p 80 & sleep 0.3; netstat -tln; kill %1").await;
    assert!(out.lines().any(|l| l.contains(":80 ")), "port 80 not bound by the container's root: {out}");

    // Export and commit write the files back with the IDs the container saw.
    let fs_tar = d.dir.path().join("userns-fs.tar");
    gantry(&d, &["export", "-o", &fs_tar.display().to_string(), &id]);
    let owners = tar_owners(&std::fs::read(&fs_tar).expect("exported tar"));
    assert_eq!(owners.get("written"), Some(&(0, 0)), "export: {owners:?}");
    assert_eq!(owners.get("bin/busybox"), Some(&(0, 0)), "export: {owners:?}");
    gantry(&d, &["commit", &id, "userns-commit:v1"]);
    let saved = d.dir.path().join("userns-commit.tar");
    gantry(&d, &["save", "-o", &saved.display().to_string(), "userns-commit:v1"]);
    let mut archive = tar::Archive::new(std::fs::File::open(&saved).expect("saved image"));
    let mut layer_owners = vec![];
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut bytes = vec![];
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read entry");
        let decoded = flate2::read::GzDecoder::new(&bytes[..]);
        let mut layer = vec![];
        if std::io::Read::read_to_end(&mut { decoded }, &mut layer).is_ok() {
            layer_owners.push(tar_owners(&layer));
        }
    }
    assert!(
        layer_owners.iter().any(|o| o.get("written") == Some(&(0, 0))),
        "no committed layer holds /written as 0:0: {layer_owners:?}"
    );

    remove_pod(&mut cri, &pod).await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&id), "a mount of container {id} is left");
}

#[tokio::test]
async fn node_mode_is_the_hosts_and_bad_user_namespaces_are_refused() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;

    // NODE: the host's user namespace.
    let mut config = pod_config(&d, "node-userns", NamespaceMode::Pod);
    namespace_options(&mut config).userns_options = Some(userns(NamespaceMode::Node, vec![], vec![]));
    let pod = run_pod_config(&mut cri, config).await.expect("run a pod in the node's user namespace");
    let id = create(&mut cri, &pod, container("app", &["cat", "/proc/self/uid_map"])).await.expect("create");
    start(&mut cri, &id).await;
    wait_exited(&mut cri, &id).await;
    let host_map = std::fs::read_to_string("/proc/self/uid_map").expect("our uid_map");
    let log = log_of(&pod, "app");
    let got = log.first().map_or("", |l| content(l));
    assert_eq!(words(got), words(host_map.lines().next().unwrap_or_default()), "{log:?}");

    // A container may not ask for another user namespace than its pod's.
    let mut ctr = container("other", &["true"]);
    let sc = ctr.linux.as_mut().and_then(|l| l.security_context.as_mut()).expect("security context");
    sc.namespace_options.as_mut().expect("namespace options").userns_options = Some(pod_mapping());
    let err = create(&mut cri, &pod, ctr).await.expect_err("a container asking for a user namespace of its own");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    remove_pod(&mut cri, &pod).await;

    let map = |container_id, host_id| IdMapping { container_id, host_id, length: LENGTH };
    let cases = [
        (userns(NamespaceMode::Pod, vec![map(0, 1000), map(0, 2000)], vec![map(0, 1000), map(0, 2000)]), "exactly one"),
        (userns(NamespaceMode::Pod, vec![map(1, 1000)], vec![map(1, 1000)]), "container ID 0"),
        (userns(NamespaceMode::Container, vec![], vec![]), "CONTAINER"),
        (userns(NamespaceMode::Target, vec![], vec![]), "TARGET"),
    ];
    for (i, (options, message)) in cases.into_iter().enumerate() {
        let mut config = pod_config(&d, &format!("bad-userns-{i}"), NamespaceMode::Pod);
        namespace_options(&mut config).userns_options = Some(options.clone());
        let err = run_pod_config(&mut cri, config).await.err().unwrap_or_else(|| panic!("{options:?} accepted"));
        assert_eq!(err.code(), Code::InvalidArgument, "{options:?}: {err}");
        assert!(err.message().contains(message), "{options:?}: {err}");
    }
    // A user namespace cannot own the node's network namespace.
    let mut config = pod_config(&d, "bad-userns-hostnet", NamespaceMode::Pod);
    let ns = namespace_options(&mut config);
    ns.userns_options = Some(pod_mapping());
    ns.network = NamespaceMode::Node as i32;
    let err = run_pod_config(&mut cri, config).await.expect_err("user namespace with host network accepted");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await.expect("list").into_inner();
    assert!(pods.items.is_empty(), "refused pods were kept: {:?}", pods.items);
}
