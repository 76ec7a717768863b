//! The image store: content, snapshots and metadata behind one API, with the
//! locking that keeps pulls, removals and garbage collection consistent.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, OwnedMutexGuard, RwLock, Semaphore};

use crate::content::{ContentError, ContentStore};
use crate::metadata::{ImageRecord, ImageSelector, MetadataError, MetadataStore};
use crate::reference::Digest;
use crate::registry::{RegistryClient, RegistryHosts};
use crate::snapshot::{SnapshotError, Snapshotter};

/// Layers downloaded at once per pull, as containerd's default.
pub const MAX_CONCURRENT_DOWNLOADS: usize = 3;

/// How long a disk usage figure is reused (containerd refreshes every 10 s).
const USAGE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("registry configuration: {0}")]
    Config(String),
    #[error("background task failed: {0}")]
    Join(String),
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    pub blobs: usize,
    pub layers: usize,
    pub partial: usize,
    /// Bytes of the blobs and unpacked layers removed.
    pub bytes: u64,
}

/// Running totals since gantryd started, for its metrics.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Compressed layer bytes downloaded from registries.
    pub pulled_bytes: std::sync::atomic::AtomicU64,
    pub gc_runs: std::sync::atomic::AtomicU64,
    pub gc_bytes_freed: std::sync::atomic::AtomicU64,
}

pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) content: ContentStore,
    pub(crate) snapshots: Snapshotter,
    pub(crate) meta: MetadataStore,
    pub(crate) registry: RegistryClient,
    /// Pulls hold it shared; removal and GC hold it exclusively, so GC never
    /// sees a half-pulled image's blobs as garbage.
    pub(crate) gc_lock: RwLock<()>,
    /// One download/unpack per layer at a time, whoever asks for it.
    pub(crate) inflight: KeyedLocks,
    pub(crate) downloads: Arc<Semaphore>,
    /// Blobs and unpacked layers are on one filesystem: a layer's syncfs
    /// makes its blob durable too (pull seals blobs without their own fsync).
    pub(crate) blobs_synced_with_layers: bool,
    /// Layers held by something other than an image (containers' rootfs).
    held_layers: std::sync::Mutex<HashMap<String, Vec<Digest>>>,
    /// Last disk usage walk: when, and (bytes, inodes).
    usage_cache: UsageCache,
    /// The same for the containers' writable layers (ImageFsInfo).
    rw_usage_cache: UsageCache,
    /// The images the node must keep (`pinned_images`).
    pinned: std::sync::RwLock<crate::pinning::PinnedImages>,
    pub counters: StoreCounters,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`. The caller runs
    /// `collect_garbage` once every holder of layers (the runtime's
    /// containers) has registered, to remove what a crash left half-made.
    pub async fn open(root: &Path, hosts: RegistryHosts) -> Result<Arc<Self>, StoreError> {
        let root = root.to_path_buf();
        let registry = RegistryClient::new(hosts).map_err(StoreError::Config)?;
        let r = root.clone();
        let (content, snapshots, meta) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&r).map_err(|source| ContentError::Io { path: r.clone(), source })?;
            let content = ContentStore::open(&r.join("content"))?;
            let snapshots = Snapshotter::open(&r.join("snapshots"))?;
            let meta = MetadataStore::open(&r.join("images.redb"))?;
            // Spool files of loads, imports and commits a crash interrupted.
            for entry in std::fs::read_dir(&r).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if ["load-", "import-", "layer-"].iter().any(|p| name.starts_with(p)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok::<_, StoreError>((content, snapshots, meta))
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))??;
        let blobs_synced_with_layers = content.device().is_some() && content.device() == snapshots.device();
        let store = Arc::new(ImageStore {
            blobs_synced_with_layers,
            root,
            content,
            snapshots,
            meta,
            registry,
            gc_lock: RwLock::new(()),
            inflight: KeyedLocks::default(),
            downloads: Arc::new(Semaphore::new(MAX_CONCURRENT_DOWNLOADS)),
            held_layers: std::sync::Mutex::new(HashMap::new()),
            usage_cache: UsageCache::default(),
            rw_usage_cache: UsageCache::default(),
            pinned: Default::default(),
            counters: StoreCounters::default(),
        });
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snapshots
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.meta.list()?)
    }

    pub fn resolve(&self, selector: &ImageSelector) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self.meta.resolve(selector)?)
    }

    /// Keeps `layers` alive under `holder` (a container) even if every image
    /// using them is removed.
    pub fn hold_layers(&self, holder: &str, layers: Vec<Digest>) {
        self.held_layers.lock().unwrap_or_else(|e| e.into_inner()).insert(holder.to_string(), layers);
    }

    pub fn release_layers(&self, holder: &str) {
        self.held_layers.lock().unwrap_or_else(|e| e.into_inner()).remove(holder);
    }

    /// Tags image `id` as `tag` (a normalised reference); a tag another image
    /// had moves here, as a pull would move it.
    pub async fn tag(&self, image: &ImageRecord, tag: &str) -> Result<ImageRecord, StoreError> {
        let _shared = self.gc_lock.read().await;
        let mut record = image.clone();
        record.repo_tags = vec![tag.to_string()];
        record.repo_digests = vec![];
        Ok(self.meta.put(record)?)
    }

    /// Takes one tag off an image, leaving the image.
    pub async fn untag(&self, id: &Digest, tag: &str) -> Result<bool, StoreError> {
        let _shared = self.gc_lock.read().await;
        Ok(self.meta.untag(id, tag)?)
    }

    /// Removes an image and then every blob and layer nothing references any
    /// more. Returns the removed record, or `None` if there was no such image.
    pub async fn remove(self: &Arc<Self>, selector: &ImageSelector) -> Result<Option<ImageRecord>, StoreError> {
        let _exclusive = self.gc_lock.write().await;
        let Some(image) = self.meta.resolve(selector)? else { return Ok(None) };
        self.meta.remove(&image.id)?;
        tracing::info!(image = %image.id, tags = ?image.repo_tags, "image removed");
        self.usage_changed();
        self.sweep().await?;
        Ok(Some(image))
    }

    /// Releases the layers `holders` held and, when one of them belongs to
    /// no image any more (its image was removed while a container used it),
    /// collects it now rather than at the next removal or restart.
    pub async fn release_layers_and_collect(self: &Arc<Self>, holders: &[String]) -> Result<GcStats, StoreError> {
        let released: Vec<Digest> = {
            let mut held = self.held_layers.lock().unwrap_or_else(|e| e.into_inner());
            holders.iter().filter_map(|h| held.remove(h)).flatten().collect()
        };
        if released.is_empty() {
            return Ok(GcStats::default());
        }
        let this = Arc::clone(self);
        let orphaned = tokio::task::spawn_blocking(move || {
            let (_, live_layers) = this.meta.live_set()?;
            Ok::<_, StoreError>(released.iter().any(|l| !live_layers.contains(l)))
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))??;
        if !orphaned {
            return Ok(GcStats::default());
        }
        self.collect_garbage().await
    }

    pub async fn collect_garbage(self: &Arc<Self>) -> Result<GcStats, StoreError> {
        let _exclusive = self.gc_lock.write().await;
        self.sweep().await
    }

    /// Deletes unreferenced blobs and layers and partial downloads. The caller
    /// holds `gc_lock` exclusively, so no pull is running.
    async fn sweep(self: &Arc<Self>) -> Result<GcStats, StoreError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let (live_blobs, mut live_layers) = this.meta.live_set()?;
            let held: BTreeSet<Digest> = this
                .held_layers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .flat_map(|v| v.iter().cloned())
                .collect();
            live_layers.extend(held);
            let mut stats = GcStats::default();
            for d in this.snapshots.list_layers()? {
                if !live_layers.contains(&d) {
                    stats.bytes += this.snapshots.layer_size(&d);
                    this.snapshots.remove_layer(&d)?;
                    stats.layers += 1;
                }
            }
            for d in this.content.list()? {
                if !live_blobs.contains(&d) {
                    stats.bytes += this.content.size(&d).unwrap_or(0);
                    this.content.delete(&d)?;
                    stats.blobs += 1;
                }
            }
            stats.partial = this.content.clean_ingest()? + this.snapshots.clean_unpack()?;
            use std::sync::atomic::Ordering::Relaxed;
            this.counters.gc_runs.fetch_add(1, Relaxed);
            this.counters.gc_bytes_freed.fetch_add(stats.bytes, Relaxed);
            Ok::<_, StoreError>(stats)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Bytes and inodes the store uses on disk. kubelet polls this; walking
    /// every file each time is wasteful, so a result is reused for
    /// `USAGE_TTL` unless a pull or a removal changed the store since.
    pub async fn disk_usage(&self) -> (u64, u64) {
        self.usage_cache.get_or_walk(&self.root).await
    }

    /// The images the node must keep, from gantryd's `pinned_images`.
    pub fn set_pinned(&self, pinned: crate::pinning::PinnedImages) {
        *self.pinned.write().unwrap_or_else(|e| e.into_inner()) = pinned;
    }

    /// Whether `image` is one the node must keep.
    pub fn is_pinned(&self, image: &ImageRecord) -> bool {
        self.pinned.read().unwrap_or_else(|e| e.into_inner()).covers(image)
    }

    /// Bytes and inodes of the containers' writable layers (ImageFsInfo's
    /// container filesystem), reused for `USAGE_TTL` as the store's.
    pub async fn writable_layers_usage(&self) -> (u64, u64) {
        self.rw_usage_cache.get_or_walk(&self.snapshots.root().join("active")).await
    }

    /// How many unpacked layers the store holds.
    pub fn layer_count(&self) -> usize {
        self.snapshots.list_layers().map(|l| l.len()).unwrap_or(0)
    }

    /// The store changed: the next `disk_usage` walks it again.
    pub(crate) fn usage_changed(&self) {
        self.usage_cache.clear();
    }
}

/// A directory walk's (bytes, inodes), reused for `USAGE_TTL`.
#[derive(Default)]
struct UsageCache(std::sync::Mutex<Option<(std::time::Instant, (u64, u64))>>);

impl UsageCache {
    async fn get_or_walk(&self, dir: &Path) -> (u64, u64) {
        if let Some((at, usage)) = *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < USAGE_TTL {
                return usage;
            }
        }
        let dir = dir.to_path_buf();
        let usage = tokio::task::spawn_blocking(move || crate::fsutil::disk_usage(&dir)).await.unwrap_or((0, 0));
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), usage));
        usage
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Per-key async locks that vanish when nobody holds or waits for them.
#[derive(Default)]
pub struct KeyedLocks {
    map: std::sync::Mutex<HashMap<String, Weak<Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}
