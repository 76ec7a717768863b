//! runc CVE-2019-5736: a container process must never reach the host's
//! gantry-shim binary through `/proc/PID/exe` and write to it.
//!
//! The shape: a process running gantry-shim becomes visible inside a
//! container (the container's init before exec, a `gantry-shim exec` child
//! that joined the PID namespace, or a container command that is
//! `/proc/self/exe` or a script whose interpreter is `#!/proc/self/exe`,
//! which the kernel resolves to the running shim's own binary). A container
//! process opens `/proc/PID/exe` (`O_PATH` is enough) and later reopens it
//! for writing through `/proc/self/fd/N`.
//!
//! The protection, as runc 1.2 (which moved from a sealed memfd copy to a
//! read-only mount of the binary, for memory): before anything else, a
//! gantry-shim that is not running from a read-only mount makes a detached,
//! read-only bind mount of its own binary (`open_tree(OPEN_TREE_CLONE)` +
//! `mount_setattr(MOUNT_ATTR_RDONLY)`, never attached anywhere, so no mount
//! event reaches the host's mount table) and re-executes itself from it
//! (`execveat(AT_EMPTY_PATH)`). From then on `/proc/self/exe` of the shim,
//! of everything it forks and of whatever exec's `/proc/self/exe` is a file
//! on that read-only mount: opening it for writing fails with EROFS whether
//! or not the kernel still refuses writes to a running binary (ETXTBSY).
//! The cost is one execve per shim or exec helper (no copy, no memory); a
//! shim exec'd from the read-only copy (the pause process) skips it.
//!
//! Kernels without the new mount API (before 5.12): a sealed memfd copy
//! (memfd_create + F_SEAL_SEAL|SHRINK|GROW|WRITE), runc's older way.
//!
//! Besides, the helpers are non-dumpable while they join a container (see
//! `hide_while_joining`): no container process can open their
//! `/proc/PID/{exe,fd,root,…}` without CAP_SYS_PTRACE.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::mount_api::owned;

/// Set in the environment of the re-executed shim: it must not try again.
const MARKER: &str = "_GANTRY_SHIM_SEALED";

/// Whether our own binary is already out of a container's reach for
/// writing: on a read-only mount, or a sealed memfd.
pub fn running_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else { return false };
    if nix::sys::statvfs::fstatvfs(&exe).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)) {
        return true;
    }
    const SEALS: libc::c_int = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_GET_SEALS takes no argument and touches no memory of ours.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-executes this process from a read-only copy of its binary unless it
/// already runs from one. Returns only on failure (or when already sealed).
pub fn ensure() -> Result<(), String> {
    if std::env::var_os(MARKER).is_some() {
        // Single-threaded: nothing reads the environment concurrently.
        std::env::remove_var(MARKER);
        return if running_sealed() { Ok(()) } else { Err("re-executed, yet not from a read-only copy".into()) };
    }
    if running_sealed() {
        return Ok(());
    }
    let exe = match readonly_bind() {
        Ok(fd) => fd,
        Err(bind_err) => sealed_memfd().map_err(|e| format!("{bind_err}; sealed memfd: {e}"))?,
    };
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "NUL byte in an argument".to_string()))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{MARKER}=1")).map_err(|_| "marker")?);
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let empty = c"";
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to
    // NUL-terminated strings that outlive the call; on success it does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(format!("re-executing from the read-only copy: {}", std::io::Error::last_os_error()))
}

/// A detached read-only bind mount of our binary, as a descriptor.
fn readonly_bind() -> Result<OwnedFd, String> {
    crate::mount_api::readonly_tree(std::path::Path::new("/proc/self/exe"))
}

/// runc's older way: a copy of the binary in a memfd sealed against writes.
fn sealed_memfd() -> Result<OwnedFd, String> {
    let name = c"gantry-shim";
    // SAFETY: name is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    let fd = owned(rc as libc::c_long, "memfd_create")?;
    let mut copy = File::from(fd);
    let mut bin = Vec::new();
    File::open("/proc/self/exe").and_then(|mut f| f.read_to_end(&mut bin)).map_err(|e| format!("reading: {e}"))?;
    copy.write_all(&bin).map_err(|e| format!("copying: {e}"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an int and touches no memory of ours.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(format!("sealing: {}", std::io::Error::last_os_error()));
    }
    Ok(copy.into())
}

/// Non-dumpable: while a helper joins a container and until it execs (which
/// makes the new program dumpable again), no container process without
/// CAP_SYS_PTRACE can open its `/proc/PID/exe`, fds, root or memory.
pub fn hide_while_joining() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))
}

/// Dumpable again, just before the process drops to the container's user:
/// a non-dumpable process's `/proc/self` files belong to the host's root,
/// which a pod user namespace's root cannot write (`oom_score_adj`).
pub fn dumpable_again() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(true).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))
}
