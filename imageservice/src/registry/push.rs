//! Pushing to a registry (distribution spec): a blob is skipped when the
//! registry has it (HEAD), mounted from another repository of the same
//! registry when we know one that has it, or uploaded, in one PUT when
//! small and in PATCH chunks when large; the manifest goes last.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncReadExt;

use super::{error_detail, Credentials, RegistryClient, RegistryError, RepoSession};
use crate::reference::{Digest, Reference};

/// Blobs up to this size go in one request; larger ones in chunks this big.
pub const CHUNK: u64 = 1 << 20;

/// What happened to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    Present,
    Mounted,
    Uploaded,
}

impl RegistryClient {
    /// A session on the registry itself (pushes never go to mirrors).
    pub fn push_session(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<Arc<RepoSession>, RegistryError> {
        let endpoint = self
            .hosts
            .endpoints(&reference.registry)
            .into_iter()
            .find(|e| !e.mirror)
            .ok_or_else(|| RegistryError::NoEndpoint { reference: reference.to_string() })?;
        Ok(self.session(endpoint, reference, credentials))
    }
}

impl RepoSession {
    /// An upload URL the registry gave (often relative), made absolute.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{}", self.endpoint.base, location)
        }
    }

    fn with_query(url: &str, key: &str, value: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{key}={value}")
    }

    async fn expect(&self, resp: reqwest::Response, ok: &[StatusCode]) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if ok.contains(&status) {
            return Ok(resp);
        }
        Err(self.status_error(status, error_detail(resp).await))
    }

    fn location(&self, resp: &reqwest::Response) -> Result<String, RegistryError> {
        resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(|l| self.absolute(l)).ok_or_else(|| {
            RegistryError::Invalid { reference: self.reference.clone(), reason: "upload without a Location".into() }
        })
    }

    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url("blobs", &digest.to_string());
        let resp = self.send(|| self.client.head(&url)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.status_error(s, String::new())),
        }
    }

    /// Pushes one blob from `path` unless the registry already has it.
    pub async fn push_blob(
        &self,
        digest: &Digest,
        size: u64,
        path: &Path,
        mount_from: Option<&str>,
    ) -> Result<BlobPush, RegistryError> {
        if self.has_blob(digest).await? {
            return Ok(BlobPush::Present);
        }
        let base = format!("{}/v2/{}/blobs/uploads/", self.endpoint.base, self.repository);
        let start = match mount_from {
            Some(from) => {
                let url = Self::with_query(&Self::with_query(&base, "mount", &digest.to_string()), "from", from);
                self.send(|| self.client.post(&url).header(CONTENT_LENGTH, 0)).await?
            }
            None => self.send(|| self.client.post(&base).header(CONTENT_LENGTH, 0)).await?,
        };
        if start.status() == StatusCode::CREATED {
            return Ok(BlobPush::Mounted);
        }
        let start = self.expect(start, &[StatusCode::ACCEPTED]).await?;
        let mut location = self.location(&start)?;
        let io = |e: std::io::Error| RegistryError::Invalid {
            reference: self.reference.clone(),
            reason: format!("reading {}: {e}", path.display()),
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        if size <= CHUNK {
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body).await.map_err(io)?;
            let body = Bytes::from(body);
            let url = Self::with_query(&location, "digest", &digest.to_string());
            let resp = self
                .send(|| {
                    self.client
                        .request(Method::PUT, &url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                })
                .await?;
            self.expect(resp, &[StatusCode::CREATED]).await?;
            return Ok(BlobPush::Uploaded);
        }
        let mut offset = 0u64;
        while offset < size {
            let len = CHUNK.min(size - offset);
            let mut chunk = vec![0u8; len as usize];
            file.read_exact(&mut chunk).await.map_err(io)?;
            let chunk = Bytes::from(chunk);
            let range = format!("{}-{}", offset, offset + len - 1);
            let url = location.clone();
            let resp = self
                .send(|| {
                    self.client
                        .request(Method::PATCH, &url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, range.as_str())
                        .body(chunk.clone())
                })
                .await?;
            let resp = self.expect(resp, &[StatusCode::ACCEPTED]).await?;
            location = self.location(&resp)?;
            offset += len;
        }
        let url = Self::with_query(&location, "digest", &digest.to_string());
        let resp = self.send(|| self.client.request(Method::PUT, &url).header(CONTENT_LENGTH, 0)).await?;
        self.expect(resp, &[StatusCode::CREATED]).await?;
        Ok(BlobPush::Uploaded)
    }

    /// Puts the manifest under `tag`; the digest the registry reports.
    pub async fn put_manifest(&self, tag: &str, media_type: &str, bytes: Bytes) -> Result<(), RegistryError> {
        let url = self.url("manifests", tag);
        let resp = self
            .send(|| self.client.request(Method::PUT, &url).header(CONTENT_TYPE, media_type).body(bytes.clone()))
            .await?;
        self.expect(resp, &[StatusCode::CREATED, StatusCode::OK]).await?;
        Ok(())
    }
}
