//! Pod networking through CNI: each test has its own bridge, subnet and
//! host-local data dir (`gantry_tests::network::TestNetwork`), fenced off from
//! the host's other interfaces, and only talks to pod IPs on it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{
    ContainerState, ContainerStatusRequest, ListPodSandboxRequest, NamespaceMode, NetworkConfig, PodSandboxConfig,
    PodSandboxStatusRequest, PortMapping, Protocol, RemovePodSandboxRequest, RuntimeConfig, StatusRequest,
    StopPodSandboxRequest, UpdateRuntimeConfigRequest,
};
use gantry_tests::network::TestNetwork;
use gantry_tests::pods::{self, remove_pod, setup, Pod};
use gantry_tests::{Cri, Daemon};

/// A pod as `pods::run_pod` makes it, with port mappings.
fn pod_config(d: &Daemon, name: &str, ports: Vec<PortMapping>) -> PodSandboxConfig {
    let mut config = pods::pod_config(d, name, NamespaceMode::Pod);
    config.port_mappings = ports;
    config
}

async fn try_run_pod(cri: &mut Cri, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    pods::run_pod_config(cri, config).await.map(|p| p.id)
}

async fn run_pod(cri: &mut Cri, d: &Daemon, name: &str, ports: Vec<PortMapping>) -> Pod {
    pods::run_pod_config(cri, pod_config(d, name, ports))
        .await
        .unwrap_or_else(|e| panic!("run pod {name}: {e}\n{}", d.log_text()))
}

async fn pod_ips(cri: &mut Cri, pod: &Pod) -> Vec<String> {
    let status = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: false })
        .await
        .expect("pod status")
        .into_inner()
        .status
        .expect("status");
    let net = status.network.expect("network status");
    let mut ips = vec![net.ip];
    ips.extend(net.additional_ips.into_iter().map(|i| i.ip));
    ips.retain(|i| !i.is_empty());
    ips
}

async fn run_container(cri: &mut Cri, pod: &Pod, name: &str, command: &[&str]) -> String {
    let id = pods::create(cri, pod, pods::container(name, command)).await.expect("create container");
    pods::start(cri, &id).await;
    id
}

async fn wait_exit_code(cri: &mut Cri, id: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cri
            .runtime
            .container_status(ContainerStatusRequest { container_id: id.into(), verbose: false })
            .await
            .expect("container status")
            .into_inner()
            .status
            .expect("status");
        if s.state == ContainerState::ContainerExited as i32 {
            return s.exit_code;
        }
        assert!(Instant::now() < deadline, "container {id} did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_text(pod: &Pod, name: &str) -> String {
    std::fs::read_to_string(pod.logs.join(format!("{name}.log"))).unwrap_or_default()
}

async fn stop_pod(cri: &mut Cri, pod: &Pod) {
    cri.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await.expect("stop pod");
}

async fn network_ready(cri: &mut Cri) -> gantry_proto::cri::v1::RuntimeCondition {
    let status = cri.runtime.status(StatusRequest { verbose: false }).await.expect("status").into_inner();
    status.status.expect("status").conditions.into_iter().find(|c| c.r#type == "NetworkReady").expect("NetworkReady")
}

/// An HTTP GET of `path` on `ip:port` from the test process.
fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<String> {
    let addr = std::net::SocketAddr::new(ip.parse().map_err(std::io::Error::other)?, port);
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// nat-table rules that mention `needle` (portmap's DNAT for a host port).
fn nat_rules_with(needle: &str) -> Vec<String> {
    let out = std::process::Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().expect("iptables -S");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// Processes whose command line names `marker`, other than `except`.
fn processes_naming(marker: &str, except: Option<u32>) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if Some(pid) == except {
            continue;
        }
        let cmdline =
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Processes naming `marker`, waiting up to 5 s for them to go: a shim
/// gantryd told to shut down exits on its own, just after the call returns.
fn processes_left(marker: &str, except: Option<u32>) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = processes_naming(marker, except);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn random_port() -> i32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    30000 + (nanos % 2000) as i32
}

#[tokio::test]
async fn pods_get_ips_and_reach_each_other_and_the_host_reaches_them() {
    let net = TestNetwork::new();
    net.install(net.standard_plugins());
    let d = Daemon::start(&net.gantryd_config());
    let mut cri = setup(&d).await;
    let host_port = random_port();
    let ports = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: "127.0.0.1".into(),
    }];
    let a = run_pod(&mut cri, &d, "server", ports).await;
    let ips = pod_ips(&mut cri, &a).await;
    assert_eq!(ips.len(), 1, "{ips:?}");
    let a_ip = ips[0].clone();
    assert!(a_ip.starts_with(&format!("{}.", net.prefix)), "{a_ip} not in {}", net.subnet());
    assert_eq!(net.allocated_ips(), vec![a_ip.clone()]);
    assert_eq!(net.bridge_ports().len(), 1, "one veth on {}", net.bridge);
    // portmap got the pod's port mapping (runtimeConfig.portMappings).
    assert!(!nat_rules_with(&format!("--dport {host_port}")).is_empty(), "no DNAT rule for host port {host_port}");

    // httpd serves the pod's /etc (hostname holds "server-host").
    run_container(&mut cri, &a, "httpd", &["httpd", "-f", "-p", "8080", "-h", "/etc"]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        match http_get(&a_ip, 8080, "/hostname") {
            Ok(body) => break body,
            Err(e) => assert!(Instant::now() < deadline, "host cannot reach {a_ip}:8080: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("server-host"), "{body}");

    let b = run_pod(&mut cri, &d, "client", vec![]).await;
    let b_ip = pod_ips(&mut cri, &b).await;
    assert_eq!(b_ip.len(), 1);
    assert_ne!(b_ip[0], a_ip);
    // nc, not wget: the static busybox's wget crashes in a container (glibc NSS).
    let get = format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {a_ip} 8080");
    let client = run_container(&mut cri, &b, "get", &["sh", "-c", &get]).await;
    assert_eq!(wait_exit_code(&mut cri, &client).await, 0, "pod B cannot reach pod A: {}", log_text(&b, "get"));
    assert!(log_text(&b, "get").contains("server-host"), "{}", log_text(&b, "get"));
    // No default route out: the pod network reaches nothing but the bridge's subnet.
    let route = run_container(&mut cri, &b, "route", &["ip", "route"]).await;
    assert_eq!(wait_exit_code(&mut cri, &route).await, 0);
    let routes = log_text(&b, "route");
    assert!(!routes.contains("default"), "{routes}");

    remove_pod(&mut cri, &b).await;
    remove_pod(&mut cri, &a).await;
    assert!(net.allocated_ips().is_empty(), "IPs released: {:?}", net.allocated_ips());
    assert!(net.bridge_ports().is_empty(), "veths removed: {:?}", net.bridge_ports());
    assert!(nat_rules_with(&format!("--dport {host_port}")).is_empty(), "portmap rules removed");
}

#[tokio::test]
async fn a_failing_plugin_fails_the_pod_and_leaves_nothing_behind() {
    let net = TestNetwork::new();
    let record = net.dir.path().join("calls");
    std::fs::create_dir_all(&record).expect("record dir");
    // Records what it was given, then refuses ADD with a CNI error object.
    let script = format!(
        "#!/bin/sh\ncat > {dir}/stdin.$CNI_COMMAND\nenv | grep ^CNI_ > {dir}/env.$CNI_COMMAND\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then\n  \
         echo '{{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"gantry test plugin refuses\",\"details\":\"on purpose\"}}'\n  \
         exit 1\nfi\n",
        dir = record.display()
    );
    net.add_plugin("gantry-test-refuse", &script);
    net.install(vec![
        net.bridge_plugin(),
        serde_json::json!({"type": "gantry-test-refuse", "capabilities": {"portMappings": true}}),
    ]);
    let d = Daemon::start(&net.gantryd_config());
    let mut cri = setup(&d).await;
    let ports = vec![PortMapping {
        protocol: Protocol::Udp as i32,
        container_port: 53,
        host_port: 5353,
        host_ip: String::new(),
    }];
    let err = try_run_pod(&mut cri, pod_config(&d, "refused", ports)).await.expect_err("the plugin refuses ADD");
    assert!(
        err.message().contains("gantry-test-refuse") && err.message().contains("gantry test plugin refuses"),
        "{err:?}"
    );

    // What the plugin got: libcni's injected config and environment.
    let stdin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record.join("stdin.ADD")).expect("ADD stdin")).expect("stdin JSON");
    assert_eq!(stdin["name"], net.name.as_str());
    assert_eq!(stdin["cniVersion"], "1.0.0");
    let prev_ip = stdin["prevResult"]["ips"][0]["address"].as_str().expect("bridge's result as prevResult");
    assert!(prev_ip.starts_with(&format!("{}.", net.prefix)), "{prev_ip}");
    assert_eq!(
        stdin["runtimeConfig"]["portMappings"],
        serde_json::json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}])
    );
    let env = std::fs::read_to_string(record.join("env.ADD")).expect("ADD env");
    for want in ["CNI_IFNAME=eth0", "K8S_POD_NAMESPACE=default", "K8S_POD_NAME=refused", "K8S_POD_UID=uid-refused"] {
        assert!(env.contains(want), "{want} not in {env}");
    }
    assert!(env.contains("CNI_NETNS=/proc/"), "{env}");
    // The failed ADD was undone by DEL, the failed plugin included.
    assert!(record.join("stdin.DEL").exists(), "DEL was not run");

    assert!(net.allocated_ips().is_empty(), "IP left allocated: {:?}", net.allocated_ips());
    assert!(net.bridge_ports().is_empty(), "veth left on the bridge: {:?}", net.bridge_ports());
    let marker = d.dir.path().display().to_string();
    let left = processes_left(&marker, d.pid());
    assert!(left.is_empty(), "processes left: {left:?}");
    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.expect("list").into_inner().items;
    assert!(pods.is_empty(), "{pods:?}");
    let sandboxes: Vec<_> = std::fs::read_dir(d.state.join("sandboxes")).expect("sandboxes dir").flatten().collect();
    assert!(sandboxes.is_empty(), "sandbox dirs left");

    // A plugin type with no binary: the same, named.
    net.install(vec![net.bridge_plugin(), serde_json::json!({"type": "gantry-test-no-such-plugin"})]);
    let err = try_run_pod(&mut cri, pod_config(&d, "missing", vec![])).await.expect_err("no such plugin");
    assert!(err.message().contains("gantry-test-no-such-plugin"), "{err:?}");
    assert!(net.allocated_ips().is_empty() && net.bridge_ports().is_empty());
    let left = processes_left(&marker, d.pid());
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[tokio::test]
async fn network_ready_follows_the_config_dir_and_pods_run_without_one() {
    let net = TestNetwork::new();
    let d = Daemon::start(&net.gantryd_config());
    let mut cri = setup(&d).await;
    let c = network_ready(&mut cri).await;
    assert!(!c.status, "{c:?}");
    assert_eq!(c.reason, "NetworkPluginNotReady");
    assert!(c.message.contains(&net.conf_dir.display().to_string()), "{c:?}");

    // No CNI config: the pod runs with loopback only, and has no IP.
    let lonely = run_pod(&mut cri, &d, "lonely", vec![]).await;
    assert!(pod_ips(&mut cri, &lonely).await.is_empty());
    let lo = run_container(&mut cri, &lonely, "lo", &["ip", "-o", "link"]).await;
    assert_eq!(wait_exit_code(&mut cri, &lo).await, 0);
    let links = log_text(&lonely, "lo");
    assert!(links.contains("lo:") && !links.contains("eth0"), "{links}");
    remove_pod(&mut cri, &lonely).await;

    // Picked up without a restart.
    net.install(net.standard_plugins());
    let c = network_ready(&mut cri).await;
    assert!(c.status, "{c:?}");
    // Host-network pods get no CNI.
    let mut config = pod_config(&d, "hostnet", vec![]);
    if let Some(ns) =
        config.linux.as_mut().and_then(|l| l.security_context.as_mut()).and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Node as i32;
    }
    let id = try_run_pod(&mut cri, config).await.expect("host-network pod");
    let hostnet = Pod { id, logs: PathBuf::new() };
    assert!(pod_ips(&mut cri, &hostnet).await.is_empty());
    assert!(net.allocated_ips().is_empty() && !net.ipam_dir.join(&net.name).exists());
    remove_pod(&mut cri, &hostnet).await;
    net.uninstall();
    std::fs::write(net.conf_dir.join("00-broken.conflist"), "{").expect("write");
    assert!(!network_ready(&mut cri).await.status, "an invalid config is no config");

    // kubelet's pod CIDR is accepted and kept.
    cri.runtime
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig { pod_cidr: "10.244.1.0/24".into() }),
            }),
        })
        .await
        .expect("UpdateRuntimeConfig");
    let status = cri.runtime.status(StatusRequest { verbose: true }).await.expect("status").into_inner();
    assert_eq!(status.info.get("podCIDR").map(String::as_str), Some("10.244.1.0/24"));
}

/// The lines the recorder plugin wrote: `COMMAND POD_NAME NETNS` per call.
fn calls(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

async fn pause_pid(cri: &mut Cri, pod: &Pod) -> i32 {
    pods::pod_info(cri, &pod.id).await["pid"].as_i64().expect("pause pid") as i32
}

#[tokio::test]
async fn stop_releases_the_ip_once_also_after_a_restart() {
    let net = TestNetwork::new();
    let log = net.dir.path().join("calls");
    // First in the list, so its (empty) result does not matter: it records each call.
    let recorder = format!(
        "#!/bin/sh\ncat >/dev/null\npod=$(echo \"$CNI_ARGS\" | tr ';' '\\n' | sed -n 's/^K8S_POD_NAME=//p')\n\
         echo \"$CNI_COMMAND $pod ${{CNI_NETNS:-none}}\" >> {log}\n\
         [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\"}}'\nexit 0\n",
        log = log.display()
    );
    net.add_plugin("gantry-test-recorder", &recorder);
    let mut plugins = vec![serde_json::json!({"type": "gantry-test-recorder"})];
    plugins.extend(net.standard_plugins());
    net.install(plugins.clone());
    let mut d = Daemon::start(&net.gantryd_config());
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "stopper", vec![]).await;
    let ip = pod_ips(&mut cri, &pod).await;
    assert_eq!(net.allocated_ips(), ip);
    stop_pod(&mut cri, &pod).await;
    assert!(net.allocated_ips().is_empty(), "DEL released the IP");
    assert!(net.bridge_ports().is_empty());
    // A second stop does not run DEL again, and remove after stop works.
    stop_pod(&mut cri, &pod).await;
    remove_pod(&mut cri, &pod).await;
    let c = calls(&log);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c[0].starts_with("ADD stopper /proc/") && c[1].starts_with("DEL stopper /proc/"), "{c:?}");
    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.expect("list").into_inner().items;
    assert!(pods.is_empty());

    // A gantryd crash, and the config gone: stop still runs DEL with what ADD was given.
    let pod = run_pod(&mut cri, &d, "survivor", vec![]).await;
    let ip = pod_ips(&mut cri, &pod).await;
    assert_eq!(net.allocated_ips(), ip);
    d.kill9();
    net.uninstall();
    d.start_again();
    let mut cri = d.connect().await;
    assert_eq!(pod_ips(&mut cri, &pod).await, ip, "IPs survive a restart");
    stop_pod(&mut cri, &pod).await;
    assert!(net.allocated_ips().is_empty(), "DEL after the restart released the IP");
    assert!(net.bridge_ports().is_empty());
    remove_pod(&mut cri, &pod).await;
    assert!(calls(&log).last().is_some_and(|l| l.starts_with("DEL survivor /proc/")), "{:?}", calls(&log));

    // The pause process died: DEL runs without the netns and still releases the IP.
    net.install(plugins);
    let pod = run_pod(&mut cri, &d, "orphan", vec![]).await;
    assert_eq!(net.allocated_ips().len(), 1);
    let pid = pause_pid(&mut cri, &pod).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill pause");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}/ns/net")).exists() {
        assert!(Instant::now() < deadline, "pause process {pid} did not go");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_pod(&mut cri, &pod).await;
    assert_eq!(calls(&log).last().map(String::as_str), Some("DEL orphan none"));
    assert!(net.allocated_ips().is_empty(), "{:?}", net.allocated_ips());
    remove_pod(&mut cri, &pod).await;

    // Remove without a stop tears the network down too.
    let pod = run_pod(&mut cri, &d, "removed", vec![]).await;
    assert_eq!(net.allocated_ips().len(), 1);
    cri.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await.expect("rm");
    assert!(net.allocated_ips().is_empty());
    assert!(calls(&log).last().is_some_and(|l| l.starts_with("DEL removed /proc/")), "{:?}", calls(&log));
}
