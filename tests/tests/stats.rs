//! Container and pod stats from the real cgroups and writable layers.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_proto::cri::v1::{
    ContainerStatsFilter, ContainerStatsRequest, LinuxContainerResources, ListContainerStatsRequest,
    ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest, Metric, MetricDescriptor,
    MetricType, NamespaceMode, PodSandboxMetrics, PodSandboxStatsFilter, PodSandboxStatsRequest,
    PodSandboxStatusRequest, StreamPodSandboxMetricsRequest,
};
use gantry_tests::network::TestNetwork;
use gantry_tests::pods::*;
use gantry_tests::{Cri, Daemon};
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

async fn pod_metrics(cri: &mut Cri) -> Vec<PodSandboxMetrics> {
    cri.runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics
}

/// The value of metric `name` whose labels (by the descriptor's keys) include `labels`.
fn value_of(
    metrics: &[Metric],
    keys: &HashMap<String, Vec<String>>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<u64> {
    let k = &keys[name];
    metrics
        .iter()
        .filter(|m| m.name == name)
        .find(|m| {
            labels.iter().all(|(key, want)| {
                k.iter().position(|x| x == key).is_some_and(|i| m.label_values.get(i).is_some_and(|v| v == want))
            })
        })
        .and_then(|m| m.value.as_ref())
        .map(|v| v.value)
}

/// A pod on a CNI network with a CPU burner, a memory holder and a
/// container whose children the OOM killer kills: ListMetricDescriptors and
/// ListPodSandboxMetrics (and its stream form) through the CRI client.
#[tokio::test]
async fn pod_metrics_name_label_and_count_what_the_containers_do() {
    let net = TestNetwork::new();
    net.install(net.standard_plugins());
    let d = Daemon::start(&net.gantryd_config());
    let mut cri = setup(&d).await;

    // No pods yet: no metrics, but the descriptors already.
    assert!(pod_metrics(&mut cri).await.is_empty());
    let descriptors: Vec<MetricDescriptor> = cri
        .runtime
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let keys: HashMap<String, Vec<String>> =
        descriptors.iter().map(|d| (d.name.clone(), d.label_keys.clone())).collect();
    assert_eq!(keys.len(), descriptors.len(), "a name described twice");
    for d in &descriptors {
        assert!(!d.help.is_empty(), "{d:?}");
        for k in ["container", "id", "image", "name", "namespace", "pod"] {
            assert!(d.label_keys.iter().any(|x| x == k), "{} lacks label {k}", d.name);
        }
    }
    assert_eq!(keys["container_network_receive_bytes_total"].last().map(String::as_str), Some("interface"));
    assert_eq!(keys["container_fs_usage_bytes"].last().map(String::as_str), Some("device"));
    let memory_v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.stat").exists();
    assert_eq!(keys.contains_key("container_memory_failcnt"), memory_v1, "failcnt is v1's only");

    let pod = run_pod(&mut cri, &d, "metrics", NamespaceMode::Pod).await;
    let limited = |name: &str, command: &[&str], memory: i64| {
        let mut c = container(name, command);
        if let Some(linux) = c.linux.as_mut() {
            linux.resources = Some(LinuxContainerResources {
                memory_limit_in_bytes: memory,
                cpu_period: 100_000,
                cpu_quota: 200_000,
                ..Default::default()
            });
        }
        c
    };
    let burner = create(&mut cri, &pod, limited("burner", &["sh", "-c", "while :; do :; done"], 256 << 20))
        .await
        .expect("create burner");
    start(&mut cri, &burner).await;
    // 24 MB held in a shell variable (a loop: sh would exec a last plain command).
    let holder = create(
        &mut cri,
        &pod,
        limited(
            "holder",
            &["sh", "-c", "x=$(head -c 24000000 /dev/zero | tr '\\0' a); while sleep 1; do :; done"],
            256 << 20,
        ),
    )
    .await
    .expect("create holder");
    start(&mut cri, &holder).await;
    // Children that outgrow a 32 MB limit, killed by the OOM killer; the shell lives on.
    let oom = create(
        &mut cri,
        &pod,
        limited(
            "oom",
            &["sh", "-c", "while :; do (x=$(head -c 100000000 /dev/zero | tr '\\0' a)); sleep 1; done"],
            32 << 20,
        ),
    )
    .await
    .expect("create oom");
    start(&mut cri, &oom).await;

    // Some traffic to the pod: TCP connection attempts to its IP.
    let ip = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: false })
        .await
        .expect("pod status")
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .expect("pod IP");
    for _ in 0..3 {
        let _ = std::net::TcpStream::connect_timeout(&format!("{ip}:9").parse().expect("addr"), Duration::from_secs(1));
    }

    // Whole CPU seconds: wait until the burner has used one, the holder
    // holds its memory and the OOM killer has struck.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pods = loop {
        let pods = pod_metrics(&mut cri).await;
        let of = |id: &str| {
            pods.iter()
                .flat_map(|p| &p.container_metrics)
                .find(|c| c.container_id == id)
                .map(|c| c.metrics.clone())
                .unwrap_or_default()
        };
        let cpu = value_of(&of(&burner), &keys, "container_cpu_usage_seconds_total", &[]).unwrap_or(0);
        let held = value_of(&of(&holder), &keys, "container_memory_working_set_bytes", &[]).unwrap_or(0);
        let ooms = value_of(&of(&oom), &keys, "container_oom_events_total", &[]).unwrap_or(0);
        if cpu >= 1 && held >= 24_000_000 && ooms >= 1 {
            break pods;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s: burner {cpu} CPU s, holder {held} B, {ooms} OOM kills; holder: {:?}; log {:?}",
            of(&holder).iter().map(|m| (&m.name, m.value.as_ref().map(|v| v.value))).collect::<Vec<_>>(),
            log_of(&pod, "holder")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(pods.len(), 1);
    let p = &pods[0];
    assert_eq!(p.pod_sandbox_id, pod.id);
    let mut ids: Vec<&str> = p.container_metrics.iter().map(|c| c.container_id.as_str()).collect();
    ids.sort();
    let mut want = vec![burner.as_str(), holder.as_str(), oom.as_str()];
    want.sort();
    assert_eq!(ids, want);

    // Every metric has a descriptor, its label values one per key, a
    // timestamp; every descriptor is answered.
    let all: Vec<&Metric> = p.metrics.iter().chain(p.container_metrics.iter().flat_map(|c| &c.metrics)).collect();
    let mut seen = HashSet::new();
    for m in &all {
        let k = keys.get(&m.name).unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(m.label_values.len(), k.len(), "{m:?}");
        assert!(m.timestamp > 0 && m.value.is_some(), "{m:?}");
        seen.insert(m.name.clone());
    }
    let described: HashSet<String> = keys.keys().cloned().collect();
    assert_eq!(seen, described, "described but not answered, or the reverse");

    // Types as cAdvisor's.
    let type_of = |name: &str| all.iter().find(|m| m.name == name).map(|m| m.metric_type).expect(name);
    for counter in
        ["container_cpu_usage_seconds_total", "container_oom_events_total", "container_network_receive_bytes_total"]
    {
        assert_eq!(type_of(counter), MetricType::Counter as i32, "{counter}");
    }
    for gauge in ["container_memory_working_set_bytes", "container_processes", "container_fs_usage_bytes"] {
        assert_eq!(type_of(gauge), MetricType::Gauge as i32, "{gauge}");
    }

    // Labels: the container's name, ID, pod, namespace, image.
    let burner_metrics = &p.container_metrics.iter().find(|c| c.container_id == burner).expect("burner").metrics;
    let labels = [("container", "burner"), ("name", burner.as_str()), ("pod", "metrics"), ("namespace", "default")];
    assert!(value_of(burner_metrics, &keys, "container_cpu_usage_seconds_total", &labels).is_some_and(|v| v >= 1));
    assert!(value_of(burner_metrics, &keys, "container_cpu_usage_seconds_total", &[("image", &busybox())]).is_some());
    let user = value_of(burner_metrics, &keys, "container_cpu_user_seconds_total", &labels).expect("user");
    let system = value_of(burner_metrics, &keys, "container_cpu_system_seconds_total", &labels).expect("system");
    let total = value_of(burner_metrics, &keys, "container_cpu_usage_seconds_total", &labels).expect("total");
    assert!(user + system <= total + 2, "user {user} + system {system} vs {total}");
    assert!(value_of(burner_metrics, &keys, "container_processes", &[]).is_some_and(|n| n >= 1));
    assert!(value_of(burner_metrics, &keys, "container_threads", &[]).is_some_and(|n| n >= 1));
    assert_eq!(value_of(burner_metrics, &keys, "container_spec_memory_limit_bytes", &[]), Some(256 << 20));
    assert_eq!(value_of(burner_metrics, &keys, "container_spec_cpu_quota", &[]), Some(200_000));
    assert_eq!(value_of(burner_metrics, &keys, "container_spec_cpu_period", &[]), Some(100_000));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    let last_seen = value_of(burner_metrics, &keys, "container_last_seen", &[]).expect("last seen");
    assert!(last_seen + 60 >= now && last_seen <= now, "{last_seen} vs {now}");
    assert!(value_of(burner_metrics, &keys, "container_fs_limit_bytes", &[]).is_some_and(|b| b > 0));

    let holder_metrics = &p.container_metrics.iter().find(|c| c.container_id == holder).expect("holder").metrics;
    let usage = value_of(holder_metrics, &keys, "container_memory_usage_bytes", &[]).expect("usage");
    let rss = value_of(holder_metrics, &keys, "container_memory_rss", &[]).expect("rss");
    assert!(usage >= 24_000_000 && rss >= 24_000_000, "usage {usage}, rss {rss}");
    assert!(value_of(holder_metrics, &keys, "container_memory_cache", &[]).is_some());
    let pgfaults = value_of(holder_metrics, &keys, "container_memory_failures_total", &[("failure_type", "pgfault")]);
    assert!(pgfaults.is_some_and(|n| n > 0), "{pgfaults:?}");
    assert_eq!(value_of(holder_metrics, &keys, "container_oom_events_total", &[]), Some(0));
    if memory_v1 {
        let oom_metrics = &p.container_metrics.iter().find(|c| c.container_id == oom).expect("oom").metrics;
        // Present; it may stay 0: with memsw limited as memory (the shim
        // sets both), the kernel counts the failed charge in memsw.failcnt.
        assert!(value_of(oom_metrics, &keys, "container_memory_failcnt", &[]).is_some());
    }

    // The pod's network: eth0 from CNI (lo left out), traffic counted.
    let eth0 = [("interface", "eth0"), ("pod", "metrics"), ("name", pod.id.as_str()), ("container", "")];
    let rx = value_of(&p.metrics, &keys, "container_network_receive_packets_total", &eth0).expect("eth0 rx packets");
    let tx = value_of(&p.metrics, &keys, "container_network_transmit_bytes_total", &eth0).expect("eth0 tx bytes");
    assert!(rx >= 3 && tx > 0, "rx packets {rx}, tx bytes {tx}");
    assert!(value_of(&p.metrics, &keys, "container_network_receive_bytes_total", &[("interface", "lo")]).is_none());

    // The stream form: the same pods and containers.
    let mut stream = cri
        .runtime
        .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
        .await
        .expect("StreamPodSandboxMetrics")
        .into_inner();
    let mut streamed = vec![];
    while let Some(chunk) = stream.next().await {
        streamed.extend(chunk.expect("chunk").pod_sandbox_metrics);
    }
    assert_eq!(streamed.len(), 1);
    assert_eq!(streamed[0].pod_sandbox_id, pod.id);
    assert_eq!(streamed[0].container_metrics.len(), 3);

    // A stopped pod is not reported; removed, nothing is.
    cri.runtime
        .stop_pod_sandbox(gantry_proto::cri::v1::StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() })
        .await
        .expect("stop pod");
    assert!(pod_metrics(&mut cri).await.is_empty());
    remove_pod(&mut cri, &pod).await;
    assert!(pod_metrics(&mut cri).await.is_empty());
}
