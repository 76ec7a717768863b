//! Prometheus metrics on `metrics_address` (off when empty, as containerd's):
//! an HTTP endpoint serving `/metrics` in the OpenMetrics text format
//! (prometheus-client), apart from the CRI socket, so that a scraper that
//! misbehaves never touches a CRI call.
//!
//! Per-call figures come from a tower layer around every gRPC service;
//! everything else (pods, containers, the image store, shims, counters the
//! runtime and the store keep) is read when scraped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gantry_imageservice::ImageStore;
use gantry_runtime::Runtime;
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tonic::codegen::BoxFuture;
use tower::{Layer, Service};

const PULL_PATH: &str = "/runtime.v1.ImageService/PullImage";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn pull_histogram() -> Histogram {
    // 0.1 s to ~7 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 12))
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Histograms<MethodLabels>,
    pulls: Family<ResultLabels, Counter>,
    pull_seconds: Histograms<ResultLabels>,
    pulls_in_flight: Gauge,
    pulled_bytes: Counter,
    store_bytes: Gauge,
    store_layers: Gauge,
    images: Gauge,
    pods: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    shims: Gauge,
    shims_pss_bytes: Gauge,
    oom_kills: Counter,
    recovered_sandboxes: Gauge,
    recovered_containers: Gauge,
    gc_runs: Counter,
    gc_freed_bytes: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("gantry");
        let m = Metrics {
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(call_histogram),
            pulls: Family::default(),
            pull_seconds: Family::new_with_constructor(pull_histogram),
            pulls_in_flight: Gauge::default(),
            pulled_bytes: Counter::default(),
            store_bytes: Gauge::default(),
            store_layers: Gauge::default(),
            images: Gauge::default(),
            pods: Family::default(),
            containers: Family::default(),
            shims: Gauge::default(),
            shims_pss_bytes: Gauge::default(),
            oom_kills: Counter::default(),
            recovered_sandboxes: Gauge::default(),
            recovered_containers: Gauge::default(),
            gc_runs: Counter::default(),
            gc_freed_bytes: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("grpc_requests", "gRPC calls (CRI and the Gantry API) by method and status code", m.calls.clone());
        r.register_with_unit(
            "grpc_request_duration",
            "Time to answer a gRPC call, from the request to the response headers",
            Unit::Seconds,
            m.call_seconds.clone(),
        );
        r.register("image_pulls", "Image pulls by result (gRPC status code)", m.pulls.clone());
        r.register_with_unit("image_pull_duration", "Image pull time", Unit::Seconds, m.pull_seconds.clone());
        r.register("image_pulls_in_flight", "Image pulls under way", m.pulls_in_flight.clone());
        r.register_with_unit(
            "image_pulled",
            "Compressed layer bytes downloaded from registries",
            Unit::Bytes,
            m.pulled_bytes.clone(),
        );
        r.register_with_unit("image_store", "Bytes on disk of the image store", Unit::Bytes, m.store_bytes.clone());
        r.register("image_store_layers", "Unpacked layers in the image store", m.store_layers.clone());
        r.register("images", "Images in the image store", m.images.clone());
        r.register("pod_sandboxes", "Pod sandboxes by state", m.pods.clone());
        r.register("containers", "Containers by state", m.containers.clone());
        r.register("shims", "gantry-shim processes running (one per container and pod sandbox)", m.shims.clone());
        r.register_with_unit(
            "shims_pss",
            "Proportional set size of all gantry-shim processes",
            Unit::Bytes,
            m.shims_pss_bytes.clone(),
        );
        r.register("container_oom_kills", "Containers ended by the kernel's OOM killer", m.oom_kills.clone());
        r.register(
            "recovered_sandboxes",
            "Pod sandboxes an earlier gantryd left, taken over at start-up",
            m.recovered_sandboxes.clone(),
        );
        r.register(
            "recovered_containers",
            "Containers an earlier gantryd left, taken over at start-up",
            m.recovered_containers.clone(),
        );
        r.register("gc_runs", "Image store garbage collections", m.gc_runs.clone());
        r.register_with_unit(
            "gc_freed",
            "Bytes the image store's garbage collection removed",
            Unit::Bytes,
            m.gc_freed_bytes.clone(),
        );
        let commit = option_env!("GANTRY_COMMIT").unwrap_or("unknown");
        r.register(
            "build",
            "gantryd's version and the commit it was built from",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("commit", commit)]),
        );
        Arc::new(Metrics { registry, ..m })
    }

    fn record_call(&self, method: &str, code: &str, took: Duration) {
        let labels = CallLabels { method: method.to_string(), code: code.to_string() };
        self.calls.get_or_create(&labels).inc();
        self.call_seconds.get_or_create(&MethodLabels { method: method.to_string() }).observe(took.as_secs_f64());
        if method == PULL_PATH {
            let result = ResultLabels { result: code.to_string() };
            self.pulls.get_or_create(&result).inc();
            self.pull_seconds.get_or_create(&result).observe(took.as_secs_f64());
        }
    }

    /// Reads what is not counted as it happens, then encodes everything.
    async fn scrape(&self, runtime: &Runtime, images: &ImageStore) -> String {
        let (bytes, _) = images.disk_usage().await;
        self.store_bytes.set(bytes as i64);
        self.store_layers.set(images.layer_count() as i64);
        self.images.set(images.list().map(|l| l.len()).unwrap_or(0) as i64);
        catch_up(&self.pulled_bytes, images.counters.pulled_bytes.load(Relaxed));
        catch_up(&self.gc_runs, images.counters.gc_runs.load(Relaxed));
        catch_up(&self.gc_freed_bytes, images.counters.gc_bytes_freed.load(Relaxed));
        catch_up(&self.oom_kills, runtime.counters.oom_kills.load(Relaxed));
        self.recovered_sandboxes.set(runtime.counters.recovered_sandboxes.load(Relaxed) as i64);
        self.recovered_containers.set(runtime.counters.recovered_containers.load(Relaxed) as i64);

        let (ready, notready) = {
            let sandboxes = runtime.sandboxes.lock().await;
            let ready = sandboxes.values().filter(|s| s.ready).count();
            (ready, sandboxes.len() - ready)
        };
        self.pods.get_or_create(&StateLabels { state: "ready".into() }).set(ready as i64);
        self.pods.get_or_create(&StateLabels { state: "notready".into() }).set(notready as i64);
        let ids: Vec<String> = runtime.containers.lock().await.keys().cloned().collect();
        let mut by_state = [0i64; 4];
        for id in &ids {
            let state = gantry_runtime::listing::container_status_code(runtime.cached_status(id));
            by_state[state.clamp(0, 3) as usize] += 1;
        }
        for (i, name) in ["created", "running", "exited", "unknown"].iter().enumerate() {
            self.containers.get_or_create(&StateLabels { state: name.to_string() }).set(by_state[i]);
        }

        let shim = runtime.shim_binary().to_path_buf();
        let (count, pss) = tokio::task::spawn_blocking(move || shim_usage(&shim)).await.unwrap_or((0, 0));
        self.shims.set(count as i64);
        self.shims_pss_bytes.set(pss as i64);

        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Moves a counter up to a total kept elsewhere (totals only grow).
fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// The shims (their command line names a `--socket`; pause processes, which
/// are the same binary, do not) and their summed PSS from smaps_rollup.
fn shim_usage(binary: &std::path::Path) -> (usize, u64) {
    use std::os::unix::fs::MetadataExt;
    let binary = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    let identity = std::fs::metadata(&binary).ok().map(|m| (m.dev(), m.ino()));
    let Ok(entries) = std::fs::read_dir("/proc") else { return (0, 0) };
    let (mut count, mut pss) = (0, 0u64);
    for e in entries.flatten() {
        let proc_dir: PathBuf = e.path();
        if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Shims run from a read-only bind of the binary (see the shim's
        // sealed_exe), whose path reads differently but whose inode is the
        // binary's; a replaced binary reads "PATH (deleted)": still our shim.
        let Ok(exe) = std::fs::read_link(proc_dir.join("exe")) else { continue };
        let same_file = std::fs::metadata(proc_dir.join("exe")).is_ok_and(|m| Some((m.dev(), m.ino())) == identity);
        if !same_file && !exe.as_os_str().as_encoded_bytes().starts_with(binary.as_os_str().as_encoded_bytes()) {
            continue;
        }
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        if !cmdline.split(|b| *b == 0).any(|arg| arg == b"--socket") {
            continue;
        }
        count += 1;
        let rollup = std::fs::read_to_string(proc_dir.join("smaps_rollup")).unwrap_or_default();
        let kib = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        pss += kib * 1024;
    }
    (count, pss)
}

/// Binds `address` now, so that one already in use stops gantryd at start.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("metrics_address {address}: {e}"))
}

/// Serves `/metrics` on `listener` until gantryd exits.
pub fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, runtime: Arc<Runtime>, images: Arc<ImageStore>) {
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, runtime, images) = (metrics.clone(), runtime.clone(), images.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (metrics, runtime, images) = (metrics.clone(), runtime.clone(), images.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(&request, &metrics, &runtime, &images).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    // A client that sends nothing (or half a request) is dropped.
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // One scrape takes well under this; a client that never reads goes.
                let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
            });
        }
    });
}

async fn answer(
    request: &http::Request<hyper::body::Incoming>,
    metrics: &Metrics,
    runtime: &Runtime,
    images: &ImageStore,
) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &str, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if request.uri().path() != "/metrics" {
        return reply(404, "text/plain", "only /metrics is served here\n".into());
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return reply(405, "text/plain", "GET /metrics\n".into());
    }
    let body = metrics.scrape(runtime, images).await;
    reply(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", body)
}

/// Counts and times every gRPC call.
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for MetricsLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<http::Request<B>> for Measured<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_string();
        let metrics = self.metrics.clone();
        let pull = (method == PULL_PATH).then(|| InFlight::start(&metrics.pulls_in_flight));
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let answer = call.await;
            drop(pull);
            // An error is answered trailers-only, its status in the headers; a
            // success carries its status (OK) in the trailers.
            let code = match &answer {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.record_call(&method, &format!("{code:?}"), started.elapsed());
            answer
        })
    }
}

/// A pull under way, counted until dropped (also when the client goes away).
struct InFlight(Gauge);

impl InFlight {
    fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
