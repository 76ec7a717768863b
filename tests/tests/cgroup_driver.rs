//! The cgroup driver on this (hybrid, cgroupfs) host: what RuntimeConfig
//! reports, a systemd slice refused as a cgroupfs parent, and the systemd
//! driver refused where the host is not pure cgroup v2. The systemd driver
//! itself runs under a real systemd on the systemd test node (tests/systemd).

use gantry_proto::cri::v1::{CgroupDriver, NamespaceMode, RuntimeConfigRequest};
use gantry_tests::pods::*;
use gantry_tests::Daemon;
use tonic::Code;

#[tokio::test]
async fn cgroupfs_is_reported_and_a_slice_parent_is_refused() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let config = cri.runtime.runtime_config(RuntimeConfigRequest {}).await.expect("runtime config").into_inner();
    assert_eq!(config.linux.map(|l| l.cgroup_driver), Some(CgroupDriver::Cgroupfs as i32));

    let mut pod = pod_config(&d, "sliced", NamespaceMode::Container);
    if let Some(linux) = pod.linux.as_mut() {
        linux.cgroup_parent = "kubepods-burstable-pod1234.slice".into();
    }
    let err = run_pod_config(&mut cri, pod).await.expect_err("a slice under cgroupfs");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("kubepods-burstable-pod1234.slice"), "{err}");
    assert!(err.message().contains("cgroup_driver"), "the message says what to change: {err}");
    assert_eq!(count(&d.state.join("sandboxes")), 0, "nothing made");
}

#[test]
fn the_systemd_driver_needs_a_pure_cgroup_v2_host() {
    let unified = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    if unified {
        eprintln!(
            "this host is pure cgroup v2: the systemd driver is checked on the systemd test node (tests/systemd)"
        );
        return;
    }
    let d = Daemon::prepare("cgroup_driver = \"systemd\"\n");
    let out = d.run_to_exit();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cgroup_driver = \"systemd\" needs a pure cgroup v2 host"), "{stderr}");

    let d = Daemon::prepare("cgroup_driver = \"upstart\"\n");
    let out = d.run_to_exit();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cgroup_driver") && stderr.contains("upstart"), "{stderr}");
}
