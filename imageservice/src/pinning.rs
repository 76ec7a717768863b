//! Pinned images: the ones a node must keep (its pause image, say), named in
//! gantryd's `pinned_images`. CRI reports them with `pinned = true`, so
//! kubelet's image garbage collection leaves them alone, and RemoveImage
//! refuses them; only `gantry rmi --force` removes one.

use crate::metadata::ImageRecord;
use crate::reference::{Reference, ReferenceError};

/// One `pinned_images` entry: a reference (normalised as pulls name images:
/// `pause:3.10` is `docker.io/library/pause:3.10`), or a prefix ending in `*`
/// matched against the normalised names (`registry.k8s.io/pause*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedImages(Vec<Pattern>);

impl PinnedImages {
    /// Checks every entry; the error names the one that is not a reference.
    pub fn parse(entries: &[String]) -> Result<Self, ReferenceError> {
        let mut patterns = Vec::with_capacity(entries.len());
        for entry in entries {
            patterns.push(match entry.strip_suffix('*') {
                Some(prefix) => Pattern::Prefix(prefix.to_string()),
                None => Pattern::Exact(Reference::parse(entry)?.to_string()),
            });
        }
        Ok(PinnedImages(patterns))
    }

    /// Whether any of the image's names (tags or digests) is pinned.
    pub fn covers(&self, image: &ImageRecord) -> bool {
        image.pinned
            || image.repo_tags.iter().chain(&image.repo_digests).any(|name| {
                self.0.iter().any(|p| match p {
                    Pattern::Exact(r) => r == name,
                    Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str]) -> ImageRecord {
        let blob = |s: &str| crate::metadata::BlobRef {
            digest: crate::reference::Digest::of_bytes(s.as_bytes()),
            size: 1,
            media_type: "x".into(),
        };
        ImageRecord {
            id: crate::reference::Digest::of_bytes(b"config"),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            manifest: blob("manifest"),
            config: blob("config"),
            layers: vec![],
            kept_blobs: vec![],
            created_unix_nanos: 1,
            pinned: false,
        }
    }

    #[test]
    fn exact_names_are_normalised_and_prefixes_match_normalised_names() {
        let pins = PinnedImages::parse(&["pause:3.10".into(), "registry.k8s.io/coredns*".into()]).expect("valid");
        assert!(pins.covers(&image(&["docker.io/library/pause:3.10"])));
        assert!(!pins.covers(&image(&["docker.io/library/pause:3.9"])));
        assert!(pins.covers(&image(&["registry.k8s.io/coredns/coredns:v1.12.0"])));
        assert!(!pins.covers(&image(&["docker.io/library/busybox:latest"])));
        assert!(!PinnedImages::default().covers(&image(&["docker.io/library/pause:3.10"])));
    }

    #[test]
    fn a_bad_entry_is_named() {
        let err = PinnedImages::parse(&["not a reference".into()]).expect_err("invalid").to_string();
        assert!(err.contains("not a reference"), "{err}");
    }
}
