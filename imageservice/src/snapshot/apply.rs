//! Applies one OCI layer (an uncompressed tar stream) into an empty directory
//! that becomes an overlayfs lowerdir.
//!
//! OCI whiteouts are converted to overlayfs form (`.wh.NAME` → a 0:0
//! character device, `.wh..wh..opq` → `trusted.overlay.opaque=y`), ownership,
//! modes, xattrs, mtimes, links and device nodes are kept, and every entry
//! that would land outside the root is refused.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    pub entries: u64,
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

/// Applies the tar stream `tar` into `root`.
pub fn apply_layer<R: Read>(tar: R, root: &Path) -> Result<ApplyStats, ApplyError> {
    let mut archive = tar::Archive::new(tar);
    let mut stats = ApplyStats::default();
    // Directory mtimes are set last: creating their children changes them.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    for entry in archive.entries().map_err(ApplyError::Tar)? {
        let mut entry = entry.map_err(ApplyError::Tar)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = clean_path(&raw, &name)?;
        stats.entries += 1;
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        }
        let io = |source: io::Error| ApplyError::Io { path: name.clone(), source };

        let file_name = rel.file_name().map(|f| f.as_bytes().to_vec()).unwrap_or_default();
        let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if file_name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let parent = resolve_dir(root, &parent_rel, &name, true)?;
            if file_name == OPAQUE_MARKER.as_bytes() {
                xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y").map_err(io)?;
            } else if !file_name.starts_with(b".wh..wh.") {
                let hidden = parent.join(OsStr::from_bytes(&file_name[WHITEOUT_PREFIX.len()..]));
                remove_any(&hidden).map_err(io)?;
                mknod(&hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| io(e.into()))?;
                chown_nofollow(&hidden, 0, 0).map_err(io)?;
            }
            continue;
        }

        let header = entry.header();
        let old = header.as_old();
        let mode = blank_as_zero(header.mode(), &old.mode)? & 0o7777;
        let uid = blank_as_zero(header.uid(), &old.uid)? as u32;
        let gid = blank_as_zero(header.gid(), &old.gid)? as u32;
        let mtime = blank_as_zero(header.mtime(), &old.mtime)? as i64;
        let xattrs = pax_xattrs(&mut entry)?;

        let target = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            resolve_dir(root, &parent_rel, &name, true)?.join(OsStr::from_bytes(&file_name))
        };

        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target).map_err(io)?;
                        fs::create_dir(&target).map_err(io)?;
                    }
                    Err(_) => fs::create_dir(&target).map_err(io)?,
                }
                dir_times.push((target.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&target).map_err(io)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc_o_nofollow())
                    .mode(0o600)
                    .open(&target)
                    .map_err(io)?;
                stats.bytes += io::copy(&mut entry, &mut file).map_err(io)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| ApplyError::Tar(io::Error::other(format!("symlink {name:?} has no target"))))?
                    .into_owned();
                remove_any(&target).map_err(io)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(io)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| ApplyError::Tar(io::Error::other(format!("hardlink {name:?} has no target"))))?
                    .into_owned();
                let link_name = String::from_utf8_lossy(&link).into_owned();
                let link_rel = clean_path(&link, &link_name).map_err(|_| ApplyError::Escape {
                    path: name.clone(),
                    reason: "hardlink target outside the root",
                })?;
                let link_parent = resolve_dir(root, link_rel.parent().unwrap_or(Path::new("")), &name, false)?;
                let source = match link_rel.file_name() {
                    Some(f) => link_parent.join(f),
                    None => return Err(ApplyError::Escape { path: name, reason: "hardlink to the root directory" }),
                };
                if fs::symlink_metadata(&source).is_err() {
                    return Err(ApplyError::Io {
                        path: name,
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("hardlink target {link_name:?} not in layer"),
                        ),
                    });
                }
                if source != target {
                    remove_any(&target).map_err(io)?;
                    fs::hard_link(&source, &target).map_err(io)?;
                }
                // A hardlink shares the inode: its metadata is the target's.
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let header = entry.header();
                // A fifo has no device number; some writers leave the fields blank.
                let (major, minor) = if kind == tar::EntryType::Fifo {
                    (0, 0)
                } else {
                    (
                        header.device_major().map_err(ApplyError::Tar)?.unwrap_or(0),
                        header.device_minor().map_err(ApplyError::Tar)?.unwrap_or(0),
                    )
                };
                let flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_any(&target).map_err(io)?;
                mknod(&target, flag, Mode::from_bits_truncate(0o600), makedev(major.into(), minor.into()))
                    .map_err(|e| io(e.into()))?;
            }
            other => {
                return Err(ApplyError::Unsupported { path: name, kind: format!("{other:?}") });
            }
        }

        chown_nofollow(&target, uid, gid).map_err(io)?;
        for (key, value) in &xattrs {
            xattr::set(&target, OsStr::from_bytes(key), value).map_err(io)?;
        }
        if kind != tar::EntryType::Symlink {
            // After chown, which clears setuid/setgid.
            fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        if kind != tar::EntryType::Directory {
            set_mtime(&target, mtime).map_err(io)?;
        }
    }
    // Deepest first, so setting a child's time cannot disturb its parent's.
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (dir, mtime) in dir_times {
        set_mtime(&dir, mtime).map_err(|source| ApplyError::Io { path: dir.display().to_string(), source })?;
    }
    Ok(stats)
}

/// A numeric header field left blank reads as 0, as Go's archive/tar (and so
/// Docker and containerd) reads it.
fn blank_as_zero<T: From<u8>>(parsed: io::Result<T>, raw: &[u8]) -> Result<T, ApplyError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::from(0)),
        Err(e) => Err(ApplyError::Tar(e)),
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Strips `./` and trailing slashes; refuses absolute paths and `..`.
fn clean_path(raw: &[u8], name: &str) -> Result<PathBuf, ApplyError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(ApplyError::Escape { path: name.to_string(), reason: "absolute path" })
            }
            Component::ParentDir => return Err(ApplyError::Escape { path: name.to_string(), reason: "'..' in path" }),
        }
    }
    Ok(out)
}

/// Resolves the directory `rel` inside `root`, following symlinks only while
/// they stay inside it (absolute targets are taken relative to the root, as
/// the container will see them). Creates missing directories if `create`.
fn resolve_dir(root: &Path, rel: &Path, name: &str, create: bool) -> Result<PathBuf, ApplyError> {
    let escape = || ApplyError::Escape { path: name.to_string(), reason: "through a symlink" };
    let io = |source: io::Error| ApplyError::Io { path: name.to_string(), source };
    // Stack of resolved components below root, and the components still to walk.
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = rel.iter().rev().map(|c| c.to_os_string()).collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == "." || c.is_empty() {
            continue;
        }
        if c == ".." {
            if resolved.pop().is_none() {
                return Err(escape());
            }
            continue;
        }
        let mut here: PathBuf = root.to_path_buf();
        here.extend(&resolved);
        let candidate = here.join(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ApplyError::Escape { path: name.to_string(), reason: "too many symlinks" });
                }
                let target = fs::read_link(&candidate).map_err(io)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for t in target.iter().rev() {
                    if t != "/" {
                        pending.push(t.to_os_string());
                    }
                }
            }
            Ok(m) if m.is_dir() => resolved.push(c),
            Ok(_) => {
                // A non-directory where a directory is needed: a later layer
                // entry replaces it, as tar would.
                if !create {
                    return Err(io(io::Error::new(io::ErrorKind::NotFound, "not a directory")));
                }
                fs::remove_file(&candidate).map_err(io)?;
                fs::create_dir(&candidate).map_err(io)?;
                resolved.push(c);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&candidate).map_err(io)?;
                fs::set_permissions(&candidate, fs::Permissions::from_mode(0o755)).map_err(io)?;
                resolved.push(c);
            }
            Err(e) => return Err(io(e)),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Removes whatever is at `path` (file, link, device or directory tree).
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn chown_nofollow(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    fchownat(None, path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// An extended attribute: name and value.
type Xattr = (Vec<u8>, Vec<u8>);

/// `SCHILY.xattr.NAME` PAX records.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<Xattr>, ApplyError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Tar)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Tar)?;
            if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((key.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    enum E<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Char(&'a str, u32, u32),
        Fifo(&'a str),
    }

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data, mode, kind): (&str, &[u8], u32, _) = match e {
                E::File(n, d, m) => (n, d, *m, tar::EntryType::Regular),
                E::Dir(n) => (n, &[], 0o750, tar::EntryType::Directory),
                E::Symlink(n, _) => (n, &[], 0o777, tar::EntryType::Symlink),
                E::Hardlink(n, _) => (n, &[], 0o644, tar::EntryType::Link),
                E::Char(n, ..) => (n, &[], 0o666, tar::EntryType::Char),
                E::Fifo(n) => (n, &[], 0o644, tar::EntryType::Fifo),
            };
            h.set_entry_type(kind);
            if let E::Symlink(_, t) | E::Hardlink(_, t) = e {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
            if let E::Char(_, maj, min) = e {
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
            }
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_mode(mode);
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn apply(entries: &[E<'_>]) -> (tempfile::TempDir, Result<ApplyStats, ApplyError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = apply_layer(&tar_of(entries)[..], dir.path());
        (dir, r)
    }

    #[test]
    fn files_dirs_links_devices_keep_their_metadata() {
        let (dir, r) = apply(&[
            E::Dir("etc/"),
            E::File("etc/passwd", b"root:x:0:0", 0o644),
            E::File("bin/su", b"su", 0o4755),
            E::Symlink("bin/sh", "busybox"),
            E::Hardlink("etc/passwd-", "etc/passwd"),
            E::Char("dev/null", 1, 3),
            E::Fifo("run/fifo"),
        ]);
        let stats = r.unwrap();
        assert_eq!(stats.entries, 7);
        let root = dir.path();
        let passwd = fs::symlink_metadata(root.join("etc/passwd")).unwrap();
        assert_eq!((passwd.uid(), passwd.gid(), passwd.mode() & 0o7777), (1234, 5678, 0o644));
        assert_eq!(passwd.mtime(), 1_600_000_000);
        assert_eq!(passwd.nlink(), 2, "hardlink shares the inode");
        assert_eq!(fs::symlink_metadata(root.join("bin/su")).unwrap().mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("busybox"));
        let sh = fs::symlink_metadata(root.join("bin/sh")).unwrap();
        assert_eq!((sh.uid(), sh.mtime()), (1234, 1_600_000_000));
        let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), makedev(1, 3));
        assert!(fs::symlink_metadata(root.join("run/fifo")).unwrap().file_type().is_fifo());
        // The directory's mtime survives the files created in it afterwards.
        let etc = fs::symlink_metadata(root.join("etc")).unwrap();
        assert_eq!((etc.mtime(), etc.mode() & 0o7777), (1_600_000_000, 0o750));
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let (dir, r) = apply(&[
            E::File("etc/.wh.removed", b"", 0o644),
            E::File("data/.wh..wh..opq", b"", 0o644),
            E::File("data/c", b"c", 0o644),
        ]);
        r.unwrap();
        let wh = fs::symlink_metadata(dir.path().join("etc/removed")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!((wh.rdev(), wh.uid()), (0, 0));
        assert!(!dir.path().join("etc/.wh.removed").exists());
        assert_eq!(xattr::get(dir.path().join("data"), OVERLAY_OPAQUE_XATTR).unwrap().as_deref(), Some(&b"y"[..]));
        assert!(dir.path().join("data/c").exists());
        assert!(!dir.path().join("data/.wh..wh..opq").exists());
    }

    #[test]
    fn pax_xattrs_are_applied() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.note", &b"hi"[..]), ("SCHILY.xattr.trusted.x", &b"t"[..])])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        apply_layer(&b.into_inner().unwrap()[..], dir.path()).unwrap();
        assert_eq!(xattr::get(dir.path().join("f"), "user.note").unwrap().as_deref(), Some(&b"hi"[..]));
        assert_eq!(xattr::get(dir.path().join("f"), "trusted.x").unwrap().as_deref(), Some(&b"t"[..]));
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let (dir, r) = apply(&[
            E::File("a", b"file", 0o644),
            E::Dir("a"),
            E::File("a/inner", b"x", 0o644),
            E::Dir("b"),
            E::File("b/inner", b"x", 0o644),
            E::File("b", b"now a file", 0o644),
        ]);
        r.unwrap();
        assert!(dir.path().join("a").is_dir());
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"now a file");
    }

    #[test]
    fn symlinks_inside_the_root_are_followed_scoped() {
        let (dir, r) = apply(&[
            E::Dir("sub"),
            E::Symlink("ok", "sub"),
            E::File("ok/x", b"x", 0o644),
            E::Symlink("abs", "/sub"),
            E::File("abs/y", b"y", 0o644),
        ]);
        r.unwrap();
        assert!(dir.path().join("sub/x").is_file());
        assert!(dir.path().join("sub/y").is_file(), "absolute targets are re-rooted");
    }

    #[test]
    fn escapes_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let rel_out = format!("../../../../../../..{}", outside.path().display());
        for (entries, what) in [
            (vec![E::File("../x", b"x", 0o644)], "dotdot"),
            (vec![E::File("a/../../x", b"x", 0o644)], "nested dotdot"),
            (vec![E::File("/abs", b"x", 0o644)], "absolute"),
            (vec![E::Symlink("evil", &rel_out), E::File("evil/pwned", b"x", 0o644)], "symlink"),
            (vec![E::Hardlink("link", "../../etc/passwd")], "hardlink"),
        ] {
            let (_dir, r) = apply(&entries);
            match r {
                Err(ApplyError::Escape { .. }) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn overlay_honours_converted_whiteouts() {
        let base = tempfile::tempdir().unwrap();
        apply_layer(
            &tar_of(&[E::File("etc/gone", b"g", 0o644), E::File("data/a", b"a", 0o644), E::File("keep", b"k", 0o644)])
                [..],
            &base.path().join("lower1").tap_mkdir(),
        )
        .unwrap();
        apply_layer(
            &tar_of(&[
                E::File("etc/.wh.gone", b"", 0o644),
                E::File("data/.wh..wh..opq", b"", 0o644),
                E::File("data/c", b"c", 0o644),
            ])[..],
            &base.path().join("lower2").tap_mkdir(),
        )
        .unwrap();
        let target = base.path().join("merged").tap_mkdir();
        let opts =
            format!("lowerdir={}:{}", base.path().join("lower2").display(), base.path().join("lower1").display());
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .unwrap();
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _guard = Unmount(target.clone());
        assert!(!target.join("etc/gone").exists());
        assert!(target.join("keep").exists());
        let data: Vec<_> = fs::read_dir(target.join("data")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(data, vec![std::ffi::OsString::from("c")]);
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> Self;
    }
    impl TapMkdir for PathBuf {
        fn tap_mkdir(self) -> Self {
            fs::create_dir_all(&self).unwrap();
            self
        }
    }
}
