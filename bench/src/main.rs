//! `cri-bench`: times CRI calls against any runtime's socket, so gantryd and
//! containerd are measured by the same client in the same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bytes::{Buf, Bytes};
use clap::{Parser, Subcommand};
use gantry_proto::cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PullImageRequest, RemoveContainerRequest, RemoveImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};

#[derive(Parser)]
#[command(about = "Time CRI calls against a runtime socket")]
struct Args {
    /// The runtime's CRI socket
    #[arg(long)]
    endpoint: PathBuf,
    /// Name of the runtime under test, copied into every result line
    #[arg(long, default_value = "")]
    label: String,
    /// The RuntimeClass handler every pod is run with (empty: the default)
    #[arg(long, default_value = "")]
    runtime_handler: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull images one after the other; print one JSON line per pull
    Pull { images: Vec<String> },
    /// N containers (created, not started) in one pod; time ListContainers
    /// over them; report the daemon's memory and fds per container
    Scale {
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 1000)]
        containers: usize,
        #[arg(long)]
        log_dir: PathBuf,
        /// The daemon's pid, to read its RSS and fds
        #[arg(long)]
        daemon_pid: u32,
        /// How many times to time ListContainers
        #[arg(long, default_value_t = 20)]
        list_rounds: usize,
        /// Containers without labels and annotations (as this benchmark
        /// made them before 2026-11-29), instead of kubelet's
        #[arg(long)]
        bare: bool,
        /// Also time StreamContainers (first chunk, whole stream) and the
        /// daemon's peak RSS growth during it and during ListContainers
        #[arg(long)]
        stream: bool,
    },
    /// One running container; ROUNDS ExecSync calls of `true` (one JSON line
    /// each), then ExecSync of a command writing BYTES to stdout, timed
    Exec {
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        #[arg(long, default_value_t = 8_000_000)]
        bytes: usize,
        #[arg(long)]
        log_dir: PathBuf,
    },
    /// Time ListContainers over whatever containers exist (see `time_list`)
    List {
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// Remove images (untimed; for resetting between rounds)
    Rmi { images: Vec<String> },
    /// CreateContainer+StartContainer in one pod, ROUNDS times without and
    /// ROUNDS times with VOLUME_IMAGE mounted read-only (CRI `Mount.image`),
    /// interleaved; one JSON line per call pair
    ImageVolume {
        #[arg(long)]
        image: String,
        /// The image mounted as a volume (already pulled)
        #[arg(long)]
        volume_image: String,
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        #[arg(long)]
        log_dir: PathBuf,
    },
    /// Pod lifecycle, one pod at a time: run sandbox, create+start a
    /// container, then stop+remove both; one JSON line per phase and round
    Lifecycle {
        /// Container image (already pulled)
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Where pod logs go
        #[arg(long)]
        log_dir: PathBuf,
    },
    /// Start N pods (sandbox + one container) at once; print the wall time,
    /// leave them running until stdin closes, then remove them
    Concurrent {
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 20)]
        pods: usize,
        #[arg(long)]
        log_dir: PathBuf,
    },
}

/// A UUID, as kubelet's pod UIDs are, derived from the name (FNV-1a) so
/// every pod gets its own.
fn pod_uid(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 4) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

/// Host-network pods: containerd needs a CNI plugin otherwise, and networking
/// is not what this measures.
fn pod_config(name: &str, log_dir: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "bench".into(),
            uid: pod_uid(name),
            attempt: 0,
        }),
        log_directory: log_dir.join(name).display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The labels and annotations kubelet gives every container
/// (pkg/kubelet/kuberuntime/labels.go), so a listing carries as many bytes
/// per container as on a node.
fn kubelet_container_config(image: &str, pod: &PodSandboxMetadata, name: &str) -> ContainerConfig {
    let labels = [
        ("io.kubernetes.container.name", name),
        ("io.kubernetes.pod.name", &pod.name),
        ("io.kubernetes.pod.namespace", &pod.namespace),
        ("io.kubernetes.pod.uid", &pod.uid),
    ];
    let annotations = [
        ("io.kubernetes.container.hash", "4f1e5b3a"),
        ("io.kubernetes.container.restartCount", "0"),
        ("io.kubernetes.container.terminationMessagePath", "/dev/termination-log"),
        ("io.kubernetes.container.terminationMessagePolicy", "File"),
        ("io.kubernetes.pod.terminationGracePeriod", "30"),
    ];
    let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        labels: map(&labels),
        annotations: map(&annotations),
        log_path: format!("{name}/0.log"),
        ..container_config(image)
    }
}

fn container_config(image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: "sleeper".into(), attempt: 0 }),
        image: Some(ImageSpec { image: image.into(), ..Default::default() }),
        command: vec!["sleep".into(), "100000".into()],
        log_path: "sleeper.log".into(),
        ..Default::default()
    }
}

/// Runs a pod with one started container; returns (pod id, container id, ms for each phase).
async fn start_pod(
    cri: &mut gantry_tests::Cri,
    name: &str,
    image: &str,
    log_dir: &std::path::Path,
) -> anyhow::Result<(String, String, f64, f64)> {
    let config = pod_config(name, log_dir);
    std::fs::create_dir_all(&config.log_directory)?;
    let t = Instant::now();
    let pod = run_pod(cri, &config).await?;
    let run_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let ctr = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(image)),
            sandbox_config: Some(config),
        })
        .await?
        .into_inner()
        .container_id;
    cri.runtime.start_container(StartContainerRequest { container_id: ctr.clone() }).await?;
    Ok((pod, ctr, run_ms, t.elapsed().as_secs_f64() * 1000.0))
}

/// `--runtime-handler`, for every pod this process runs.
static RUNTIME_HANDLER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn run_pod(cri: &mut gantry_tests::Cri, config: &PodSandboxConfig) -> anyhow::Result<String> {
    let runtime_handler = RUNTIME_HANDLER.get().cloned().unwrap_or_default();
    Ok(cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

async fn teardown(cri: &mut gantry_tests::Cri, pod: &str, ctr: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    cri.runtime.stop_container(StopContainerRequest { container_id: ctr.into(), timeout: 0 }).await?;
    cri.runtime.remove_container(RemoveContainerRequest { container_id: ctr.into() }).await?;
    cri.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.into() }).await?;
    cri.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = RUNTIME_HANDLER.set(args.runtime_handler.clone());
    let mut cri = gantry_tests::connect(&args.endpoint)
        .await
        .with_context(|| format!("connecting to {}", args.endpoint.display()))?;
    match args.command {
        Command::Pull { images } => {
            for image in images {
                let spec = Some(ImageSpec { image: image.clone(), ..Default::default() });
                let start = Instant::now();
                let id = cri
                    .images
                    .pull_image(PullImageRequest { image: spec, ..Default::default() })
                    .await
                    .with_context(|| format!("pulling {image}"))?
                    .into_inner()
                    .image_ref;
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                println!(
                    "{}",
                    serde_json::json!({"runtime": args.label, "op": "pull", "image": image, "id": id, "ms": ms})
                );
            }
        }
        Command::Lifecycle { image, rounds, log_dir } => {
            for round in 0..rounds {
                let name = format!("bench-{round}");
                let (pod, ctr, run_ms, start_ms) = start_pod(&mut cri, &name, &image, &log_dir).await?;
                let stop_ms = teardown(&mut cri, &pod, &ctr).await?;
                for (op, ms) in [("run_pod_sandbox", run_ms), ("create_start", start_ms), ("stop_remove", stop_ms)] {
                    println!("{}", serde_json::json!({"runtime": args.label, "op": op, "ms": ms}));
                }
            }
        }
        Command::Concurrent { image, pods, log_dir } => {
            let t = Instant::now();
            let starts = (0..pods).map(|i| {
                let mut c = cri.clone();
                let (image, log_dir) = (image.clone(), log_dir.clone());
                async move { start_pod(&mut c, &format!("many-{i}"), &image, &log_dir).await }
            });
            let started = futures::future::try_join_all(starts).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            println!(
                "{}",
                serde_json::json!({"runtime": args.label, "op": "concurrent_start", "pods": pods, "ms": ms})
            );
            // Hold them while the caller measures memory.
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            for (pod, ctr, _, _) in started {
                teardown(&mut cri, &pod, &ctr).await?;
            }
        }
        Command::Scale { image, containers, log_dir, daemon_pid, list_rounds, bare, stream } => {
            let usage = || -> (u64, usize) {
                let rss = std::fs::read_to_string(format!("/proc/{daemon_pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    })
                    .unwrap_or(0);
                let fds = std::fs::read_dir(format!("/proc/{daemon_pid}/fd")).map(|d| d.count()).unwrap_or(0);
                (rss, fds)
            };
            let config = pod_config("scale", &log_dir);
            std::fs::create_dir_all(&config.log_directory)?;
            let pod = run_pod(&mut cri, &config).await?;
            let (rss0, fds0) = usage();
            let t = Instant::now();
            let meta = config.metadata.clone().unwrap_or_default();
            for i in 0..containers {
                let mut c = kubelet_container_config(&image, &meta, &format!("c{i}"));
                if bare {
                    (c.labels, c.annotations) = Default::default();
                }
                cri.runtime
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(c),
                        sandbox_config: Some(config.clone()),
                    })
                    .await?;
            }
            let create_ms = t.elapsed().as_secs_f64() * 1000.0;
            let (rss1, fds1) = usage();
            // Streamed first, before any unary listing has grown the heap.
            let streamed = if stream { Some(time_stream(&mut cri, daemon_pid, containers).await?) } else { None };
            let list = time_list(&mut cri, &args.endpoint, list_rounds).await?;
            if let Some(st) = streamed {
                println!(
                    "{}",
                    serde_json::json!({
                        "runtime": args.label, "op": "stream_containers", "containers": containers,
                        "unary_bytes": list.bytes, "first_chunk_ms": st.first_chunk_ms, "whole_ms": st.whole_ms,
                        "chunks": st.chunks, "stream_peak_growth_kib": st.stream_peak_growth_kib,
                        "unary_peak_growth_kib": st.unary_peak_growth_kib,
                    })
                );
            }
            anyhow::ensure!(list.containers == containers, "listed {} of {containers}", list.containers);
            println!(
                "{}",
                serde_json::json!({
                    "runtime": args.label, "op": "scale", "containers": containers,
                    "create_all_ms": create_ms, "list_p50_ms": list.p50_ms,
                    "list_raw_p50_ms": list.raw_p50_ms, "list_decode_p50_ms": list.decode_p50_ms,
                    "list_bytes": list.bytes,
                    "daemon_rss_kib_per_container": (rss1 as f64 - rss0 as f64) / containers as f64,
                    "daemon_fds_per_container": (fds1 as f64 - fds0 as f64) / containers as f64,
                })
            );
            let t = Instant::now();
            cri.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await?;
            cri.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod }).await?;
            eprintln!("teardown of {containers} containers: {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
        }
        Command::Exec { image, rounds, bytes, log_dir } => {
            let (pod, ctr, _, _) = start_pod(&mut cri, "exec", &image, &log_dir).await?;
            let exec = |cmd: &[&str]| ExecSyncRequest {
                container_id: ctr.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 30,
            };
            for _ in 0..rounds {
                let t = Instant::now();
                let r = cri.runtime.exec_sync(exec(&["true"])).await?.into_inner();
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                anyhow::ensure!(r.exit_code == 0, "true exited {}", r.exit_code);
                println!("{}", serde_json::json!({"runtime": args.label, "op": "exec_sync", "ms": ms}));
            }
            for _ in 0..5 {
                let count = format!("head -c {bytes} /dev/zero");
                let t = Instant::now();
                let r = cri.runtime.exec_sync(exec(&["sh", "-c", &count])).await?.into_inner();
                let secs = t.elapsed().as_secs_f64();
                anyhow::ensure!(r.stdout.len() == bytes, "got {} of {bytes} bytes", r.stdout.len());
                let op = "exec_sync_output";
                println!("{}", serde_json::json!({"runtime": args.label, "op": op, "bytes": bytes, "s": secs}));
            }
            // Leaves the pod for the caller's streaming measurements; prints its IDs.
            eprintln!("{pod} {ctr}");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            teardown(&mut cri, &pod, &ctr).await?;
        }
        Command::List { rounds } => {
            let list = time_list(&mut cri, &args.endpoint, rounds).await?;
            println!(
                "{}",
                serde_json::json!({
                    "runtime": args.label, "op": "list", "containers": list.containers,
                    "list_p50_ms": list.p50_ms, "list_raw_p50_ms": list.raw_p50_ms,
                    "list_decode_p50_ms": list.decode_p50_ms, "list_bytes": list.bytes,
                })
            );
        }
        Command::ImageVolume { image, volume_image, rounds, log_dir } => {
            let config = pod_config("image-volume", &log_dir);
            std::fs::create_dir_all(&config.log_directory)?;
            let pod = run_pod(&mut cri, &config).await?;
            for round in 0..rounds * 2 {
                let with_volume = round % 2 == 1;
                let mut c = container_config(&image);
                c.metadata = Some(ContainerMetadata { name: format!("c{round}"), attempt: 0 });
                c.log_path = format!("c{round}.log");
                if with_volume {
                    c.mounts = vec![gantry_proto::cri::v1::Mount {
                        container_path: "/model".into(),
                        image: Some(ImageSpec { image: volume_image.clone(), ..Default::default() }),
                        readonly: true,
                        ..Default::default()
                    }];
                }
                let t = Instant::now();
                let ctr = cri
                    .runtime
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(c),
                        sandbox_config: Some(config.clone()),
                    })
                    .await?
                    .into_inner()
                    .container_id;
                cri.runtime.start_container(StartContainerRequest { container_id: ctr.clone() }).await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let op = if with_volume { "create_start_with_image_volume" } else { "create_start" };
                println!("{}", serde_json::json!({"runtime": args.label, "op": op, "ms": ms}));
                cri.runtime.stop_container(StopContainerRequest { container_id: ctr.clone(), timeout: 0 }).await?;
                cri.runtime.remove_container(RemoveContainerRequest { container_id: ctr }).await?;
            }
            cri.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await?;
            cri.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod }).await?;
        }
        Command::Rmi { images } => {
            for image in images {
                let spec = Some(ImageSpec { image, ..Default::default() });
                cri.images.remove_image(RemoveImageRequest { image: spec }).await?;
            }
        }
    }
    Ok(())
}

struct StreamTimes {
    first_chunk_ms: f64,
    whole_ms: f64,
    chunks: usize,
    /// The daemon's peak RSS (VmHWM, reset before each call) above its RSS
    /// before the call: what answering costs it in memory.
    stream_peak_growth_kib: i64,
    unary_peak_growth_kib: i64,
}

/// One StreamContainers and one ListContainers, each after resetting the
/// daemon's peak RSS (`clear_refs` 5), so each growth is its own.
async fn time_stream(cri: &mut gantry_tests::Cri, daemon_pid: u32, containers: usize) -> anyhow::Result<StreamTimes> {
    use gantry_proto::cri::v1::StreamContainersRequest;
    let field = |name: &str| -> i64 {
        std::fs::read_to_string(format!("/proc/{daemon_pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let reset_peak = || std::fs::write(format!("/proc/{daemon_pid}/clear_refs"), "5").context("resetting VmHWM");

    reset_peak()?;
    let before = field("VmRSS:");
    let t = Instant::now();
    let mut stream = cri.runtime.stream_containers(StreamContainersRequest::default()).await?.into_inner();
    let (mut first_chunk_ms, mut chunks, mut seen) = (None, 0, 0);
    while let Some(chunk) = stream.message().await? {
        first_chunk_ms.get_or_insert_with(|| t.elapsed().as_secs_f64() * 1000.0);
        chunks += 1;
        seen += chunk.containers.len();
    }
    let whole_ms = t.elapsed().as_secs_f64() * 1000.0;
    let stream_peak_growth_kib = field("VmHWM:") - before;
    anyhow::ensure!(seen == containers, "streamed {seen} of {containers}");

    reset_peak()?;
    let before = field("VmRSS:");
    let listed = cri.runtime.list_containers(ListContainersRequest::default()).await?.into_inner().containers.len();
    let unary_peak_growth_kib = field("VmHWM:") - before;
    anyhow::ensure!(listed == containers, "listed {listed} of {containers}");
    Ok(StreamTimes {
        first_chunk_ms: first_chunk_ms.unwrap_or(whole_ms),
        whole_ms,
        chunks,
        stream_peak_growth_kib,
        unary_peak_growth_kib,
    })
}

struct ListTimes {
    containers: usize,
    /// The whole call as a CRI client makes it (transport and decoding).
    p50_ms: f64,
    /// The same call with the answer kept as bytes: server and transport.
    raw_p50_ms: f64,
    /// Decoding those bytes alone: the client's share of `p50_ms`.
    decode_p50_ms: f64,
    bytes: usize,
}

/// ListContainers (no filter) timed `rounds` times in three ways (see
/// `ListTimes`), interleaved so load on the machine hits all three alike.
async fn time_list(
    cri: &mut gantry_tests::Cri,
    endpoint: &std::path::Path,
    rounds: usize,
) -> anyhow::Result<ListTimes> {
    use prost::Message;
    let channel = gantry_tests::channel(endpoint).await?;
    let mut raw = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/runtime.v1.RuntimeService/ListContainers");
    let (mut whole, mut call, mut decode) = (Vec::new(), Vec::new(), Vec::new());
    let (mut containers, mut bytes) = (0, 0);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    for _ in 0..rounds {
        let t = Instant::now();
        containers = cri.runtime.list_containers(ListContainersRequest::default()).await?.into_inner().containers.len();
        whole.push(ms(t));

        let t = Instant::now();
        raw.ready().await?;
        let answer = raw.unary(tonic::Request::new(ListContainersRequest::default()), path.clone(), RawCodec).await?;
        call.push(ms(t));
        let answer = answer.into_inner();
        bytes = answer.len();

        let t = Instant::now();
        let decoded = gantry_proto::cri::v1::ListContainersResponse::decode(answer)?;
        decode.push(ms(t));
        anyhow::ensure!(decoded.containers.len() == containers, "the raw call listed a different number");
    }
    let p50 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Ok(ListTimes { containers, p50_ms: p50(whole), raw_p50_ms: p50(call), decode_p50_ms: p50(decode), bytes })
}

/// Encodes the ListContainers request with prost and keeps the answer as
/// bytes, to time the call without the client's decoding.
#[derive(Clone, Copy)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = ListContainersRequest;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = ListContainersRequest;
    type Error = tonic::Status;
    fn encode(&mut self, item: Self::Item, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        prost::Message::encode(&item, dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
