//! Image metadata in an embedded ACID database (redb): one record per image,
//! keyed by image ID (the config digest). A tag names at most one image; moving
//! it and writing the new image happen in one transaction.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::reference::{Digest, Reference};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("image database {path}: {detail}")]
    Db { path: PathBuf, detail: String },
    #[error("image record {id} is corrupt: {detail}")]
    Corrupt { id: String, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub blob: BlobRef,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// The snapshot holding this layer unpacked.
    pub chain_id: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, as containerd and Docker define image IDs.
    pub id: Digest,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub manifest: BlobRef,
    pub config: BlobRef,
    pub layers: Vec<LayerRecord>,
    /// Other blobs kept for this image: the indexes (manifest lists) it was
    /// reached through, and other manifests of the same config (a zstd and a
    /// gzip push of one image) with their layers, so every repo digest stays
    /// resolvable and pushable.
    #[serde(default)]
    pub kept_blobs: Vec<BlobRef>,
    /// Unix nanoseconds of the first pull.
    pub created_unix_nanos: i64,
    #[serde(default)]
    pub pinned: bool,
}

impl ImageRecord {
    /// Bytes of content this image refers to (compressed, as `crictl images` shows).
    pub fn size(&self) -> u64 {
        self.manifest.size + self.config.size + self.layers.iter().map(|l| l.blob.size).sum::<u64>()
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.manifest.digest)
            .chain(std::iter::once(&self.config.digest))
            .chain(self.layers.iter().map(|l| &l.blob.digest))
            .chain(self.kept_blobs.iter().map(|i| &i.digest))
    }

    pub fn chain_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.chain_id.clone()).collect()
    }
}

pub struct MetadataStore {
    db: Database,
    path: PathBuf,
}

/// How a user named an image: its ID, or a tag / digest reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelector {
    Id(Digest),
    /// A shortened ID, as `crictl images` prints them (`2b1bd31e7690f`);
    /// also a valid repository name, tried as one if no ID matches.
    IdPrefix(String),
    Ref(Reference),
}

impl ImageSelector {
    /// IDs come as `sha256:HEX` or bare 64-hex (crictl passes both); anything
    /// else is parsed as a reference.
    pub fn parse(s: &str) -> Result<Self, crate::reference::ReferenceError> {
        if let Ok(d) = s.parse::<Digest>() {
            return Ok(ImageSelector::Id(d));
        }
        if let Ok(d) = Digest::from_hex(s) {
            return Ok(ImageSelector::Id(d));
        }
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if (4..64).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Ok(ImageSelector::IdPrefix(hex.to_string()));
        }
        Reference::parse(s).map(ImageSelector::Ref)
    }
}

impl MetadataStore {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let db_err = |e: &dyn std::fmt::Display| MetadataError::Db { path: path.to_path_buf(), detail: e.to_string() };
        let db = Database::create(path).map_err(|e| db_err(&e))?;
        let txn = db.begin_write().map_err(|e| db_err(&e))?;
        txn.open_table(IMAGES).map_err(|e| db_err(&e))?;
        txn.commit().map_err(|e| db_err(&e))?;
        Ok(MetadataStore { db, path: path.to_path_buf() })
    }

    fn err(&self, e: impl std::fmt::Display) -> MetadataError {
        MetadataError::Db { path: self.path.clone(), detail: e.to_string() }
    }

    fn decode(id: &str, bytes: &[u8]) -> Result<ImageRecord, MetadataError> {
        serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt { id: id.to_string(), detail: e.to_string() })
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, MetadataError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push(Self::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn get(&self, id: &Digest) -> Result<Option<ImageRecord>, MetadataError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
        let key = id.to_string();
        match table.get(key.as_str()).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(Self::decode(&key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Finds the image an ID, tag or digest reference names.
    pub fn resolve(&self, selector: &ImageSelector) -> Result<Option<ImageRecord>, MetadataError> {
        match selector {
            ImageSelector::Id(id) => self.get(id),
            ImageSelector::IdPrefix(prefix) => {
                let mut matches = self.list()?.into_iter().filter(|i| i.id.hex().starts_with(prefix.as_str()));
                match (matches.next(), matches.next()) {
                    (Some(one), None) => Ok(Some(one)),
                    // Ambiguous prefixes name nothing, as in containerd.
                    (Some(_), Some(_)) => Ok(None),
                    (None, _) => match Reference::parse(prefix) {
                        Ok(r) => self.resolve(&ImageSelector::Ref(r)),
                        Err(_) => Ok(None),
                    },
                }
            }
            ImageSelector::Ref(r) => {
                let name = r.to_string();
                Ok(self
                    .list()?
                    .into_iter()
                    .find(|img| img.repo_tags.contains(&name) || img.repo_digests.contains(&name)))
            }
        }
    }

    /// Stores a pulled image. Its tags are taken from whatever image had them
    /// (a moved tag moves); an existing record of the same image keeps its
    /// other tags and digests.
    pub fn put(&self, mut image: ImageRecord) -> Result<ImageRecord, MetadataError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
            let key = image.id.to_string();
            let mut others = Vec::new();
            for item in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                others.push(Self::decode(k.value(), v.value())?);
            }
            for mut other in others {
                if other.id == image.id {
                    image.created_unix_nanos = other.created_unix_nanos;
                    image.pinned |= other.pinned;
                    merge(&mut image.repo_tags, other.repo_tags);
                    merge(&mut image.repo_digests, other.repo_digests);
                    // The first manifest pulled stays the image's (its size is
                    // what containerd reports); later ones are kept beside it.
                    let newer_manifest = std::mem::replace(&mut image.manifest, other.manifest);
                    let newer_layers = std::mem::replace(&mut image.layers, other.layers);
                    let mut kept = other.kept_blobs;
                    kept.append(&mut image.kept_blobs);
                    if newer_manifest != image.manifest {
                        kept.push(newer_manifest);
                        kept.extend(newer_layers.into_iter().map(|l| l.blob));
                    }
                    for b in kept {
                        let is_current = b == image.manifest || image.layers.iter().any(|l| l.blob == b);
                        if !is_current && !image.kept_blobs.contains(&b) {
                            image.kept_blobs.push(b);
                        }
                    }
                    continue;
                }
                let before = other.repo_tags.len();
                other.repo_tags.retain(|t| !image.repo_tags.contains(t));
                if other.repo_tags.len() != before {
                    tracing::info!(image = %other.id, "tag moved to {}", image.id);
                    let bytes = serde_json::to_vec(&other).map_err(|e| self.err(e))?;
                    table.insert(other.id.to_string().as_str(), bytes.as_slice()).map_err(|e| self.err(e))?;
                }
            }
            // Sorted, as containerd lists them.
            image.repo_tags.sort();
            image.repo_digests.sort();
            let bytes = serde_json::to_vec(&image).map_err(|e| self.err(e))?;
            table.insert(key.as_str(), bytes.as_slice()).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(image)
    }

    /// Takes tag `tag` off image `id`; false if it did not have it.
    pub fn untag(&self, id: &Digest, tag: &str) -> Result<bool, MetadataError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let changed = {
            let mut table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
            let key = id.to_string();
            let record = match table.get(key.as_str()).map_err(|e| self.err(e))? {
                Some(v) => Some(Self::decode(&key, v.value())?),
                None => None,
            };
            match record {
                Some(mut image) if image.repo_tags.iter().any(|t| t == tag) => {
                    image.repo_tags.retain(|t| t != tag);
                    let bytes = serde_json::to_vec(&image).map_err(|e| self.err(e))?;
                    table.insert(key.as_str(), bytes.as_slice()).map_err(|e| self.err(e))?;
                    true
                }
                _ => false,
            }
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(changed)
    }

    pub fn remove(&self, id: &Digest) -> Result<Option<ImageRecord>, MetadataError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let removed = {
            let mut table = txn.open_table(IMAGES).map_err(|e| self.err(e))?;
            let key = id.to_string();
            let removed = table.remove(key.as_str()).map_err(|e| self.err(e))?;
            match removed {
                Some(v) => Some(Self::decode(&key, v.value())?),
                None => None,
            }
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Every blob and every layer snapshot some image still needs.
    pub fn live_set(&self) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>), MetadataError> {
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        for img in self.list()? {
            blobs.extend(img.blobs().cloned());
            chains.extend(img.chain_ids());
        }
        Ok((blobs, chains))
    }
}

fn merge(into: &mut Vec<String>, from: Vec<String>) {
    for s in from {
        if !into.contains(&s) {
            into.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(s: &str) -> BlobRef {
        BlobRef { digest: Digest::of_bytes(s.as_bytes()), size: 10, media_type: "x".into() }
    }

    fn image(config: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: Digest::of_bytes(config.as_bytes()),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            manifest: blob(&format!("m{config}")),
            config: blob(config),
            layers: vec![],
            kept_blobs: vec![],
            created_unix_nanos: 1,
            pinned: false,
        }
    }

    #[test]
    fn tags_move_and_merge_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        let a = image("a", &["docker.io/library/x:latest", "docker.io/library/x:1"]);
        store.put(a.clone()).unwrap();
        store.put(image("a", &["docker.io/library/x:2"])).unwrap();
        let got = store.get(&a.id).unwrap().unwrap();
        assert_eq!(got.repo_tags.len(), 3);
        // `latest` moves to b; a keeps its other tags.
        let b = image("b", &["docker.io/library/x:latest"]);
        store.put(b.clone()).unwrap();
        let got = store.get(&a.id).unwrap().unwrap();
        assert!(!got.repo_tags.contains(&"docker.io/library/x:latest".to_string()));
        let sel = ImageSelector::parse("x").unwrap();
        assert_eq!(store.resolve(&sel).unwrap().unwrap().id, b.id);
        assert_eq!(store.resolve(&ImageSelector::parse(b.id.hex()).unwrap()).unwrap().unwrap().id, b.id);
        let short = &b.id.hex()[..13];
        assert_eq!(store.resolve(&ImageSelector::parse(short).unwrap()).unwrap().unwrap().id, b.id);
        let prefixed = format!("sha256:{short}");
        assert_eq!(store.resolve(&ImageSelector::parse(&prefixed).unwrap()).unwrap().unwrap().id, b.id);
        drop(store);
        // Survives a reopen.
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        assert!(store.remove(&a.id).unwrap().is_some());
        assert!(store.remove(&a.id).unwrap().is_none());
    }
}
