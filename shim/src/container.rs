//! Creating the container process: namespaces, rootfs, then a wait for
//! `Start` before exec. Everything here runs in the single-threaded shim or
//! in its forked children, so forking is safe.
//!
//! The shim forks an intermediate child, which joins or creates the
//! namespaces and forks again: only a child of `unshare(CLONE_NEWPID)` lands
//! in the new PID namespace. The grandchild (pid 1 inside) sets up the root
//! filesystem and reports on a status pipe: `R` once ready, or `E` and a
//! message. It then blocks on the start pipe; on a byte it execs. The status
//! pipe is close-on-exec, so EOF after `R` means the exec succeeded.
//!
//! A terminal comes from the container's own devpts when it has one: init
//! opens /dev/ptmx after pivot_root and sends the master to the shim over a
//! socketpair before `R` (see `pty`); otherwise it is the host's, made here.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use nix::unistd::{chdir, dup2, fork, pipe2, sethostname, setsid, ForkResult};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::hooks::Point;

pub struct Spawned {
    /// The container's init process, as the host sees it.
    pub pid: Pid,
    /// Writing one byte lets the process exec.
    pub start: OwnedFd,
    /// `E` and a message if the exec fails; EOF once it succeeded.
    pub status: File,
    pub io: ShimIo,
}

/// The shim's ends of the container's stdio.
pub struct ShimIo {
    /// stdout, or the pty master of a terminal (which carries both outputs).
    pub stdout: OwnedFd,
    /// stderr; none with a terminal.
    pub stderr: Option<OwnedFd>,
    /// Where attached clients' input goes: the stdin pipe, or the pty master.
    pub stdin: Option<OwnedFd>,
    pub terminal: bool,
}

/// The container's ends of its stdio.
enum ChildIo {
    /// Pipes, or a pty from the host's devpts: stdio from the start.
    Fds { stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd, terminal: bool },
    /// A terminal init makes from the container's devpts once its rootfs is
    /// set up; the master goes to the shim over this socket.
    ContainerPty(OwnedFd),
}

/// The shim's ends before init reported ready.
enum PendingIo {
    Ready(ShimIo),
    /// The master comes over this socket, before init reports ready.
    Master {
        socket: OwnedFd,
        want_stdin: bool,
    },
}

/// Annotations gantryd sets (see runtime/src/spec.rs).
pub const STDIN_ANNOTATION: &str = "io.gantry.stdin";
pub const STDIN_ONCE_ANNOTATION: &str = "io.gantry.stdin-once";

pub fn annotation(spec: &Spec, key: &str) -> bool {
    spec.annotations().as_ref().and_then(|a| a.get(key)).is_some_and(|v| v == "true")
}

/// The shim's ends of a terminal: the master carries output, and input
/// when the container has a stdin.
fn terminal_io(master: OwnedFd, want_stdin: bool) -> Result<ShimIo, String> {
    nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("pty: {e}"))?;
    let stdin = if want_stdin { Some(master.try_clone().map_err(|e| format!("dup pty: {e}"))?) } else { None };
    Ok(ShimIo { stdout: master, stderr: None, stdin, terminal: true })
}

/// Pipes, or a pty when the process wants a terminal; a stdin only when asked.
fn make_stdio(spec: &Spec) -> Result<(PendingIo, ChildIo), String> {
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let want_stdin = annotation(spec, STDIN_ANNOTATION);
    if terminal && crate::pty::from_container(spec) {
        let (shim, child) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| format!("socketpair: {e}"))?;
        return Ok((PendingIo::Master { socket: shim, want_stdin }, ChildIo::ContainerPty(child)));
    }
    if terminal {
        let pty = crate::pty::open_host()?;
        let slave_out = pty.slave.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        let slave_err = pty.slave.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        let shim = terminal_io(pty.master, want_stdin)?;
        let child = ChildIo::Fds { stdin: Some(pty.slave), stdout: slave_out, stderr: slave_err, terminal };
        return Ok((PendingIo::Ready(shim), child));
    }
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (stdin_r, stdin_w) = if want_stdin { pipe().map(|(r, w)| (Some(r), Some(w)))? } else { (None, None) };
    let shim = ShimIo { stdout: stdout_r, stderr: Some(stderr_r), stdin: stdin_w, terminal };
    let child = ChildIo::Fds { stdin: stdin_r, stdout: stdout_w, stderr: stderr_w, terminal };
    Ok((PendingIo::Ready(shim), child))
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Creates the container process, stopped before exec (the shim calls it
/// at Start and releases it at once).
pub fn create(id: &str, bundle: &Path, spec: &Spec) -> Result<Spawned, String> {
    let (shim_io, child_io) = make_stdio(spec)?;
    let (start_r, start_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;

    // SAFETY: the shim is single-threaded (no runtime, no helper threads), so
    // the child may allocate and run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop((shim_io, start_w, status_r, pid_r));
            let mut status = File::from(status_w);
            // CVE-2019-5736: the init is visible in the container (to a pod
            // sharing its PID namespace) before it execs; see `sealed_exe`.
            if let Err(msg) = crate::sealed_exe::hide_while_joining() {
                let _ = status.write_all(format!("E{msg}").as_bytes());
                std::process::exit(1);
            }
            let result = intermediate(id, bundle, spec, &mut status, pid_w, start_r, child_io);
            if let Err(msg) = result {
                let _ = status.write_all(format!("E{msg}").as_bytes());
            }
            std::process::exit(1);
        }
        ForkResult::Parent { child } => {
            drop((child_io, start_r, status_w, pid_w));
            let _ = waitpid(child, None);
            let mut pid_bytes = [0u8; 4];
            let mut pid_file = File::from(pid_r);
            let got_pid = pid_file.read_exact(&mut pid_bytes).is_ok();
            let mut status = File::from(status_r);
            let mut first = [0u8; 1];
            let n = status.read(&mut first).map_err(|e| format!("reading container status: {e}"))?;
            if n == 1 && first[0] == b'R' && got_pid {
                let pid = Pid::from_raw(i32::from_be_bytes(pid_bytes));
                let io = match shim_io {
                    PendingIo::Ready(io) => Ok(io),
                    // Init sent the master before reporting ready.
                    PendingIo::Master { socket, want_stdin } => {
                        crate::pty::receive_fd(socket.as_fd()).and_then(|m| terminal_io(m, want_stdin))
                    }
                };
                return match io {
                    Ok(io) => Ok(Spawned { pid, start: start_w, status, io }),
                    Err(e) => {
                        // Init waits for the start byte: end it and reap it here.
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                        let _ = waitpid(pid, None);
                        Err(e)
                    }
                };
            }
            let mut msg = String::new();
            let _ = status.read_to_string(&mut msg);
            if got_pid {
                // The grandchild reported an error and exits: reap it here (the
                // shim's loop only records the exit of the pid it was given).
                let _ = waitpid(Pid::from_raw(i32::from_be_bytes(pid_bytes)), None);
            }
            Err(if msg.is_empty() { "container process died during setup".into() } else { msg })
        }
    }
}

/// In the intermediate child: namespaces, then fork the container's init.
fn intermediate(
    id: &str,
    bundle: &Path,
    spec: &Spec,
    status: &mut File,
    pid_w: OwnedFd,
    start_r: OwnedFd,
    io: ChildIo,
) -> Result<(), String> {
    let userns = enter_namespaces(spec)?;
    // SAFETY: still single-threaded (a fork of the single-threaded shim).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(pid_w);
            if let Err(msg) = init(id, bundle, spec, status, start_r, io, userns) {
                let _ = status.write_all(format!("E{msg}").as_bytes());
            }
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            let mut w = File::from(pid_w);
            w.write_all(&child.as_raw().to_be_bytes()).map_err(|e| format!("reporting pid: {e}"))?;
            std::process::exit(0);
        }
    }
}

fn ns_flag(t: LinuxNamespaceType) -> Result<CloneFlags, String> {
    Ok(match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        other => return Err(format!("namespace type {other} is not supported")),
    })
}

/// Joins the namespaces the spec names by path (a pod's), creates the others.
/// A user namespace to create comes first, so that the others belong to it;
/// one to join is returned open, for the init to join last (see `userns`).
fn enter_namespaces(spec: &Spec) -> Result<Option<File>, String> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    if namespaces.iter().any(|ns| ns.typ() == LinuxNamespaceType::User && ns.path().is_none()) {
        crate::userns::unshare_mapped(spec)?;
    }
    let mut pod_userns = None;
    let mut new = CloneFlags::empty();
    for ns in &namespaces {
        if ns.typ() == LinuxNamespaceType::User {
            if let Some(path) = ns.path() {
                let f = File::open(path).map_err(|e| format!("opening namespace {}: {e}", path.display()))?;
                pod_userns = Some(f);
            }
            continue;
        }
        let flag = ns_flag(ns.typ())?;
        match ns.path() {
            Some(path) => {
                let f = File::open(path).map_err(|e| format!("opening namespace {}: {e}", path.display()))?;
                setns(f.as_fd(), flag).map_err(|e| format!("joining namespace {}: {e}", path.display()))?;
            }
            None => new |= flag,
        }
    }
    unshare(new).map_err(|e| format!("unshare({new:?}): {e}"))?;
    Ok(pod_userns)
}

/// In the container's init: stdio, rootfs, hostname, the pod's user
/// namespace; wait for start; exec.
fn init(
    id: &str,
    bundle: &Path,
    spec: &Spec,
    status: &mut File,
    start_r: OwnedFd,
    io: ChildIo,
    userns: Option<File>,
) -> Result<(), String> {
    // The shim blocks SIGCHLD for its signalfd; the container must not inherit that.
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(|e| format!("sigprocmask: {e}"))?;
    restore_default_signals()?;
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let console = match io {
        ChildIo::Fds { stdin, stdout, stderr, terminal } => {
            take_stdio(stdin, stdout, stderr, terminal)?;
            None
        }
        ChildIo::ContainerPty(socket) => Some(socket),
    };

    let new_mount_ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|ns| ns.typ() == LinuxNamespaceType::Mount));
    // Without a mount namespace (a pod sandbox's pause process) the process
    // runs in the host's filesystem view and nothing is mounted.
    // Hooks see our pid as the host does: the host's /proc, read before
    // pivot_root, names it.
    let host_pid =
        || fs::read_link("/proc/self").ok().and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok())).unwrap_or(0);
    let hook_state = |status: &str, pid: u32| crate::hooks::state_json(id, status, pid, bundle, spec);
    let pid_for_hooks =
        if crate::hooks::any(spec, Point::CreateContainer) || crate::hooks::any(spec, Point::StartContainer) {
            host_pid()
        } else {
            0
        };
    let create_hooks = || crate::hooks::run(spec, Point::CreateContainer, &hook_state("created", pid_for_hooks));
    if new_mount_ns {
        crate::rootfs::setup_rootfs(bundle, spec, userns.as_ref(), &create_hooks)?;
    } else {
        create_hooks()?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        // As runc: without a UTS namespace of its own this would be the host's name.
        let own_uts = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|n| n.iter().any(|ns| ns.typ() == LinuxNamespaceType::Uts));
        if !own_uts {
            return Err(format!("hostname {h:?}: the container has no UTS namespace of its own"));
        }
        sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    // After pivot_root: /dev/ptmx is the container's devpts now, so the
    // slave is /dev/pts/N inside, as runc makes it.
    if let Some(socket) = console {
        let uid = spec.process().as_ref().map_or(0, |p| p.user().uid());
        // In a pod user namespace the slave goes to the host ID of that user.
        let maps = spec.linux().as_ref().and_then(|l| l.uid_mappings().clone());
        let uid = maps.map_or(Some(uid), |m| crate::userns::host_id(&m, uid)).unwrap_or(uid);
        let pty = crate::pty::open_in_root(uid)?;
        crate::pty::send_fd(socket.as_fd(), pty.master.as_fd())?;
        drop((socket, pty.master));
        let stdout = pty.slave.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        let stderr = pty.slave.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        take_stdio(Some(pty.slave), stdout, stderr, true)?;
    }
    // Last: from here on we are root in the pod's user namespace only.
    if let Some(ns) = userns {
        crate::userns::join(&ns)?;
    }

    status.write_all(b"R").map_err(|e| format!("reporting ready: {e}"))?;
    let mut byte = [0u8; 1];
    let mut start = File::from(start_r);
    if start.read(&mut byte).unwrap_or(0) == 0 {
        // The shim went away or deleted the container before starting it.
        std::process::exit(1);
    }
    crate::hooks::run(spec, Point::StartContainer, &hook_state("running", pid_for_hooks))?;

    close_inherited_fds_on_exec();
    crate::sealed_exe::dumpable_again()?;
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    apply_seccomp_and_privileges(spec, process)?;
    chdir(process.cwd()).map_err(|e| format!("chdir {}: {e}", process.cwd().display()))?;
    // As runc since CVE-2024-21626: a working directory reached through a
    // descriptor of the host's (`/proc/self/fd/N`) is outside our root,
    // which getcwd reports as unreachable (ENOENT): refused.
    if nix::unistd::getcwd().is_err() {
        return Err(format!("working directory {} is outside the container's root", process.cwd().display()));
    }

    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let arg0 = args.first().ok_or("the process has no args")?;
    let exe = find_executable(arg0, &env)?;
    let cargs = to_cstrings(&args)?;
    let cenv = to_cstrings(&env)?;
    let cexe = CString::new(exe.as_os_str().as_encoded_bytes()).map_err(|_| "NUL in executable path")?;
    let err = nix::unistd::execve(&cexe, &cargs, &cenv).err().map(|e| e.to_string()).unwrap_or_default();
    Err(format!("exec {arg0:?}: {err}"))
}

/// Makes these the process's stdio (/dev/null for a missing stdin) and a
/// terminal its controlling one (we are a session leader: setsid in init).
fn take_stdio(stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd, terminal: bool) -> Result<(), String> {
    let stdin: OwnedFd = match stdin {
        Some(fd) => fd,
        None => File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?.into(),
    };
    dup2(stdin.as_raw_fd(), 0).map_err(|e| format!("dup2 stdin: {e}"))?;
    dup2(stdout.as_raw_fd(), 1).map_err(|e| format!("dup2 stdout: {e}"))?;
    dup2(stderr.as_raw_fd(), 2).map_err(|e| format!("dup2 stderr: {e}"))?;
    drop((stdin, stdout, stderr));
    if terminal {
        // SAFETY: TIOCSCTTY takes an int and touches no memory of ours; we
        // are a session leader (setsid in init) and fd 0 is the pty slave.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(format!("setting the controlling terminal: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The seccomp filter and the process's privileges. With no_new_privs the
/// filter goes last (no privilege needed); without, it goes first, while we
/// still hold CAP_SYS_ADMIN, which installing it then requires (as runc).
pub(crate) fn apply_seccomp_and_privileges(spec: &Spec, process: &oci_spec::runtime::Process) -> Result<(), String> {
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let nnp = process.no_new_privileges().unwrap_or(false);
    if let (Some(profile), false) = (seccomp, nnp) {
        crate::seccomp::install(profile)?;
    }
    crate::privileges::apply(process)?;
    if let (Some(profile), true) = (seccomp, nnp) {
        crate::seccomp::install(profile)?;
    }
    Ok(())
}

/// Rust's runtime ignores SIGPIPE in the shim; an ignored signal stays
/// ignored across exec, and the container must get the default.
pub(crate) fn restore_default_signals() -> Result<(), String> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_DFL runs no handler code of ours.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map_err(|e| format!("resetting SIGPIPE: {e}"))?;
    Ok(())
}

/// The container gets stdio only: whatever else the shim (or whoever started
/// it) left open without close-on-exec is closed by the exec.
pub(crate) fn close_inherited_fds_on_exec() {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    for fd in fds.into_iter().filter(|fd| *fd > 2) {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
}

fn to_cstrings(v: &[String]) -> Result<Vec<CString>, String> {
    v.iter().map(|s| CString::new(s.as_bytes()).map_err(|_| format!("NUL byte in {s:?}"))).collect()
}

/// Looks `arg0` up in the container's `PATH` (from its env, not ours).
pub(crate) fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf, String> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        if let Ok(m) = fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!("executable {arg0:?} not found in PATH {path:?}"))
}
