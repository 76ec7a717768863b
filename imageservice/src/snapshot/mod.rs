//! Overlay snapshotter: one read-only snapshot per layer, keyed by chain ID,
//! unpacked once however many images share it; plus writable container
//! snapshots (upper + work) stacked on them with overlayfs.
//!
//! Layout under `ROOT/snapshots`:
//! - `layers/CHAINID/fs`: a committed layer, OCI whiteouts already converted
//!   to overlayfs form; `layers/CHAINID/size`: the bytes `fs` takes on disk
//!   (decimal), recorded at commit so that `df` and `inspect` need no walk;
//! - `unpack/RANDOM/fs`: a layer being unpacked (renamed into `layers/` only
//!   once its digests are verified; anything left here is from a crash);
//! - `active/KEY/{upper,work}`: a container's writable layer.

pub mod apply;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::fsutil::{digest_entries, fsync_dir, random_name, remove_entries, write_atomic};
use crate::reference::Digest;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    #[error("invalid snapshot key {0:?}: use letters, digits, '-' and '_'")]
    InvalidKey(String),
    #[error("overlay mount options for {layers} layers are {len} bytes, over the kernel's page-size limit")]
    TooManyLayers { layers: usize, len: usize },
    #[error("snapshot {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("mount {target}: {source}")]
    Mount { target: PathBuf, source: nix::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct Snapshotter {
    layers: PathBuf,
    unpack: PathBuf,
    active: PathBuf,
}

/// A layer being unpacked. Removed on drop unless committed.
pub struct UnpackDir {
    dir: PathBuf,
    committed: bool,
}

impl UnpackDir {
    /// Where the layer's files go.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for UnpackDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The mounts a writable container rootfs is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsLayout {
    /// Topmost layer first, as overlayfs wants them.
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
}

impl RootfsLayout {
    pub fn mount_options(&self) -> Result<String, SnapshotError> {
        let lower: Vec<String> = self.lowerdirs.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},index=off",
            lower.join(":"),
            self.upperdir.display(),
            self.workdir.display()
        );
        // mount(2) copies at most one page of option data.
        if opts.len() >= 4096 {
            return Err(SnapshotError::TooManyLayers { layers: self.lowerdirs.len(), len: opts.len() });
        }
        Ok(opts)
    }

    /// Mounts the overlay at `target` (which must exist).
    pub fn mount(&self, target: &Path) -> Result<(), SnapshotError> {
        let opts = self.mount_options()?;
        mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
            .map_err(|source| SnapshotError::Mount { target: target.to_path_buf(), source })
    }
}

/// Unmounts a rootfs mounted by [`RootfsLayout::mount`]; not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(SnapshotError::Mount { target: target.to_path_buf(), source }),
    }
}

impl Snapshotter {
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let s = Snapshotter { layers: root.join("layers"), unpack: root.join("unpack"), active: root.join("active") };
        for d in [&s.layers, &s.unpack, &s.active] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(s)
    }

    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.layers.join(chain_id.hex()).join("fs")
    }

    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).is_dir()
    }

    pub fn begin_unpack(&self) -> Result<UnpackDir, SnapshotError> {
        let dir = self.unpack.join(random_name("layer"));
        let fs_dir = dir.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io_err(&fs_dir))?;
        Ok(UnpackDir { dir, committed: false })
    }

    /// The device of the filesystem layers are unpacked and committed on.
    pub fn device(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.unpack).ok().map(|m| m.dev())
    }

    /// Makes an unpacked layer visible under its chain ID. The data is flushed
    /// first (one syncfs rather than an fsync per file) so that a committed
    /// layer is complete after a crash.
    pub fn commit(&self, unpacked: UnpackDir, chain_id: &Digest) -> Result<(), SnapshotError> {
        self.commit_with(unpacked, chain_id, || Ok(()))
    }

    /// As [`Snapshotter::commit`], running `synced` after the syncfs and
    /// before the layer becomes visible (a pull publishes the layer's blob
    /// there, made durable by the same syncfs).
    pub fn commit_with<E: From<SnapshotError>>(
        &self,
        mut unpacked: UnpackDir,
        chain_id: &Digest,
        synced: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let dir = fs::File::open(&unpacked.dir).map_err(io_err(&unpacked.dir))?;
        // The size walk (CPU, cached metadata) runs while the syncfs waits
        // for the disk.
        let fs_dir = unpacked.fs();
        let (size, sync_result) = std::thread::scope(|scope| {
            let walk = scope.spawn(|| crate::fsutil::disk_usage(&fs_dir).0);
            let synced = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir));
            (walk.join(), synced)
        });
        sync_result.map_err(|e| SnapshotError::Io { path: unpacked.dir.clone(), source: e.into() })?;
        synced()?;
        // Inside the directory about to be renamed: the layer and its size
        // appear together. Not synced on its own: a size file lost or torn
        // by a crash reads as unrecorded, and `layer_size` walks again.
        if let Ok(size) = size {
            let size_file = unpacked.dir.join(SIZE_FILE);
            fs::write(&size_file, size.to_string()).map_err(io_err(&size_file))?;
        }
        let target = self.layers.join(chain_id.hex());
        match fs::rename(&unpacked.dir, &target) {
            Ok(()) => {}
            // Someone committed the same layer first: theirs is as good as ours.
            // (rename fails with ENOTEMPTY; our copy is removed on drop).
            Err(_) if target.is_dir() => return Ok(()),
            Err(e) => return Err(SnapshotError::Io { path: target, source: e }.into()),
        }
        unpacked.committed = true;
        Ok(fsync_dir(&self.layers).map_err(io_err(&self.layers))?)
    }

    /// The bytes a committed layer's files take on disk; 0 if there is no
    /// such layer. Read from the size recorded at commit; a layer committed
    /// before sizes were recorded is walked once and its size recorded then.
    pub fn layer_size(&self, chain_id: &Digest) -> u64 {
        let file = self.layers.join(chain_id.hex()).join(SIZE_FILE);
        if let Some(bytes) = fs::read_to_string(&file).ok().and_then(|s| s.trim().parse().ok()) {
            return bytes;
        }
        let fs_dir = self.layer_dir(chain_id);
        if !fs_dir.is_dir() {
            return 0;
        }
        let bytes = crate::fsutil::disk_usage(&fs_dir).0;
        // Unrecorded (say the layer was just removed), the next call walks again.
        if let Err(e) = write_atomic(&file, bytes.to_string().as_bytes()) {
            tracing::debug!(layer = %chain_id, error = %e, "recording a layer's size");
        }
        bytes
    }

    pub fn remove_layer(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
        // Rename first so that a crash mid-delete never leaves a half-deleted
        // layer under its chain ID.
        let dir = self.layers.join(chain_id.hex());
        let doomed = self.unpack.join(random_name("removing"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SnapshotError::Io { path: dir, source: e }),
        }
        fs::remove_dir_all(&doomed).map_err(io_err(&doomed))
    }

    pub fn list_layers(&self) -> Result<Vec<Digest>, SnapshotError> {
        digest_entries(&self.layers).map_err(io_err(&self.layers))
    }

    /// Removes unpack directories left by a crash or a failed pull. Only
    /// called when no pull is running.
    pub fn clean_unpack(&self) -> Result<usize, SnapshotError> {
        remove_entries(&self.unpack).map_err(io_err(&self.unpack))
    }

    /// Creates the writable layer `key` on top of `parents` (chain IDs, bottom
    /// layer first, as in the image's rootfs) and returns how to mount it.
    pub fn prepare_rw(&self, key: &str, parents: &[Digest]) -> Result<RootfsLayout, SnapshotError> {
        validate_key(key)?;
        for p in parents {
            if !self.has_layer(p) {
                return Err(SnapshotError::NotFound(p.to_string()));
            }
        }
        let dir = self.active.join(key);
        if dir.exists() {
            return Err(SnapshotError::AlreadyExists(key.to_string()));
        }
        let layout = self.rw_layout(key, parents);
        for d in [&layout.upperdir, &layout.workdir] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        fsync_dir(&self.active).map_err(io_err(&self.active))?;
        Ok(layout)
    }

    /// The layout of an existing writable layer (after a restart, say).
    pub fn rw_layout(&self, key: &str, parents: &[Digest]) -> RootfsLayout {
        let dir = self.active.join(key);
        RootfsLayout {
            lowerdirs: parents.iter().rev().map(|p| self.layer_dir(p)).collect(),
            upperdir: dir.join("upper"),
            workdir: dir.join("work"),
        }
    }

    /// Mounts unpacked layers `layers` (chain IDs, bottom layer first)
    /// read-only at `target` (which must exist), for an image volume: a
    /// read-only bind of a single layer, else an overlay of them with no
    /// upper dir, which overlayfs makes read-only.
    pub fn mount_read_only(&self, layers: &[Digest], target: &Path) -> Result<(), SnapshotError> {
        for p in layers {
            if !self.has_layer(p) {
                return Err(SnapshotError::NotFound(p.to_string()));
            }
        }
        let mount_err = |source| SnapshotError::Mount { target: target.to_path_buf(), source };
        match layers {
            [] => Err(SnapshotError::NotFound("an image with no layers".into())),
            [one] => {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                mount(Some(&self.layer_dir(one)), target, None::<&str>, flags, None::<&str>).map_err(mount_err)?;
                let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                if let Err(e) = mount(None::<&str>, target, None::<&str>, ro, None::<&str>) {
                    let _ = umount2(target, MntFlags::MNT_DETACH);
                    return Err(mount_err(e));
                }
                Ok(())
            }
            many => {
                let lower: Vec<String> = many.iter().rev().map(|p| self.layer_dir(p).display().to_string()).collect();
                let opts = format!("lowerdir={}", lower.join(":"));
                if opts.len() >= 4096 {
                    return Err(SnapshotError::TooManyLayers { layers: many.len(), len: opts.len() });
                }
                mount(Some("overlay"), target, Some("overlay"), MsFlags::MS_RDONLY, Some(opts.as_str()))
                    .map_err(mount_err)
            }
        }
    }

    pub fn remove_rw(&self, key: &str) -> Result<(), SnapshotError> {
        validate_key(key)?;
        let dir = self.active.join(key);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::Io { path: dir, source: e }),
        }
    }

    pub fn disk_usage(&self) -> (u64, u64) {
        let (b1, i1) = crate::fsutil::disk_usage(&self.layers);
        let (b2, i2) = crate::fsutil::disk_usage(&self.active);
        (b1 + b2, i1 + i2)
    }

    pub fn root(&self) -> &Path {
        self.layers.parent().unwrap_or(&self.layers)
    }
}

/// In a layer's directory, beside `fs`: its unpacked size (`layer_size`).
const SIZE_FILE: &str = "size";

fn validate_key(key: &str) -> Result<(), SnapshotError> {
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(SnapshotError::InvalidKey(key.to_string()));
    }
    Ok(())
}

/// The chain IDs of a layer stack: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`, as the OCI image spec defines.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of_bytes(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layers_size_is_recorded_at_commit_and_learnt_once_for_older_layers() {
        let root = tempfile::tempdir().expect("temp dir");
        let snapshots = Snapshotter::open(root.path()).expect("open");
        let chain = Digest::of_bytes(b"layer");
        let unpack = snapshots.begin_unpack().expect("unpack dir");
        fs::write(unpack.fs().join("data"), vec![7u8; 100_000]).expect("write");
        snapshots.commit(unpack, &chain).expect("commit");

        let walked = crate::fsutil::disk_usage(&snapshots.layer_dir(&chain)).0;
        assert!(walked >= 100_000, "{walked}");
        let size_file = root.path().join("layers").join(chain.hex()).join(SIZE_FILE);
        assert_eq!(fs::read_to_string(&size_file).expect("recorded at commit"), walked.to_string());
        assert_eq!(snapshots.layer_size(&chain), walked);

        // The record is what counts, not a walk.
        fs::write(&size_file, "12345").expect("write");
        assert_eq!(snapshots.layer_size(&chain), 12345);
        // A layer from before sizes were recorded: walked, then recorded.
        fs::remove_file(&size_file).expect("remove");
        assert_eq!(snapshots.layer_size(&chain), walked);
        assert_eq!(fs::read_to_string(&size_file).expect("recorded"), walked.to_string());
        // The layer list is unchanged by the extra file.
        assert_eq!(snapshots.list_layers().expect("list"), vec![chain.clone()]);

        snapshots.remove_layer(&chain).expect("remove");
        assert_eq!(snapshots.layer_size(&chain), 0);
        assert!(!size_file.exists());
    }
}
