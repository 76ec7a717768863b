//! The Gantry image API (proto/gantry.proto) over the image store: what
//! the `gantry` tool needs beyond CRI. Inspect, tag, Docker's removal rules
//! and per-image disk usage. Which containers use an image is the runtime's
//! knowledge, asked through `ContainerIndex`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gantry_proto::api::images_server::Images;
use gantry_proto::api::{
    ArchiveChunk, DiskUsageRequest, DiskUsageResponse, ImageUsage, ImportChunk, ImportResponse, InspectRequest,
    InspectResponse, Layer, LoadResponse, LoadedImage, PullProgress, PullRequest, PushRequest, PushResponse,
    RemoveRequest, RemoveResponse, SaveRequest, TagRequest, TagResponse,
};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status};

use crate::metadata::{ImageRecord, ImageSelector};
use crate::reference::{Digest, Reference};
use crate::store::ImageStore;

/// The containers created from an image (kept by the runtime).
#[tonic::async_trait]
pub trait ContainerIndex: Send + Sync + 'static {
    async fn containers_using(&self, image_id: &str) -> Vec<String>;
}

pub struct GantryImages {
    store: Arc<ImageStore>,
    containers: Arc<dyn ContainerIndex>,
}

impl GantryImages {
    pub fn new(store: Arc<ImageStore>, containers: Arc<dyn ContainerIndex>) -> Self {
        GantryImages { store, containers }
    }

    async fn resolve(&self, image: &str) -> Result<(ImageSelector, ImageRecord), Status> {
        if image.is_empty() {
            return Err(Status::invalid_argument("no image given"));
        }
        let selector = ImageSelector::parse(image).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let record = self
            .store
            .resolve(&selector)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("image {image:?} not found")))?;
        Ok((selector, record))
    }

    /// Unpacked bytes of each layer snapshot, off the async threads (a layer
    /// without a recorded size is walked).
    async fn unpacked_sizes(&self, chains: Vec<Digest>) -> HashMap<Digest, u64> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            chains
                .into_iter()
                .map(|c| {
                    let bytes = store.snapshotter().layer_size(&c);
                    (c, bytes)
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

/// A `Write` that sends what it gets down a channel (a save's tar, written
/// on a blocking thread, streamed to the client as it is made).
pub struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<ArchiveChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<Result<ArchiveChunk, Status>>) -> Self {
        ChunkWriter { tx, buf: Vec::new() }
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = ArchiveChunk { data: std::mem::take(&mut self.buf) };
            self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::other("the client went away"))?;
        }
        Ok(())
    }
}

fn archive_status(e: crate::archive::ArchiveError) -> Status {
    use crate::archive::ArchiveError as E;
    match e {
        E::Store(_) => Status::internal(e.to_string()),
        E::Io(_) => Status::invalid_argument(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

pub type ChunkStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ArchiveChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Images for GantryImages {
    type SaveStream = ChunkStream;
    type PushStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<PushResponse, Status>> + Send>>;
    type PullStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<PullProgress, Status>> + Send>>;

    async fn pull(&self, request: Request<PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let req = request.into_inner();
        if req.image.is_empty() {
            return Err(Status::invalid_argument("no image to pull"));
        }
        let credentials = if req.username.is_empty() {
            crate::registry::Credentials::Anonymous
        } else {
            crate::registry::Credentials::Basic { username: req.username, password: req.password }
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let events = tx.clone();
        let progress: crate::pull::Progress = std::sync::Arc::new(move |p: crate::pull::LayerProgress| {
            let _ = events.send(Ok(PullProgress {
                layer: p.layer.to_string(),
                done: p.done,
                total: p.total,
                present: p.present,
                image_id: String::new(),
            }));
        });
        let store = self.store.clone();
        tokio::spawn(async move {
            let last = match store.pull_with_progress(&req.image, &credentials, Some(progress)).await {
                Ok(image) => Ok(PullProgress { image_id: image.id.to_string(), ..Default::default() }),
                Err(e) => Err(crate::service::pull_status(&e)),
            };
            let _ = tx.send(last);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }

    async fn save(&self, request: Request<SaveRequest>) -> Result<Response<Self::SaveStream>, Status> {
        let names = request.into_inner().images;
        if names.is_empty() {
            return Err(Status::invalid_argument("no image to save"));
        }
        let mut images = vec![];
        for name in &names {
            let (_, image) = self.resolve(name).await?;
            // Tags the caller did not name still go along, as docker save by ID does.
            if !images.iter().any(|i: &ImageRecord| i.id == image.id) {
                images.push(image);
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter { tx: tx.clone(), buf: Vec::new() };
            let result = store.save(&images, &mut w).and_then(|_| std::io::Write::flush(&mut w).map_err(Into::into));
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::internal(format!("writing the archive: {e}"))));
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        let req = request.into_inner();
        let (_, image) = self.resolve(&req.image).await?;
        let target = if req.target.is_empty() { &req.image } else { &req.target };
        let target = Reference::parse(target).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let credentials = if req.username.is_empty() {
            crate::registry::Credentials::Anonymous
        } else {
            crate::registry::Credentials::Basic { username: req.username, password: req.password }
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let store = self.store.clone();
        tokio::spawn(async move {
            let events = tx.clone();
            let on_blob = move |digest: &Digest, size: u64, outcome: crate::registry::push::BlobPush| {
                use crate::registry::push::BlobPush as B;
                let outcome = match outcome {
                    B::Present => "present",
                    B::Mounted => "mounted",
                    B::Uploaded => "uploaded",
                };
                let blob = digest.to_string();
                let _ = events.send(Ok(PushResponse { blob, size, outcome: outcome.into(), ..Default::default() }));
            };
            let last = match store.push(&image, &target, &credentials, &on_blob).await {
                Ok((digest, summary)) => Ok(PushResponse {
                    digest: digest.to_string(),
                    uploaded: summary.uploaded,
                    mounted: summary.mounted,
                    present: summary.present,
                    ..Default::default()
                }),
                Err(e) => {
                    use crate::publish::PushError as P;
                    use crate::registry::RegistryError as R;
                    let msg = format!("pushing {target}: {e}");
                    Err(match e {
                        P::NotATag(_) => Status::invalid_argument(msg),
                        P::Registry(R::Unauthorized { .. }) => Status::unauthenticated(msg),
                        P::Registry(R::Unreachable { .. } | R::NoEndpoint { .. }) => Status::unavailable(msg),
                        P::Registry(R::NotFound { .. }) => Status::not_found(msg),
                        _ => Status::unknown(msg),
                    })
                }
            };
            let _ = tx.send(last);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }

    async fn import(
        &self,
        request: Request<tonic::Streaming<ImportChunk>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let mut incoming = request.into_inner();
        let spool = self.store.root().join(crate::fsutil::random_name("import"));
        let result = async {
            let mut opts = crate::commit::CommitOptions::default();
            let mut file = tokio::fs::File::create(&spool).await.map_err(|e| Status::internal(e.to_string()))?;
            let mut first = true;
            while let Some(chunk) = incoming.message().await? {
                if first {
                    opts.reference = chunk.reference;
                    opts.changes = chunk.changes;
                    opts.message = chunk.message;
                    first = false;
                }
                file.write_all(&chunk.data).await.map_err(|e| Status::internal(e.to_string()))?;
            }
            file.flush().await.map_err(|e| Status::internal(e.to_string()))?;
            drop(file);
            self.store.import_tar(&spool, &opts).await.map_err(|e| match e {
                crate::commit::CommitError::Store(e) => Status::internal(e.to_string()),
                other => Status::invalid_argument(format!("importing: {other}")),
            })
        }
        .await;
        let _ = tokio::fs::remove_file(&spool).await;
        Ok(Response::new(ImportResponse { id: result?.id.to_string() }))
    }

    async fn load(&self, request: Request<tonic::Streaming<ArchiveChunk>>) -> Result<Response<LoadResponse>, Status> {
        let mut incoming = request.into_inner();
        // The archive is spooled to disk first: a tar's index may come last.
        let spool = self.store.root().join(crate::fsutil::random_name("load"));
        let result = async {
            let mut file = tokio::fs::File::create(&spool).await.map_err(|e| Status::internal(e.to_string()))?;
            while let Some(chunk) = incoming.message().await? {
                file.write_all(&chunk.data).await.map_err(|e| Status::internal(e.to_string()))?;
            }
            file.flush().await.map_err(|e| Status::internal(e.to_string()))?;
            drop(file);
            self.store.load(&spool).await.map_err(archive_status)
        }
        .await;
        let _ = tokio::fs::remove_file(&spool).await;
        let images =
            result?.into_iter().map(|r| LoadedImage { id: r.id.to_string(), repo_tags: r.repo_tags }).collect();
        Ok(Response::new(LoadResponse { images }))
    }

    async fn inspect(&self, request: Request<InspectRequest>) -> Result<Response<InspectResponse>, Status> {
        let (_, image) = self.resolve(&request.into_inner().image).await?;
        let config_json = self
            .store
            .content()
            .read(&image.config.digest)
            .map_err(|e| Status::data_loss(format!("config of image {}: {e}", image.id)))?;
        let unpacked = self.unpacked_sizes(image.layers.iter().map(|l| l.chain_id.clone()).collect()).await;
        let layers = image
            .layers
            .iter()
            .map(|l| Layer {
                digest: l.blob.digest.to_string(),
                media_type: l.blob.media_type.clone(),
                size: l.blob.size,
                diff_id: l.diff_id.to_string(),
                unpacked_size: unpacked.get(&l.chain_id).copied().unwrap_or(0),
            })
            .collect();
        Ok(Response::new(InspectResponse {
            id: image.id.to_string(),
            repo_tags: image.repo_tags.clone(),
            repo_digests: image.repo_digests.clone(),
            manifest_digest: image.manifest.digest.to_string(),
            config_json,
            layers,
            size: image.size(),
            containers: self.containers.containers_using(&image.id.to_string()).await,
        }))
    }

    async fn tag(&self, request: Request<TagRequest>) -> Result<Response<TagResponse>, Status> {
        let req = request.into_inner();
        let (_, image) = self.resolve(&req.source).await?;
        let target = Reference::parse(&req.target).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if target.digest.is_some() {
            return Err(Status::invalid_argument(format!("tag target {:?} is a digest, not a tag", req.target)));
        }
        let target = target.to_string();
        self.store.tag(&image, &target).await.map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(image = %image.id, tag = %target, "image tagged");
        Ok(Response::new(TagResponse { id: image.id.to_string(), target }))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let req = request.into_inner();
        let (selector, image) = self.resolve(&req.image).await?;
        let named_tag = match &selector {
            ImageSelector::Ref(r) if r.digest.is_none() => Some(r.to_string()),
            _ => None,
        };
        // One of several tags: only the tag goes, as `docker rmi` does.
        if let Some(tag) = named_tag.as_ref().filter(|t| image.repo_tags.contains(t) && image.repo_tags.len() > 1) {
            self.store.untag(&image.id, tag).await.map_err(|e| Status::internal(e.to_string()))?;
            return Ok(Response::new(RemoveResponse { untagged: vec![tag.clone()], deleted: String::new() }));
        }
        if self.store.is_pinned(&image) && !req.force {
            return Err(Status::failed_precondition(format!(
                "image {} is pinned by gantryd's pinned_images: force to remove it anyway",
                req.image
            )));
        }
        let users = self.containers.containers_using(&image.id.to_string()).await;
        if !users.is_empty() && !req.force {
            return Err(Status::failed_precondition(format!(
                "image {} is used by container {}: remove the container first, or force (its layers stay while it exists)",
                req.image,
                users.join(", ")
            )));
        }
        if named_tag.is_none() && image.repo_tags.len() > 1 && !req.force {
            return Err(Status::failed_precondition(format!(
                "image {} is tagged {}: remove the tags one by one, or force",
                image.id,
                image.repo_tags.join(", ")
            )));
        }
        self.store.remove(&ImageSelector::Id(image.id.clone())).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RemoveResponse { untagged: image.repo_tags.clone(), deleted: image.id.to_string() }))
    }

    async fn disk_usage(&self, _: Request<DiskUsageRequest>) -> Result<Response<DiskUsageResponse>, Status> {
        let images = self.store.list().map_err(|e| Status::internal(e.to_string()))?;
        // How many images use each layer blob and each unpacked layer.
        let mut blob_users: HashMap<Digest, u32> = HashMap::new();
        let mut chain_users: HashMap<Digest, u32> = HashMap::new();
        for image in &images {
            for l in &image.layers {
                *blob_users.entry(l.blob.digest.clone()).or_default() += 1;
                *chain_users.entry(l.chain_id.clone()).or_default() += 1;
            }
        }
        let unpacked = self.unpacked_sizes(chain_users.keys().cloned().collect()).await;
        let mut out = DiskUsageResponse::default();
        let mut counted: HashSet<Digest> = HashSet::new();
        for image in &images {
            let mut u = ImageUsage {
                id: image.id.to_string(),
                repo_tags: image.repo_tags.clone(),
                size: image.size(),
                containers: self.containers.containers_using(&image.id.to_string()).await.len() as u32,
                ..Default::default()
            };
            for l in &image.layers {
                let shared = blob_users.get(&l.blob.digest).copied().unwrap_or(1) > 1;
                let bytes = unpacked.get(&l.chain_id).copied().unwrap_or(0);
                u.unpacked_size += bytes;
                if shared {
                    u.shared_size += l.blob.size;
                }
                if chain_users.get(&l.chain_id).copied().unwrap_or(1) > 1 {
                    u.unpacked_shared += bytes;
                }
            }
            u.unique_size = u.size - u.shared_size;
            u.unpacked_unique = u.unpacked_size - u.unpacked_shared;
            out.summed_size += u.size;
            out.summed_unpacked += u.unpacked_size;
            for blob in [&image.manifest, &image.config].into_iter().chain(image.layers.iter().map(|l| &l.blob)) {
                if counted.insert(blob.digest.clone()) {
                    out.total_size += blob.size;
                }
            }
            out.images.push(u);
        }
        out.total_unpacked = unpacked.values().sum();
        Ok(Response::new(out))
    }
}
