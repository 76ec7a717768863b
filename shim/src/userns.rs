//! User namespaces (CRI NamespaceMode POD): the pod's pause process makes
//! one with the pod's ID mappings, before its other namespaces, so the pod's
//! network, IPC, UTS and PID namespaces belong to it (a container root can
//! then bind port 80 in its pod). Containers join it last, after their
//! rootfs is set up as the host's root: their mount namespace stays the
//! host's, so nothing inside can mount, while every file the image holds is
//! seen through ID-mapped mounts (see `mount_rootfs`).
//!
//! `gantry-shim mount-rootfs` is the helper gantryd runs for such a
//! container: the overlay of the image's layers and the writable layer,
//! each layer an ID-mapped mount, so the image's root-owned files belong to
//! the container's root and what it writes is stored as an ordinary
//! container's would be (uid 0 on disk), with nothing to chown.
//!
//! Usage: gantry-shim mount-rootfs --userns PATH --rw DIR --lower DIR [--lower DIR…] TARGET
//! (`--rw` holds `upper` and `work`; lowers topmost first.)

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getpid, pipe2, ForkResult};
use oci_spec::runtime::{LinuxIdMapping, Spec};

use crate::mount_api::{attach, idmapped_tree, FsContext};

/// The spec's mappings, as /proc/PID/uid_map wants them.
fn map_lines(maps: &[LinuxIdMapping]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
}

/// Moves this process into a new user namespace with the spec's mappings.
/// A process cannot map IDs of the parent namespace into its own new one,
/// so a forked helper, still in the parent namespace with every
/// capability, writes the maps once we have unshared.
pub fn unshare_mapped(spec: &Spec) -> Result<(), String> {
    let linux = spec.linux().as_ref().ok_or("the spec has no linux section")?;
    let uids = map_lines(linux.uid_mappings().as_deref().unwrap_or_default());
    let gids = map_lines(linux.gid_mappings().as_deref().unwrap_or_default());
    if uids.is_empty() || gids.is_empty() {
        return Err("a new user namespace needs uidMappings and gidMappings".into());
    }
    let target = getpid();
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the shim and its children are single-threaded; the helper only
    // writes two files and exits.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(go_w);
            let mut byte = [0u8; 1];
            if File::from(go_r).read(&mut byte).unwrap_or(0) == 0 {
                std::process::exit(1); // our parent could not unshare
            }
            let write = |name: &str, content: &str| {
                let path = format!("/proc/{target}/{name}");
                std::fs::write(&path, content).map_err(|e| eprintln!("gantry-shim: writing {path}: {e}")).is_ok()
            };
            let ok = write("uid_map", &uids) && write("gid_map", &gids);
            std::process::exit(if ok { 0 } else { 1 });
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            let unshared = unshare(CloneFlags::CLONE_NEWUSER);
            let mut go = File::from(go_w);
            if unshared.is_ok() {
                let _ = go.write_all(b"g");
            }
            drop(go);
            let status = waitpid(child, None);
            unshared.map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"))?;
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                _ => Err(format!(
                    "writing the ID maps {:?} / {:?} of the new user namespace failed",
                    uids.trim(),
                    gids.trim()
                )),
            }
        }
    }
}

/// Joins the user namespace `ns` (an open /proc/PID/ns/user).
pub fn join(ns: &File) -> Result<(), String> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(|e| format!("joining the pod's user namespace: {e}"))
}

/// The host ID that `id` inside maps to, if any.
pub fn host_id(maps: &[LinuxIdMapping], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container_id() && id - m.container_id() < m.size())
        .map(|m| m.host_id() + (id - m.container_id()))
}

/// Mounts at `target` an overlay of `lowers` (topmost first) under the
/// writable layer `rw/upper` (work dir `rw/work`), the lower layers
/// ID-mapped into `userns`.
///
/// overlayfs will not take detached mounts as layers, so the mapped layers
/// are mounted over the layer dirs themselves, in a private mount namespace
/// of this process: the host never sees them, and nothing is left behind
/// if we die. The overlay made there is then attached in the host's.
pub fn mount_idmapped_overlay(lowers: &[PathBuf], rw: &Path, target: &Path, userns: &File) -> Result<(), String> {
    let host_ns = File::open("/proc/self/ns/mnt").map_err(|e| format!("opening our mount namespace: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("making our mounts private: {e}"))?;
    for lower in lowers {
        attach(&idmapped_tree(lower, userns, false)?, lower)?;
    }
    let fs = FsContext::open("overlay")?;
    for lower in lowers {
        fs.set("lowerdir+", &lower.to_string_lossy())?;
    }
    // Upper and work dirs are not ID-mapped: overlayfs creates its work
    // files as the mounter (host root), whom the mapping cannot express.
    // What the container writes is stored with its host IDs; gantryd gives
    // the upper dir's root to the container's root.
    fs.set("upperdir", &rw.join("upper").to_string_lossy())?;
    fs.set("workdir", &rw.join("work").to_string_lossy())?;
    fs.set("index", "off")?;
    let mnt = fs.mount().map_err(|e| format!("overlay: {e}"))?;
    setns(host_ns.as_fd(), CloneFlags::CLONE_NEWNS).map_err(|e| format!("returning to our mount namespace: {e}"))?;
    attach(&mnt, target)
}

/// `gantry-shim mount-rootfs …`: exits 0, or 1 with the reason on stderr.
pub fn run_mount_rootfs(args: &[String]) -> ! {
    let result = parse_mount_args(args).and_then(|(userns, rw, lowers, target)| {
        let ns = File::open(&userns).map_err(|e| format!("opening {}: {e}", userns.display()))?;
        mount_idmapped_overlay(&lowers, &rw, &target, &ns)
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("gantry-shim mount-rootfs: {e}");
            std::process::exit(1);
        }
    }
}

type MountArgs = (PathBuf, PathBuf, Vec<PathBuf>, PathBuf);

fn parse_mount_args(args: &[String]) -> Result<MountArgs, String> {
    let (mut userns, mut rw, mut lowers, mut target) = (None, None, vec![], None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().map(PathBuf::from).ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--userns" => userns = Some(value()?),
            "--rw" => rw = Some(value()?),
            "--lower" => lowers.push(value()?),
            other if !other.starts_with("--") && target.is_none() => target = Some(PathBuf::from(other)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if lowers.is_empty() {
        return Err("no --lower layer given".into());
    }
    Ok((userns.ok_or("missing --userns")?, rw.ok_or("missing --rw")?, lowers, target.ok_or("missing TARGET")?))
}
