//! Applies one OCI layer (an uncompressed tar stream) into an empty directory
//! that becomes an overlayfs lowerdir.
//!
//! OCI whiteouts are converted to overlayfs form (`.wh.NAME` → a 0:0
//! character device, `.wh..wh..opq` → `trusted.overlay.opaque=y`); ownership,
//! modes, xattrs, mtimes, links and device nodes are kept; every entry that
//! would land outside the root is refused. Symlinks already written by the
//! layer are followed only while they stay inside the root, with absolute
//! targets taken relative to it, as the container will see them.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, Gid, Uid};
use tar::EntryType;

use confine::{clean_path, resolve_dir};
pub use error::ApplyError;
use error::{escape, invalid, io_err, nix_err};
use tar_meta::{device_numbers, read_meta, Meta};

mod confine;
mod error;
mod tar_meta;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// AUFS metadata (`.wh..wh.plnk` and the like); meaningless for overlayfs.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs' own xattrs; a layer must not smuggle redirects or metacopy in.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    /// Entries applied, whiteouts included; PAX global headers are not counted.
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Applies the tar stream `tar` into the existing, empty directory `root`.
///
/// Reading stops at the end-of-archive marker; whatever follows it (padding)
/// is left in the reader for the caller.
pub fn apply_layer<R: Read>(tar: R, root: &Path) -> Result<ApplyStats, ApplyError> {
    apply_layer_with(tar, root, ApplyOptions::default())
}

/// How [`apply_layer`] writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Start each regular file's writeback as soon as its content is written
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, not waiting), so that the
    /// disk works while the rest of the layer is unpacked and the syncfs at
    /// commit finds less left to do.
    pub writeback: bool,
}

/// [`apply_layer`] with options.
pub fn apply_layer_with<R: Read>(tar: R, root: &Path, options: ApplyOptions) -> Result<ApplyStats, ApplyError> {
    let mut layer = Layer {
        options,
        root,
        stats: ApplyStats::default(),
        dir_times: HashMap::new(),
        parent_cache: None,
        copy_buf: Vec::new(),
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(ApplyError::Tar)? {
        let mut entry = entry.map_err(ApplyError::Tar)?;
        layer.apply_entry(&mut entry)?;
    }
    layer.set_dir_times()?;
    tracing::debug!(root = %root.display(), entries = layer.stats.entries, bytes = layer.stats.bytes, "applied layer");
    Ok(layer.stats)
}

struct Layer<'a> {
    options: ApplyOptions,
    root: &'a Path,
    stats: ApplyStats,
    /// Directory mtimes, set last: creating children changes them.
    dir_times: HashMap<PathBuf, TimeSpec>,
    /// The last parent resolved: (path in the tar, real path, the directory
    /// opened). Consecutive entries mostly share a parent; only a removal can
    /// invalidate it, since every component of a resolved path is an
    /// existing real directory.
    parent_cache: Option<(PathBuf, PathBuf, OwnedFd)>,
    /// File contents go through this (grown on first use), in reads far
    /// larger than `io::copy`'s 8 KiB: fewer decompressor calls and writes.
    copy_buf: Vec<u8>,
}

/// The most a file's content is copied in at once.
const COPY_CHUNK: usize = 1 << 20;
/// How much of a file is written before its writeback is started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// What an entry creates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Hardlink,
    Node(SFlag),
}

impl Layer<'_> {
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let entry_type = entry.header().entry_type();
        // Global PAX headers are ignored, as containerd and Docker do; the
        // others reach here only for pre-POSIX headers the tar crate leaves alone.
        if matches!(
            entry_type,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = clean_path(&raw).map_err(|p| escape(&name, p.reason()))?;
        self.stats.entries += 1;
        let parent_rel = rel.parent().unwrap_or(Path::new(""));

        let file_name = rel.file_name().map(OsStr::to_os_string);
        if let Some(file) = &file_name {
            if let Some(hidden) = file.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
                return self.whiteout(&name, parent_rel, file.as_bytes(), hidden);
            }
        }

        let kind = match entry_type {
            EntryType::Directory => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::Hardlink,
            EntryType::Char => Kind::Node(SFlag::S_IFCHR),
            EntryType::Block => Kind::Node(SFlag::S_IFBLK),
            EntryType::Fifo => Kind::Node(SFlag::S_IFIFO),
            other => {
                let kind = format!("{other:?} (type flag {:?})", char::from(other.as_byte()));
                return Err(ApplyError::Unsupported { path: name, kind });
            }
        };
        let meta = read_meta(entry, &name)?;

        let Some(file_name) = file_name else {
            // `./`: only a directory entry can describe the root itself.
            if kind != Kind::Dir {
                return Err(invalid(&name, "a non-directory entry for the layer root"));
            }
            let root = self.root.to_path_buf();
            self.set_meta(&name, &root, kind, &meta)?;
            self.dir_times.insert(root, meta.mtime);
            return Ok(());
        };
        let target = self.resolve_parent(&name, parent_rel)?.join(&file_name);

        match kind {
            Kind::Dir => match fs::symlink_metadata(&target) {
                // Kept, children and all: a layer may list a directory twice.
                Ok(m) if m.is_dir() => {}
                _ => {
                    self.clear(&target).map_err(io_err(&name))?;
                    fs::create_dir(&target).map_err(io_err(&name))?;
                }
            },
            Kind::File => {
                // O_EXCL: never write through an existing file, which may be
                // hardlinked elsewhere in the layer. Whatever is in the way
                // (a later entry overrides an earlier one) is cleared only
                // when the create says so: one path lookup less per file.
                let mode = creation_mode(meta.mode);
                let mut file = match self.create_file(&file_name, mode) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        self.clear(&target).map_err(io_err(&name))?;
                        self.resolve_parent(&name, parent_rel)?;
                        self.create_file(&file_name, mode)
                    }
                    other => other,
                }
                .map_err(io_err(&name))?;
                let written = self.copy_content(entry, &mut file).map_err(io_err(&name))?;
                self.stats.bytes += written;
                if self.options.writeback && written > 0 {
                    crate::fsutil::start_writeback(&file, 0, written);
                }
                // Metadata through the open file, not the path.
                return self.set_file_meta(&name, &file, &target, &meta);
            }
            Kind::Symlink => {
                let link = entry.link_name_bytes().ok_or_else(|| invalid(&name, "symlink without a target"))?;
                let link = OsStr::from_bytes(&link).to_os_string();
                self.clear(&target).map_err(io_err(&name))?;
                std::os::unix::fs::symlink(link, &target).map_err(io_err(&name))?;
            }
            Kind::Hardlink => {
                let link = entry.link_name_bytes().ok_or_else(|| invalid(&name, "hardlink without a target"))?;
                let link = link.into_owned();
                // The link shares its target's inode, and so its metadata.
                return self.hardlink(&name, &target, &link);
            }
            Kind::Node(flag) => {
                let dev = if flag == SFlag::S_IFIFO {
                    0
                } else {
                    let (major, minor) = device_numbers(entry.header()).map_err(ApplyError::Tar)?;
                    makedev(major.into(), minor.into())
                };
                self.clear(&target).map_err(io_err(&name))?;
                mknod(&target, flag, Mode::from_bits_truncate(0o600), dev).map_err(nix_err(&name))?;
            }
        }

        self.set_meta(&name, &target, kind, &meta)?;
        if kind == Kind::Dir {
            self.dir_times.insert(target, meta.mtime);
        } else {
            set_times(&target, meta.mtime).map_err(io_err(&name))?;
        }
        Ok(())
    }

    /// Copies an entry's content into the file just created.
    fn copy_content(&mut self, entry: &mut impl Read, file: &mut fs::File) -> io::Result<u64> {
        use std::io::Write;
        let mut total = 0u64;
        let mut handed_over = 0u64;
        loop {
            if self.copy_buf.is_empty() {
                self.copy_buf.resize(COPY_CHUNK, 0);
            }
            // Fill as much of the buffer as the entry gives before writing.
            let mut filled = 0;
            while filled < self.copy_buf.len() {
                match entry.read(&mut self.copy_buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            file.write_all(&self.copy_buf[..filled])?;
            total += filled as u64;
            // A big file's writeback starts as it is written (the disk works
            // while the rest of the layer arrives); small files are left to
            // the syncfs at commit, which merges them into large writes.
            if total - handed_over >= WRITEBACK_STEP {
                crate::fsutil::start_writeback(file, handed_over, total - handed_over);
                handed_over = total;
            }
        }
    }

    /// `.wh..wh..opq` marks its directory opaque; `.wh.NAME` becomes a 0:0
    /// character device NAME, overlayfs' whiteout.
    fn whiteout(&mut self, name: &str, parent_rel: &Path, file: &[u8], hidden: &[u8]) -> Result<(), ApplyError> {
        if file == OPAQUE_MARKER {
            let dir = self.resolve_parent(name, parent_rel)?;
            return xattr::set(&dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(io_err(name));
        }
        if file.starts_with(WHITEOUT_META_PREFIX) {
            tracing::debug!(entry = name, "ignoring AUFS whiteout metadata");
            return Ok(());
        }
        // `.wh..`, `.wh...` and `.wh.` would remove the directory, its parent
        // or nothing; containerd refuses them too.
        match hidden {
            b".." => return Err(escape(name, "whiteout of '..'")),
            b"" | b"." => return Err(invalid(name, "a whiteout that names no file")),
            _ => {}
        }
        let path = self.resolve_parent(name, parent_rel)?.join(OsStr::from_bytes(hidden));
        self.clear(&path).map_err(io_err(name))?;
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(nix_err(name))?;
        chown_nofollow(&path, 0, 0).map_err(io_err(name))
    }

    fn hardlink(&mut self, name: &str, target: &Path, link: &[u8]) -> Result<(), ApplyError> {
        let link_rel = clean_path(link).map_err(|p| escape(name, p.link_reason()))?;
        let Some(link_file) = link_rel.file_name() else {
            return Err(invalid(name, "a hardlink to the layer root"));
        };
        // Not through the cache: this walk must not create anything.
        let source = resolve_dir(self.root, link_rel.parent().unwrap_or(Path::new("")), false, name)?.join(link_file);
        if let Err(e) = fs::symlink_metadata(&source) {
            let link = String::from_utf8_lossy(link);
            let source = io::Error::new(e.kind(), format!("hardlink target {link:?}: {e}"));
            return Err(ApplyError::Io { path: name.to_string(), source });
        }
        if source == target {
            return Ok(());
        }
        self.clear(target).map_err(io_err(name))?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(None, source.as_path(), None, target, AtFlags::empty()).map_err(nix_err(name))
    }

    /// The file `name` in the cached parent (the last `resolve_parent`): new,
    /// with `mode` (less the umask), never through a symlink.
    fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<fs::File> {
        let (_, _, dir) = self.parent_cache.as_ref().ok_or_else(|| io::Error::other("no parent resolved"))?;
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?.into())
    }

    /// As `set_meta` and `set_times` for a regular file just written, through
    /// its descriptor: ownership, xattrs, mode, then times. Ownership and
    /// mode are changed only where the new file's differ (an fstat is far
    /// cheaper than a chown or chmod, each a journalled inode update): most
    /// files are born root's, with their final mode.
    fn set_file_meta(&self, name: &str, file: &fs::File, path: &Path, meta: &Meta) -> Result<(), ApplyError> {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let born = file.metadata().map_err(io_err(name))?;
        if born.uid() != meta.uid || born.gid() != meta.gid {
            nix::unistd::fchown(file.as_fd().as_raw_fd(), Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
                .map_err(nix_err(name))?;
        }
        if !meta.xattrs.is_empty() {
            self.set_xattrs(name, path, Kind::File, meta)?;
        }
        if born.mode() & 0o7777 != meta.mode & 0o7777 {
            file.set_permissions(fs::Permissions::from_mode(meta.mode)).map_err(io_err(name))?;
        }
        nix::sys::stat::futimens(file.as_fd().as_raw_fd(), &meta.mtime, &meta.mtime).map_err(nix_err(name))
    }

    /// Ownership, xattrs, then mode: chown clears setuid/setgid and file
    /// capabilities, so it must come first.
    fn set_meta(&self, name: &str, path: &Path, kind: Kind, meta: &Meta) -> Result<(), ApplyError> {
        chown_nofollow(path, meta.uid, meta.gid).map_err(io_err(name))?;
        self.set_xattrs(name, path, kind, meta)?;
        if kind != Kind::Symlink {
            // `path` is what this entry just created or kept, never a symlink.
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).map_err(io_err(name))?;
        }
        Ok(())
    }

    fn set_xattrs(&self, name: &str, path: &Path, kind: Kind, meta: &Meta) -> Result<(), ApplyError> {
        for (key, value) in &meta.xattrs {
            if key.starts_with(OVERLAY_XATTR_PREFIX) {
                tracing::debug!(entry = name, xattr = %String::from_utf8_lossy(key), "dropping overlayfs xattr");
                continue;
            }
            // xattr::set is lsetxattr: a symlink itself gets the attribute.
            match xattr::set(path, OsStr::from_bytes(key), value) {
                Ok(()) => {}
                // Filesystems without xattrs, and `user.*` on anything but
                // files and directories, which the kernel refuses: not worth
                // failing a pull for (containerd skips ENOTSUP too).
                Err(e)
                    if e.raw_os_error() == Some(Errno::EOPNOTSUPP as i32)
                        || (e.raw_os_error() == Some(Errno::EPERM as i32)
                            && key.starts_with(b"user.")
                            && !matches!(kind, Kind::Dir | Kind::File)) =>
                {
                    tracing::debug!(entry = name, xattr = %String::from_utf8_lossy(key), error = %e, "xattr not set");
                }
                Err(e) => return Err(io_err(name)(e)),
            }
        }
        Ok(())
    }

    fn resolve_parent(&mut self, name: &str, parent_rel: &Path) -> Result<PathBuf, ApplyError> {
        if let Some((rel, real, _)) = &self.parent_cache {
            if rel == parent_rel {
                return Ok(real.clone());
            }
        }
        let real = resolve_dir(self.root, parent_rel, true, name)?;
        // O_NOFOLLOW: every component was just checked to be a directory.
        let flags = rustix::fs::OFlags::PATH
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC;
        let dir = rustix::fs::open(&real, flags, rustix::fs::Mode::empty()).map_err(|e| io_err(name)(e.into()))?;
        self.parent_cache = Some((parent_rel.to_path_buf(), real.clone(), dir));
        Ok(real)
    }

    /// Removes whatever is at `path` (a later entry overrides an earlier one),
    /// forgetting the mtimes of any directories removed with it.
    fn clear(&mut self, path: &Path) -> io::Result<()> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.parent_cache = None;
        if meta.is_dir() {
            self.dir_times.retain(|d, _| !d.starts_with(path));
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        }
    }

    /// Deepest first, so that nothing disturbs a directory's time once set.
    fn set_dir_times(&mut self) -> Result<(), ApplyError> {
        let mut dirs: Vec<_> = self.dir_times.drain().collect();
        dirs.sort_by_key(|(d, _)| Reverse(d.components().count()));
        for (dir, mtime) in dirs {
            set_times(&dir, mtime).map_err(|source| {
                let rel = dir.strip_prefix(self.root).unwrap_or(&dir);
                ApplyError::Io { path: rel.display().to_string(), source }
            })?;
        }
        Ok(())
    }
}

/// The mode a regular file is created with: its own permission bits, so
/// that most need no chmod afterwards; owner-only if it is setuid, setgid
/// or sticky, until its owner is set (a chown would clear those bits).
fn creation_mode(mode: u32) -> u32 {
    if mode & 0o7000 == 0 {
        mode & 0o777
    } else {
        0o600
    }
}

fn chown_nofollow(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    fchownat(None, path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// atime = mtime, as tar records only the latter.
fn set_times(path: &Path, mtime: TimeSpec) -> io::Result<()> {
    utimensat(None, path, &mtime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

#[cfg(test)]
mod tests;
