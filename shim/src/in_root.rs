//! Paths inside the container's root, resolved by the kernel so that no
//! symlink (in the image, or swapped in by a racing container that shares
//! a volume) can take them out: `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` from a descriptor of the root, as runc does
//! since CVE-2021-30465. Symlinks inside the image are followed as if the
//! root were `/` (`/var/run` → `/run` works; `../../..` stops at the root;
//! an absolute target is taken inside). What is found is held open
//! (`O_PATH`) and mounted on through `/proc/self/fd/N`, so nothing can
//! change between the check and the mount.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// `/proc/self/fd/N`, a path for mount(2) that names exactly this file.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2) of `path` (relative, or absolute meaning the root) beneath
/// `root`, never leaving it and never through a magic link.
pub fn open(root: &OwnedFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: c and how outlive the call; the kernel reads `size` bytes of how.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// The root itself, as an `O_PATH` directory descriptor.
pub fn open_root(path: &Path) -> Result<OwnedFd, String> {
    let c = cstr(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: c outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("opening {}: {}", path.display(), io::Error::last_os_error()));
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The clean components of an absolute container path (no `..`).
fn components(dest: &Path) -> Result<Vec<&std::ffi::OsStr>, String> {
    let mut out = vec![];
    for c in dest.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(format!("{} is not a clean absolute path", dest.display())),
        }
    }
    Ok(out)
}

/// What to make at the end of a path that does not exist yet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Make {
    Dir,
    File,
}

/// Opens `dest` beneath `root` (`O_PATH`), creating what is missing: the
/// directories on the way, and the last component as `last`. Each step
/// creates inside the directory the previous one resolved (itself inside
/// the root), so nothing is ever made outside it.
pub fn create(root: &OwnedFd, dest: &Path, last: Make) -> Result<OwnedFd, String> {
    let parts = components(dest)?;
    let err = |what: &str, e: io::Error| format!("{} ({what}): {e}", dest.display());
    let mut dir = open(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY).map_err(|e| err("the root", e))?;
    let mut prefix = PathBuf::from("/");
    for (i, name) in parts.iter().enumerate() {
        prefix.push(name);
        let is_last = i + 1 == parts.len();
        let want_dir = !is_last || last == Make::Dir;
        let flags = libc::O_PATH | if want_dir { libc::O_DIRECTORY } else { 0 };
        match open(root, &prefix, flags) {
            Ok(fd) => {
                dir = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err(&prefix.display().to_string(), e)),
        }
        let cname = cstr(Path::new(name)).map_err(|e| err("name", e))?;
        // SAFETY: cname outlives the calls; dir is a directory descriptor.
        let rc = unsafe {
            if want_dir {
                libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), 0o755)
            } else {
                let fd = libc::openat(
                    dir.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd.min(0)
            }
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // EEXIST: a dangling symlink (or a racer). Resolved below, or refused.
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(err(&format!("creating {}", prefix.display()), e));
            }
        }
        dir = open(root, &prefix, flags).map_err(|e| err(&format!("{} after creating it", prefix.display()), e))?;
    }
    Ok(dir)
}

/// The `f_type` of the filesystem `fd` is on.
pub fn fs_type(fd: &OwnedFd) -> io::Result<i64> {
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st a valid statfs for the kernel to fill.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

pub const PROC_SUPER_MAGIC: i64 = 0x9fa0;
pub const SYSFS_MAGIC: i64 = 0x6265_6572;
