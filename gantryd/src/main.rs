//! gantryd: serves the Kubernetes CRI (ImageService and RuntimeService) on a
//! unix socket.

mod config;
mod deadline;
mod h2_requests;
mod metrics;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use gantry_imageservice::{CriImageService, ImageStore, RegistryHosts};
use gantry_proto::cri::v1::image_service_server::ImageServiceServer;
use gantry_proto::cri::v1::runtime_service_server::RuntimeServiceServer;
use gantry_runtime::CriRuntimeService;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;

use config::Config;

/// How long requests in flight may take to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// CRI messages can be large (ListContainers on a busy node); match kubelet's 16 MiB.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Parser, Debug)]
#[command(name = "gantryd", version, about = "Gantry container runtime daemon (Kubernetes CRI v1)")]
struct Args {
    /// TOML configuration file [default: /etc/gantry/config.toml if it exists]
    #[arg(long, env = "GANTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for persistent state (images, layers) [default: /var/lib/gantry]
    #[arg(long)]
    root: Option<PathBuf>,
    /// Directory for runtime state [default: /run/gantry]
    #[arg(long)]
    state: Option<PathBuf>,
    /// Unix socket to serve CRI on [default: /run/gantry/gantry.sock]
    #[arg(long)]
    listen: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax) [default: info]
    #[arg(long, env = "GANTRY_LOG")]
    log_level: Option<String>,
    /// Log as JSON lines instead of text
    #[arg(long)]
    log_json: bool,
    /// Drop-in directory: its *.toml files, in name order, override the
    /// config file [default: config.d beside the config file]
    #[arg(long)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print a configuration instead of serving.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
enum ConfigCommand {
    /// The default configuration, every key documented.
    Default,
    /// The effective configuration: defaults, the config file, its drop-ins, then flags.
    Dump,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Config { what: ConfigCommand::Default }) = args.command {
        print!("{}", config::DEFAULT_TOML);
        return Ok(());
    }
    let (mut config, sources) = Config::load(args.config.as_deref(), args.config_dir.as_deref())?;
    if let Some(r) = args.root {
        config.root = r;
    }
    if let Some(s) = args.state {
        config.state = s;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(l) = args.log_level {
        config.log_level = l;
    }
    if let Some(Command::Config { what: ConfigCommand::Dump }) = args.command {
        for file in &sources.files {
            println!("# from {}", file.display());
        }
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    init_logging(&config.log_level, args.log_json)?;
    tracing::info!(files = ?sources.files, "configuration loaded");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(serve(config))
}

fn init_logging(filter: &str, json: bool) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).with_context(|| format!("log level {filter:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("setting permissions of {}", dir.display()))?;
    }
    let _root_lock = lock_root(&config.root)?;
    let hosts = RegistryHosts::new(config.registries.clone())?;
    let images = ImageStore::open(&config.root.join("images"), hosts).await.context("opening the image store")?;
    images
        .set_pinned(gantry_imageservice::pinning::PinnedImages::parse(&config.pinned_images).context("pinned_images")?);
    // Bound early: an address in use stops gantryd before anything else.
    let metrics_listener = match config.metrics_address.as_str() {
        "" => None,
        address => {
            let address: std::net::SocketAddr =
                address.parse().with_context(|| format!("metrics_address {address:?} is not HOST:PORT"))?;
            Some(metrics::bind(address).await?)
        }
    };
    let listener = bind_socket(&config.listen, config.socket_mode)?;
    let config_json = serde_json::to_string(&config)?;

    let image_service = ImageServiceServer::new(CriImageService::new(images.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let shim = match &config.shim_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating gantryd")?.with_file_name("gantry-shim"),
    };
    let network = gantry_runtime::network::NetworkManager::new(gantry_runtime::network::NetworkOptions {
        conf_dir: config.cni.conf_dir.clone(),
        bin_dirs: config.cni.bin_dirs.clone(),
    });
    let handlers = config.handlers()?;
    let runtime =
        gantry_runtime::Runtime::open(images.clone(), &config.state, shim, network, handlers, config.cgroup_driver)
            .await
            .map_err(|e| anyhow::anyhow!("opening the runtime state: {e}"))?;
    // Only now that the containers hold their layers: collect what an earlier
    // run (or a crash) left unreferenced.
    let stats = images.collect_garbage().await.context("collecting garbage")?;
    if stats != gantry_imageservice::store::GcStats::default() {
        tracing::info!(?stats, "removed leftovers of an earlier run");
    }
    let mut runtime = runtime;
    runtime.cdi_spec_dirs = config.cdi_spec_dirs.clone();
    runtime.criu_path = config.criu_path.clone();
    let runtime = std::sync::Arc::new(runtime);
    runtime.watch_all().await;
    let tls = match (&config.stream_tls_cert, &config.stream_tls_key) {
        (Some(cert), Some(key)) => Some(gantry_runtime::streaming::TlsFiles { cert: cert.clone(), key: key.clone() }),
        (None, None) => None,
        _ => anyhow::bail!("stream_tls_cert and stream_tls_key go together"),
    };
    let streams = gantry_runtime::streaming::StreamServer::start(config.stream_address, tls.as_ref(), &runtime)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime_service = RuntimeServiceServer::new(CriRuntimeService::new(config_json, runtime.clone(), streams))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // ListContainers from pre-encoded messages (kubelet lists every second).
    let runtime_service = gantry_runtime::service::listing_server::ListingServer::new(
        runtime_service,
        runtime.clone(),
        MAX_MESSAGE_BYTES,
    );
    tracing::info!(socket = %config.listen.display(), root = %config.root.display(), "gantryd serving CRI v1");
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    // The Gantry image API (the `gantry` tool) beside CRI on the same socket.
    let gantry_images = gantry_proto::api::images_server::ImagesServer::new(
        gantry_imageservice::api::GantryImages::new(images.clone(), runtime.clone()),
    )
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Requests reach tonic with C-core's socket-path authority and the client's
    // deadline mended (h2_requests), and deadlines end in DEADLINE_EXCEEDED.
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(h2_requests::MendedRequests::new));
    let metrics = metrics::Metrics::new();
    if let Some(listener) = metrics_listener {
        tracing::info!(address = %config.metrics_address, "serving metrics");
        metrics::serve(listener, metrics.clone(), runtime.clone(), images.clone());
    }
    let serve = tonic::transport::Server::builder()
        .layer(metrics::MetricsLayer(metrics))
        .layer(deadline::DeadlineLayer)
        .add_service(runtime_service)
        .add_service(image_service)
        .add_service(gantry_images)
        .add_service(gantry_proto::api::containers_server::ContainersServer::new(
            gantry_runtime::containers_api::GantryContainers(runtime.clone()),
        ));
    let signalled = shutdown_signal();
    let serve = serve.serve_with_incoming_shutdown(incoming, async move {
        signalled.await;
        tell_systemd(&[sd_notify::NotifyState::Stopping]);
        notify.notify_one();
    });
    // The socket is bound and the containers of an earlier run are known
    // again: kubelet may call (systemd's Type=notify; a no-op without it).
    tell_systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving CRI")]);
    // Clients such as kubelet keep their connection open forever; graceful
    // shutdown gets a grace period for requests in flight, then we leave.
    let result = tokio::select! {
        r = serve => r,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!("grace period over, closing open connections");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&config.listen);
    result.context("serving CRI")?;
    tracing::info!("gantryd stopped");
    Ok(())
}

/// A readiness message to systemd, if it asked for them ($NOTIFY_SOCKET).
fn tell_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "telling systemd our state");
    }
}

/// One daemon per root: a second one would fight over the same store.
fn lock_root(root: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    let path = root.join("gantryd.lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("another gantryd is using {} ({e})", root.display()))
}

/// Binds the CRI socket, replacing a stale one but never a live one.
fn bind_socket(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by a running server", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    Ok(listener)
}

/// Installs the SIGTERM/SIGINT handlers now (before telling anyone we are
/// ready, so an early SIGTERM is a clean shutdown), and waits for either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop gantryd with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
