//! The container's root filesystem, set up by its init before exec: the
//! rootfs bound and pivoted into, the spec's mounts placed inside it (never
//! following a path out of it), /dev populated, namespaced sysctls written,
//! masked and read-only paths, a read-only root.

use std::fs::{self, File};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Mount, Spec};

/// Joins `dest` (absolute in the container) under `root`, refusing to go
/// through symlinks in the image, which could point anywhere on the host.
fn join_in_root(root: &Path, dest: &Path) -> Result<PathBuf, String> {
    let mut out = root.to_path_buf();
    for c in dest.components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                if fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(format!("mount destination {} goes through a symlink in the image", dest.display()));
                }
            }
            Component::RootDir | Component::CurDir => {}
            _ => return Err(format!("mount destination {} is not a clean absolute path", dest.display())),
        }
    }
    Ok(out)
}

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
fn mount_entry(root: &Path, m: &Mount, userns: Option<&File>) -> Result<(), String> {
    let dest = join_in_root(root, m.destination())?;
    let typ = m.typ().clone().unwrap_or_default();
    let opts = parse_options(&m.options().clone().unwrap_or_default());
    let bind = opts.bind || typ == "bind";
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let err = |what: &str, e: nix::Error| {
        format!("mounting {} on {}: {what}: {e}", source.display(), m.destination().display())
    };
    if bind && fs::metadata(&source).is_ok_and(|s| !s.is_dir()) {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        if !dest.exists() {
            File::create(&dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
        }
    } else {
        fs::create_dir_all(&dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    }
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if bind {
        if !source.exists() {
            return Err(format!("bind mount source {} does not exist", source.display()));
        }
        match userns.filter(|_| m.uid_mappings().is_some() || m.gid_mappings().is_some()) {
            Some(ns) => {
                let tree = crate::mount_api::idmapped_tree(&source, ns, opts.flags.contains(MsFlags::MS_REC))?;
                crate::mount_api::attach(&tree, &dest)?;
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
        let extra = opts.flags & !MsFlags::MS_REC;
        if !extra.is_empty() {
            mount(None::<&str>, &dest, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra, None::<&str>)
                .map_err(|e| err("remount", e))?;
        }
    } else {
        mount(Some(&source), &dest, Some(typ.as_str()), opts.flags, data).map_err(|e| err(&typ, e))?;
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

fn populate_dev(root: &Path, spec: &Spec) -> Result<(), String> {
    let dev = root.join("dev");
    let mk = |path: &Path, kind: SFlag, major: u64, minor: u64, mode: u32, uid: u32, gid: u32| {
        let _ = fs::remove_file(path);
        mknod(path, kind, Mode::from_bits_truncate(mode), makedev(major, minor))
            .map_err(|e| format!("mknod {}: {e}", path.display()))?;
        // mknod is subject to the umask; set the mode exactly.
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| format!("chmod: {e}"))?;
        nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| format!("chown {}: {e}", path.display()))
    };
    for (name, major, minor) in DEFAULT_DEVICES {
        mk(&dev.join(name), SFlag::S_IFCHR, major, minor, 0o666, 0, 0)?;
    }
    for d in spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default() {
        let path = join_in_root(root, d.path())?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        mk(
            &path,
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
        let _ = fs::remove_file(dev.join(link));
        symlink(target, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
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
    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_entry(&root, m, userns)?;
    }
    if mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        populate_dev(&root, spec)?;
    }
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
        for p in linux.masked_paths().clone().unwrap_or_default() {
            mask_path(Path::new(&p))?;
        }
        for p in linux.readonly_paths().clone().unwrap_or_default() {
            readonly_path(Path::new(&p))?;
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

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a dir.
fn mask_path(p: &Path) -> Result<(), String> {
    let Ok(meta) = fs::symlink_metadata(p) else { return Ok(()) };
    let r = if meta.is_dir() {
        mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
    } else {
        mount(Some("/dev/null"), p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    };
    r.map_err(|e| format!("masking {}: {e}", p.display()))
}

fn readonly_path(p: &Path) -> Result<(), String> {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(Some(p), p, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .and_then(|_| {
            mount(
                Some(p),
                p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                None::<&str>,
            )
        })
        .map_err(|e| format!("making {} read-only: {e}", p.display()))
}
