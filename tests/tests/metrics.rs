//! gantryd's Prometheus endpoint, scraped over HTTP during a pull and a pod
//! lifecycle and read with the Prometheus project's own OpenMetrics parser.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gantry_proto::cri::v1::{NamespaceMode, VersionRequest};
use gantry_tests::pods::*;
use gantry_tests::Daemon;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn scrape(port: u16) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    conn.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    // Chunked or not: hyper sends a small body with content-length.
    body.to_string()
}

struct Sample {
    name: String,
    labels: serde_json::Value,
    value: f64,
}

/// The samples of a scrape, as the Prometheus client's parser reads them.
fn parse(text: &str) -> Vec<Sample> {
    let python = std::env::var("GANTRY_TEST_PYTHON")
        .expect("GANTRY_TEST_PYTHON is not set: run the integration tests through tests/run.sh");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/parse_metrics.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(out.status.success(), "not valid OpenMetrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            Sample {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                labels: v["labels"].clone(),
                value: v["value"].as_f64().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k].as_str() == Some(*v)))
        .map(|s| s.value)
}

#[tokio::test]
async fn metrics_follow_a_pull_and_a_pod_lifecycle() {
    let port = free_port();
    let d = Daemon::start(&format!("metrics_address = \"127.0.0.1:{port}\"\n"));
    let mut cri = setup(&d).await; // pulls busybox
    let pod = run_pod(&mut cri, &d, "metrics", NamespaceMode::Pod).await;
    let id = create(&mut cri, &pod, container("sleeper", &["sleep", "600"])).await.expect("create");
    start(&mut cri, &id).await;

    let samples = parse(&scrape(port));
    let pull = "/runtime.v1.ImageService/PullImage";
    assert_eq!(value(&samples, "gantry_grpc_requests_total", &[("method", pull), ("code", "Ok")]), Some(1.0));
    assert_eq!(value(&samples, "gantry_image_pulls_total", &[("result", "Ok")]), Some(1.0));
    assert_eq!(value(&samples, "gantry_image_pull_duration_seconds_count", &[("result", "Ok")]), Some(1.0));
    assert_eq!(value(&samples, "gantry_image_pulls_in_flight", &[]), Some(0.0));
    assert!(value(&samples, "gantry_image_pulled_bytes_total", &[]).unwrap_or(0.0) > 100_000.0);
    assert!(value(&samples, "gantry_image_store_bytes", &[]).unwrap_or(0.0) > 100_000.0);
    assert!(value(&samples, "gantry_image_store_layers", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(value(&samples, "gantry_images", &[]), Some(1.0));
    assert_eq!(value(&samples, "gantry_pod_sandboxes", &[("state", "ready")]), Some(1.0));
    assert_eq!(value(&samples, "gantry_containers", &[("state", "running")]), Some(1.0));
    assert_eq!(value(&samples, "gantry_shims", &[]), Some(2.0), "the pod's and the container's");
    assert!(value(&samples, "gantry_shims_pss_bytes", &[]).unwrap_or(0.0) > 50_000.0);
    let run = "/runtime.v1.RuntimeService/RunPodSandbox";
    assert_eq!(value(&samples, "gantry_grpc_request_duration_seconds_count", &[("method", run)]), Some(1.0));
    assert_eq!(value(&samples, "gantry_container_oom_kills_total", &[]), Some(0.0));
    assert!(samples.iter().any(|s| s.name == "gantry_build_info" && s.labels["version"].is_string()));

    // An error is counted with its code.
    let missing = cri
        .runtime
        .container_status(gantry_proto::cri::v1::ContainerStatusRequest { container_id: "nope".into(), verbose: false })
        .await;
    assert_eq!(missing.expect_err("unknown container").code(), tonic::Code::NotFound);
    remove_pod(&mut cri, &pod).await;
    cri.images
        .remove_image(gantry_proto::cri::v1::RemoveImageRequest {
            image: Some(gantry_proto::cri::v1::ImageSpec { image: busybox(), ..Default::default() }),
        })
        .await
        .expect("remove image");
    let samples = parse(&scrape(port));
    let status = "/runtime.v1.RuntimeService/ContainerStatus";
    assert_eq!(value(&samples, "gantry_grpc_requests_total", &[("method", status), ("code", "NotFound")]), Some(1.0));
    assert_eq!(value(&samples, "gantry_pod_sandboxes", &[("state", "ready")]), Some(0.0));
    assert_eq!(value(&samples, "gantry_containers", &[("state", "running")]), Some(0.0));
    assert_eq!(value(&samples, "gantry_shims", &[]), Some(0.0));
    assert!(value(&samples, "gantry_gc_runs_total", &[]).unwrap_or(0.0) >= 2.0, "start-up and the removal");
    assert!(value(&samples, "gantry_gc_freed_bytes_total", &[]).unwrap_or(0.0) > 100_000.0);
}

#[tokio::test]
async fn bad_metrics_clients_do_not_disturb_cri() {
    let port = free_port();
    let d = Daemon::start(&format!("metrics_address = \"127.0.0.1:{port}\"\n"));
    let mut cri = d.connect().await;
    // Garbage, a request that never ends, and one whose answer is never read.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    garbage.write_all(&[0xff; 4096]).expect("garbage");
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").expect("half a request");
    let mut unread = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        unread.push(c);
    }
    for _ in 0..10 {
        cri.runtime.version(VersionRequest::default()).await.expect("CRI still answers");
    }
    let samples = parse(&scrape(port));
    assert!(value(&samples, "gantry_grpc_requests_total", &[("code", "Ok")]).is_some());
    let mut not_found = String::new();
    let mut other = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    other.write_all(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    other.read_to_string(&mut not_found).expect("response");
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
}

#[test]
fn a_metrics_address_in_use_stops_gantryd_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr");
    let out = Daemon::prepare(&format!(
        "metrics_address = \"{address}\"
"
    ))
    .run_to_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&address.to_string()) && stderr.contains("in use"), "{stderr}");
}
