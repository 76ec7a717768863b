//! The container's root filesystem, set up by its init before exec: the
//! rootfs bound and pivoted into, the spec's mounts placed inside it (never
//! following a path out of it), /dev populated, namespaced sysctls written,
//! masked and read-only paths, a read-only root.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::in_root::{self, Make};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{chdir, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Mount, Spec};

struct MountOptions {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
    bind: bool,
    /// `rro`: read-only all the way down, submounts included.
    recursive_readonly: bool,
}

fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: vec![],
        bind: false,
        recursive_readonly: false,
    };
    for opt in options {
        match opt.as_str() {
            "ro" => o.flags |= MsFlags::MS_RDONLY,
            "rw" => o.flags &= !MsFlags::MS_RDONLY,
            "nosuid" => o.flags |= MsFlags::MS_NOSUID,
            "suid" => o.flags &= !MsFlags::MS_NOSUID,
            "nodev" => o.flags |= MsFlags::MS_NODEV,
            "dev" => o.flags &= !MsFlags::MS_NODEV,
            "noexec" => o.flags |= MsFlags::MS_NOEXEC,
            "exec" => o.flags &= !MsFlags::MS_NOEXEC,
            "noatime" => o.flags |= MsFlags::MS_NOATIME,
            "relatime" => o.flags |= MsFlags::MS_RELATIME,
            "strictatime" => o.flags |= MsFlags::MS_STRICTATIME,
            "sync" => o.flags |= MsFlags::MS_SYNCHRONOUS,
            "bind" => o.bind = true,
            "rro" => o.recursive_readonly = true,
            "rbind" => {
                o.bind = true;
                o.flags |= MsFlags::MS_REC;
            }
            "private" => o.propagation |= MsFlags::MS_PRIVATE,
            "rprivate" => o.propagation |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "slave" => o.propagation |= MsFlags::MS_SLAVE,
            "rslave" => o.propagation |= MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "shared" => o.propagation |= MsFlags::MS_SHARED,
            "rshared" => o.propagation |= MsFlags::MS_SHARED | MsFlags::MS_REC,
            other => o.data.push(other.to_string()),
        }
    }
    o
}

/// `userns`: the pod's user namespace, into which a bind mount carrying
/// ID mappings is mapped (gantryd gives every such mount the pod's own).
/// The destination is resolved and created inside the root (`in_root`) and
/// mounted on through its descriptor (CVE-2021-30465).
fn mount_entry(root: &OwnedFd, m: &Mount, userns: Option<&File>) -> Result<(), String> {
    let typ = m.typ().clone().unwrap_or_default();
    let opts = parse_options(&m.options().clone().unwrap_or_default());
    let bind = opts.bind || typ == "bind";
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let err = |what: &str, e: nix::Error| {
        format!("mounting {} on {}: {what}: {e}", source.display(), m.destination().display())
    };
    if bind && !source.exists() {
        return Err(format!("bind mount source {} does not exist", source.display()));
    }
    let make = if bind && fs::metadata(&source).is_ok_and(|s| !s.is_dir()) { Make::File } else { Make::Dir };
    let target = in_root::create(root, m.destination(), make).map_err(|e| format!("mount destination {e}"))?;
    let dest = in_root::fd_path(&target);
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if bind {
        match userns.filter(|_| m.uid_mappings().is_some() || m.gid_mappings().is_some()) {
            Some(ns) => {
                let tree = crate::mount_api::idmapped_tree(&source, ns, opts.flags.contains(MsFlags::MS_REC))?;
                crate::mount_api::attach_to(&tree, &target)?;
            }
            None => mount(
                Some(&source),
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC),
                None::<&str>,
            )
            .map_err(|e| err("bind", e))?,
        }
    } else {
        mount(Some(&source), &dest, Some(typ.as_str()), opts.flags, data).map_err(|e| err(&typ, e))?;
    }
    // What follows applies to the new mount: the one now on top there.
    let extra = opts.flags & !MsFlags::MS_REC;
    let remount = bind && !extra.is_empty();
    if !remount && opts.propagation.is_empty() && !opts.recursive_readonly {
        return Ok(());
    }
    let top = in_root::open(root, m.destination(), libc::O_PATH)
        .map_err(|e| format!("mount destination {}: {e}", m.destination().display()))?;
    let dest = in_root::fd_path(&top);
    if remount {
        mount(None::<&str>, &dest, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra, None::<&str>)
            .map_err(|e| err("remount", e))?;
    }
    if !opts.propagation.is_empty() {
        mount(None::<&str>, &dest, None::<&str>, opts.propagation, None::<&str>).map_err(|e| err("propagation", e))?;
    }
    if opts.recursive_readonly {
        crate::mount_api::set_recursive_readonly(&dest)
            .map_err(|e| format!("making {} recursively read-only: {e}", m.destination().display()))?;
    }
    Ok(())
}

/// The nodes every container gets when its /dev is a fresh tmpfs.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn populate_dev(root: &OwnedFd, spec: &Spec) -> Result<(), String> {
    // Every node is made in a directory resolved inside the root, by name.
    let mk = |dir: &OwnedFd, name: &Path, kind: SFlag, major: u64, minor: u64, mode: u32, uid: u32, gid: u32| {
        let at = Some(dir.as_raw_fd());
        let _ = nix::unistd::unlinkat(at, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        mknodat(at, name, kind, Mode::from_bits_truncate(mode), makedev(major, minor))
            .map_err(|e| format!("mknod {}: {e}", name.display()))?;
        // mknod is subject to the umask; set the mode exactly.
        fchmodat(at, name, Mode::from_bits_truncate(mode), FchmodatFlags::NoFollowSymlink)
            .map_err(|e| format!("chmod {}: {e}", name.display()))?;
        nix::unistd::fchownat(
            at,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("chown {}: {e}", name.display()))
    };
    let dev = in_root::create(root, Path::new("/dev"), Make::Dir).map_err(|e| format!("/dev: {e}"))?;
    for (name, major, minor) in DEFAULT_DEVICES {
        mk(&dev, Path::new(name), SFlag::S_IFCHR, major, minor, 0o666, 0, 0)?;
    }
    for d in spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default() {
        let (Some(parent), Some(name)) = (d.path().parent(), d.path().file_name()) else {
            return Err(format!("device path {} has no file name", d.path().display()));
        };
        let dir =
            in_root::create(root, parent, Make::Dir).map_err(|e| format!("device {}: {e}", d.path().display()))?;
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        mk(
            &dir,
            Path::new(name),
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let at = Some(dev.as_raw_fd());
        let _ = nix::unistd::unlinkat(at, link, nix::unistd::UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat(target, at, link).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    Ok(())
}

pub(crate) fn setup_rootfs(
    bundle: &Path,
    spec: &Spec,
    userns: Option<&File>,
    before_pivot: &dyn Fn() -> Result<(), String>,
) -> Result<(), String> {
    // By default nothing the container mounts propagates back to the host;
    // `rshared` (a bidirectional CRI mount) lets it, as runc does.
    let propagation = match spec.linux().as_ref().and_then(|l| l.rootfs_propagation().clone()).as_deref() {
        Some("rshared") | Some("shared") => MsFlags::MS_SHARED,
        Some("rprivate") | Some("private") => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    };
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | propagation, None::<&str>)
        .map_err(|e| format!("setting the propagation of /: {e}"))?;
    let root_spec = spec.root().as_ref().ok_or("the spec has no root")?;
    let root = if root_spec.path().is_absolute() { root_spec.path().clone() } else { bundle.join(root_spec.path()) };
    // pivot_root refuses a shared parent mount, and a bind of the rootfs
    // under a shared parent would leak to the host. Only a shared `/` has
    // one: finding it reads mountinfo, which is slow with many containers.
    if propagation == MsFlags::MS_SHARED {
        if let Some(parent) = mount_point_of(&root) {
            mount(None::<&str>, &parent, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
                .map_err(|e| format!("making {} private: {e}", parent.display()))?;
        }
    }
    // pivot_root needs the new root to be a mount point.
    mount(Some(&root), &root, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| format!("bind-mounting rootfs {}: {e}", root.display()))?;
    let root_fd = in_root::open_root(&root)?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_entry(&root_fd, m, userns)?;
    }
    if mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        populate_dev(&root_fd, spec)?;
    }
    drop(root_fd);
    give_dev_to_mapped_root(&root, spec)?;
    // OCI createContainer hooks: mounts done, host paths still visible.
    before_pivot()?;
    chdir(&root).map_err(|e| format!("chdir rootfs: {e}"))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    // The old root is stacked on the new one; detach it.
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;

    if let Some(linux) = spec.linux() {
        // Namespaced sysctls, before /proc/sys becomes read-only: through the
        // container's own /proc, in its namespaces, never the host's.
        crate::sysctl::apply(spec, Path::new("/proc/sys"))?;
        let root = in_root::open_root(Path::new("/"))?;
        let masked = linux.masked_paths().clone().unwrap_or_default();
        let readonly = linux.readonly_paths().clone().unwrap_or_default();
        // Masks are mounted through /proc/self/fd: it must be procfs.
        if !(masked.is_empty() && readonly.is_empty()) {
            protected_target(&root, Path::new("/proc"))?.ok_or("/proc is missing: cannot mask paths")?;
        }
        // Checked once, held open: the container's /dev/null could be
        // anything its image or a shared volume put there (CVE-2025-31133).
        let null = if masked.is_empty() { None } else { Some(dev_null(&root)?) };
        for p in masked {
            mask_path(&root, Path::new(&p), null.as_ref())?;
        }
        for p in readonly {
            readonly_path(&root, Path::new(&p))?;
        }
    }
    if root_spec.readonly().unwrap_or(false) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("making the rootfs read-only: {e}"))?;
    }
    Ok(())
}

/// In a user namespace the container's root is some other host user: the
/// tmpfs dirs it would own in an ordinary container (/dev, /dev/shm,
/// /dev/mqueue) go to that user, as when runc mounts them inside.
fn give_dev_to_mapped_root(root: &Path, spec: &Spec) -> Result<(), String> {
    let Some(linux) = spec.linux() else { return Ok(()) };
    let in_userns = linux.namespaces().iter().flatten().any(|ns| ns.typ() == LinuxNamespaceType::User);
    if !in_userns {
        return Ok(());
    }
    let uid = crate::userns::host_id(linux.uid_mappings().as_deref().unwrap_or_default(), 0);
    let gid = crate::userns::host_id(linux.gid_mappings().as_deref().unwrap_or_default(), 0);
    for dir in ["dev", "dev/shm", "dev/mqueue"] {
        let path = root.join(dir);
        if path.is_dir() {
            nix::unistd::chown(&path, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// The mount point `path` lives on (the longest mount point that is a prefix).
fn mount_point_of(path: &Path) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    crate::cgroup_mounts::mounts(&info)
        .map(|(_, m, _)| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

/// The container's /dev/null, opened without following a symlink and
/// checked to be the null device (character device 1:3), as runc does
/// since CVE-2025-31133; masks are bound from this very file.
fn dev_null(root: &OwnedFd) -> Result<OwnedFd, String> {
    let null = in_root::open(root, Path::new("/dev/null"), libc::O_PATH | libc::O_NOFOLLOW)
        .map_err(|e| format!("opening /dev/null for masking: {e}"))?;
    let st = nix::sys::stat::fstat(null.as_raw_fd()).map_err(|e| format!("stat /dev/null: {e}"))?;
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_char || st.st_rdev != makedev(1, 3) {
        return Err("the container's /dev/null is not the null device (1:3): refusing to mask with it".into());
    }
    Ok(null)
}

/// A masked or read-only path, resolved inside the root: under /proc it
/// must be on procfs and under /sys on sysfs (never a file a symlink or a
/// mount elsewhere put there, CVE-2025-52881). None if it does not exist.
fn protected_target(root: &OwnedFd, p: &Path) -> Result<Option<OwnedFd>, String> {
    let fd = match in_root::open(root, p, libc::O_PATH | libc::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let want = if p.starts_with("/proc") {
        Some((in_root::PROC_SUPER_MAGIC, "procfs"))
    } else if p.starts_with("/sys") {
        Some((in_root::SYSFS_MAGIC, "sysfs"))
    } else {
        None
    };
    if let Some((magic, name)) = want {
        let t = in_root::fs_type(&fd).map_err(|e| format!("statfs {}: {e}", p.display()))?;
        if t != magic {
            return Err(format!("{} is not on {name} (filesystem type {t:#x})", p.display()));
        }
    }
    Ok(Some(fd))
}

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a dir.
fn mask_path(root: &OwnedFd, p: &Path, null: Option<&OwnedFd>) -> Result<(), String> {
    let Some(target) = protected_target(root, p).map_err(|e| format!("masking {e}"))? else { return Ok(()) };
    let is_dir = nix::sys::stat::fstat(target.as_raw_fd())
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR);
    let dest = in_root::fd_path(&target);
    let r = if is_dir {
        mount(Some("tmpfs"), &dest, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
    } else {
        let null = null.ok_or("masking: no /dev/null")?;
        mount(Some(&in_root::fd_path(null)), &dest, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    };
    r.map_err(|e| format!("masking {}: {e}", p.display()))
}

/// A recursive read-only bind of the path onto itself, made detached and
/// put in place in one step (no window in which it is writable or moved).
fn readonly_path(root: &OwnedFd, p: &Path) -> Result<(), String> {
    let Some(target) = protected_target(root, p).map_err(|e| format!("making read-only {e}"))? else {
        return Ok(());
    };
    crate::mount_api::readonly_bind_onto(&target).map_err(|e| format!("making {} read-only: {e}", p.display()))
}
