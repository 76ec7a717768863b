//! A minimal distribution-API pusher for hand-made test images (the fixture
//! script builds the ordinary ones with umoci and skopeo).

use std::io::Write;

pub struct PushClient {
    base: String,
    http: reqwest::Client,
}

/// One layer as pushed: its compressed bytes and the uncompressed tar's digest.
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub media_type: &'static str,
}

impl Layer {
    /// A gzip layer from an uncompressed tar.
    pub fn gzip(tar: &[u8]) -> Layer {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(tar).expect("gzip");
        Layer {
            blob: enc.finish().expect("gzip"),
            diff_id: format!("sha256:{}", sha256_hex(tar)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

impl PushClient {
    pub fn new(registry: &str) -> Self {
        PushClient { base: format!("http://{registry}"), http: reqwest::Client::new() }
    }

    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let resp =
            self.http.post(format!("{}/v2/{repo}/blobs/uploads/", self.base)).send().await.expect("start upload");
        assert!(resp.status().is_success(), "start upload: {}", resp.status());
        let location = resp.headers()["location"].to_str().expect("location").to_string();
        let url = if location.starts_with('/') { format!("{}{location}", self.base) } else { location };
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = self
            .http
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload");
        assert!(resp.status().is_success(), "upload {digest}: {}", resp.status());
        digest
    }

    /// Pushes an OCI image made of `layers`; returns (manifest digest, config digest).
    pub async fn push_image(&self, repo: &str, tag: &str, layers: &[Layer]) -> (String, String) {
        self.push_image_with(repo, tag, layers, serde_json::json!({"Cmd": ["sh"]})).await
    }

    /// The same, with `config` as the image config's `config` section.
    pub async fn push_image_with(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Layer],
        config: serde_json::Value,
    ) -> (String, String) {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = serde_json::to_vec(&config).expect("config json");
        let config_digest = self.push_blob(repo, &config).await;
        let mut descs = Vec::new();
        for l in layers {
            let d = self.push_blob(repo, &l.blob).await;
            descs.push(serde_json::json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()}));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descs,
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest json");
        let resp = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .expect("put manifest");
        assert!(resp.status().is_success(), "put manifest: {}", resp.status());
        (format!("sha256:{}", sha256_hex(&manifest)), config_digest)
    }
}

/// Builds a tar in memory; entries are (raw path, kind) so that tests can
/// write names `tar::Builder` itself would refuse (`../x`, `/abs`).
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

pub fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, data): (&str, &[u8]) = match e {
            Entry::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (n, d)
            }
            Entry::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, &[])
            }
            Entry::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                h.set_mode(0o777);
                (n, &[])
            }
            Entry::Hardlink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                h.set_mode(0o644);
                (n, &[])
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).expect("tar append");
    }
    b.into_inner().expect("tar finish")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
