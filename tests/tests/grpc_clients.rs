//! gantryd as clients not written in Rust see it: a Python `grpcio` client
//! (gRPC C-core, which names the socket path as `:authority`) runs a pod
//! end to end, and an expired client deadline ends in DEADLINE_EXCEEDED.

use std::time::{Duration, Instant};

use gantry_proto::cri::v1::{ImageSpec, PullImageRequest, VersionRequest};
use gantry_tests::{pods, Daemon};
use prost::Message;

/// A registry that accepts connections and never answers: a pull from it
/// runs until the client gives up.
fn silent_registry() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, format!("{addr}"))
}

/// One gRPC call over a bare HTTP/2 client, which (unlike tonic's and
/// C-core's clients) keeps no deadline of its own: the grpc-status it gets is
/// the server's.
async fn raw_grpc_call(socket: &std::path::Path, path: &str, timeout: &str, message: Vec<u8>) -> (String, String) {
    let io = tokio::net::UnixStream::connect(socket).await.expect("connect");
    let (client, connection) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    body.send_data(framed.into(), true).expect("send body");
    let response = response.await.expect("response");
    let headers = response.headers().clone();
    let mut incoming = response.into_body();
    while let Some(chunk) = incoming.data().await {
        chunk.expect("data");
    }
    // A trailers-only answer carries the status in the headers.
    let trailers = incoming.trailers().await.expect("trailers").unwrap_or(headers);
    let get = |k: &str| trailers.get(k).map(|v| String::from_utf8_lossy(v.as_bytes()).to_string()).unwrap_or_default();
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn an_expired_client_deadline_is_deadline_exceeded() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let (_listener, host) = silent_registry();
    let pull = PullImageRequest {
        image: Some(ImageSpec { image: format!("{host}/never/answers:1"), ..Default::default() }),
        ..Default::default()
    };
    let started = Instant::now();
    let (code, message) =
        raw_grpc_call(&d.socket, "/runtime.v1.ImageService/PullImage", "800m", pull.encode_to_vec()).await;
    assert_eq!(code, (tonic::Code::DeadlineExceeded as i32).to_string(), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered at the deadline, not later");
    // The daemon is fine afterwards; a call without a deadline, and one whose
    // deadline is not reached, both work.
    cri.runtime.version(VersionRequest::default()).await.expect("version");
    let mut version = tonic::Request::new(VersionRequest::default());
    version.set_timeout(Duration::from_secs(30));
    cri.runtime.version(version).await.expect("version with a deadline");
    let (code, _) = raw_grpc_call(&d.socket, "/runtime.v1.RuntimeService/Version", "30S", vec![]).await;
    assert_eq!(code, "0");
}

#[tokio::test]
async fn a_python_grpcio_client_pulls_and_runs_a_pod() {
    let python = std::env::var("GANTRY_TEST_PYTHON")
        .expect("GANTRY_TEST_PYTHON is not set: run the integration tests through tests/run.sh");
    let d = Daemon::start("");
    let (_listener, silent) = silent_registry();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
    let logs = d.dir.path().join("python-pod-logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let out = tokio::process::Command::new(&python)
        .arg(repo.join("tests/python/cri_client.py"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--proto-dir")
        .arg(repo.join("proto/cri"))
        .arg("--image")
        .arg(pods::busybox())
        .arg("--silent-registry")
        .arg(&silent)
        .arg("--cgroup-parent")
        .arg(gantry_tests::cgroup_parent(&d))
        .arg("--log-dir")
        .arg(&logs)
        .output()
        .await
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client failed:\n{stdout}\n{stderr}\ngantryd:\n{}", d.log_text());
    // Each step prints one line; the script exits non-zero on the first failure.
    for step in
        ["version gantry", "pulled", "pod ready", "container running", "exec hello", "deadline exceeded", "removed"]
    {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A client that opens 1000 GetContainerEvents streams (10 connections of
/// 100) and never reads a byte of them, while a pod's lifecycle sends
/// events to every one: other clients are still served promptly, gantryd's
/// memory stays bounded, and all is well once that client goes away.
#[tokio::test]
async fn a_client_with_1000_streams_it_never_reads_does_not_starve_others() {
    let d = Daemon::start("");
    let pid = d.pid().expect("gantryd pid");
    let mut cri = pods::setup(&d).await;
    let before = rss_kib(pid);

    let (mut hoarder, mut connections) = (vec![], vec![]);
    let mut opened = 0;
    for _ in 0..10 {
        let io = tokio::net::UnixStream::connect(&d.socket).await.expect("connect");
        let (client, connection) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
        tokio::spawn(connection);
        for _ in 0..100 {
            // A server may cap concurrent streams per connection: the
            // streams beyond its cap are never opened, which is fine too.
            let Ok(Ok(mut ready)) = tokio::time::timeout(Duration::from_millis(500), client.clone().ready()).await
            else {
                break;
            };
            let request = http::Request::post("http://localhost/runtime.v1.RuntimeService/GetContainerEvents")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let (response, mut body) = ready.send_request(request, false).expect("send");
            body.send_data(vec![0u8, 0, 0, 0, 0].into(), true).expect("send body");
            hoarder.push(response);
            opened += 1;
        }
        connections.push(client);
    }
    assert!(opened >= 100, "only {opened} streams opened");

    // Events for every hoarded stream, while others are served.
    let prompt = |what: &'static str, started: Instant| {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} took {:?} with {opened} stalled streams",
            started.elapsed()
        );
    };
    for round in 0..3 {
        // A stall here used to hang StopPodSandbox for good: bounded, so a
        // regression fails instead.
        let lifecycle = async {
            let started = Instant::now();
            let pod =
                pods::run_pod(&mut cri, &d, &format!("busy{round}"), gantry_proto::cri::v1::NamespaceMode::Pod).await;
            let id = pods::create(&mut cri, &pod, pods::container("c", &["sleep", "30"])).await.expect("create");
            pods::start(&mut cri, &id).await;
            prompt("a pod start", started);
            let started = Instant::now();
            cri.runtime.version(VersionRequest::default()).await.expect("version");
            prompt("Version", started);
            let started = Instant::now();
            pods::remove_pod(&mut cri, &pod).await;
            prompt("a pod's removal", started);
        };
        tokio::time::timeout(Duration::from_secs(30), lifecycle)
            .await
            .unwrap_or_else(|_| panic!("a pod lifecycle stalled behind {opened} unread event streams"));
    }
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 128 << 10, "gantryd grew by {grown} KiB with {opened} stalled streams");

    drop((hoarder, connections));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    cri.runtime.version(VersionRequest::default()).await.expect("version after the hoarder left");
    prompt("Version after the hoarder left", started);
}
