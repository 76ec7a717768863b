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
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, Gid, Uid};
use tar::EntryType;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// AUFS metadata (`.wh..wh.plnk` and the like); meaningless for overlayfs.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs' own xattrs; a layer must not smuggle redirects or metacopy in.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
const PAX_SPARSE_PREFIX: &[u8] = b"GNU.sparse.";
/// Linux's own limit (MAXSYMLINKS).
const MAX_SYMLINK_HOPS: u32 = 40;

#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    /// Entries applied, whiteouts included; PAX global headers are not counted.
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An entry would land outside the layer root (.., absolute path, via a symlink, hardlink to outside).
    #[error("layer entry {path:?} escapes the snapshot root: {reason}")]
    Escape { path: String, reason: &'static str },
    #[error("layer entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading layer tar: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?} has unsupported type {kind}")]
    Unsupported { path: String, kind: String },
}

/// Applies the tar stream `tar` into the existing, empty directory `root`.
///
/// Reading stops at the end-of-archive marker; whatever follows it (padding)
/// is left in the reader for the caller.
pub fn apply_layer<R: Read>(tar: R, root: &Path) -> Result<ApplyStats, ApplyError> {
    let mut layer = Layer { root, stats: ApplyStats::default(), dir_times: HashMap::new(), parent_cache: None };
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
    root: &'a Path,
    stats: ApplyStats,
    /// Directory mtimes, set last: creating children changes them.
    dir_times: HashMap<PathBuf, TimeSpec>,
    /// The last parent resolved: (path in the tar, real path). Consecutive
    /// entries mostly share a parent; only a removal can invalidate it, since
    /// every component of a resolved path is an existing real directory.
    parent_cache: Option<(PathBuf, PathBuf)>,
}

/// What an entry creates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Hardlink,
    Node(SFlag),
}

/// Ownership, mode, mtime and xattrs of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
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
        let target = self.resolve_parent(&name, parent_rel)?.join(file_name);

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
                self.clear(&target).map_err(io_err(&name))?;
                // O_EXCL: never write through an existing file, which may be
                // hardlinked elsewhere in the layer.
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                    .mode(0o600)
                    .open(&target)
                    .map_err(io_err(&name))?;
                self.stats.bytes += io::copy(entry, &mut file).map_err(io_err(&name))?;
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

    /// Ownership, xattrs, then mode: chown clears setuid/setgid and file
    /// capabilities, so it must come first.
    fn set_meta(&self, name: &str, path: &Path, kind: Kind, meta: &Meta) -> Result<(), ApplyError> {
        chown_nofollow(path, meta.uid, meta.gid).map_err(io_err(name))?;
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
        if kind != Kind::Symlink {
            // `path` is what this entry just created or kept, never a symlink.
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).map_err(io_err(name))?;
        }
        Ok(())
    }

    fn resolve_parent(&mut self, name: &str, parent_rel: &Path) -> Result<PathBuf, ApplyError> {
        if let Some((rel, real)) = &self.parent_cache {
            if rel == parent_rel {
                return Ok(real.clone());
            }
        }
        let real = resolve_dir(self.root, parent_rel, true, name)?;
        self.parent_cache = Some((parent_rel.to_path_buf(), real.clone()));
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

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, ApplyError> {
    let mut xattrs = Vec::new();
    let mut pax_mtime = None;
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Tar)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Tar)?;
            let key = ext.key_bytes();
            if let Some(attr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                xattrs.push((attr.to_vec(), ext.value_bytes().to_vec()));
            } else if key == b"mtime" {
                let t = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| ApplyError::Tar(io::Error::new(io::ErrorKind::InvalidData, "bad PAX mtime")))?;
                pax_mtime = Some(t);
            } else if key.starts_with(PAX_SPARSE_PREFIX) {
                // Writing the sparse map as the file's content would corrupt it.
                return Err(ApplyError::Unsupported { path: name.to_string(), kind: "GNU sparse (PAX)".into() });
            }
        }
    }
    // PAX uid/gid were already merged into the header by the tar crate.
    let header = entry.header();
    let old = header.as_old();
    let tar_err = |what: &str| ApplyError::Tar(io::Error::new(io::ErrorKind::InvalidData, format!("{name:?}: {what}")));
    let uid = u32::try_from(blank_as_zero(header.uid(), &old.uid)?).map_err(|_| tar_err("uid out of range"))?;
    let gid = u32::try_from(blank_as_zero(header.gid(), &old.gid)?).map_err(|_| tar_err("gid out of range"))?;
    let mtime = match pax_mtime {
        Some(t) => t,
        None => {
            let secs = blank_as_zero(header.mtime(), &old.mtime)?;
            TimeSpec::new(i64::try_from(secs).map_err(|_| tar_err("mtime out of range"))?, 0)
        }
    };
    let mode = blank_as_zero(header.mode(), &old.mode)? & 0o7777;
    Ok(Meta { uid, gid, mode, mtime, xattrs })
}

/// A numeric header field left blank reads as 0, as in Go's archive/tar (and
/// so Docker and containerd).
fn blank_as_zero<T: From<u8>>(parsed: io::Result<T>, raw: &[u8]) -> Result<T, ApplyError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if is_blank(raw) => Ok(T::from(0)),
        Err(e) => Err(ApplyError::Tar(e)),
    }
}

fn is_blank(raw: &[u8]) -> bool {
    raw.iter().all(|b| *b == 0 || *b == b' ')
}

fn device_numbers(header: &tar::Header) -> io::Result<(u32, u32)> {
    let raw = header
        .as_ustar()
        .map(|h| (&h.dev_major[..], &h.dev_minor[..]))
        .or_else(|| header.as_gnu().map(|h| (&h.dev_major[..], &h.dev_minor[..])));
    let field = |parsed: io::Result<Option<u32>>, raw: Option<&[u8]>| match parsed {
        Ok(v) => Ok(v.unwrap_or(0)),
        Err(_) if raw.is_some_and(is_blank) => Ok(0),
        Err(e) => Err(e),
    };
    Ok((field(header.device_major(), raw.map(|r| r.0))?, field(header.device_minor(), raw.map(|r| r.1))?))
}

/// A PAX time: decimal seconds, optionally negative, optionally fractional.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    // Nanoseconds: the first nine digits, right-padded; the rest truncated.
    let nanos = frac.bytes().chain(std::iter::repeat(b'0')).take(9).fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(match (negative, nanos) {
        (false, _) => TimeSpec::new(secs, nanos),
        (true, 0) => TimeSpec::new(-secs, 0),
        (true, _) => TimeSpec::new(-secs - 1, 1_000_000_000 - nanos),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadPath {
    Absolute,
    DotDot,
}

impl BadPath {
    fn reason(self) -> &'static str {
        match self {
            BadPath::Absolute => "absolute path",
            BadPath::DotDot => "'..' in path",
        }
    }

    fn link_reason(self) -> &'static str {
        match self {
            BadPath::Absolute => "absolute hardlink target",
            BadPath::DotDot => "'..' in hardlink target",
        }
    }
}

/// Strips `./`, `.` and trailing slashes; refuses absolute paths and `..`
/// outright rather than clamping them, as a well-formed layer has neither.
fn clean_path(raw: &[u8]) -> Result<PathBuf, BadPath> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(BadPath::Absolute),
            Component::ParentDir => return Err(BadPath::DotDot),
        }
    }
    Ok(out)
}

/// Resolves the directory `rel` (already cleaned) to a real directory inside
/// `root`, component by component with lstat. Symlinks are followed in scope:
/// absolute targets restart at `root`, and `..` may never climb above it.
/// Missing directories are created (0755) if `create`; a non-directory in the
/// way is an error, as in containerd, rather than something to delete.
fn resolve_dir(root: &Path, rel: &Path, create: bool, name: &str) -> Result<PathBuf, ApplyError> {
    // Components still to walk, next one last; `..` only ever comes from a
    // symlink target, since `rel` has none.
    let mut pending: Vec<OsString> = rel.iter().rev().map(OsStr::to_os_string).collect();
    let mut cur = root.to_path_buf();
    let mut depth = 0usize;
    let mut hops = 0u32;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if depth == 0 {
                return Err(escape(name, "through a symlink"));
            }
            cur.pop();
            depth -= 1;
            continue;
        }
        cur.push(&c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => depth += 1,
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ApplyError::Io { path: name.to_string(), source: Errno::ELOOP.into() });
                }
                let target = fs::read_link(&cur).map_err(io_err(name))?;
                if target.as_os_str().is_empty() {
                    // The kernel resolves an empty target to nothing.
                    return Err(ApplyError::Io { path: name.to_string(), source: Errno::ENOENT.into() });
                }
                cur.pop();
                if target.is_absolute() {
                    cur = root.to_path_buf();
                    depth = 0;
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(p) => pending.push(p.to_os_string()),
                        Component::ParentDir => pending.push(OsString::from("..")),
                        Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                    }
                }
            }
            Ok(_) => return Err(ApplyError::Io { path: name.to_string(), source: Errno::ENOTDIR.into() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&cur).map_err(io_err(name))?;
                // create_dir is subject to the umask.
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).map_err(io_err(name))?;
                depth += 1;
            }
            Err(e) => return Err(io_err(name)(e)),
        }
    }
    Ok(cur)
}

fn chown_nofollow(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    fchownat(None, path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// atime = mtime, as tar records only the latter.
fn set_times(path: &Path, mtime: TimeSpec) -> io::Result<()> {
    utimensat(None, path, &mtime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

fn escape(name: &str, reason: &'static str) -> ApplyError {
    ApplyError::Escape { path: name.to_string(), reason }
}

fn invalid(name: &str, what: &str) -> ApplyError {
    ApplyError::Io { path: name.to_string(), source: io::Error::new(io::ErrorKind::InvalidData, what.to_string()) }
}

fn io_err(name: &str) -> impl FnOnce(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Io { path: name.to_string(), source }
}

fn nix_err(name: &str) -> impl FnOnce(Errno) -> ApplyError + '_ {
    move |e| ApplyError::Io { path: name.to_string(), source: e.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    const UID: u32 = 1234;
    const GID: u32 = 5678;
    const MTIME: u64 = 1_600_000_000;

    /// Builds a tar in memory. Names and link names are written raw into the
    /// header, as `set_path` refuses the malicious ones.
    struct TarBuf(tar::Builder<Vec<u8>>);

    impl TarBuf {
        fn new() -> Self {
            TarBuf(tar::Builder::new(Vec::new()))
        }

        fn entry(&mut self, kind: EntryType, name: &str, link: &str, mode: u32, data: &[u8]) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_mode(mode);
            h.set_uid(UID.into());
            h.set_gid(GID.into());
            h.set_mtime(MTIME);
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
            self.entry(EntryType::Regular, name, "", mode, data)
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
            self.entry(EntryType::Directory, name, "", mode, b"")
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(EntryType::Symlink, name, target, 0o777, b"")
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(EntryType::Link, name, target, 0o644, b"")
        }

        fn node(&mut self, kind: EntryType, name: &str, major: u32, minor: u32) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_path(name).unwrap();
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_mode(0o640);
            h.set_uid(UID.into());
            h.set_gid(GID.into());
            h.set_mtime(MTIME);
            h.set_size(0);
            h.set_cksum();
            self.0.append(&h, &b""[..]).unwrap();
            self
        }

        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            self.0.append_pax_extensions(records.iter().copied()).unwrap();
            self
        }

        fn build(&mut self) -> Vec<u8> {
            std::mem::replace(&mut self.0, tar::Builder::new(Vec::new())).into_inner().unwrap()
        }

        fn apply(&mut self) -> (tempfile::TempDir, Result<ApplyStats, ApplyError>) {
            let dir = tempfile::tempdir().unwrap();
            let r = apply_layer(&self.build()[..], dir.path());
            (dir, r)
        }
    }

    fn lstat(p: impl AsRef<Path>) -> fs::Metadata {
        fs::symlink_metadata(p).unwrap()
    }

    fn assert_escape(r: Result<ApplyStats, ApplyError>, what: &str) {
        match r {
            Err(ApplyError::Escape { .. }) => {}
            other => panic!("{what}: expected Escape, got {other:?}"),
        }
    }

    #[test]
    fn files_keep_owner_mode_and_mtime() {
        let (dir, r) = TarBuf::new()
            .file("./etc/passwd", b"root:x:0:0", 0o640)
            .file("bin/su", b"su", 0o4755)
            .file("bin/wall", b"w", 0o2755)
            .entry(EntryType::new(0), "old-style", "", 0o600, b"v7")
            .apply();
        let stats = r.unwrap();
        assert_eq!((stats.entries, stats.bytes), (4, 15));
        let root = dir.path();
        let passwd = lstat(root.join("etc/passwd"));
        assert_eq!((passwd.uid(), passwd.gid(), passwd.mode() & 0o7777), (UID, GID, 0o640));
        assert_eq!((passwd.mtime(), passwd.atime()), (MTIME as i64, MTIME as i64));
        assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), b"root:x:0:0");
        // chown runs before chmod, so the setuid/setgid bits survive it.
        assert_eq!(lstat(root.join("bin/su")).mode() & 0o7777, 0o4755);
        assert_eq!(lstat(root.join("bin/wall")).mode() & 0o7777, 0o2755);
        assert_eq!(fs::read(root.join("old-style")).unwrap(), b"v7");
        // Implicit parents: 0755, root-owned.
        let etc = lstat(root.join("etc"));
        assert_eq!((etc.uid(), etc.mode() & 0o7777), (0, 0o755));
    }

    #[test]
    fn directory_metadata_is_kept_despite_later_children() {
        let (dir, r) = TarBuf::new()
            .dir("./", 0o755)
            .dir("tmp/", 0o1777)
            .dir("etc/", 0o750)
            .file("etc/a", b"a", 0o644)
            .dir("etc/sub/", 0o700)
            .file("etc/sub/b", b"b", 0o644)
            .file("tmp/x", b"x", 0o644)
            .apply();
        r.unwrap();
        let root = dir.path();
        for (path, mode) in [("", 0o755), ("tmp", 0o1777), ("etc", 0o750), ("etc/sub", 0o700)] {
            let m = lstat(root.join(path));
            assert_eq!((m.mtime(), m.mode() & 0o7777, m.uid(), m.gid()), (MTIME as i64, mode, UID, GID), "{path:?}");
        }
    }

    #[test]
    fn links_and_devices() {
        let (dir, r) = TarBuf::new()
            .file("etc/passwd", b"root", 0o644)
            .symlink("bin/sh", "busybox")
            .symlink("escape", "../../../etc/shadow")
            .hardlink("etc/passwd-", "etc/passwd")
            .hardlink("./sh-link", "./bin/sh")
            .node(EntryType::Char, "dev/null", 1, 3)
            .node(EntryType::Block, "dev/loop9", 7, 9)
            .node(EntryType::Fifo, "run/fifo", 0, 0)
            .apply();
        r.unwrap();
        let root = dir.path();
        assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("busybox"));
        let sh = lstat(root.join("bin/sh"));
        assert_eq!((sh.uid(), sh.gid(), sh.mtime()), (UID, GID, MTIME as i64), "lchown and lutimes");
        // A symlink's target is just data; only following it is dangerous.
        assert_eq!(fs::read_link(root.join("escape")).unwrap(), Path::new("../../../etc/shadow"));

        let passwd = lstat(root.join("etc/passwd"));
        assert_eq!(passwd.nlink(), 2);
        assert_eq!(lstat(root.join("etc/passwd-")).ino(), passwd.ino());
        // A hardlink to a symlink links the symlink, not what it points at.
        let link = lstat(root.join("sh-link"));
        assert!(link.file_type().is_symlink());
        assert_eq!(link.ino(), sh.ino());

        let null = lstat(root.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!((null.rdev(), null.mode() & 0o7777, null.uid()), (makedev(1, 3), 0o640, UID));
        let lp = lstat(root.join("dev/loop9"));
        assert!(lp.file_type().is_block_device());
        assert_eq!(lp.rdev(), makedev(7, 9));
        let fifo = lstat(root.join("run/fifo"));
        assert!(fifo.file_type().is_fifo());
        assert_eq!((fifo.mode() & 0o7777, fifo.mtime()), (0o640, MTIME as i64));
    }

    #[test]
    fn pax_xattrs_names_and_times() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        let mut t = TarBuf::new();
        t.pax(&[
            ("SCHILY.xattr.user.foo", b"bar"),
            ("SCHILY.xattr.trusted.x", b"t"),
            (
                "SCHILY.xattr.security.capability",
                b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            ),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
            ("mtime", b"1600000000.123456789"),
        ])
        .file("f", b"x", 0o755)
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("d", 0o755)
        // User xattrs on a symlink are refused by the kernel and skipped.
        .pax(&[("SCHILY.xattr.user.link", b"l"), ("SCHILY.xattr.trusted.link", b"l")])
        .symlink("l", "f")
        .pax(&[("path", b"pax/long/name"), ("mtime", b"-1.25")])
        .file("short", b"p", 0o644);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(4);
        // GNU long name entry, written by append_data.
        t.0.append_data(&mut h, &long, &b"long"[..]).unwrap();
        let (dir, r) = t.apply();
        r.unwrap();
        let root = dir.path();
        let get = |p: &str, k: &str| xattr::get(root.join(p), k).unwrap();
        assert_eq!(get("f", "user.foo").as_deref(), Some(&b"bar"[..]));
        assert_eq!(get("f", "trusted.x").as_deref(), Some(&b"t"[..]));
        assert!(get("f", "security.capability").is_some(), "capabilities set after chown, which clears them");
        assert_eq!(get("f", "trusted.overlay.redirect"), None, "overlayfs xattrs come only from whiteouts");
        assert_eq!(get("d", "user.dir").as_deref(), Some(&b"d"[..]));
        assert_eq!(get("l", "trusted.link").as_deref(), Some(&b"l"[..]), "set on the link itself");
        assert_eq!(get("f", "trusted.link"), None);
        let f = lstat(root.join("f"));
        assert_eq!((f.mtime(), f.mtime_nsec()), (MTIME as i64, 123_456_789));
        let p = lstat(root.join("pax/long/name"));
        assert_eq!((p.mtime(), p.mtime_nsec()), (-2, 750_000_000));
        assert!(!root.join("short").exists());
        assert_eq!(fs::read(root.join(&long)).unwrap(), b"long");
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let (dir, r) = TarBuf::new()
            .file("etc/hosts", b"h", 0o644)
            .file("etc/.wh.hosts", b"", 0o644)
            .file("etc/.wh.gone", b"", 0o644)
            .file("data/.wh..wh..opq", b"", 0o644)
            .file("data/c", b"c", 0o644)
            .file("missing/.wh..wh..opq", b"", 0o644)
            .file("var/.wh..wh.plnk", b"", 0o644)
            .apply();
        assert_eq!(r.unwrap().entries, 7);
        let root = dir.path();
        for name in ["etc/hosts", "etc/gone"] {
            let wh = lstat(root.join(name));
            assert!(wh.file_type().is_char_device(), "{name}");
            assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0), "{name}");
        }
        assert!(!root.join("etc/.wh.hosts").exists());
        let opaque = |p: &str| xattr::get(root.join(p), OVERLAY_OPAQUE_XATTR).unwrap();
        assert_eq!(opaque("data").as_deref(), Some(&b"y"[..]));
        assert_eq!(opaque("missing").as_deref(), Some(&b"y"[..]));
        assert!(root.join("data/c").exists());
        assert!(!root.join("data/.wh..wh..opq").exists());
        assert!(!root.join("var").exists(), "AUFS metadata ignored");
    }

    #[test]
    fn bad_whiteout_names_are_refused() {
        for name in ["sub/.wh..", "sub/.wh...", "sub/.wh."] {
            let (dir, r) = TarBuf::new().file("sub/keep", b"k", 0o644).file(name, b"", 0o644).apply();
            assert!(r.is_err(), "{name}: {r:?}");
            assert!(dir.path().join("sub/keep").exists(), "{name}");
        }
        let (_dir, r) = TarBuf::new().file(".wh...", b"", 0o644).apply();
        assert_escape(r, ".wh... at the root");
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let (dir, r) = TarBuf::new()
            .file("a", b"file", 0o644)
            .dir("a", 0o700)
            .file("a/inner", b"x", 0o644)
            .dir("b", 0o755)
            .dir("b/deep", 0o755)
            .file("b/deep/inner", b"x", 0o644)
            .file("b", b"now a file", 0o600)
            .symlink("c", "a")
            .dir("c", 0o711)
            .file("d", b"old", 0o644)
            .hardlink("d2", "d")
            .file("d", b"new", 0o644)
            .dir("e", 0o755)
            .file("e/kept", b"k", 0o644)
            .dir("e", 0o750)
            .apply();
        r.unwrap();
        let root = dir.path();
        let a = lstat(root.join("a"));
        assert!(a.is_dir());
        assert_eq!(a.mode() & 0o7777, 0o700);
        assert_eq!(fs::read(root.join("b")).unwrap(), b"now a file");
        assert_eq!(lstat(root.join("b")).mode() & 0o7777, 0o600);
        assert!(lstat(root.join("c")).is_dir(), "a directory entry replaces a symlink, not its target");
        assert_eq!(lstat(root.join("a")).mode() & 0o7777, 0o700);
        // Never written through: the old inode, still linked as d2, is untouched.
        assert_eq!(fs::read(root.join("d")).unwrap(), b"new");
        assert_eq!(fs::read(root.join("d2")).unwrap(), b"old");
        assert!(root.join("e/kept").exists());
        assert_eq!(lstat(root.join("e")).mode() & 0o7777, 0o750);
    }

    #[test]
    fn escapes_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let to_outside = format!("../../../../../../../..{}", outside.path().display());
        type Build<'a> = Box<dyn Fn(&mut TarBuf) -> &mut TarBuf + 'a>;
        let cases: Vec<(&str, Build<'_>)> = vec![
            ("dotdot", Box::new(|t| t.file("../x", b"x", 0o644))),
            ("nested dotdot", Box::new(|t| t.file("a/../../x", b"x", 0o644))),
            ("inner dotdot", Box::new(|t| t.file("a/../x", b"x", 0o644))),
            ("absolute", Box::new(|t| t.file("/abs", b"x", 0o644))),
            ("absolute dir", Box::new(|t| t.dir("/", 0o755))),
            ("symlink up", Box::new(|t| t.symlink("evil", "../../..").file("evil/x", b"x", 0o644))),
            (
                "symlink up later",
                Box::new(|t| t.dir("sub", 0o755).symlink("sub/l", "../..").file("sub/l/x", b"x", 0o644)),
            ),
            ("symlink to outside", Box::new(|t| t.symlink("evil", &to_outside).file("evil/pwned", b"x", 0o644))),
            ("chained symlinks", Box::new(|t| t.symlink("a", "b/..").symlink("b", "..").file("a/pwned", b"x", 0o644))),
            ("hardlink up", Box::new(|t| t.hardlink("link", "../outside"))),
            ("hardlink absolute", Box::new(|t| t.hardlink("link", "/etc/passwd"))),
            ("hardlink via symlink", Box::new(|t| t.symlink("up", &to_outside).hardlink("link", "up/victim"))),
            ("whiteout via symlink", Box::new(|t| t.symlink("up", &to_outside).file("up/.wh.victim", b"", 0o644))),
            ("opaque via symlink", Box::new(|t| t.symlink("up", &to_outside).file("up/.wh..wh..opq", b"", 0o644))),
        ];
        fs::write(outside.path().join("victim"), b"v").unwrap();
        for (what, build) in cases {
            let mut t = TarBuf::new();
            let (dir, r) = build(&mut t).apply();
            assert_escape(r, what);
            assert!(!dir.path().join("x").exists(), "{what}");
        }
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"v");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
        assert_eq!(xattr::get(outside.path(), OVERLAY_OPAQUE_XATTR).unwrap(), None);
    }

    #[test]
    fn symlinked_parents_resolve_inside_the_root() {
        let (dir, r) = TarBuf::new()
            .dir("sub", 0o755)
            .symlink("ok", "sub")
            .file("ok/x", b"x", 0o644)
            .symlink("abs", "/sub")
            .file("abs/y", b"y", 0o644)
            .symlink("sub/up", "../sub/./")
            .file("sub/up/z", b"z", 0o644)
            .symlink("dangling", "/made/here")
            .file("dangling/w", b"w", 0o644)
            .hardlink("hl", "abs/y")
            .apply();
        r.unwrap();
        let root = dir.path();
        assert!(lstat(root.join("sub/x")).is_file());
        assert!(lstat(root.join("sub/y")).is_file(), "absolute targets are re-rooted");
        assert!(lstat(root.join("sub/z")).is_file());
        assert!(lstat(root.join("made/here/w")).is_file(), "missing targets are created inside the root");
        assert_eq!(lstat(root.join("hl")).ino(), lstat(root.join("sub/y")).ino());
        assert!(lstat(root.join("ok")).file_type().is_symlink());
    }

    #[test]
    fn other_bad_input_is_refused() {
        let (_d, r) = TarBuf::new().symlink("loop", "loop").file("loop/x", b"x", 0o644).apply();
        match r {
            Err(ApplyError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(Errno::ELOOP as i32)),
            other => panic!("{other:?}"),
        }
        // A file in the way of a directory is not deleted, even through a symlink.
        let (d, r) = TarBuf::new().file("f", b"f", 0o644).symlink("l", "f").file("l/x", b"x", 0o644).apply();
        assert!(matches!(r, Err(ApplyError::Io { .. })), "{r:?}");
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"f");
        // A non-directory entry for the root must not replace it.
        let (d, r) = TarBuf::new().file("keep", b"k", 0o644).file("./", b"x", 0o644).apply();
        assert!(matches!(r, Err(ApplyError::Io { .. })), "{r:?}");
        assert!(d.path().join("keep").exists());
        let (_d, r) = TarBuf::new().hardlink("h", "missing").apply();
        assert!(matches!(r, Err(ApplyError::Io { .. })), "{r:?}");
        let mut t = TarBuf::new();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_path("sparse").unwrap();
        h.set_mode(0o644);
        h.set_size(0);
        h.as_gnu_mut().unwrap().set_real_size(0);
        h.set_cksum();
        t.0.append(&h, &b""[..]).unwrap();
        let (_d, r) = t.apply();
        assert!(matches!(r, Err(ApplyError::Unsupported { .. })), "{r:?}");
        let (_d, r) = TarBuf::new().pax(&[("GNU.sparse.major", b"1")]).file("sparse", b"", 0o644).apply();
        assert!(matches!(r, Err(ApplyError::Unsupported { .. })), "{r:?}");
    }

    #[test]
    fn stops_at_the_end_of_archive() {
        /// Fails every read: reaching it means apply_layer read past the end.
        struct Poison;
        impl Read for Poison {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("read past the end of the archive"))
            }
        }
        let tar = TarBuf::new().file("a", b"a", 0o644).dir("d", 0o755).build();
        // One end-of-archive block is enough; the second and any padding are the caller's.
        let body = &tar[..tar.len() - 512];
        let mut reader = body.chain(Poison);
        let dir = tempfile::tempdir().unwrap();
        let stats = apply_layer(&mut reader, dir.path()).unwrap();
        assert_eq!(stats.entries, 2);
    }

    #[test]
    fn overlay_honours_converted_whiteouts() {
        /// Unmounts even if an assertion fails.
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let base = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let p = base.path().join(name);
            fs::create_dir(&p).unwrap();
            p
        };
        let (lower1, lower2, merged) = (dir("lower1"), dir("lower2"), dir("merged"));
        let bottom = TarBuf::new()
            .file("etc/gone", b"g", 0o644)
            .file("etc/kept", b"k", 0o644)
            .file("data/a", b"a", 0o644)
            .file("data/sub/b", b"b", 0o644)
            .build();
        apply_layer(&bottom[..], &lower1).unwrap();
        let top = TarBuf::new()
            .file("etc/.wh.gone", b"", 0o644)
            .file("data/.wh..wh..opq", b"", 0o644)
            .file("data/c", b"c", 0o644)
            .build();
        apply_layer(&top[..], &lower2).unwrap();

        let opts = format!("lowerdir={}:{}", lower2.display(), lower1.display());
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .unwrap();
        let _guard = Unmount(merged.clone());
        assert!(fs::symlink_metadata(merged.join("etc/gone")).is_err(), "whiteout hides the file");
        assert_eq!(fs::read(merged.join("etc/kept")).unwrap(), b"k");
        let data: Vec<_> = fs::read_dir(merged.join("data")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(data, vec![OsString::from("c")], "opaque directory hides the lower entries");
    }
}
