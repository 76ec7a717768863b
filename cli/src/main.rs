//! `gantry`: the Docker image model on gantryd. It talks to gantryd over its
//! socket only (CRI for pull, images, ps, rm; the Gantry image API of
//! proto/gantry.proto for inspect, history, tag, rmi, df), never to the
//! store directly.
//!
//! Exit codes: 0 done, 1 the daemon refused or failed (message on stderr),
//! 2 bad usage.

mod client;
mod credentials;
mod format;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gantry_proto::api::{
    ArchiveChunk, CommitRequest, DiskUsageRequest, ExportRequest, ImportChunk, InspectRequest, PauseRequest,
    PullRequest, PushRequest, RemoveRequest, SaveRequest, TagRequest,
};
use gantry_proto::cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest, ListImagesRequest,
    RemoveContainerRequest,
};
use serde_json::{json, Value};

use crate::format::{age, human_size, short_id, Table};

#[derive(Parser)]
#[command(name = "gantry", version, about = "Images and containers of a gantryd node, the Docker way")]
struct Args {
    /// gantryd's socket
    #[arg(long, env = "GANTRY_ADDRESS", default_value = "/run/gantry/gantry.sock", global = true)]
    address: std::path::PathBuf,
    /// Output: aligned tables for people, JSON for scripts
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List images
    Images,
    /// Pull an image from its registry (mirrors and auth from gantryd's config)
    Pull { image: String },
    /// Show an image: tags, digests, config, layers
    Inspect { image: String },
    /// Show how an image was built, one row per history entry
    History { image: String },
    /// Give an image another name: gantry tag SOURCE TARGET
    Tag { source: String, target: String },
    /// Remove images (one of several tags only untags; images in use need --force)
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove even when containers use the image or it has several tags
        #[arg(short, long)]
        force: bool,
    },
    /// Disk usage per image: what it shares with others and what only it uses
    Df,
    /// Write images to one archive (docker-archive and OCI layout at once)
    Save {
        /// The archive to write
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write a container's filesystem (image plus changes) to a tar
    Export {
        #[arg(short, long)]
        output: std::path::PathBuf,
        container: String,
    },
    /// Make a single-layer image from a filesystem tar (what export writes)
    Import {
        /// Dockerfile instruction applied to the config (CMD, ENTRYPOINT, ENV, …)
        #[arg(short, long = "change")]
        changes: Vec<String>,
        /// Comment recorded in the history entry
        #[arg(short, long, default_value = "")]
        message: String,
        file: std::path::PathBuf,
        /// NAME:TAG of the new image
        reference: Option<String>,
    },
    /// Push an image to its registry (credentials from `gantry login`)
    Push {
        /// A local NAME:TAG
        image: String,
    },
    /// Store credentials for a registry (Docker's config.json format, mode 0600)
    Login {
        registry: String,
        #[arg(short, long)]
        username: String,
        /// The password (else read from stdin)
        #[arg(short, long)]
        password: Option<String>,
    },
    /// Forget a registry's credentials
    Logout { registry: String },
    /// Read images from an archive (`gantry save`, `docker save`, an OCI layout tar)
    Load {
        /// The archive to read
        #[arg(short, long)]
        input: std::path::PathBuf,
    },
    /// List containers (running ones; -a for all)
    Ps {
        #[arg(short, long)]
        all: bool,
    },
    /// Make a new image from a container's changes (on top of its image)
    Commit {
        /// Author recorded in the image
        #[arg(short, long, default_value = "")]
        author: String,
        /// Comment recorded in the history entry
        #[arg(short, long, default_value = "")]
        message: String,
        /// Dockerfile instruction applied to the config (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL)
        #[arg(short, long = "change")]
        changes: Vec<String>,
        container: String,
        /// NAME:TAG of the new image (untagged if left out)
        reference: Option<String>,
    },
    /// Freeze a running container's processes (no CPU; memory kept)
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw a paused container
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers (stopping them first)
    Rm {
        #[arg(required = true)]
        containers: Vec<String>,
    },
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gantry: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("gantry: {e:#}");
        std::process::exit(1);
    }
}

/// The daemon's message for a refused call, without gRPC's framing.
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Credentials stay on the client: no daemon needed for these.
    match &args.command {
        Command::Login { registry, username, password } => {
            let password = match password {
                Some(p) => p.clone(),
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            credentials::login(registry, username, &password)?;
            println!("Login for {registry} stored in {}", credentials::config_path().display());
            return Ok(());
        }
        Command::Logout { registry } => {
            if !credentials::logout(registry)? {
                anyhow::bail!("no credentials stored for {registry}");
            }
            println!("Removed the credentials for {registry}");
            return Ok(());
        }
        _ => {}
    }
    let mut c = client::connect(&args.address).await?;
    let json_out = args.format == Format::Json;
    match args.command {
        Command::Login { .. } | Command::Logout { .. } => {}
        Command::Images => {
            let images = c.images.list_images(ListImagesRequest::default()).await.map_err(refused)?.into_inner().images;
            if json_out {
                let rows: Vec<Value> = images
                    .iter()
                    .map(
                        |i| json!({"Id": i.id, "RepoTags": i.repo_tags, "RepoDigests": i.repo_digests, "Size": i.size}),
                    )
                    .collect();
                return print_json(&Value::Array(rows));
            }
            let mut t = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "SIZE"]);
            for i in &images {
                let size = human_size(i.size);
                if i.repo_tags.is_empty() {
                    t.row(vec!["<none>".into(), "<none>".into(), short_id(&i.id), size.clone()]);
                }
                for tag in &i.repo_tags {
                    let (repo, tag) = tag.rsplit_once(':').unwrap_or((tag, ""));
                    t.row(vec![repo.into(), tag.into(), short_id(&i.id), size.clone()]);
                }
            }
            t.print();
        }
        Command::Pull { image } => {
            if !json_out {
                eprintln!("Pulling {image} ...");
            }
            let started = std::time::Instant::now();
            let (username, password) = credentials::for_image(&image)?.unwrap_or_default();
            let mut stream = c
                .gantry
                .pull(PullRequest { image: image.clone(), username, password })
                .await
                .map_err(refused)?
                .into_inner();
            // Per layer: (bytes done, total, already there).
            let mut layers: std::collections::BTreeMap<String, (u64, u64, bool)> = Default::default();
            let mut id = String::new();
            while let Some(p) = stream.message().await.map_err(refused)? {
                if !p.image_id.is_empty() {
                    id = p.image_id;
                    break;
                }
                layers.insert(p.layer, (p.done, p.total, p.present));
                let (done, total) = layers.values().fold((0, 0), |(d, t), l| (d + l.0, t + l.1));
                let present = layers.values().filter(|l| l.2).count();
                format::progress(&format!("{} layers ({present} already here)", layers.len()), done, Some(total));
            }
            format::progress_done();
            if json_out {
                return print_json(&json!({"Image": image, "Id": id}));
            }
            println!("Pulled {image} ({}) in {:.1}s", short_id(&id), started.elapsed().as_secs_f64());
        }
        Command::Inspect { image } => {
            let r = c.gantry.inspect(InspectRequest { image }).await.map_err(refused)?.into_inner();
            let config: Value = serde_json::from_slice(&r.config_json).context("the image config is not JSON")?;
            let doc = json!({
                "Id": r.id,
                "RepoTags": r.repo_tags,
                "RepoDigests": r.repo_digests,
                "ManifestDigest": r.manifest_digest,
                "Created": config.get("created"),
                "Author": config.get("author"),
                "Architecture": config.get("architecture"),
                "Os": config.get("os"),
                "Config": config.get("config"),
                "RootFS": config.get("rootfs"),
                "Layers": r.layers.iter().map(|l| json!({
                    "Digest": l.digest, "MediaType": l.media_type, "Size": l.size,
                    "DiffID": l.diff_id, "UnpackedSize": l.unpacked_size,
                })).collect::<Vec<_>>(),
                "Size": r.size,
                "Containers": r.containers,
            });
            print_json(&doc)?;
        }
        Command::History { image } => {
            let r = c.gantry.inspect(InspectRequest { image }).await.map_err(refused)?.into_inner();
            let config: Value = serde_json::from_slice(&r.config_json).context("the image config is not JSON")?;
            let rows = history_rows(&config, &r.layers);
            if json_out {
                return print_json(&Value::Array(rows));
            }
            let mut t = Table::new(&["CREATED", "CREATED BY", "SIZE", "COMMENT"]);
            for h in rows.iter().rev() {
                let created = h["Created"].as_str().map(age).unwrap_or_default();
                let by = h["CreatedBy"].as_str().unwrap_or("").to_string();
                let size = human_size(h["Size"].as_u64().unwrap_or(0));
                t.row(vec![created, by, size, h["Comment"].as_str().unwrap_or("").to_string()]);
            }
            t.print();
        }
        Command::Tag { source, target } => {
            let r = c.gantry.tag(TagRequest { source, target }).await.map_err(refused)?.into_inner();
            if json_out {
                return print_json(&json!({"Id": r.id, "Tag": r.target}));
            }
            println!("Tagged {} as {}", short_id(&r.id), r.target);
        }
        Command::Rmi { images, force } => {
            let mut failed = None;
            for image in images {
                match c.gantry.remove(RemoveRequest { image: image.clone(), force }).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        for t in &r.untagged {
                            println!("Untagged: {t}");
                        }
                        if !r.deleted.is_empty() {
                            println!("Deleted: {}", r.deleted);
                        }
                    }
                    Err(e) => {
                        eprintln!("gantry: {}", e.message());
                        failed = Some(image);
                    }
                }
            }
            if let Some(image) = failed {
                anyhow::bail!("not every image was removed (last failure: {image})");
            }
        }
        Command::Df => {
            let r = c.gantry.disk_usage(DiskUsageRequest {}).await.map_err(refused)?.into_inner();
            if json_out {
                let images: Vec<Value> = r
                    .images
                    .iter()
                    .map(|i| {
                        json!({"Id": i.id, "RepoTags": i.repo_tags, "Size": i.size, "SharedSize": i.shared_size,
                        "UniqueSize": i.unique_size, "UnpackedSize": i.unpacked_size, "UnpackedShared": i.unpacked_shared,
                        "UnpackedUnique": i.unpacked_unique, "Containers": i.containers})
                    })
                    .collect();
                return print_json(&json!({"Images": images, "TotalSize": r.total_size,
                    "TotalUnpacked": r.total_unpacked, "SummedSize": r.summed_size, "SummedUnpacked": r.summed_unpacked}));
            }
            let mut t = Table::new(&[
                "REPOSITORY:TAG",
                "IMAGE ID",
                "SIZE",
                "SHARED",
                "UNIQUE",
                "UNPACKED",
                "UNPACKED UNIQUE",
                "CONTAINERS",
            ]);
            for i in &r.images {
                let name = i.repo_tags.first().cloned().unwrap_or_else(|| "<none>".into());
                t.row(vec![
                    name,
                    short_id(&i.id),
                    human_size(i.size),
                    human_size(i.shared_size),
                    human_size(i.unique_size),
                    human_size(i.unpacked_size),
                    human_size(i.unpacked_unique),
                    i.containers.to_string(),
                ]);
            }
            t.print();
            println!();
            println!(
                "{} images take {} compressed and {} unpacked on disk, each shared layer once (counted per image: {} and {}).",
                r.images.len(),
                human_size(r.total_size),
                human_size(r.total_unpacked),
                human_size(r.summed_size),
                human_size(r.summed_unpacked)
            );
        }
        Command::Save { output, images } => {
            let stream = c.gantry.save(SaveRequest { images }).await.map_err(refused)?.into_inner();
            let written = receive_to_file(stream, &output, "Saving").await?;
            if json_out {
                return print_json(&json!({"Output": output, "Bytes": written}));
            }
            println!("Saved {} to {}", human_size(written), output.display());
        }
        Command::Export { output, container } => {
            let stream = c.containers.export(ExportRequest { container }).await.map_err(refused)?.into_inner();
            let written = receive_to_file(stream, &output, "Exporting").await?;
            if json_out {
                return print_json(&json!({"Output": output, "Bytes": written}));
            }
            println!("Exported {} to {}", human_size(written), output.display());
        }
        Command::Import { changes, message, file, reference } => {
            let reference = reference.unwrap_or_default();
            let mut first = true;
            let (chunks, reader) = send_file(&file, "Importing", move |data| {
                let mut chunk = ImportChunk { data, ..Default::default() };
                // The first chunk carries the name and the changes.
                if std::mem::take(&mut first) {
                    (chunk.reference, chunk.changes, chunk.message) =
                        (reference.clone(), changes.clone(), message.clone());
                }
                chunk
            })?;
            let result = c.gantry.import(chunks).await;
            format::progress_done();
            reader.await??;
            let id = result.map_err(refused)?.into_inner().id;
            if json_out {
                return print_json(&json!({"Id": id}));
            }
            println!("{id}");
        }
        Command::Push { image } => {
            let (username, password) = credentials::for_image(&image)?.unwrap_or_default();
            if !json_out {
                eprintln!("Pushing {image} ...");
            }
            let request = PushRequest { image: image.clone(), username, password, ..Default::default() };
            let mut stream = c.gantry.push(request).await.map_err(refused)?.into_inner();
            let (mut blobs, mut bytes) = (0u64, 0u64);
            let mut last = None;
            while let Some(m) = stream.message().await.map_err(refused)? {
                if !m.digest.is_empty() {
                    last = Some(m);
                    break;
                }
                blobs += 1;
                bytes += m.size;
                format::progress(&format!("{blobs} blobs ({} {})", short_id(&m.blob), m.outcome), bytes, None);
            }
            format::progress_done();
            let r = last.context("gantryd ended the push without a result")?;
            if json_out {
                return print_json(&json!({"Image": image, "Digest": r.digest, "Uploaded": r.uploaded,
                    "Mounted": r.mounted, "AlreadyThere": r.present}));
            }
            println!(
                "Pushed {image}: {} ({} blobs uploaded, {} mounted, {} already there)",
                r.digest, r.uploaded, r.mounted, r.present
            );
        }
        Command::Load { input } => {
            let (chunks, reader) = send_file(&input, "Loading", |data| ArchiveChunk { data })?;
            let result = c.gantry.load(chunks).await;
            format::progress_done();
            reader.await??;
            let loaded = result.map_err(refused)?.into_inner().images;
            if json_out {
                let rows: Vec<Value> = loaded.iter().map(|i| json!({"Id": i.id, "RepoTags": i.repo_tags})).collect();
                return print_json(&Value::Array(rows));
            }
            for i in &loaded {
                if i.repo_tags.is_empty() {
                    println!("Loaded image ID: {}", i.id);
                }
                for t in &i.repo_tags {
                    println!("Loaded image: {t}");
                }
            }
        }
        Command::Ps { all } => {
            let filter = (!all).then(|| ContainerFilter {
                state: Some(ContainerStateValue { state: ContainerState::ContainerRunning as i32 }),
                ..Default::default()
            });
            let mut list = c
                .runtime
                .list_containers(ListContainersRequest { filter })
                .await
                .map_err(refused)?
                .into_inner()
                .containers;
            list.sort_by_key(|c| std::cmp::Reverse(c.created_at));
            if json_out {
                let mut rows = vec![];
                for ctr in &list {
                    let paused = ctr.state == ContainerState::ContainerRunning as i32
                        && client::is_paused(&mut c, &ctr.id).await;
                    rows.push(json!({"Id": ctr.id, "Name": ctr.metadata.as_ref().map(|m| m.name.clone()),
                        "Image": ctr.image.as_ref().map(|i| i.image.clone()), "ImageId": ctr.image_ref,
                        "State": if paused { "Paused" } else { state_name(ctr.state) }, "CreatedAt": ctr.created_at,
                        "PodSandboxId": ctr.pod_sandbox_id}));
                }
                return print_json(&Value::Array(rows));
            }
            let mut t = Table::new(&["CONTAINER ID", "IMAGE", "CREATED", "STATE", "NAME", "POD ID"]);
            for ctr in &list {
                let paused =
                    ctr.state == ContainerState::ContainerRunning as i32 && client::is_paused(&mut c, &ctr.id).await;
                let image = ctr.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
                let created = format::age_nanos(ctr.created_at);
                let name = ctr.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                let state = if paused { "Paused" } else { state_name(ctr.state) };
                t.row(vec![short_id(&ctr.id), image, created, state.into(), name, short_id(&ctr.pod_sandbox_id)]);
            }
            t.print();
        }
        Command::Commit { author, message, changes, container, reference } => {
            let request =
                CommitRequest { container, reference: reference.unwrap_or_default(), author, message, changes };
            let r = c.containers.commit(request).await.map_err(refused)?.into_inner();
            if json_out {
                return print_json(&json!({"Id": r.id}));
            }
            println!("{}", r.id);
        }
        Command::Pause { containers } => {
            for c_id in containers {
                let r = c.containers.pause(PauseRequest { container: c_id }).await.map_err(refused)?.into_inner();
                println!("{}", r.id);
            }
        }
        Command::Unpause { containers } => {
            for c_id in containers {
                let r = c.containers.unpause(PauseRequest { container: c_id }).await.map_err(refused)?.into_inner();
                println!("{}", r.id);
            }
        }
        Command::Rm { containers } => {
            let mut failed = None;
            for id in containers {
                let full = client::container_id(&mut c, &id).await?;
                match c.runtime.remove_container(RemoveContainerRequest { container_id: full.clone() }).await {
                    Ok(_) => println!("{full}"),
                    Err(e) => {
                        eprintln!("gantry: {}", e.message());
                        failed = Some(id);
                    }
                }
            }
            if let Some(id) = failed {
                anyhow::bail!("not every container was removed (last failure: {id})");
            }
        }
    }
    Ok(())
}

type Chunks<T> = tokio_stream::wrappers::ReceiverStream<T>;

/// Reads `path` on a blocking thread and streams it in 1 MiB chunks (at
/// least one, even for an empty file), made into messages by `make`.
fn send_file<T: Send + 'static>(
    path: &std::path::Path,
    what: &'static str,
    mut make: impl FnMut(Vec<u8>) -> T + Send + 'static,
) -> anyhow::Result<(Chunks<T>, tokio::task::JoinHandle<std::io::Result<()>>)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).ok();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut sent = 0u64;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = file.read(&mut buf)?;
            if n == 0 && sent > 0 {
                return Ok(());
            }
            buf.truncate(n);
            sent += n as u64;
            format::progress(what, sent, total);
            // The call ended early (refused): it says why.
            if tx.blocking_send(make(buf)).is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    Ok((tokio_stream::wrappers::ReceiverStream::new(rx), reader))
}

/// Writes a streamed archive beside `output` and renames it into place, so
/// a failure leaves no half file; the bytes written.
async fn receive_to_file(
    mut stream: tonic::Streaming<ArchiveChunk>,
    output: &std::path::Path,
    what: &str,
) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let partial = output.with_extension("partial");
    let mut file =
        tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?;
    let mut written = 0u64;
    let result = async {
        while let Some(chunk) = stream.message().await.map_err(refused)? {
            file.write_all(&chunk.data).await?;
            written += chunk.data.len() as u64;
            format::progress(what, written, None);
        }
        file.flush().await?;
        anyhow::Ok(())
    }
    .await;
    format::progress_done();
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, output).await?;
    Ok(written)
}

fn state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

/// One row per history entry; an entry that made a layer gets that layer's
/// unpacked size, in order (entries marked empty_layer made none).
fn history_rows(config: &Value, layers: &[gantry_proto::api::Layer]) -> Vec<Value> {
    let mut sizes = layers.iter().map(|l| l.unpacked_size);
    config["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            let size = if empty { 0 } else { sizes.next().unwrap_or(0) };
            json!({
                "Created": h.get("created"),
                "CreatedBy": h["created_by"].as_str().unwrap_or(""),
                "Size": size,
                "EmptyLayer": empty,
                "Comment": h["comment"].as_str().unwrap_or(""),
            })
        })
        .collect()
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
