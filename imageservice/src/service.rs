//! The CRI v1 `ImageService` over the image store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use gantry_proto::cri::v1::image_service_server::ImageService;
use gantry_proto::cri::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec,
    ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest, ListImagesResponse, PullImageRequest,
    PullImageResponse, RemoveImageRequest, RemoveImageResponse, StreamImagesRequest, StreamImagesResponse, UInt64Value,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::metadata::{ImageRecord, ImageSelector};
use crate::pull::PullError;
use crate::registry::{Credentials, RegistryError};
use crate::store::ImageStore;

pub struct CriImageService {
    store: Arc<ImageStore>,
}

impl CriImageService {
    pub fn new(store: Arc<ImageStore>) -> Self {
        CriImageService { store }
    }

    fn selector(spec: Option<&ImageSpec>) -> Result<ImageSelector, Status> {
        let image = spec.map(|s| s.image.as_str()).unwrap_or("");
        if image.is_empty() {
            return Err(Status::invalid_argument("image spec is missing the image reference"));
        }
        ImageSelector::parse(image).map_err(|e| Status::invalid_argument(e.to_string()))
    }

    fn to_cri(&self, record: &ImageRecord) -> Image {
        let (uid, username) = self.user_of(record);
        Image {
            id: record.id.to_string(),
            repo_tags: record.repo_tags.clone(),
            repo_digests: record.repo_digests.clone(),
            size: record.size(),
            uid: uid.map(|value| Int64Value { value }),
            username,
            spec: Some(ImageSpec { image: record.id.to_string(), ..Default::default() }),
            pinned: self.store.is_pinned(record),
        }
    }

    /// The config's `User`, as containerd reports it: a numeric user is a uid,
    /// anything else a user name; the group part is dropped.
    fn user_of(&self, record: &ImageRecord) -> (Option<i64>, String) {
        let user = self
            .config_json(record)
            .and_then(|c| c.get("config")?.get("User")?.as_str().map(str::to_string))
            .unwrap_or_default();
        let user = user.split(':').next().unwrap_or("").to_string();
        if user.is_empty() {
            return (None, String::new());
        }
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user),
        }
    }

    fn config_json(&self, record: &ImageRecord) -> Option<serde_json::Value> {
        let bytes = self.store.content().read(&record.config.digest).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Maps pull failures to the status code a client can act on.
pub(crate) fn pull_status(e: &PullError) -> Status {
    let msg = format!("pulling image: {e}");
    match e {
        PullError::Reference(_) => Status::invalid_argument(msg),
        PullError::Registry(r) => match r {
            RegistryError::NotFound { .. } => Status::not_found(msg),
            RegistryError::Unauthorized { .. } => Status::unauthenticated(msg),
            RegistryError::Unreachable { .. } | RegistryError::NoEndpoint { .. } => Status::unavailable(msg),
            RegistryError::Status { status, .. } if *status >= 500 => Status::unavailable(msg),
            RegistryError::Status { .. } => Status::unknown(msg),
            RegistryError::ManifestDigest { .. } | RegistryError::Invalid { .. } => Status::data_loss(msg),
        },
        PullError::Unsupported { .. } => Status::failed_precondition(msg),
        PullError::BadImage { .. } | PullError::Layer { .. } => Status::data_loss(msg),
        PullError::Store(_) => Status::internal(msg),
    }
}

#[tonic::async_trait]
impl ImageService for CriImageService {
    type StreamImagesStream = futures::stream::BoxStream<'static, Result<StreamImagesResponse, Status>>;

    async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request.into_inner().filter.and_then(|f| f.image).filter(|s| !s.image.is_empty());
        let images = match filter {
            Some(spec) => {
                let selector = Self::selector(Some(&spec))?;
                self.store.resolve(&selector).map_err(internal)?.into_iter().collect()
            }
            None => self.store.list().map_err(internal)?,
        };
        Ok(Response::new(ListImagesResponse { images: images.iter().map(|r| self.to_cri(r)).collect() }))
    }

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        // ListImages' selection, in chunks of at most 100 images.
        let filter = request.into_inner().filter;
        let listed = self.list_images(Request::new(ListImagesRequest { filter })).await?.into_inner().images;
        let mut chunks: Vec<Vec<Image>> = listed.chunks(100).map(<[Image]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(vec![]);
        }
        let stream = futures::stream::iter(chunks.into_iter().map(|images| Ok(StreamImagesResponse { images })));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let selector = Self::selector(req.image.as_ref())?;
        let Some(record) = self.store.resolve(&selector).map_err(internal)? else {
            // CRI: an unknown image is an empty answer, not an error.
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if req.verbose {
            let verbose = serde_json::json!({
                "chainID": record.layers.last().map(|l| l.chain_id.to_string()),
                "imageSpec": self.config_json(&record),
                "manifestDigest": record.manifest.digest.to_string(),
                "layers": record.layers,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(ImageStatusResponse { image: Some(self.to_cri(&record)), info }))
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let image = req.image.as_ref().map(|s| s.image.clone()).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("image spec is missing the image reference"));
        }
        let credentials = match &req.auth {
            None => Credentials::Anonymous,
            Some(a) => Credentials::from_cri(&a.username, &a.password, &a.auth, &a.identity_token, &a.registry_token)
                .map_err(|e| Status::invalid_argument(format!("auth config for {image:?}: {e}")))?,
        };
        let span = tracing::info_span!("PullImage", image = %image);
        let record = self.store.pull(&image, &credentials).instrument(span).await.map_err(|e| {
            tracing::warn!(image = %image, error = %e, "pull failed");
            pull_status(&e)
        })?;
        Ok(Response::new(PullImageResponse { image_ref: record.id.to_string() }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = request.into_inner();
        let selector = Self::selector(req.image.as_ref())?;
        if let Some(image) = self.store.resolve(&selector).map_err(internal)? {
            if self.store.is_pinned(&image) {
                return Err(Status::failed_precondition(format!(
                    "image {} ({}) is pinned by gantryd's pinned_images: kept for the node (gantry rmi --force removes it)",
                    req.image.as_ref().map(|s| s.image.as_str()).unwrap_or_default(),
                    image.id
                )));
            }
        }
        // CRI: removing an image that is already gone succeeds.
        self.store.remove(&selector).await.map_err(internal)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(&self, _: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        let (bytes, inodes) = self.store.disk_usage().await;
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(1);
        let usage = FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier { mountpoint: self.store.snapshotter().root().display().to_string() }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        };
        // The writable layers live beside the image layers (one filesystem, as
        // containerd's snapshotter): same mountpoint, their own usage, so
        // kubelet's split-filesystem eviction sees what containers write.
        let (rw_bytes, rw_inodes) = self.store.writable_layers_usage().await;
        let containers = FilesystemUsage {
            timestamp,
            fs_id: usage.fs_id.clone(),
            used_bytes: Some(UInt64Value { value: rw_bytes }),
            inodes_used: Some(UInt64Value { value: rw_inodes }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: vec![containers],
        }))
    }
}
