//! Image archives, as `docker save` writes them since Docker 25: one tar
//! that is both an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) and a docker-archive (`manifest.json` pointing at the
//! same blobs, and the legacy `repositories`). Each blob is written once,
//! however many images share it.
//!
//! Loading reads either layout (and the older docker-archive, whose layers
//! are `ID/layer.tar` files): every blob is checked against its digest, and
//! layers are unpacked through the same code as pulls. Entries that would
//! escape the archive's root are refused before anything is stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::metadata::{BlobRef, ImageRecord, LayerRecord};
use crate::pull::{ConfigRootfs, Index, LayerError, LayerJob, Manifest};
use crate::reference::{Digest, Reference};
use crate::registry::{MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};
use crate::snapshot::chain_ids;
use crate::store::{ImageStore, StoreError};

/// Manifests, configs, indexes and `manifest.json`: 4 MiB, as containerd.
pub const MAX_DOCUMENT: u64 = 4 << 20;
/// A GNU long name/link or PAX header body, which the tar reader holds in
/// memory whole: far more than any path needs.
const MAX_TAR_EXTENSION: u64 = 64 << 10;
/// All such bodies together, and the number of entries: what the index of
/// the archive may hold in memory.
const MAX_TAR_EXTENSIONS_TOTAL: u64 = 16 << 20;
const MAX_TAR_ENTRIES: u64 = 1_000_000;
const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
    #[error("the archive is not an image archive: {0}")]
    Format(String),
    #[error("archive entry {0:?} escapes the archive's root")]
    Escape(String),
    #[error("archive entry {path}: content has digest {actual}, expected {expected}")]
    Digest { path: String, expected: String, actual: String },
    #[error("layer {digest}: {source}")]
    Layer { digest: Digest, source: LayerError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the archive is refused: {0}")]
    TooLarge(String),
}

fn sha256_of(bytes: &[u8]) -> Digest {
    Digest::of_bytes(bytes)
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn tar_file(out: &mut tar::Builder<impl Write>, path: &str, size: u64, data: impl Read) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    out.append_data(&mut h, path, data)
}

impl ImageStore {
    /// Writes `images` as one archive (OCI layout and docker-archive at once).
    pub fn save(&self, images: &[ImageRecord], out: impl Write) -> Result<(), ArchiveError> {
        let mut tar = tar::Builder::new(out);
        tar_file(&mut tar, "oci-layout", 30, &br#"{"imageLayoutVersion":"1.0.0"}"#[..])?;
        let mut written: HashSet<Digest> = HashSet::new();
        let mut index = vec![];
        let mut docker = vec![];
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for image in images {
            let blobs = [&image.manifest, &image.config].into_iter().chain(image.layers.iter().map(|l| &l.blob));
            for blob in blobs {
                if written.insert(blob.digest.clone()) {
                    let file = File::open(self.content.path(&blob.digest))?;
                    tar_file(&mut tar, &blob_path(&blob.digest), blob.size, file)?;
                }
            }
            let descriptor = |name: Option<&str>| {
                let mut d = json!({
                    "mediaType": image.manifest.media_type, "digest": image.manifest.digest.to_string(),
                    "size": image.manifest.size,
                });
                if let Some(name) = name {
                    let tag = name.rsplit_once(':').map_or("latest", |t| t.1);
                    d["annotations"] =
                        json!({"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag});
                }
                d
            };
            if image.repo_tags.is_empty() {
                index.push(descriptor(None));
            }
            for name in &image.repo_tags {
                index.push(descriptor(Some(name)));
                if let Some((repo, tag)) = name.rsplit_once(':') {
                    repositories
                        .entry(repo.to_string())
                        .or_default()
                        .insert(tag.to_string(), image.id.hex().to_string());
                }
            }
            docker.push(json!({
                "Config": blob_path(&image.config.digest),
                "RepoTags": image.repo_tags,
                "Layers": image.layers.iter().map(|l| blob_path(&l.blob.digest)).collect::<Vec<_>>(),
            }));
        }
        let documents = [
            ("index.json", json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index})),
            ("manifest.json", json!(docker)),
            ("repositories", json!(repositories)),
        ];
        for (name, doc) in documents {
            let bytes = serde_json::to_vec(&doc).map_err(io::Error::other)?;
            tar_file(&mut tar, name, bytes.len() as u64, bytes.as_slice())?;
        }
        tar.into_inner()?.flush()?;
        Ok(())
    }

    /// Imports every image of the archive at `path`; returns their records.
    pub async fn load(self: &Arc<Self>, path: &Path) -> Result<Vec<ImageRecord>, ArchiveError> {
        let _shared = self.gc_lock.read().await;
        let this = Arc::clone(self);
        let path = path.to_path_buf();
        let records = tokio::task::spawn_blocking(move || this.load_blocking(&path))
            .await
            .map_err(|e| ArchiveError::Io(io::Error::other(e.to_string())))??;
        self.usage_changed();
        Ok(records)
    }

    fn load_blocking(&self, path: &Path) -> Result<Vec<ImageRecord>, ArchiveError> {
        let archive = ArchiveIndex::scan(path)?;
        let mut names_by_config: HashMap<String, Vec<String>> = HashMap::new();
        let docker: Option<Vec<DockerEntry>> = match archive.has("manifest.json") {
            true => Some(
                serde_json::from_slice(&archive.read("manifest.json", MAX_DOCUMENT)?)
                    .map_err(|e| ArchiveError::Format(format!("manifest.json: {e}")))?,
            ),
            false => None,
        };
        for e in docker.iter().flatten() {
            names_by_config.entry(archive.resolve(&e.config)?).or_default().extend(e.repo_tags.iter().cloned());
        }
        let mut loaded = vec![];
        if archive.has("index.json") {
            let index: Index = serde_json::from_slice(&archive.read("index.json", MAX_DOCUMENT)?)
                .map_err(|e| ArchiveError::Format(format!("index.json: {e}")))?;
            // Several index entries (one per tag) may name one manifest.
            let mut by_manifest: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for d in &index.manifests {
                if d.media_type != MEDIA_OCI_MANIFEST && d.media_type != MEDIA_DOCKER_MANIFEST {
                    return Err(ArchiveError::Format(format!("index entry {} is a {}", d.digest, d.media_type)));
                }
                let names = by_manifest.entry(d.digest.clone()).or_default();
                if let Some(name) = d.annotations.get("io.containerd.image.name") {
                    names.push(name.clone());
                }
            }
            for (digest, mut names) in by_manifest {
                let digest: Digest = digest.parse().map_err(|e| ArchiveError::Format(format!("{digest}: {e}")))?;
                let manifest_bytes = archive.read_blob(&digest, MAX_DOCUMENT)?;
                let media_type =
                    index.manifests.iter().find(|d| d.digest == digest.to_string()).map(|d| d.media_type.clone());
                let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
                    .map_err(|e| ArchiveError::Format(format!("manifest {digest}: {e}")))?;
                let config_path = blob_path(&parse(&manifest.config.digest)?);
                names.extend(names_by_config.remove(&config_path).unwrap_or_default());
                let media_type = media_type.unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string());
                loaded.push(self.import(&archive, manifest_bytes, &media_type, &manifest, None, names)?);
            }
        } else if let Some(entries) = docker {
            for e in entries {
                let (manifest_bytes, manifest, layer_paths) = docker_manifest(&archive, &e)?;
                loaded.push(self.import(
                    &archive,
                    manifest_bytes,
                    MEDIA_DOCKER_MANIFEST,
                    &manifest,
                    Some(layer_paths),
                    e.repo_tags.clone(),
                )?);
            }
        } else {
            return Err(ArchiveError::Format("neither index.json nor manifest.json".into()));
        }
        Ok(loaded)
    }

    /// Stores one image: layers (checked and unpacked), config, manifest,
    /// then the record, last, so a failure leaves no image behind.
    fn import(
        &self,
        archive: &ArchiveIndex,
        manifest_bytes: Vec<u8>,
        manifest_type: &str,
        manifest: &Manifest,
        layer_paths: Option<Vec<String>>,
        names: Vec<String>,
    ) -> Result<ImageRecord, ArchiveError> {
        let config_digest = parse(&manifest.config.digest)?;
        let config_bytes = archive.read_blob(&config_digest, MAX_DOCUMENT)?;
        let config: ConfigRootfs = serde_json::from_slice(&config_bytes)
            .map_err(|e| ArchiveError::Format(format!("config {config_digest}: {e}")))?;
        let diff_ids = config.rootfs.diff_ids.iter().map(|d| parse(d)).collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ArchiveError::Format(format!(
                "manifest has {} layers but the config lists {} diff IDs",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = vec![];
        for (i, ((desc, diff_id), chain_id)) in manifest.layers.iter().zip(&diff_ids).zip(&chains).enumerate() {
            let layer = LayerRecord {
                blob: BlobRef { digest: parse(&desc.digest)?, size: desc.size, media_type: desc.media_type.clone() },
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            };
            let path = match &layer_paths {
                Some(paths) => paths[i].clone(),
                None => blob_path(&layer.blob.digest),
            };
            // Runs on a blocking thread: waiting for the async lock here is fine.
            let _one_at_a_time = tokio::runtime::Handle::current().block_on(self.inflight.lock(layer.chain_id.hex()));
            let have_blob = self.content.has(&layer.blob.digest);
            let have_layer = self.snapshots.has_layer(&layer.chain_id);
            if !(have_blob && have_layer) {
                let err = |source: LayerError| ArchiveError::Layer { digest: layer.blob.digest.clone(), source };
                let unpack =
                    if have_layer { None } else { Some(self.snapshots.begin_unpack().map_err(|e| err(e.into()))?) };
                let writer = if have_blob { None } else { Some(self.content.writer().map_err(|e| err(e.into()))?) };
                let job = LayerJob { layer: layer.clone(), unpack };
                self.process_layer(archive.open(&path)?, writer, job).map_err(err)?;
            }
            layers.push(layer);
        }
        self.content.write_all(&config_digest, &config_bytes).map_err(StoreError::from)?;
        let manifest_digest = sha256_of(&manifest_bytes);
        self.content.write_all(&manifest_digest, &manifest_bytes).map_err(StoreError::from)?;
        let mut repo_tags = vec![];
        let mut repo_digests = vec![];
        for name in names {
            // Docker writes familiar names (busybox:latest); store them normalised.
            if let Ok(r) = Reference::parse(&name) {
                repo_digests.push(r.with_digest(&manifest_digest));
                if r.tag.is_some() {
                    repo_tags.push(r.to_string());
                }
            }
        }
        repo_tags.dedup();
        repo_digests.sort();
        repo_digests.dedup();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
        let record = ImageRecord {
            id: config_digest.clone(),
            repo_tags,
            repo_digests,
            manifest: BlobRef {
                digest: manifest_digest,
                size: manifest_bytes.len() as u64,
                media_type: manifest_type.to_string(),
            },
            config: BlobRef {
                digest: config_digest,
                size: config_bytes.len() as u64,
                media_type: manifest.config.media_type.clone(),
            },
            layers,
            kept_blobs: vec![],
            created_unix_nanos: now,
            pinned: false,
        };
        let record = self.meta.put(record).map_err(StoreError::from)?;
        tracing::info!(image = %record.id, tags = ?record.repo_tags, "image loaded");
        Ok(record)
    }
}

fn parse(d: &str) -> Result<Digest, ArchiveError> {
    d.parse().map_err(|e| ArchiveError::Format(format!("digest {d:?}: {e}")))
}

#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// A docker-archive entry without an OCI manifest (older `docker save`):
/// the manifest is made from the layer files as they are in the archive.
fn docker_manifest(archive: &ArchiveIndex, e: &DockerEntry) -> Result<(Vec<u8>, Manifest, Vec<String>), ArchiveError> {
    let config_bytes = archive.read(&e.config, MAX_DOCUMENT)?;
    let config_digest = sha256_of(&config_bytes);
    let mut layers = vec![];
    let mut paths = vec![];
    for path in &e.layers {
        let path = archive.resolve(path)?;
        let mut r = archive.open(&path)?;
        let mut head = [0u8; 4];
        let n = r.read(&mut head)?;
        let media_type = if head[..n].starts_with(&[0x1f, 0x8b]) {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.docker.image.rootfs.diff.tar"
        };
        let mut hasher = Sha256::new();
        hasher.update(&head[..n]);
        let size = n as u64 + io::copy(&mut r, &mut hasher)?;
        let digest = Digest::from_sha256(hasher);
        layers.push(json!({"mediaType": media_type, "size": size, "digest": digest.to_string()}));
        paths.push(path);
    }
    let manifest = json!({
        "schemaVersion": 2, "mediaType": MEDIA_DOCKER_MANIFEST,
        "config": {"mediaType": MEDIA_DOCKER_CONFIG, "size": config_bytes.len(), "digest": config_digest.to_string()},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let parsed: Manifest = serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Format(e.to_string()))?;
    // The config is read through its blob path later: make it findable there.
    Ok((bytes, parsed, paths))
}

/// Where each file of the archive is: offset and size of its data, and the
/// targets of its symlinks (older docker-archives link shared layers).
struct ArchiveIndex {
    path: PathBuf,
    files: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

/// A clean relative path inside the archive, or None if it would escape.
fn clean(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = vec![];
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

impl ArchiveIndex {
    fn scan(path: &Path) -> Result<Self, ArchiveError> {
        check_tar_headers(&mut File::open(path)?)?;
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let mut tar = tar::Archive::new(File::open(path)?);
        for entry in tar.entries()? {
            let entry = entry?;
            let raw = entry.path()?.into_owned();
            let name = clean(&raw).ok_or_else(|| ArchiveError::Escape(raw.display().to_string()))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    files.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target =
                        entry.link_name()?.ok_or_else(|| ArchiveError::Format(format!("link {name} has no target")))?;
                    let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&name).parent().unwrap_or(Path::new("")).join(&target)
                    } else {
                        target.into_owned()
                    };
                    let resolved = clean(&base).ok_or_else(|| ArchiveError::Escape(raw.display().to_string()))?;
                    links.insert(name, resolved);
                }
                _ => {}
            }
        }
        Ok(ArchiveIndex { path: path.to_path_buf(), files, links })
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// Follows links (a few hops at most) to a file of the archive.
    fn resolve(&self, name: &str) -> Result<String, ArchiveError> {
        let mut name = clean(Path::new(name)).ok_or_else(|| ArchiveError::Escape(name.to_string()))?;
        for _ in 0..8 {
            if self.files.contains_key(&name) {
                return Ok(name);
            }
            match self.links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(ArchiveError::Format(format!("{name} is missing from the archive")))
    }

    fn open(&self, name: &str) -> Result<io::Take<File>, ArchiveError> {
        let name = self.resolve(name)?;
        let (offset, size) = self.files[&name];
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(f.take(size))
    }

    /// A document of the archive, refused (before anything is read) when
    /// its entry is over `limit` bytes.
    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let resolved = self.resolve(name)?;
        let size = self.files[&resolved].1;
        if size > limit {
            return Err(ArchiveError::TooLarge(format!(
                "{name} is {size} bytes; manifests, configs and indexes are limited to {} MiB",
                limit >> 20
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        self.open(name)?.take(limit).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// A blob by digest, checked.
    fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let path = blob_path(digest);
        let bytes = match self.read(&path, limit) {
            Ok(b) => b,
            // Older docker-archives keep the config as HEX.json.
            Err(_) => self.read(&format!("{}.json", digest.hex()), limit)?,
        };
        let actual = sha256_of(&bytes);
        if &actual != digest {
            return Err(ArchiveError::Digest { path, expected: digest.to_string(), actual: actual.to_string() });
        }
        Ok(bytes)
    }
}

/// For the fuzz targets: what `load` does with an archive before it stores
/// anything (header walk, index, the documents it names).
#[doc(hidden)]
pub fn fuzz_scan(path: &Path) {
    let Ok(mut f) = File::open(path) else { return };
    if check_tar_headers(&mut f).is_err() {
        return;
    }
    let Ok(archive) = ArchiveIndex::scan(path) else { return };
    if let Ok(bytes) = archive.read("manifest.json", MAX_DOCUMENT) {
        if let Ok(entries) = serde_json::from_slice::<Vec<DockerEntry>>(&bytes) {
            for e in &entries {
                let _ = docker_manifest(&archive, e);
            }
        }
    }
    if let Ok(bytes) = archive.read("index.json", MAX_DOCUMENT) {
        if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
            for d in &index.manifests {
                if let Ok(digest) = d.digest.parse::<Digest>() {
                    if let Ok(m) = archive.read_blob(&digest, MAX_DOCUMENT) {
                        let _ = serde_json::from_slice::<Manifest>(&m);
                    }
                }
            }
        }
    }
}

/// An octal (or GNU base-256) number field of a tar header.
fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256: big-endian, the top bit of the first byte a flag.
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(n);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// The `size` record of a PAX header body, if any ("LEN size=N\n").
fn pax_size(body: &[u8]) -> Option<u64> {
    let mut rest = body;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return None;
        }
        let record = &rest[space + 1..len];
        if let Some(v) = record.strip_prefix(b"size=") {
            return std::str::from_utf8(v).ok()?.trim_end_matches('\n').parse().ok();
        }
        rest = &rest[len..];
    }
    None
}

/// Walks the archive's raw headers before the tar reader does, refusing
/// what would make it (or the index) allocate without bound: a GNU long
/// name/link or PAX body over 64 KiB (the reader holds each whole), over
/// 16 MiB of them in all, more than a million entries. Seeks over data.
pub(crate) fn check_tar_headers(f: &mut (impl Read + Seek)) -> Result<(), ArchiveError> {
    let mut pos: u64 = 0;
    let (mut entries, mut extensions) = (0u64, 0u64);
    let mut next_size = None;
    let mut header = [0u8; 512];
    loop {
        f.seek(SeekFrom::Start(pos))?;
        match f.read_exact(&mut header) {
            Ok(()) => {}
            // A short archive: the tar reader reports it.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if header.iter().all(|b| *b == 0) {
            return Ok(());
        }
        entries += 1;
        if entries > MAX_TAR_ENTRIES {
            return Err(ArchiveError::TooLarge(format!("more than {MAX_TAR_ENTRIES} entries")));
        }
        let bad = || ArchiveError::Format(format!("a tar header at offset {pos} is malformed"));
        let typ = header[156];
        let mut size = tar_number(&header[124..136]).ok_or_else(bad)?;
        if matches!(typ, b'L' | b'K' | b'x' | b'g') {
            if size > MAX_TAR_EXTENSION {
                return Err(ArchiveError::TooLarge(format!(
                    "a tar extension header at offset {pos} claims {size} bytes (at most {} KiB)",
                    MAX_TAR_EXTENSION >> 10
                )));
            }
            extensions += size;
            if extensions > MAX_TAR_EXTENSIONS_TOTAL {
                return Err(ArchiveError::TooLarge(format!(
                    "over {} MiB of tar extension headers",
                    MAX_TAR_EXTENSIONS_TOTAL >> 20
                )));
            }
            if typ == b'x' {
                let mut body = vec![0u8; size as usize];
                f.read_exact(&mut body)?;
                next_size = pax_size(&body);
            }
        } else if let Some(n) = next_size.take() {
            // The tar reader takes a PAX size over the header's.
            size = n;
        }
        let padded = size.checked_add(511).ok_or_else(bad)? / 512 * 512;
        pos = pos.checked_add(512 + padded).ok_or_else(bad)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_escape_are_refused() {
        assert_eq!(clean(Path::new("blobs/sha256/ab")).as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(clean(Path::new("./a/../b")).as_deref(), Some("b"));
        assert_eq!(clean(Path::new("../evil")), None);
        assert_eq!(clean(Path::new("/etc/passwd")), None);
    }

    /// A raw header: name, size field (as given), type.
    fn raw_header(name: &str, size: u64, typ: u8) -> [u8; 512] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(typ));
        h.set_cksum();
        *h.as_bytes()
    }

    /// A sparse archive file: `headers` at their offsets, the file `len` long.
    fn sparse_archive(dir: &Path, headers: &[(u64, [u8; 512])], len: u64) -> PathBuf {
        let path = dir.join("bad.tar");
        let mut f = File::create(&path).unwrap();
        for (offset, h) in headers {
            f.seek(SeekFrom::Start(*offset)).unwrap();
            f.write_all(h).unwrap();
        }
        f.set_len(len).unwrap();
        path
    }

    #[test]
    fn a_huge_index_json_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // index.json claiming 100 MiB (a sparse file: nothing is written).
        let size = 100 << 20;
        let path = sparse_archive(dir.path(), &[(0, raw_header("index.json", size, b'0'))], 512 + size + 1024);
        let index = ArchiveIndex::scan(&path).unwrap();
        let err = index.read("index.json", MAX_DOCUMENT).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("limited to 4 MiB"), "{err}");
    }

    #[test]
    fn huge_tar_extension_headers_are_refused_before_the_reader_allocates_them() {
        let dir = tempfile::tempdir().unwrap();
        // A PAX header, then a GNU long name, each claiming 1 GiB: the tar
        // reader would read either into memory whole.
        for typ in [b'x', b'L', b'g', b'K'] {
            let size = 1 << 30;
            let path = sparse_archive(dir.path(), &[(0, raw_header("././@PaxHeader", size, typ))], 512 + size + 1024);
            let err = ArchiveIndex::scan(&path).err().expect("refused");
            assert!(err.to_string().contains("claims 1073741824 bytes"), "{err}");
        }
        // A PAX size record is followed, as the reader does.
        let body = b"16 size=2000000\n";
        let mut pax = raw_header("pax", body.len() as u64, b'x').to_vec();
        pax.extend_from_slice(body);
        pax.resize(1024, 0);
        let mut f = std::io::Cursor::new(pax);
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&raw_header("file", 0, b'0')).unwrap();
        assert!(check_tar_headers(&mut f).is_ok());
        assert_eq!(pax_size(body), Some(2_000_000));
    }

    #[test]
    fn size_fields_in_octal_and_base_256() {
        assert_eq!(tar_number(b"00000001750\0"), Some(1000));
        assert_eq!(tar_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]), Some(0x1000));
        assert_eq!(tar_number(b"zz"), None);
    }
}
