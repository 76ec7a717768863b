//! Container and pod stats from the real cgroups and writable layers.

use std::collections::HashMap;
use std::time::Duration;

use gantry_proto::cri::v1::{
    ContainerStatsFilter, ContainerStatsRequest, ListContainerStatsRequest, ListPodSandboxStatsRequest, NamespaceMode,
    PodSandboxStatsFilter, PodSandboxStatsRequest,
};
use gantry_tests::pods::*;
use gantry_tests::Daemon;
use tonic::Code;

#[tokio::test]
async fn stats_of_a_busy_container_rise() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "stats", NamespaceMode::Pod).await;
    let busy = create(
        &mut cri,
        &pod,
        container("busy", &["sh", "-c", "head -c 2000000 /dev/urandom > /written; while :; do :; done"]),
    )
    .await
    .expect("create");
    start(&mut cri, &busy).await;
    let idle = create(&mut cri, &pod, container("idle", &["sleep", "60"])).await.expect("create");
    start(&mut cri, &idle).await;

    let stats = |cri: &mut gantry_tests::Cri, id: String| {
        let mut runtime = cri.runtime.clone();
        async move {
            runtime
                .container_stats(ContainerStatsRequest { container_id: id })
                .await
                .expect("stats")
                .into_inner()
                .stats
                .expect("stats")
        }
    };
    let first = stats(&mut cri, busy.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = stats(&mut cri, busy.clone()).await;
    let cpu = |s: &gantry_proto::cri::v1::ContainerStats| {
        s.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds).unwrap().value
    };
    let used = cpu(&second) - cpu(&first);
    assert!(used > 300_000_000, "a spinning container used only {used} ns of CPU in 1.5 s");
    let rate = second.cpu.as_ref().and_then(|c| c.usage_nano_cores).unwrap().value;
    assert!(rate > 200_000_000, "usage_nano_cores {rate}");
    let memory = second.memory.as_ref().expect("memory");
    assert!(memory.working_set_bytes.as_ref().unwrap().value > 0, "{memory:?}");
    let layer = second.writable_layer.as_ref().expect("writable layer");
    assert!(layer.used_bytes.as_ref().unwrap().value >= 2_000_000, "{layer:?}");
    assert!(layer.inodes_used.as_ref().unwrap().value >= 1, "{layer:?}");
    assert_eq!(second.attributes.as_ref().unwrap().id, busy);
    // PSI from the container's cgroup2 directory, where the host has PSI
    // (v2, or this hybrid layout's cgroup2 tree, where the shim makes it).
    let psi_here = ["/sys/fs/cgroup/cpu.pressure", "/sys/fs/cgroup/unified/cpu.pressure"]
        .iter()
        .any(|f| std::path::Path::new(f).exists());
    if psi_here {
        let cpu_psi = second.cpu.as_ref().and_then(|c| c.psi).expect("cpu PSI");
        assert!(cpu_psi.some.is_some(), "{cpu_psi:?}");
        assert!(second.memory.as_ref().and_then(|m| m.psi).and_then(|p| p.full).is_some(), "memory PSI");
        assert!(second.io.as_ref().and_then(|io| io.psi).is_some(), "io PSI: {:?}", second.io);
    }

    // The idle container, beside it, uses next to nothing.
    stats(&mut cri, idle.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rate = stats(&mut cri, idle.clone()).await.cpu.unwrap().usage_nano_cores.unwrap().value;
    assert!(idle_rate < 100_000_000, "idle container at {idle_rate} nanocores");

    // Listing: by pod, by ID, by label.
    let list = cri
        .runtime
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() }),
        })
        .await
        .expect("list")
        .into_inner()
        .stats;
    assert_eq!(list.len(), 2);
    let list = cri
        .runtime
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter { id: idle.clone(), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(list.iter().map(|s| s.attributes.as_ref().unwrap().id.clone()).collect::<Vec<_>>(), [idle.as_str()]);

    // The pod: both containers, and CPU at least the busy one's.
    let pod_stats = cri
        .runtime
        .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod.id.clone() })
        .await
        .expect("pod stats")
        .into_inner()
        .stats
        .unwrap();
    let linux = pod_stats.linux.as_ref().unwrap();
    assert_eq!(linux.containers.len(), 2);
    assert!(linux.cpu.as_ref().unwrap().usage_core_nano_seconds.as_ref().unwrap().value >= cpu(&second));
    assert!(linux.process.as_ref().unwrap().process_count.as_ref().unwrap().value >= 2);
    assert!(linux.network.is_some(), "the pod's network namespace is read");
    if psi_here {
        assert!(linux.cpu.as_ref().and_then(|c| c.psi).is_some(), "the pod cgroup's PSI");
        assert!(linux.io.as_ref().and_then(|io| io.psi).is_some(), "the pod cgroup's io PSI");
    }
    let by_label = cri
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                label_selector: HashMap::from([("app".to_string(), "stats".to_string())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(by_label.len(), 1);

    let err = cri.runtime.container_stats(ContainerStatsRequest { container_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err =
        cri.runtime.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    remove_pod(&mut cri, &pod).await;
}
