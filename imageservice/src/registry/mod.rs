//! OCI distribution client: resolves manifests through mirrors then the
//! upstream, authenticates with the challenge flow, streams blobs.

pub mod auth;
pub mod hosts;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;

pub use auth::Credentials;
use auth::{parse_challenge, Challenge};
pub use hosts::{Endpoint, RegistryHostConfig, RegistryHosts};

use crate::reference::{Digest, Reference};

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MEDIA_DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Manifests larger than this are refused rather than buffered.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: not found at {endpoint}{detail}")]
    NotFound { reference: String, endpoint: String, detail: String },
    #[error("{reference}: {endpoint} refused the credentials{detail}")]
    Unauthorized { reference: String, endpoint: String, detail: String },
    #[error("{reference}: registry {endpoint} is unreachable: {detail}")]
    Unreachable { reference: String, endpoint: String, detail: String },
    #[error("{reference}: {endpoint} answered HTTP {status}{detail}")]
    Status { reference: String, endpoint: String, status: u16, detail: String },
    #[error("{reference}: manifest from {endpoint} has digest {actual}, expected {expected}")]
    ManifestDigest { reference: String, endpoint: String, expected: Digest, actual: Digest },
    #[error("{reference}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("{reference}: no registry endpoint to try (mirrors only, and none configured)")]
    NoEndpoint { reference: String },
}

impl RegistryError {
    /// Ranks errors so that, after every endpoint failed, the most telling one is reported.
    fn rank(&self) -> u8 {
        match self {
            RegistryError::NoEndpoint { .. } => 0,
            RegistryError::Unreachable { .. } => 1,
            RegistryError::Status { .. } => 2,
            RegistryError::NotFound { .. } => 3,
            RegistryError::Unauthorized { .. } => 4,
            RegistryError::ManifestDigest { .. } | RegistryError::Invalid { .. } => 5,
        }
    }
}

/// A fetched manifest or index, verified against its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Bytes,
}

/// A repository on one endpoint, with the authorization that endpoint gave us.
/// Shared by the parallel blob downloads of one pull.
#[derive(Debug)]
pub struct RepoSession {
    client: reqwest::Client,
    pub endpoint: Endpoint,
    repository: String,
    reference: String,
    credentials: Credentials,
    authorization: Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct RegistryClient {
    client: reqwest::Client,
    hosts: Arc<RegistryHosts>,
}

impl RegistryClient {
    pub fn new(hosts: RegistryHosts) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30));
        for ca in hosts.ca_files() {
            let pem = std::fs::read(&ca).map_err(|e| format!("reading CA file {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("CA file {} is not a PEM certificate: {e}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| format!("building HTTP client: {e}"))?;
        Ok(RegistryClient { client, hosts: Arc::new(hosts) })
    }

    /// A session on one endpoint for `reference`'s repository. A raw
    /// registry token is sent from the first request; other credentials
    /// answer the registry's challenge.
    fn session(&self, endpoint: Endpoint, reference: &Reference, credentials: &Credentials) -> Arc<RepoSession> {
        Arc::new(RepoSession {
            client: self.client.clone(),
            endpoint,
            repository: reference.repository.clone(),
            reference: reference.to_string(),
            credentials: credentials.clone(),
            authorization: Mutex::new(match credentials {
                Credentials::RegistryToken(t) => Some(format!("Bearer {t}")),
                _ => None,
            }),
        })
    }

    /// Resolves `reference` to its top-level manifest, trying each endpoint
    /// (mirrors first) until one has it. Returns the session to fetch the rest from.
    pub async fn resolve(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<(Arc<RepoSession>, FetchedManifest), RegistryError> {
        let endpoints = self.hosts.endpoints(&reference.registry);
        let mut best: Option<RegistryError> = None;
        for endpoint in endpoints {
            let session = self.session(endpoint.clone(), reference, credentials);
            let expected = reference.digest.clone();
            match session.fetch_manifest(&reference.manifest_reference(), expected.as_ref()).await {
                Ok(m) => return Ok((session, m)),
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.base, error = %e, "endpoint failed, trying the next");
                    if best.as_ref().is_none_or(|b| e.rank() > b.rank()) {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| RegistryError::NoEndpoint { reference: reference.to_string() }))
    }
}

impl RepoSession {
    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{}/{}", self.endpoint.base, self.repository, kind, reference)
    }

    fn err_unreachable(&self, e: &reqwest::Error) -> RegistryError {
        // reqwest's Display hides the cause (connection refused, DNS...), which is what an operator needs.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        RegistryError::Unreachable { reference: self.reference.clone(), endpoint: self.endpoint.base.clone(), detail }
    }

    /// Sends a request, answering one authentication challenge if asked.
    async fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, RegistryError> {
        for attempt in 0..2 {
            let mut req = build();
            if let Some(a) = self.authorization.lock().await.as_ref() {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| self.err_unreachable(&e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge =
                resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge);
            let detail = error_detail(resp).await;
            let unauthorized = |detail: String| RegistryError::Unauthorized {
                reference: self.reference.clone(),
                endpoint: self.endpoint.base.clone(),
                detail,
            };
            if attempt == 1 {
                return Err(unauthorized(detail));
            }
            let authorization = match challenge {
                Some(Challenge::Basic) => match self.credentials.basic_header() {
                    Some(h) => h,
                    None => return Err(unauthorized(format!("{detail} (registry wants a username and password)"))),
                },
                Some(Challenge::Bearer { realm, service, scope }) => {
                    let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                    format!("Bearer {}", self.fetch_token(&realm, service.as_deref(), &scope).await?)
                }
                None => return Err(unauthorized(format!("{detail} (no usable WWW-Authenticate challenge)"))),
            };
            *self.authorization.lock().await = Some(authorization);
        }
        Err(RegistryError::Unauthorized {
            reference: self.reference.clone(),
            endpoint: self.endpoint.base.clone(),
            detail: String::new(),
        })
    }

    /// Gets a bearer token from the challenge's realm (distribution token auth,
    /// or an OAuth2 refresh-token grant for identity tokens).
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, RegistryError> {
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            reference: self.reference.clone(),
            endpoint: realm.to_string(),
            detail,
        };
        let req = match &self.credentials {
            Credentials::IdentityToken { token, .. } => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", "gantry"),
                    ("scope", scope),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                self.client.post(realm).form(&form)
            }
            creds => {
                let mut query = vec![("scope", scope)];
                if let Some(s) = service {
                    query.push(("service", s));
                }
                let mut req = self.client.get(realm).query(&query);
                if let Some(h) = creds.basic_header() {
                    req = req.header(AUTHORIZATION, h);
                }
                req
            }
        };
        let resp = req.send().await.map_err(|e| self.err_unreachable(&e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(unauthorized(format!(": token server answered HTTP {status}{}", error_detail(resp).await)));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse =
            resp.json().await.map_err(|e| unauthorized(format!(": token server sent an unreadable answer: {e}")))?;
        body.token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized(": token server sent no token".to_string()))
    }

    fn status_error(&self, status: StatusCode, detail: String) -> RegistryError {
        let reference = self.reference.clone();
        let endpoint = self.endpoint.base.clone();
        match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound { reference, endpoint, detail },
            StatusCode::FORBIDDEN => RegistryError::Unauthorized { reference, endpoint, detail },
            s => RegistryError::Status { reference, endpoint, status: s.as_u16(), detail },
        }
    }

    /// Fetches a manifest or index by tag or digest; verifies it when the digest is known.
    pub async fn fetch_manifest(
        &self,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = self.url("manifests", reference);
        let accept = [
            MEDIA_OCI_INDEX,
            MEDIA_OCI_MANIFEST,
            MEDIA_DOCKER_LIST,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_DOCKER_SCHEMA1_SIGNED,
            MEDIA_DOCKER_SCHEMA1,
        ]
        .join(", ");
        let resp = self.send(|| self.client.request(Method::GET, &url).header(ACCEPT, accept.as_str())).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(status, error_detail(resp).await));
        }
        let header_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        if resp.content_length().is_some_and(|l| l as usize > MAX_MANIFEST_BYTES) {
            return Err(RegistryError::Invalid {
                reference: self.reference.clone(),
                reason: format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| self.err_unreachable(&e))?;
        let digest = Digest::of_bytes(&bytes);
        if let Some(expected) = expected {
            if &digest != expected {
                return Err(RegistryError::ManifestDigest {
                    reference: self.reference.clone(),
                    endpoint: self.endpoint.base.clone(),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        // The body's own mediaType wins over a generic Content-Type.
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
            reference: self.reference.clone(),
            reason: format!("manifest is not JSON: {e}"),
        })?;
        let media_type = match (probe.media_type, probe.schema_version, header_type) {
            (_, Some(1), _) => MEDIA_DOCKER_SCHEMA1.to_string(),
            (Some(t), _, _) => t,
            (None, _, _) if probe.manifests.is_some() => MEDIA_OCI_INDEX.to_string(),
            (None, _, Some(h)) if h != "application/json" && h != "application/octet-stream" => h,
            (None, _, _) => MEDIA_OCI_MANIFEST.to_string(),
        };
        Ok(FetchedManifest { media_type, digest, bytes })
    }

    /// Opens a blob download. Redirects (to object storage) are followed; the
    /// caller verifies the bytes.
    pub async fn fetch_blob(
        &self,
        digest: &Digest,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, RegistryError> {
        let url = self.url("blobs", &digest.to_string());
        let resp = self.send(|| self.client.get(&url)).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(status, error_detail(resp).await));
        }
        Ok(resp.bytes_stream().map_err(std::io::Error::other))
    }

    /// Fetches a small blob (an image config) into memory, verifying it.
    pub async fn fetch_small_blob(&self, digest: &Digest, max: usize) -> Result<Bytes, RegistryError> {
        let url = self.url("blobs", &digest.to_string());
        let resp = self.send(|| self.client.get(&url)).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(status, error_detail(resp).await));
        }
        if resp.content_length().is_some_and(|l| l as usize > max) {
            return Err(RegistryError::Invalid {
                reference: self.reference.clone(),
                reason: format!("blob {digest} is larger than {max} bytes"),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| self.err_unreachable(&e))?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(RegistryError::Invalid {
                reference: self.reference.clone(),
                reason: format!("blob {digest} from {} has digest {actual}", self.endpoint.base),
            });
        }
        Ok(bytes)
    }
}

/// The distribution error body (`{"errors":[{"code":..,"message":..}]}`) as text.
async fn error_detail(resp: Response) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(bytes) = resp.bytes().await else { return String::new() };
    match serde_json::from_slice::<Body>(&bytes) {
        Ok(b) if !b.errors.is_empty() => {
            let parts: Vec<String> = b
                .errors
                .iter()
                .map(|i| {
                    format!("{} {}", i.code.as_deref().unwrap_or(""), i.message.as_deref().unwrap_or(""))
                        .trim()
                        .to_string()
                })
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}
