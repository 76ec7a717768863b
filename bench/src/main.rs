//! `cri-bench`: times CRI calls against any runtime's socket, so gantryd and
//! containerd are measured by the same client in the same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_cri::v1::{
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
    /// Remove images (untimed; for resetting between rounds)
    Rmi { images: Vec<String> },
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

/// Host-network pods: containerd needs a CNI plugin otherwise, and networking
/// is not what this measures.
fn pod_config(name: &str, log_dir: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "bench".into(),
            uid: format!("uid-{name}"),
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

async fn run_pod(cri: &mut gantry_tests::Cri, config: &PodSandboxConfig) -> anyhow::Result<String> {
    Ok(cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), ..Default::default() })
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
        Command::Scale { image, containers, log_dir, daemon_pid } => {
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
            for i in 0..containers {
                let mut c = container_config(&image);
                c.metadata = Some(ContainerMetadata { name: format!("c{i}"), attempt: 0 });
                c.log_path = format!("c{i}.log");
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
            let mut times = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                let n =
                    cri.runtime.list_containers(ListContainersRequest::default()).await?.into_inner().containers.len();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(n == containers, "listed {n} of {containers}");
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{}",
                serde_json::json!({
                    "runtime": args.label, "op": "scale", "containers": containers,
                    "create_all_ms": create_ms, "list_p50_ms": times[times.len() / 2],
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
        Command::Rmi { images } => {
            for image in images {
                let spec = Some(ImageSpec { image, ..Default::default() });
                cri.images.remove_image(RemoveImageRequest { image: spec }).await?;
            }
        }
    }
    Ok(())
}
