//! Commit, Docker's way: a container's writable layer (the overlay upper
//! directory) becomes one more layer on top of its image. Overlay marks a
//! deleted file with a 0:0 character device and a directory that hides the
//! lower one with `trusted.overlay.opaque=y`; in the layer tar these become
//! `.wh.NAME` and `.wh..wh..opq`, as the OCI layer format says. The new image
//! lists its parent's layers (shared, not copied) plus the new one, and its
//! config gains a history entry and the requested changes.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::metadata::{BlobRef, ImageRecord, LayerRecord};
use crate::pull::{LayerError, LayerJob};
use crate::reference::{Digest, Reference};
use crate::snapshot::chain_ids;
use crate::store::{ImageStore, StoreError};
use crate::tree_tar::{append_tree, IdShift, Marks};

const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("reading the container's changes: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("the new layer: {0}")]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default, Clone)]
pub struct CommitOptions {
    pub reference: String,
    pub author: String,
    pub message: String,
    pub changes: Vec<String>,
}

/// The upper directory as a layer tar, deletions as whiteouts.
fn layer_tar(upper: &Path, shift: Option<IdShift>, out: impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    append_tree(&mut tar, upper, Marks::Whiteouts, shift)?;
    tar.into_inner()?.flush()
}

/// The name a new image gets: none, or a tag (a digest names no new image).
fn new_image_name(opts: &CommitOptions) -> Result<Option<Reference>, CommitError> {
    if opts.reference.is_empty() {
        return Ok(None);
    }
    let reference = Reference::parse(&opts.reference).map_err(|e| CommitError::Invalid(e.to_string()))?;
    if reference.digest.is_some() {
        return Err(CommitError::Invalid(format!("{:?} is a digest, not a name to tag", opts.reference)));
    }
    Ok(Some(reference))
}

/// A `Write` that hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Applies Dockerfile-style changes (`CMD ["sh"]`, `ENV A=b`, …) to an
/// image config's `config` object.
pub fn apply_changes(config: &mut Value, changes: &[String]) -> Result<(), CommitError> {
    let list = |arg: &str| -> Value {
        match serde_json::from_str::<Vec<String>>(arg) {
            Ok(v) => json!(v),
            // The shell form, as Docker runs it.
            Err(_) => json!(["/bin/sh", "-c", arg]),
        }
    };
    for change in changes {
        let (instruction, arg) = change.trim().split_once(char::is_whitespace).unwrap_or((change.trim(), ""));
        let arg = arg.trim();
        let c = &mut config["config"];
        if !c.is_object() {
            *c = json!({});
        }
        match instruction.to_ascii_uppercase().as_str() {
            "CMD" => c["Cmd"] = list(arg),
            "ENTRYPOINT" => c["Entrypoint"] = list(arg),
            "WORKDIR" => c["WorkingDir"] = json!(arg),
            "USER" => c["User"] = json!(arg),
            "STOPSIGNAL" => c["StopSignal"] = json!(arg),
            "ENV" => {
                let (k, v) = arg.split_once('=').or_else(|| arg.split_once(' ')).unwrap_or((arg, ""));
                let mut env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap_or_default();
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |x| x.0) != k);
                env.push(format!("{k}={}", v.trim()));
                c["Env"] = json!(env);
            }
            "LABEL" => {
                let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
                if !c["Labels"].is_object() {
                    c["Labels"] = json!({});
                }
                c["Labels"][k.trim()] = json!(v.trim().trim_matches('"'));
            }
            "EXPOSE" => {
                if !c["ExposedPorts"].is_object() {
                    c["ExposedPorts"] = json!({});
                }
                let port = if arg.contains('/') { arg.to_string() } else { format!("{arg}/tcp") };
                c["ExposedPorts"][port] = json!({});
            }
            other => return Err(CommitError::Invalid(format!("change {change:?}: {other} is not supported"))),
        }
    }
    Ok(())
}

fn now_rfc3339() -> String {
    rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0))
}

/// Seconds since the epoch as an RFC 3339 UTC time, as image configs write it.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl ImageStore {
    /// Makes a new image from `parent` and the container changes in `upper`.
    /// `shift`: the host IDs `upper` holds for a container in a pod user
    /// namespace, written back as the container's.
    pub async fn commit(
        self: &std::sync::Arc<Self>,
        parent: &ImageRecord,
        upper: &Path,
        shift: Option<IdShift>,
        opts: &CommitOptions,
    ) -> Result<ImageRecord, CommitError> {
        let reference = new_image_name(opts)?;
        let mut config: Value =
            serde_json::from_slice(&self.content.read(&parent.config.digest).map_err(StoreError::from)?)
                .map_err(|e| CommitError::Invalid(format!("parent config: {e}")))?;
        apply_changes(&mut config, &opts.changes)?;
        let upper = upper.to_path_buf();
        let write = move |w: &mut dyn Write| layer_tar(&upper, shift, w);
        self.store_layer(parent.layers.clone(), config, write, opts, reference, "gantry commit").await
    }

    /// A single-layer image from a filesystem tar (`gantry import`).
    pub async fn import_tar(
        self: &std::sync::Arc<Self>,
        tar: &Path,
        opts: &CommitOptions,
    ) -> Result<ImageRecord, CommitError> {
        let reference = new_image_name(opts)?;
        let (os, arch, _) = crate::pull::host_platform();
        let mut config = json!({"architecture": arch, "os": os, "config": {}, "rootfs": {"type": "layers"}});
        apply_changes(&mut config, &opts.changes)?;
        let tar = tar.to_path_buf();
        let write = move |w: &mut dyn Write| io::copy(&mut fs::File::open(&tar)?, w).map(|_| ());
        self.store_layer(vec![], config, write, opts, reference, "gantry import").await
    }

    /// [`Self::add_layer`] off the async runtime, with the GC kept out.
    async fn store_layer(
        self: &std::sync::Arc<Self>,
        lower: Vec<LayerRecord>,
        config: Value,
        write_tar: impl Fn(&mut dyn Write) -> io::Result<()> + Send + 'static,
        opts: &CommitOptions,
        reference: Option<Reference>,
        created_by: &'static str,
    ) -> Result<ImageRecord, CommitError> {
        let _shared = self.gc_lock.read().await;
        let this = std::sync::Arc::clone(self);
        let opts = opts.clone();
        let record = tokio::task::spawn_blocking(move || {
            this.add_layer(&lower, config, &write_tar, &opts, reference, created_by)
        })
        .await
        .map_err(|e| CommitError::Io(io::Error::other(e.to_string())))??;
        self.usage_changed();
        Ok(record)
    }

    /// Stores the layer `write_tar` produces on top of `lower` and an image
    /// made of them, with `config` completed (diff IDs, history).
    fn add_layer(
        &self,
        lower: &[LayerRecord],
        mut config: Value,
        write_tar: &dyn Fn(&mut dyn Write) -> io::Result<()>,
        opts: &CommitOptions,
        reference: Option<Reference>,
        created_by: &str,
    ) -> Result<ImageRecord, CommitError> {
        // The tar (for its diff ID) and its gzip (the blob) in one pass.
        let spool = self.root.join(crate::fsutil::random_name("layer"));
        let result = (|| {
            let file = fs::File::create(&spool)?;
            let gz = GzEncoder::new(
                Hashing { inner: BufWriter::new(file), hasher: Sha256::new(), written: 0 },
                flate2::Compression::default(),
            );
            let mut tar_hash = Hashing { inner: gz, hasher: Sha256::new(), written: 0 };
            write_tar(&mut tar_hash)?;
            let diff_id = Digest::from_sha256(tar_hash.hasher);
            let mut blob = tar_hash.inner.finish()?;
            blob.flush()?;
            let size = blob.written;
            let digest = Digest::from_sha256(blob.hasher);
            Ok::<_, io::Error>((diff_id, digest, size))
        })();
        let (diff_id, digest, size) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&spool);
                return Err(e.into());
            }
        };
        let mut diff_ids: Vec<Digest> = lower.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(diff_id.clone());
        let chain_id = chain_ids(&diff_ids).pop().ok_or_else(|| CommitError::Invalid("no layers".into()))?;
        let layer = LayerRecord {
            blob: BlobRef { digest: digest.clone(), size, media_type: MEDIA_LAYER_GZIP.into() },
            diff_id: diff_id.clone(),
            chain_id: chain_id.clone(),
        };
        let unpacked = (|| -> Result<(), CommitError> {
            let unpack = if self.snapshots.has_layer(&chain_id) {
                None
            } else {
                Some(self.snapshots.begin_unpack().map_err(LayerError::from)?)
            };
            let writer =
                if self.content.has(&digest) { None } else { Some(self.content.writer().map_err(LayerError::from)?) };
            self.process_layer(fs::File::open(&spool)?, writer, LayerJob { layer: layer.clone(), unpack })?;
            Ok(())
        })();
        let _ = fs::remove_file(&spool);
        unpacked?;

        let created = now_rfc3339();
        config["created"] = json!(created);
        if !opts.author.is_empty() {
            config["author"] = json!(opts.author);
        }
        if !config["rootfs"].is_object() {
            config["rootfs"] = json!({"type": "layers"});
        }
        config["rootfs"]["diff_ids"] = json!(diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>());
        let mut history: Vec<Value> = serde_json::from_value(config["history"].clone()).unwrap_or_default();
        let mut entry = json!({"created": created, "created_by": created_by});
        if !opts.author.is_empty() {
            entry["author"] = json!(opts.author);
        }
        if !opts.message.is_empty() {
            entry["comment"] = json!(opts.message);
        }
        history.push(entry);
        config["history"] = json!(history);
        let config_bytes = serde_json::to_vec(&config).map_err(io::Error::other)?;
        let config_digest = Digest::of_bytes(&config_bytes);

        let mut layers = lower.to_vec();
        layers.push(layer);
        let manifest = json!({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.blob.media_type, "digest": l.blob.digest.to_string(), "size": l.blob.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        let manifest_digest = Digest::of_bytes(&manifest_bytes);
        self.content.write_all(&config_digest, &config_bytes).map_err(StoreError::from)?;
        self.content.write_all(&manifest_digest, &manifest_bytes).map_err(StoreError::from)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
        let record = ImageRecord {
            id: config_digest.clone(),
            repo_tags: reference.iter().map(|r| r.to_string()).collect(),
            repo_digests: vec![],
            manifest: BlobRef {
                digest: manifest_digest,
                size: manifest_bytes.len() as u64,
                media_type: MEDIA_MANIFEST.into(),
            },
            config: BlobRef { digest: config_digest, size: config_bytes.len() as u64, media_type: MEDIA_CONFIG.into() },
            layers,
            kept_blobs: vec![],
            created_unix_nanos: now,
            pinned: false,
        };
        let record = self.meta.put(record).map_err(StoreError::from)?;
        tracing::info!(image = %record.id, layer = %diff_id, how = created_by, "image made");
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_edit_the_config() {
        let mut c = json!({"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]}});
        let changes = [
            "CMD [\"echo\", \"hi\"]",
            "ENTRYPOINT top -b",
            "ENV A=2",
            "LABEL k=v",
            "EXPOSE 80",
            "WORKDIR /w",
            "USER 7",
        ];
        apply_changes(&mut c, &changes.map(String::from)).unwrap();
        assert_eq!(c["config"]["Cmd"], json!(["echo", "hi"]));
        assert_eq!(c["config"]["Entrypoint"], json!(["/bin/sh", "-c", "top -b"]));
        assert_eq!(c["config"]["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(c["config"]["Labels"]["k"], "v");
        assert!(c["config"]["ExposedPorts"]["80/tcp"].is_object());
        assert_eq!((c["config"]["WorkingDir"].as_str(), c["config"]["User"].as_str()), (Some("/w"), Some("7")));
        assert!(apply_changes(&mut c, &["RUN make".to_string()]).is_err());
    }

    #[test]
    fn dates_are_rfc3339() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20);
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
