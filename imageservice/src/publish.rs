//! Pushing a stored image to a registry: its blobs (skipped, mounted or
//! uploaded, see registry::push), then its manifest under the tag. The
//! image then records the repository digest, as after a pull.

use bytes::Bytes;

use crate::metadata::ImageRecord;
use crate::reference::{Digest, Reference};
use crate::registry::push::BlobPush;
use crate::registry::{Credentials, RegistryError};
use crate::store::{ImageStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0:?} is not a NAME:TAG to push to")]
    NotATag(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushSummary {
    pub uploaded: u32,
    pub mounted: u32,
    pub present: u32,
}

impl ImageStore {
    pub async fn push(
        &self,
        image: &ImageRecord,
        target: &Reference,
        credentials: &Credentials,
        on_blob: &(dyn Fn(&Digest, u64, BlobPush) + Send + Sync),
    ) -> Result<(Digest, PushSummary), PushError> {
        let tag = target.tag.clone().ok_or_else(|| PushError::NotATag(target.to_string()))?;
        let _shared = self.gc_lock.read().await;
        let session = self.registry.push_session(target, credentials)?;
        // For each blob, another repository of the same registry that has it
        // (an image pulled from there with that blob): the registry can mount
        // it instead of our uploading it.
        let known = self.list()?;
        let mount_from = |digest: &Digest| -> Option<String> {
            known
                .iter()
                .filter(|i| i.config.digest == *digest || i.layers.iter().any(|l| l.blob.digest == *digest))
                .flat_map(|i| i.repo_digests.iter().chain(&i.repo_tags))
                .filter_map(|r| Reference::parse(r).ok())
                .find(|r| r.registry == target.registry && r.repository != target.repository)
                .map(|r| r.repository)
        };
        let mut summary = PushSummary::default();
        let blobs = image.layers.iter().map(|l| &l.blob).chain(std::iter::once(&image.config));
        for blob in blobs {
            let path = self.content.path(&blob.digest);
            let outcome =
                session.push_blob(&blob.digest, blob.size, &path, mount_from(&blob.digest).as_deref()).await?;
            match outcome {
                BlobPush::Present => summary.present += 1,
                BlobPush::Mounted => summary.mounted += 1,
                BlobPush::Uploaded => summary.uploaded += 1,
            }
            on_blob(&blob.digest, blob.size, outcome);
        }
        let manifest = self.content.read(&image.manifest.digest).map_err(StoreError::from)?;
        session.put_manifest(&tag, &image.manifest.media_type, Bytes::from(manifest)).await?;
        let mut record = image.clone();
        record.repo_tags = vec![target.to_string()];
        record.repo_digests = vec![target.with_digest(&image.manifest.digest)];
        self.meta.put(record).map_err(StoreError::from)?;
        tracing::info!(image = %image.id, target = %target, ?summary, "pushed");
        Ok((image.manifest.digest.clone(), summary))
    }
}
