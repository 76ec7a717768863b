//! Content store: blobs addressed by sha256 under `ROOT/content/blobs/sha256/HEX`.
//!
//! Bytes are written to a private file under `ingest/`, hashed as they arrive,
//! and only renamed into `blobs/` after the digest and size match the
//! descriptor, so a partial or tampered download is never visible.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::fsutil::{digest_entries, fsync_dir, random_name, remove_entries};
use crate::reference::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {expected}: content has digest {actual} and {actual_size} bytes, expected {expected_size} bytes")]
    DigestMismatch { expected: Digest, actual: Digest, expected_size: u64, actual_size: u64 },
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    #[error("content store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        fs::create_dir_all(&ingest).map_err(io_err(&ingest))?;
        Ok(ContentStore { blobs, ingest })
    }

    /// The device of the filesystem blobs are written and published on.
    pub fn device(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.ingest).ok().map(|m| m.dev())
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let path = self.path(digest);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(digest.clone()),
            _ => ContentError::Io { path, source: e },
        })
    }

    /// Stores a blob held in memory (manifests, configs), verifying its digest.
    pub fn write_all(&self, expected: &Digest, bytes: &[u8]) -> Result<(), ContentError> {
        if self.has(expected) {
            return Ok(());
        }
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(io_err(&w.path))?;
        w.commit(expected, bytes.len() as u64)
    }

    pub fn writer(&self) -> Result<BlobWriter, ContentError> {
        let path = self.ingest.join(random_name("blob"));
        let file = File::options().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        Ok(BlobWriter { file: Some(file), path, hasher: Sha256::new(), size: 0, flushed: 0, blobs: self.blobs.clone() })
    }

    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::Io { path, source: e }),
        }
    }

    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        digest_entries(&self.blobs).map_err(io_err(&self.blobs))
    }

    /// Removes ingest files a crash or a failed pull left behind. Only called
    /// when no pull is running.
    pub fn clean_ingest(&self) -> Result<usize, ContentError> {
        remove_entries(&self.ingest).map_err(io_err(&self.ingest))
    }
}

/// A blob being written. Dropped without `commit`, its temp file is removed.
///
/// Every [`WRITEBACK_STEP`] bytes the kernel is asked to start writing what
/// came before (`sync_file_range`, not waiting), so that the fsync at commit
/// only waits for the tail instead of the whole blob.
pub struct BlobWriter {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    /// Bytes handed to writeback so far.
    flushed: u64,
    blobs: PathBuf,
}

/// How much a blob writer lets accumulate before starting its writeback.
const WRITEBACK_STEP: u64 = 8 << 20;

/// A blob whose digest and size checked out and whose bytes are on disk,
/// not yet visible under its digest. Dropped unpublished, it is removed.
pub struct SealedBlob {
    path: PathBuf,
    target: PathBuf,
    blobs: PathBuf,
    published: bool,
}

impl SealedBlob {
    /// Makes the blob visible under its digest, durably.
    pub fn publish(mut self) -> Result<(), ContentError> {
        fs::rename(&self.path, &self.target).map_err(io_err(&self.target))?;
        self.published = true;
        fsync_dir(&self.blobs).map_err(io_err(&self.blobs))
    }
}

impl Drop for SealedBlob {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.size
    }

    /// Verifies digest and size, then makes the blob visible atomically.
    pub fn commit(self, expected: &Digest, expected_size: u64) -> Result<(), ContentError> {
        self.seal(expected, expected_size)?.publish()
    }

    /// Verifies digest and size and makes the bytes durable, without making
    /// the blob visible yet: [`SealedBlob::publish`] does that.
    pub fn seal(self, expected: &Digest, expected_size: u64) -> Result<SealedBlob, ContentError> {
        self.seal_with(expected, expected_size, true)
    }

    /// As [`BlobWriter::seal`] but without the fsync: the caller makes the
    /// bytes durable with a `syncfs` of the store's filesystem (see
    /// [`ContentStore::device`]) before it publishes the blob. A pull does,
    /// as it syncs the layer unpacked from the blob anyway: one sync instead
    /// of two.
    pub fn seal_for_syncfs(self, expected: &Digest, expected_size: u64) -> Result<SealedBlob, ContentError> {
        self.seal_with(expected, expected_size, false)
    }

    fn seal_with(mut self, expected: &Digest, expected_size: u64, fsync: bool) -> Result<SealedBlob, ContentError> {
        let actual = Digest::from_sha256(std::mem::take(&mut self.hasher));
        if &actual != expected || self.size != expected_size {
            return Err(ContentError::DigestMismatch {
                expected: expected.clone(),
                actual,
                expected_size,
                actual_size: self.size,
            });
        }
        if let Some(file) = self.file.take() {
            if fsync {
                file.sync_all().map_err(io_err(&self.path))?;
            }
        }
        // From here the sealed blob owns the temp file (and removes it if dropped).
        let path = std::mem::take(&mut self.path);
        Ok(SealedBlob { path, target: self.blobs.join(expected.hex()), blobs: self.blobs.clone(), published: false })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if self.size - self.flushed >= WRITEBACK_STEP {
            crate::fsutil::start_writeback(file, self.flushed, self.size - self.flushed);
            self.flushed = self.size;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a seal the sealed blob owns the file, and the path is empty.
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_blobs_become_visible_and_bad_ones_never_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = Digest::of_bytes(b"hello");
        store.write_all(&good, b"hello").unwrap();
        assert_eq!(store.read(&good).unwrap(), b"hello");

        let claimed = Digest::of_bytes(b"other");
        let err = store.write_all(&claimed, b"tampered").unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(!store.has(&claimed));
        // Wrong size with the right digest is refused too.
        let mut w = store.writer().unwrap();
        w.write_all(b"hello").unwrap();
        assert!(w.commit(&good, 6).is_err());
        assert_eq!(store.clean_ingest().unwrap(), 0, "failed writers leave no temp files");
        assert_eq!(store.list().unwrap(), vec![good]);
    }

    #[test]
    fn a_blob_sealed_for_a_syncfs_is_checked_the_same_and_visible_only_once_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = Digest::of_bytes(b"layer");
        let mut w = store.writer().unwrap();
        w.write_all(b"tampered").unwrap();
        let err = w.seal_for_syncfs(&good, 8).err().expect("a wrong digest is refused");
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");

        let mut w = store.writer().unwrap();
        w.write_all(b"layer").unwrap();
        let sealed = w.seal_for_syncfs(&good, 5).unwrap();
        assert!(!store.has(&good), "not visible before publish");
        sealed.publish().unwrap();
        assert_eq!(store.read(&good).unwrap(), b"layer");
        assert_eq!(store.clean_ingest().unwrap(), 0);
    }
}
