//! `gantry-shim exec`: one more process inside a running container, for
//! CRI `ExecSync` and `Exec`. gantryd starts it with the process's stdio
//! (pipes; for a TTY exec a socket, see below); it joins the container's
//! cgroup and namespaces, forks (only a child lands in the PID namespace),
//! and the child takes the container's process settings (user,
//! capabilities, env, cwd) with the requested command. The parent waits
//! and exits with the child's code (128 + signal when killed), so gantryd
//! sees one ordinary process.
//!
//! If gantryd kills this process (an ExecSync timeout), the kernel kills the
//! command too: it has this process as parent-death signal target.
//!
//! Usage: gantry-shim exec --bundle DIR --pid PID [--tty] -- CMD [ARG...]
//! Failures before the command runs go to stderr with exit code 126 (or
//! 127 when the executable does not exist), as a shell reports them.
//!
//! With `--tty`, stdin is a unix socket instead: once in the container's
//! namespaces this process makes a pty from the container's devpts (see
//! `pty`), sends its master there (SCM_RIGHTS) and takes the slave as its
//! stdio, which the command inherits. Without a devpts of the container's
//! own the pty is the host's, made before joining the mount namespace.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::kill;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, dup2, fork, getppid, setsid, ForkResult, Pid};
use oci_spec::runtime::Spec;

/// Exit codes a shell uses for "cannot run" and "not found".
const CANNOT_RUN: i32 = 126;
const NOT_FOUND: i32 = 127;

struct Options {
    bundle: PathBuf,
    pid: i32,
    tty: bool,
    command: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let (mut bundle, mut pid, mut tty) = (None, None, false);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bundle" => bundle = it.next().cloned(),
            "--pid" => pid = it.next().and_then(|p| p.parse().ok()),
            "--tty" => tty = true,
            "--" => break,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let command: Vec<String> = it.cloned().collect();
    if command.is_empty() {
        return Err("no command given".into());
    }
    Ok(Options {
        bundle: bundle.ok_or("missing --bundle")?.into(),
        pid: pid.ok_or("missing or bad --pid")?,
        tty,
        command,
    })
}

pub fn run(args: &[String]) -> ! {
    let code = match parse(args).map_err(|e| (CANNOT_RUN, e)).and_then(|o| exec(&o)) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("gantry-shim exec: {msg}");
            code
        }
    };
    std::process::exit(code)
}

/// The namespaces an exec joins. Mount comes late: joining it changes our
/// root to the container's, after which the host's /proc is out of reach.
/// A pod's user namespace comes last, as the container's init joins it:
/// once in it, we hold no privilege over the others.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("user", CloneFlags::CLONE_NEWUSER),
];

fn exec(o: &Options) -> Result<i32, (i32, String)> {
    let fail = |e: String| (CANNOT_RUN, e);
    let spec_path = o.bundle.join("config.json");
    let spec = Spec::load(&spec_path).map_err(|e| fail(format!("loading {}: {e}", spec_path.display())))?;
    let mut process = spec.process().clone().ok_or_else(|| fail("the container's spec has no process".into()))?;
    process.set_args(Some(o.command.clone()));
    // CVE-2019-5736: nothing in the container may open our /proc/PID files
    // while we join it (our binary is a read-only copy besides).
    crate::sealed_exe::hide_while_joining().map_err(fail)?;

    crate::cgroup::join(&spec, std::process::id(), o.pid).map_err(fail)?;
    // The host's devpts is out of reach once in the container's mount namespace.
    let host_pty =
        if o.tty && !crate::pty::from_container(&spec) { Some(crate::pty::open_host().map_err(fail)?) } else { None };

    // Open every namespace first: /proc/PID is the host's only until we
    // join the mount namespace.
    let mut targets = vec![];
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{}/ns/{name}", o.pid);
        let ours = format!("/proc/self/ns/{name}");
        let (Ok(t), Ok(s)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            if name == "cgroup" {
                continue; // a kernel without cgroup namespaces
            }
            return Err(fail(format!("container process {} is gone", o.pid)));
        };
        if (t.dev(), t.ino()) == (s.dev(), s.ino()) {
            continue; // shared with the host (host network, host PID…)
        }
        let f = File::open(&theirs).map_err(|e| fail(format!("opening {theirs}: {e}")))?;
        targets.push((name, flag, f));
    }
    for (name, flag, f) in &targets {
        setns(f.as_fd(), *flag).map_err(|e| fail(format!("joining the container's {name} namespace: {e}")))?;
    }
    // Seen from inside a PID namespace we joined, our pid (the child's
    // parent) is outside it and reads as 0.
    let joined_pid_ns = targets.iter().any(|(name, ..)| *name == "pid");
    drop(targets);
    if o.tty {
        let pty = match host_pty {
            Some(pty) => pty,
            None => crate::pty::open_in_root(process.user().uid()).map_err(fail)?,
        };
        take_terminal(pty).map_err(fail)?;
    }
    let parent = if joined_pid_ns { Pid::from_raw(0) } else { Pid::this() };
    // SIGTERM (gantryd's deadline) and SIGCHLD are taken with sigwait below;
    // the child clears the mask before exec.
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGTERM);
    waited.add(Signal::SIGCHLD);
    waited.thread_block().map_err(|e| fail(format!("blocking signals: {e}")))?;
    // SAFETY: this process was exec'd fresh by gantryd and never starts a
    // thread, so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| fail(format!("fork: {e}")))? {
        ForkResult::Child => {
            let (code, msg) = match child(o, &spec, &process, parent) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            eprintln!("gantry-shim exec: {msg}");
            std::process::exit(code);
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(fail(format!("waiting for the command: {e}"))),
            }
            // SIGTERM: kill the command and exit only once it is dead, so
            // gantryd can answer "timed out" knowing it no longer runs.
            if let Ok(Signal::SIGTERM) = waited.wait() {
                let _ = kill(child, Signal::SIGKILL);
            }
        },
    }
}

/// Sends the master to gantryd (our stdin is its socket) and makes the
/// slave our stdio, for the command to inherit; from here on our own
/// errors show on the terminal too.
fn take_terminal(pty: crate::pty::Pty) -> Result<(), String> {
    crate::pty::send_fd(std::io::stdin().as_fd(), pty.master.as_fd())?;
    drop(pty.master);
    for fd in 0..=2 {
        dup2(pty.slave.as_raw_fd(), fd).map_err(|e| format!("dup2 the terminal to {fd}: {e}"))?;
    }
    Ok(())
}

fn child(
    o: &Options,
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    parent: Pid,
) -> Result<std::convert::Infallible, (i32, String)> {
    let fail = |e: String| (CANNOT_RUN, e);
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| fail(format!("sigprocmask: {e}")))?;
    crate::container::restore_default_signals().map_err(fail)?;
    setsid().map_err(|e| fail(format!("setsid: {e}")))?;
    if o.tty {
        // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(fail(format!("making stdin the controlling terminal: {}", std::io::Error::last_os_error())));
        }
    }
    crate::container::close_inherited_fds_on_exec();
    crate::sealed_exe::dumpable_again().map_err(fail)?;
    crate::container::apply_seccomp_and_privileges(spec, process).map_err(fail)?;
    chdir(process.cwd()).map_err(|e| fail(format!("chdir {}: {e}", process.cwd().display())))?;
    // CVE-2024-21626: never a working directory outside the container's root.
    if nix::unistd::getcwd().is_err() {
        return Err(fail(format!("working directory {} is outside the container's root", process.cwd().display())));
    }
    // Set after the user change, which clears it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| fail(format!("PR_SET_PDEATHSIG: {e}")))?;
    if getppid() != parent {
        return Err(fail("gantry-shim exec was killed before the command started".into()));
    }
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| fail("no command given".into()))?;
    let exe = crate::container::find_executable(arg0, &env).map_err(|e| (NOT_FOUND, e))?;
    let to_c = |v: &[String]| -> Result<Vec<CString>, (i32, String)> {
        v.iter().map(|s| CString::new(s.as_bytes()).map_err(|_| fail(format!("NUL byte in {s:?}")))).collect()
    };
    let (cargs, cenv) = (to_c(&args)?, to_c(&env)?);
    let cexe = CString::new(exe.as_os_str().as_encoded_bytes()).map_err(|_| fail("NUL in executable path".into()))?;
    let err = nix::unistd::execve(&cexe, &cargs, &cenv).err().map(|e| e.to_string()).unwrap_or_default();
    Err((if err.contains("ENOENT") { NOT_FOUND } else { CANNOT_RUN }, format!("exec {arg0:?}: {err}")))
}
