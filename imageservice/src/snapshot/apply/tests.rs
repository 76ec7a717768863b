//! The applier against hand-made tars, malicious ones included.

use super::*;
use std::ffi::OsString;
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
        ("symlink up later", Box::new(|t| t.dir("sub", 0o755).symlink("sub/l", "../..").file("sub/l/x", b"x", 0o644))),
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
    nix::mount::mount(Some("overlay"), &merged, Some("overlay"), nix::mount::MsFlags::MS_RDONLY, Some(opts.as_str()))
        .unwrap();
    let _guard = Unmount(merged.clone());
    assert!(fs::symlink_metadata(merged.join("etc/gone")).is_err(), "whiteout hides the file");
    assert_eq!(fs::read(merged.join("etc/kept")).unwrap(), b"k");
    let data: Vec<_> = fs::read_dir(merged.join("data")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(data, vec![OsString::from("c")], "opaque directory hides the lower entries");
}
