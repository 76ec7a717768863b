//! The new mount API (Linux 5.2+; mount_setattr 5.12+): detached mount
//! trees, ID-mapped and recursively read-only mounts, filesystems
//! configured key by key. libc has the syscall numbers, not wrappers.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("NUL byte in {s:?}"))
}

fn path_cstring(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| format!("NUL byte in {}", p.display()))
}

/// Takes ownership of a descriptor a syscall returned, or its error.
pub(crate) fn owned(rc: libc::c_long, what: &str) -> Result<OwnedFd, String> {
    if rc < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// mount_setattr(2) on `path` relative to `dirfd` (AT_FDCWD, or a tree's
/// descriptor with an empty path).
fn mount_setattr(dirfd: RawFd, path: &CString, flags: libc::c_uint, attr: &MountAttr) -> std::io::Result<()> {
    // SAFETY: path and attr outlive the call; the kernel reads `size` bytes of attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Read-only all the way down (AT_RECURSIVE): a plain read-only bind leaves
/// the mounts below it writable.
pub fn set_recursive_readonly(path: &Path) -> std::io::Result<()> {
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    mount_setattr(libc::AT_FDCWD, &cpath, AT_RECURSIVE, &attr)
}

/// A detached copy of the mount at `path` (and those below it if
/// `recursive`), its IDs mapped as in the user namespace `userns`.
pub fn idmapped_tree(path: &Path, userns: &File, recursive: bool) -> Result<OwnedFd, String> {
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    detached_tree(path, recursive, &attr).map_err(|e| format!("ID-mapping {e}"))
}

/// A detached, read-only (nosuid, nodev) copy of the single mount at `path`,
/// attached nowhere: no mount event reaches any mount table.
pub fn readonly_tree(path: &Path) -> Result<OwnedFd, String> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    detached_tree(path, false, &attr).map_err(|e| format!("making read-only {e}"))
}

/// open_tree(OPEN_TREE_CLONE) of `path` (recursively if asked), then
/// `attr` set on the copy; an error names the path.
fn detached_tree(path: &Path, recursive: bool, attr: &MountAttr) -> Result<OwnedFd, String> {
    let recursive = if recursive { AT_RECURSIVE } else { 0 };
    let cpath = path_cstring(path)?;
    // SAFETY: cpath outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | recursive,
        )
    };
    let tree = owned(rc, &format!("open_tree {}", path.display()))?;
    mount_setattr(tree.as_raw_fd(), &cstring("")?, libc::AT_EMPTY_PATH as libc::c_uint | recursive, attr)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(tree)
}

/// Moves the detached tree `tree` onto `target`.
pub fn attach(tree: &OwnedFd, target: &Path) -> Result<(), String> {
    let empty = cstring("")?;
    let ctarget = path_cstring(target)?;
    // SAFETY: both strings outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            ctarget.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(format!("mounting on {}: {}", target.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Moves the detached tree `tree` onto the file `target` names.
pub fn attach_to(tree: &OwnedFd, target: &OwnedFd) -> Result<(), String> {
    let empty = cstring("")?;
    // SAFETY: the empty string outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(format!("attaching a mount: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A recursive read-only bind of what `target` names, put on top of it.
pub fn readonly_bind_onto(target: &OwnedFd) -> Result<(), String> {
    let empty = cstring("")?;
    // SAFETY: the empty string outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            target.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    let tree = owned(rc, "open_tree")?;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    mount_setattr(tree.as_raw_fd(), &empty, libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE, &attr)
        .map_err(|e| format!("mount_setattr: {e}"))?;
    attach_to(&tree, target)
}

/// A filesystem being configured (fsopen), mounted detached by `mount`.
pub struct FsContext(OwnedFd);

impl FsContext {
    pub fn open(fstype: &str) -> Result<Self, String> {
        let c = cstring(fstype)?;
        // SAFETY: c outlives the call.
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c.as_ptr(), FSOPEN_CLOEXEC) }, &format!("fsopen {fstype}"))
            .map(FsContext)
    }

    fn config(&self, cmd: libc::c_uint, key: Option<&str>, value: Option<&str>) -> Result<(), String> {
        let key_c = key.map(cstring).transpose()?;
        let value_c = value.map(cstring).transpose()?;
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: key and value are NUL-terminated strings (or null) that outlive the call.
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), cmd, ptr(&key_c), ptr(&value_c), 0) };
        if rc != 0 {
            return Err(format!("option {}: {}", key.unwrap_or("create"), std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn set(&self, key: &str, value: &str) -> Result<(), String> {
        self.config(FSCONFIG_SET_STRING, Some(key), Some(value))
    }

    /// Creates the filesystem and returns it as a detached mount.
    pub fn mount(self) -> Result<OwnedFd, String> {
        self.config(FSCONFIG_CMD_CREATE, None, None)?;
        // SAFETY: plain integer arguments.
        owned(unsafe { libc::syscall(libc::SYS_fsmount, self.0.as_raw_fd(), FSMOUNT_CLOEXEC, 0) }, "fsmount")
    }
}
