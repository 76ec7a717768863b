//! Pulling an image: resolve, pick the host's platform, fetch the config, then
//! download every layer in parallel, decompressing and unpacking it while it
//! streams, and record the image only once every digest checked out.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tracing::Instrument;

use crate::content::{BlobWriter, ContentError, SealedBlob};
use crate::media::Compression;
use crate::metadata::{BlobRef, ImageRecord, LayerRecord};
use crate::reference::{Digest, Reference, ReferenceError};
use crate::registry::{
    Credentials, RegistryError, RepoSession, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_SCHEMA1,
    MEDIA_DOCKER_SCHEMA1_SIGNED, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::snapshot::apply::{apply_layer, ApplyError};
use crate::snapshot::{chain_ids, SnapshotError, UnpackDir};
use crate::store::{ImageStore, StoreError};

/// Image configs are small: anything larger is refused before it is read,
/// as containerd does (4 MiB, like manifests).
const MAX_CONFIG_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: {reason}")]
    Unsupported { reference: String, reason: String },
    #[error("{reference}: {reason}")]
    BadImage { reference: String, reason: String },
    #[error("{reference}: layer {digest}: {source}")]
    Layer { reference: String, digest: Digest, source: LayerError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("uncompressed content has digest {actual}, but the image config says {expected}")]
    DiffId { expected: Digest, actual: Digest },
    #[error("blob is larger than the {expected} bytes its descriptor says")]
    TooLarge { expected: u64 },
    #[error("reading or decompressing the layer: {0}")]
    Io(#[from] io::Error),
    #[error("unpack task failed: {0}")]
    Join(String),
    #[error("the unpack stopped before the download ended")]
    UnpackStopped,
    #[error("media type {0:?} is not a layer Gantry can unpack (a tar, plain, gzip or zstd)")]
    MediaType(String),
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    pub(crate) annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) config: Descriptor,
    #[serde(default)]
    pub(crate) layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Index {
    pub(crate) manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConfigRootfs {
    pub(crate) rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub(crate) diff_ids: Vec<String>,
}

/// The platform images are chosen for: this host's.
pub fn host_platform() -> (&'static str, &'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("linux", "amd64", None),
        "aarch64" => ("linux", "arm64", Some("v8")),
        "arm" => ("linux", "arm", Some("v7")),
        "x86" => ("linux", "386", None),
        "powerpc64" => ("linux", "ppc64le", None),
        "s390x" => ("linux", "s390x", None),
        "riscv64" => ("linux", "riscv64", None),
        other => ("linux", other, None),
    }
}

fn is_manifest_type(t: &str) -> bool {
    t == MEDIA_OCI_MANIFEST || t == MEDIA_DOCKER_MANIFEST
}

fn is_index_type(t: &str) -> bool {
    t == MEDIA_OCI_INDEX || t == MEDIA_DOCKER_LIST
}

fn parse_digest(reference: &Reference, s: &str) -> Result<Digest, PullError> {
    s.parse()
        .map_err(|e: ReferenceError| PullError::BadImage { reference: reference.to_string(), reason: e.to_string() })
}

/// Where a layer of a pull stands, for progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    pub layer: Digest,
    /// Compressed bytes received so far, of `total`.
    pub done: u64,
    pub total: u64,
    /// Already in the store: nothing to fetch.
    pub present: bool,
}

pub type Progress = Arc<dyn Fn(LayerProgress) + Send + Sync>;

impl ImageStore {
    /// Pulls `image` and returns its record (the ID is the config digest).
    pub async fn pull(self: &Arc<Self>, image: &str, credentials: &Credentials) -> Result<ImageRecord, PullError> {
        self.pull_with_progress(image, credentials, None).await
    }

    /// As `pull`, reporting each layer's progress to `progress`.
    pub async fn pull_with_progress(
        self: &Arc<Self>,
        image: &str,
        credentials: &Credentials,
        progress: Option<Progress>,
    ) -> Result<ImageRecord, PullError> {
        let reference = Reference::parse(image)?;
        let span = tracing::info_span!("pull", image = %reference);
        self.pull_reference(reference, credentials, progress).instrument(span).await
    }

    async fn pull_reference(
        self: &Arc<Self>,
        reference: Reference,
        credentials: &Credentials,
        progress: Option<Progress>,
    ) -> Result<ImageRecord, PullError> {
        let started = std::time::Instant::now();
        let _shared = self.gc_lock.read().await;
        let bad = |reason: String| PullError::BadImage { reference: reference.to_string(), reason };
        let (session, top) = self.registry.resolve(&reference, credentials).await?;
        tracing::debug!(endpoint = %session.endpoint.base, media_type = %top.media_type, digest = %top.digest, "resolved");

        let mut kept_blobs = Vec::new();
        let manifest = if top.media_type == MEDIA_DOCKER_SCHEMA1 || top.media_type == MEDIA_DOCKER_SCHEMA1_SIGNED {
            return Err(PullError::Unsupported {
                reference: reference.to_string(),
                reason: "Docker image manifest schema 1 is deprecated and not supported; push the image again with a current client (schema 2 or OCI)".into(),
            });
        } else if is_index_type(&top.media_type) {
            let index: Index =
                serde_json::from_slice(&top.bytes).map_err(|e| bad(format!("image index is malformed: {e}")))?;
            let chosen = select_platform(&index.manifests).ok_or_else(|| {
                let (os, arch, _) = host_platform();
                let offered: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)))
                    .collect();
                PullError::Registry(RegistryError::NotFound {
                    reference: reference.to_string(),
                    endpoint: session.endpoint.base.clone(),
                    detail: format!(" (no image for platform {os}/{arch}; the index offers {})", offered.join(", ")),
                })
            })?;
            kept_blobs.push(BlobRef {
                digest: top.digest.clone(),
                size: top.bytes.len() as u64,
                media_type: top.media_type.clone(),
            });
            let digest = parse_digest(&reference, &chosen.digest)?;
            let m = session.fetch_manifest(&digest.to_string(), Some(&digest)).await?;
            if !is_manifest_type(&m.media_type) {
                return Err(bad(format!("index entry {digest} is a {}, not an image manifest", m.media_type)));
            }
            m
        } else if is_manifest_type(&top.media_type) {
            top.clone()
        } else {
            return Err(PullError::Unsupported {
                reference: reference.to_string(),
                reason: format!("unsupported manifest media type {:?}", top.media_type),
            });
        };

        let parsed: Manifest =
            serde_json::from_slice(&manifest.bytes).map_err(|e| bad(format!("image manifest is malformed: {e}")))?;
        let config_digest = parse_digest(&reference, &parsed.config.digest)?;
        let config_bytes = match self.content.read(&config_digest) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => session.fetch_small_blob(&config_digest, MAX_CONFIG_BYTES).await?,
        };
        let config: ConfigRootfs =
            serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("image config is malformed: {e}")))?;
        if config.rootfs.diff_ids.len() != parsed.layers.len() {
            return Err(bad(format!(
                "manifest has {} layers but the config lists {} diff IDs",
                parsed.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let diff_ids =
            config.rootfs.diff_ids.iter().map(|d| parse_digest(&reference, d)).collect::<Result<Vec<_>, _>>()?;
        let chains = chain_ids(&diff_ids);

        let mut layers = Vec::with_capacity(parsed.layers.len());
        for ((desc, diff_id), chain_id) in parsed.layers.iter().zip(&diff_ids).zip(&chains) {
            if desc.media_type.contains("encrypted") {
                return Err(PullError::Unsupported {
                    reference: reference.to_string(),
                    reason: format!("layer {} is encrypted ({})", desc.digest, desc.media_type),
                });
            }
            // The media type decides how a layer is read; nothing is fetched
            // for an image with a layer of a type that is not a known tar.
            if crate::media::layer_compression(&desc.media_type).is_none() {
                return Err(PullError::Unsupported {
                    reference: reference.to_string(),
                    reason: format!(
                        "layer {} has media type {:?}, not a tar Gantry can unpack",
                        desc.digest, desc.media_type
                    ),
                });
            }
            layers.push(LayerRecord {
                blob: BlobRef {
                    digest: parse_digest(&reference, &desc.digest)?,
                    size: desc.size,
                    media_type: desc.media_type.clone(),
                },
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            });
        }
        let fetches = layers.iter().map(|l| self.fetch_layer(&session, &reference, l, progress.clone()));
        futures::future::try_join_all(fetches).await?;

        // Small blobs are stored last, so a pull that failed on a layer leaves
        // no config or manifest behind. (Layers it completed stay for a retry
        // and are collected by the next GC if nothing uses them.)
        self.content.write_all(&config_digest, &config_bytes).map_err(StoreError::from)?;
        if is_index_type(&top.media_type) {
            self.content.write_all(&top.digest, &top.bytes).map_err(StoreError::from)?;
        }
        self.content.write_all(&manifest.digest, &manifest.bytes).map_err(StoreError::from)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
        let record = ImageRecord {
            id: config_digest.clone(),
            repo_tags: reference.tag.as_ref().map(|_| reference.to_string()).into_iter().collect(),
            repo_digests: vec![reference.with_digest(&top.digest)],
            manifest: BlobRef {
                digest: manifest.digest.clone(),
                size: manifest.bytes.len() as u64,
                media_type: manifest.media_type.clone(),
            },
            config: BlobRef {
                digest: config_digest,
                size: config_bytes.len() as u64,
                media_type: parsed.config.media_type.clone(),
            },
            layers,
            kept_blobs,
            created_unix_nanos: now,
            pinned: false,
        };
        let meta = &self.meta;
        let record = meta.put(record).map_err(StoreError::from)?;
        self.usage_changed();
        tracing::info!(id = %record.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
        Ok(record)
    }

    /// Makes sure one layer's blob and unpacked snapshot exist, fetching and
    /// unpacking it once however many pulls ask at the same time.
    async fn fetch_layer(
        self: &Arc<Self>,
        session: &Arc<RepoSession>,
        reference: &Reference,
        layer: &LayerRecord,
        progress: Option<Progress>,
    ) -> Result<(), PullError> {
        let digest = layer.blob.digest.clone();
        let err =
            |source: LayerError| PullError::Layer { reference: reference.to_string(), digest: digest.clone(), source };
        let _one_at_a_time = self.inflight.lock(layer.chain_id.hex()).await;
        let have_blob = self.content.has(&digest);
        let have_layer = self.snapshots.has_layer(&layer.chain_id);
        if have_blob && have_layer {
            if let Some(p) = &progress {
                let size = layer.blob.size;
                p(LayerProgress { layer: digest.clone(), done: size, total: size, present: true });
            }
            return Ok(());
        }
        let unpack = if have_layer { None } else { Some(self.snapshots.begin_unpack().map_err(|e| err(e.into()))?) };
        let this = Arc::clone(self);
        let job = LayerJob { layer: layer.clone(), unpack };
        if have_blob {
            tracing::debug!(layer = %digest, "unpacking from the content store");
            let path = self.content.path(&digest);
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path)?;
                this.process_layer(file, None, job)
            })
            .await
            .map_err(|e| err(LayerError::Join(e.to_string())))?
            .map_err(err)?;
            return Ok(());
        }
        let permit = self.downloads.clone().acquire_owned().await.map_err(|e| err(LayerError::Join(e.to_string())))?;
        tracing::debug!(layer = %digest, size = layer.blob.size, "downloading");
        let stream = session.fetch_blob(&digest).await?;
        let writer = self.content.writer().map_err(|e| err(e.into()))?;
        let compression = crate::media::layer_compression(&layer.blob.media_type)
            .ok_or_else(|| err(LayerError::MediaType(layer.blob.media_type.clone())))?;

        // Download (and content store) on one thread, decompress + digest +
        // unpack on another, a bounded channel of chunks between them: the
        // layer takes about as long as the slower of the two.
        let (tx, unpacking) = match job.unpack {
            Some(unpack) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT);
                let unpacking = tokio::task::spawn_blocking(move || {
                    let diff_id = unpack_stream(ChunkReader::new(rx), compression, &unpack.fs())?;
                    Ok::<_, LayerError>((unpack, diff_id))
                });
                (Some(tx), Some(unpacking))
            }
            None => (None, None),
        };
        let handle = tokio::runtime::Handle::current();
        let blob = layer.blob.clone();
        // The layer's syncfs at commit makes the blob durable too, when both
        // are on one filesystem: then the blob is not fsynced on its own.
        let seal = if tx.is_some() && self.blobs_synced_with_layers { Seal::ForSyncfs } else { Seal::Fsync };
        let downloaded =
            tokio::task::spawn_blocking(move || download_blob(&handle, stream, writer, &blob, tx, progress, seal))
                .await;
        // Whatever the download's fate, the unpack ends (its channel closed)
        // and is waited for: a failed layer leaves nothing behind once this
        // returns.
        let unpacked = match unpacking {
            Some(h) => Some(h.await.map_err(|e| err(LayerError::Join(e.to_string())))?),
            None => None,
        };
        let sealed = match downloaded.map_err(|e| err(LayerError::Join(e.to_string())))? {
            Ok(sealed) => sealed,
            // The unpack stopped first: its error is the cause.
            Err(LayerError::UnpackStopped) => match unpacked {
                Some(Err(e)) => return Err(err(e)),
                _ => return Err(err(LayerError::UnpackStopped)),
            },
            Err(e) => return Err(err(e)),
        };
        let unpacked = unpacked.transpose().map_err(err)?;
        if let Some((_, diff_id)) = &unpacked {
            if diff_id != &layer.diff_id {
                return Err(err(LayerError::DiffId { expected: layer.diff_id.clone(), actual: diff_id.clone() }));
            }
        }
        // Downloaded and unpacked: the next layer may start while this one
        // waits for the disk.
        drop(permit);
        let chain_id = layer.chain_id.clone();
        let size = layer.blob.size;
        tokio::task::spawn_blocking(move || {
            // The blob first: a layer is never committed without its blob.
            // With an unpack, the blob is published once the layer's syncfs
            // made both durable, before the layer is renamed into place.
            match unpacked {
                Some((unpack, _)) => {
                    this.snapshots.commit_with(unpack, &chain_id, || sealed.publish().map_err(LayerError::from))?
                }
                None => sealed.publish()?,
            }
            this.counters.pulled_bytes.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, LayerError>(())
        })
        .await
        .map_err(|e| err(LayerError::Join(e.to_string())))?
        .map_err(err)
    }

    /// Runs on a blocking thread: tees the compressed bytes into the content
    /// store while decompressing and unpacking them, then verifies both digests
    /// before anything becomes visible.
    pub(crate) fn process_layer(
        &self,
        reader: impl Read + Send,
        writer: Option<BlobWriter>,
        job: LayerJob,
    ) -> Result<(), LayerError> {
        let compression = crate::media::layer_compression(&job.layer.blob.media_type)
            .ok_or_else(|| LayerError::MediaType(job.layer.blob.media_type.clone()))?;
        let mut tee = TeeReader { inner: reader, writer, limit: job.layer.blob.size };
        if let Some(unpack) = job.unpack {
            let diff_id = decode_and_apply(BufReader::with_capacity(256 << 10, &mut tee), compression, &unpack.fs())?;
            if diff_id != job.layer.diff_id {
                return Err(LayerError::DiffId { expected: job.layer.diff_id, actual: diff_id });
            }
            // The compressed stream may go on past the decompressor's end (gzip trailer padding).
            io::copy(&mut tee, &mut io::sink())?;
            if let Some(w) = tee.writer.take() {
                w.commit(&job.layer.blob.digest, job.layer.blob.size)?;
                self.counters.pulled_bytes.fetch_add(job.layer.blob.size, std::sync::atomic::Ordering::Relaxed);
            }
            self.snapshots.commit(unpack, &job.layer.chain_id)?;
        } else {
            io::copy(&mut tee, &mut io::sink())?;
            if let Some(w) = tee.writer.take() {
                w.commit(&job.layer.blob.digest, job.layer.blob.size)?;
            }
        }
        Ok(())
    }
}

/// Chunks in flight between a layer's download and its unpack. A chunk is
/// what one read of the response body gives (at most some hundreds of KiB,
/// mostly tens), which bounds the memory a layer holds.
const CHUNKS_IN_FLIGHT: usize = 64;

/// How a downloaded blob is sealed.
#[derive(Clone, Copy)]
enum Seal {
    /// fsynced on its own.
    Fsync,
    /// Left to the syncfs that commits the layer unpacked from it.
    ForSyncfs,
}

/// Runs on a blocking thread: reads the blob from `stream` into the content
/// store (hashing it as it goes) and hands each chunk to the unpack, if any.
/// Returns the sealed blob: digest and size checked, not yet visible, its
/// bytes on disk (`Seal::Fsync`) or to be synced with the layer.
fn download_blob<S>(
    handle: &tokio::runtime::Handle,
    mut stream: S,
    mut writer: BlobWriter,
    blob: &BlobRef,
    tx: Option<SyncSender<Bytes>>,
    progress: Option<Progress>,
    seal: Seal,
) -> Result<SealedBlob, LayerError>
where
    S: futures::Stream<Item = io::Result<Bytes>> + Unpin,
{
    let mut reported = 0u64;
    while let Some(chunk) = handle.block_on(stream.next()) {
        let chunk = chunk?;
        writer.write_all(&chunk)?;
        let done = writer.written();
        if done > blob.size {
            return Err(LayerError::TooLarge { expected: blob.size });
        }
        if let Some(p) = &progress {
            if done - reported >= 256 << 10 || done == blob.size {
                reported = done;
                p(LayerProgress { layer: blob.digest.clone(), done, total: blob.size, present: false });
            }
        }
        if let Some(tx) = &tx {
            if tx.send(chunk).is_err() {
                return Err(LayerError::UnpackStopped);
            }
        }
    }
    if let Some(p) = &progress {
        if reported != writer.written() {
            p(LayerProgress { layer: blob.digest.clone(), done: writer.written(), total: blob.size, present: false });
        }
    }
    // The end of the stream, for the unpack: it may now finish.
    drop(tx);
    Ok(match seal {
        Seal::Fsync => writer.seal(&blob.digest, blob.size)?,
        Seal::ForSyncfs => writer.seal_for_syncfs(&blob.digest, blob.size)?,
    })
}

/// Runs on a blocking thread: decompresses, digests and unpacks the chunks
/// the download hands over, into `root`; returns the diff ID. Reads its input
/// to the end, so that the download never waits on a finished unpack.
fn unpack_stream(
    mut input: ChunkReader,
    compression: Compression,
    root: &std::path::Path,
) -> Result<Digest, LayerError> {
    let diff_id = decode_and_apply(&mut input, compression, root)?;
    // The compressed stream may go on past the decompressor's end (padding).
    io::copy(&mut input, &mut io::sink())?;
    Ok(diff_id)
}

/// Decompressed bytes in flight between a layer's decompression and its
/// unpack: 16 buffers of 256 KiB.
const DECODED_BUFFERS: usize = 16;
const DECODED_BUFFER_SIZE: usize = 256 << 10;

/// Decompresses `input` and applies the tar it holds into `root`, hashing
/// the uncompressed bytes; returns their digest (the diff ID). Decompression
/// and hashing run on a thread of their own, so that the unpack's thread
/// only writes files: the layer takes about as long as the slower of the two.
fn decode_and_apply(
    input: impl BufRead + Send,
    compression: Compression,
    root: &std::path::Path,
) -> Result<Digest, LayerError> {
    let (mut writer, mut reader) = crate::buffer_pipe::buffer_pipe(DECODED_BUFFERS, DECODED_BUFFER_SIZE);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || -> io::Result<Option<Digest>> {
            let mut decoded: Box<dyn Read> = match compression {
                Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
                Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
                Compression::None => Box::new(input),
            };
            let mut hasher = Sha256::new();
            loop {
                match writer.fill_from(&mut decoded, |bytes| hasher.update(bytes))? {
                    Some(0) => return Ok(Some(Digest::from_sha256(hasher))),
                    Some(_) => {}
                    // The unpack stopped: its error says why.
                    None => return Ok(None),
                }
            }
        });
        let applied = apply_layer(&mut reader, root).map_err(LayerError::from).and_then(|_| {
            // The tar may carry padding after its end marker; it counts for the diff ID.
            io::copy(&mut reader, &mut io::sink()).map(drop).map_err(LayerError::from)
        });
        // Ends the decoder's sends if the unpack stopped early.
        drop(reader);
        let decoded = decoder.join().map_err(|_| LayerError::Join("the layer's decompression panicked".into()))?;
        match (decoded, applied) {
            // A broken stream is the cause of whatever the unpack made of it.
            (Err(e), _) => Err(e.into()),
            (Ok(_), Err(e)) => Err(e),
            (Ok(Some(diff_id)), Ok(())) => Ok(diff_id),
            (Ok(None), Ok(())) => Err(LayerError::UnpackStopped),
        }
    })
}

/// The unpack's end of the channel, read as one stream.
struct ChunkReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    fn new(rx: Receiver<Bytes>) -> Self {
        ChunkReader { rx, current: Bytes::new() }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::buffer_pipe::read_through_buffer(self, buf)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                // The download ended (or failed, and says so itself): end of stream.
                Err(_) => break,
            }
        }
        Ok(&self.current)
    }
    fn consume(&mut self, n: usize) {
        self.current.advance(n);
    }
}

pub(crate) struct LayerJob {
    pub(crate) layer: LayerRecord,
    pub(crate) unpack: Option<UnpackDir>,
}

/// Copies every byte read into the blob writer, and stops a stream that runs
/// past its descriptor's size.
struct TeeReader<R> {
    inner: R,
    writer: Option<BlobWriter>,
    limit: u64,
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&buf[..n])?;
            if w.written() > self.limit {
                return Err(io::Error::new(io::ErrorKind::InvalidData, LayerError::TooLarge { expected: self.limit }));
            }
        }
        Ok(n)
    }
}

/// Picks the manifest for this host: same OS and architecture, the host's
/// variant preferred, else one without a variant, else any variant.
pub(crate) fn select_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let (os, arch, variant) = host_platform();
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|m| m.media_type.is_empty() || is_manifest_type(&m.media_type))
        .filter(|m| m.platform.as_ref().is_some_and(|p| p.os == os && p.architecture == arch))
        .collect();
    let variant_of = |m: &&Descriptor| m.platform.as_ref().and_then(|p| p.variant.clone());
    candidates
        .iter()
        .find(|m| variant_of(m).as_deref() == variant && variant.is_some())
        .or_else(|| candidates.iter().find(|m| variant_of(m).is_none()))
        .or_else(|| candidates.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: format!("sha256:{arch}"),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
            annotations: Default::default(),
        }
    }

    #[test]
    fn picks_the_host_platform() {
        let (_, arch, _) = host_platform();
        let list = vec![desc("s390x", None), desc(arch, None), desc("riscv64", None)];
        assert_eq!(select_platform(&list).map(|d| d.digest.clone()), Some(format!("sha256:{arch}")));
        assert!(select_platform(&[desc("s390x", None)]).is_none() || arch == "s390x");
    }
}
