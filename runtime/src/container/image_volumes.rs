//! Image volumes (CRI `Mount.image`, Kubernetes' `image` volume source):
//! an image kubelet pulled, mounted read-only into a container from its
//! already unpacked layers, optionally only its `image_sub_path`. Each is
//! mounted at `BUNDLE/image-volumes/N` and bind-mounted from there like a
//! host path; the image's layers are held while the container exists (held
//! as `ID/volumes`, recorded for recovery), so RemoveImage keeps them.

use std::path::{Component, Path, PathBuf};

use gantry_imageservice::{Digest, ImageSelector};
use gantry_proto::cri::v1::{ContainerConfig, Mount};

use crate::error::{internal, RuntimeError};
use crate::runtime::Runtime;

const VOLUMES_DIR: &str = "image-volumes";

/// The holder name of a container's image-volume layers.
pub(crate) fn holder(id: &str) -> String {
    format!("{id}/volumes")
}

/// `sub` inside `root`, every component an existing entry that is not a
/// symlink (so nothing resolves outside the image); `..` is refused.
fn resolve_sub_path(root: &Path, sub: &str, container_path: &str) -> Result<PathBuf, RuntimeError> {
    let bad =
        |why: String| RuntimeError::InvalidArgument(format!("mount {container_path:?}: image_sub_path {sub:?} {why}"));
    let mut at = root.to_path_buf();
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(name) => {
                at.push(name);
                match std::fs::symlink_metadata(&at) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(bad(format!(
                            "goes through the symlink {:?} in the image",
                            at.strip_prefix(root).unwrap_or(&at)
                        )))
                    }
                    Ok(_) => {}
                    Err(_) => return Err(bad("does not exist in the image".into())),
                }
            }
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(bad("may not contain \"..\"".into())),
        }
    }
    Ok(at)
}

impl Runtime {
    /// Mounts the image volumes of `config` and returns the config the
    /// spec is built from (each image mount a read-only bind of its mount)
    /// and the layers held for them. On error, what was mounted is undone.
    pub(crate) async fn mount_image_volumes(
        &self,
        id: &str,
        dir: &Path,
        config: &ContainerConfig,
    ) -> Result<(ContainerConfig, Vec<Digest>), RuntimeError> {
        let mut resolved = config.clone();
        let mut held: Vec<Digest> = vec![];
        let result = self.mount_each(id, dir, &mut resolved.mounts, &mut held).await;
        if let Err(e) = result {
            unmount_image_volumes(dir);
            self.images.release_layers(&holder(id));
            return Err(e);
        }
        Ok((resolved, held))
    }

    async fn mount_each(
        &self,
        id: &str,
        dir: &Path,
        mounts: &mut [Mount],
        held: &mut Vec<Digest>,
    ) -> Result<(), RuntimeError> {
        for (n, m) in mounts.iter_mut().enumerate() {
            let Some(image) = m.image.as_ref().filter(|i| !i.image.is_empty()) else { continue };
            let reference = image.image.clone();
            if !m.host_path.is_empty() {
                return Err(RuntimeError::InvalidArgument(format!(
                    "mount {:?} names both host_path {:?} and image {reference:?}",
                    m.container_path, m.host_path
                )));
            }
            let selector = ImageSelector::parse(&reference)
                .map_err(|e| RuntimeError::InvalidArgument(format!("mount {:?}: image: {e}", m.container_path)))?;
            let record =
                self.images.resolve(&selector).map_err(|e| internal("resolving an image volume")(&e))?.ok_or_else(
                    || {
                        RuntimeError::NotFound(format!(
                            "mount {:?}: image {reference:?} not found: pull it first",
                            m.container_path
                        ))
                    },
                )?;
            let chains = record.chain_ids();
            held.extend(chains.iter().cloned());
            // Held before the mount, so a concurrent RemoveImage keeps them.
            self.images.hold_layers(&holder(id), held.clone());
            let target = dir.join(VOLUMES_DIR).join(n.to_string());
            tokio::fs::create_dir_all(&target).await.map_err(|e| internal("creating an image volume dir")(&e))?;
            self.images.snapshotter().mount_read_only(&chains, &target).map_err(|e| {
                RuntimeError::FailedPrecondition(format!("mount {:?}: image {reference:?}: {e}", m.container_path))
            })?;
            let source = resolve_sub_path(&target, &m.image_sub_path, &m.container_path)?;
            m.host_path = source.display().to_string();
            m.readonly = true;
        }
        Ok(())
    }
}

/// Unmounts every image volume of the bundle `dir` (not mounted is fine).
pub(crate) fn unmount_image_volumes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join(VOLUMES_DIR)) else { return };
    for e in entries.flatten() {
        let _ = gantry_imageservice::snapshot::unmount(&e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside_the_image() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("models/v1")).expect("mkdir");
        std::fs::write(root.path().join("models/v1/weights"), b"w").expect("write");
        std::os::unix::fs::symlink("/etc", root.path().join("escape")).expect("symlink");
        std::os::unix::fs::symlink("models", root.path().join("inner")).expect("symlink");
        let ok = resolve_sub_path(root.path(), "models/v1", "/m").expect("plain directory");
        assert_eq!(ok, root.path().join("models/v1"));
        assert_eq!(resolve_sub_path(root.path(), "", "/m").expect("whole image"), root.path());
        for (sub, why) in [
            ("escape", "symlink"),
            ("escape/passwd", "symlink"),
            ("inner/v1", "symlink"),
            ("models/../escape", "\"..\""),
            ("models/v2", "does not exist"),
        ] {
            let e = resolve_sub_path(root.path(), sub, "/m").expect_err(sub).to_string();
            assert!(e.contains(why) && e.contains(sub) && e.contains("/m"), "{sub}: {e}");
        }
    }
}
