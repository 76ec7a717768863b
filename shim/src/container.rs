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
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::wait::waitpid;
use nix::unistd::{chdir, dup2, fork, pipe2, pivot_root, sethostname, setsid, ForkResult};
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Mount, Spec};

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
pub fn create(bundle: &Path, spec: &Spec) -> Result<Spawned, String> {
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
            let result = intermediate(bundle, spec, &mut status, pid_w, start_r, child_io);
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
            if let Err(msg) = init(bundle, spec, status, start_r, io, userns) {
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
    if new_mount_ns {
        setup_rootfs(bundle, spec, userns.as_ref())?;
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

    close_inherited_fds_on_exec();
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    apply_seccomp_and_privileges(spec, process)?;
    chdir(process.cwd()).map_err(|e| format!("chdir {}: {e}", process.cwd().display()))?;

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

fn setup_rootfs(bundle: &Path, spec: &Spec, userns: Option<&File>) -> Result<(), String> {
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
