//! Small filesystem helpers for crash-safe writes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use rand::Rng;

/// fsyncs a directory so that renames and creations inside it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to
/// disk, without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that
/// a later fsync or syncfs finds less to do. Only a hint: errors are ignored
/// (the fsync that makes the data durable reports them).
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // owned by `file`, which outlives the call.
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    let tmp = dir.join(random_name(".tmp"));
    let result = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The entries of `dir` named by a sha256 hex digest (blobs, layers); others are ignored.
pub fn digest_entries(dir: &Path) -> io::Result<Vec<crate::reference::Digest>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(d) = entry?.file_name().to_str().and_then(|n| crate::reference::Digest::from_hex(n).ok()) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Removes everything inside `dir` (files and trees); returns how many entries.
pub fn remove_entries(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
        n += 1;
    }
    Ok(n)
}

pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{prefix}-{}-{n:016x}", std::process::id())
}

/// Bytes and inodes used below `path`, not following symlinks or crossing mounts.
pub fn disk_usage(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = fs::symlink_metadata(path) else { return (0, 0) };
    let dev = root.dev();
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        if meta.dev() != dev || !seen.insert(meta.ino()) {
            continue;
        }
        inodes += 1;
        bytes += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}
