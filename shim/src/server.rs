//! The shim's event loop: one `poll` over SIGCHLD (a signalfd), the API
//! socket, its connections and the container's stdout/stderr pipes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use gantry_proto::attach;
use gantry_proto::shim::{frame, request, response, Request, Response, State, Status, MAX_FRAME};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use prost::Message;

use crate::container;
use crate::log::{CriLog, LineBuffer};

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    waiting: bool,
}

struct Pipe {
    fd: OwnedFd,
    name: &'static str,
    pending: LineBuffer,
}

/// A client attached to the container's stdio (see `gantry_proto::attach`).
struct Attached {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// What `gantry-shim` was started for (its command line).
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The external OCI runtime that makes the container; none: the shim does.
    pub runtime: Option<crate::oci_runtime::OciRuntime>,
}

pub struct Shim {
    state: State,
    state_file: PathBuf,
    socket_path: PathBuf,
    log_path: PathBuf,
    signals: SignalFd,
    listener: UnixListener,
    conns: Vec<Conn>,
    pipes: Vec<Pipe>,
    log: CriLog,
    bundle: PathBuf,
    /// The container's spec until Start makes its process from it.
    spec: Option<Spec>,
    /// The spec again when it has OCI hooks (the built-in handler runs
    /// the post-start and post-stop ones after `spec` is consumed).
    hook_spec: Option<Box<Spec>>,
    shutdown: bool,
    cgroup: Option<crate::cgroup::ContainerCgroup>,
    attach_listener: UnixListener,
    attach_path: PathBuf,
    attached: Vec<Attached>,
    /// The container's stdin (a pipe, or the pty master), if it has one.
    stdin: Option<OwnedFd>,
    stdin_once: bool,
    /// The pty master, for resizing, when the container has a terminal.
    terminal: Option<OwnedFd>,
    /// The container joins a PID namespace (or the host's) rather than owning one.
    shares_pid_ns: bool,
    /// The external OCI runtime that made the container, if one did.
    runtime: Option<crate::oci_runtime::OciRuntime>,
    /// A process made by a `prepare` Start and not let run yet: its start
    /// pipe and exec status pipe.
    held: Option<(OwnedFd, File)>,
    /// inotify on the cgroup2 `memory.events`, from Start on: an OOM kill
    /// is seen when it happens.
    oom_watch: Option<Inotify>,
    oom_seen: bool,
    /// A systemd scope's nearest ancestor's `memory.events` and its OOM
    /// kills when the watch started: more at a SIGKILL exit, with the
    /// scope's cgroup already gone, were this container's.
    oom_baseline: Option<(PathBuf, u64)>,
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

/// Writes all of `data` to a blocking fd (the container's stdin); false
/// once the reader is gone.
fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Writes the state durably: temp file, fsync, rename, fsync the directory.
fn persist(path: &Path, state: &State) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(".state.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&state.encode_to_vec())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The OCI resources an update names (zero fields are left alone).
fn update_resources(u: &gantry_proto::shim::UpdateRequest) -> Result<oci_spec::runtime::LinuxResources, String> {
    let mut memory = serde_json::Map::new();
    if u.memory_limit > 0 {
        memory.insert("limit".into(), u.memory_limit.into());
    }
    if u.memory_swap > 0 {
        memory.insert("swap".into(), u.memory_swap.into());
    }
    let mut cpu = serde_json::Map::new();
    if u.cpu_shares > 0 {
        cpu.insert("shares".into(), u.cpu_shares.into());
    }
    if u.cpu_quota != 0 {
        cpu.insert("quota".into(), u.cpu_quota.into());
    }
    if u.cpu_period > 0 {
        cpu.insert("period".into(), u.cpu_period.into());
    }
    if !u.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), u.cpuset_cpus.clone().into());
    }
    if !u.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), u.cpuset_mems.clone().into());
    }
    let hugepages: Vec<serde_json::Value> =
        u.hugepage_limits.iter().map(|h| serde_json::json!({"pageSize": h.page_size, "limit": h.limit})).collect();
    let mut value = serde_json::json!({"memory": memory, "cpu": cpu, "hugepageLimits": hugepages});
    if !u.unified.is_empty() {
        value["unified"] = serde_json::json!(u.unified);
    }
    serde_json::from_value(value).map_err(|e| format!("resources: {e}"))
}

impl Shim {
    pub fn create(args: &Args) -> Result<Shim, String> {
        // SIGCHLD is read from a signalfd, so it must not be delivered normally.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(|e| format!("blocking SIGCHLD: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;
        // Orphans of the container (its init's double-forked children) come to us.
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;

        let spec_path = args.bundle.join("config.json");
        let spec = Spec::load(&spec_path).map_err(|e| format!("loading {}: {e}", spec_path.display()))?;
        // Refused before anything is made: a sysctl must not reach the host.
        crate::sysctl::check(&spec)?;
        crate::sysctl::check_not_hosts(&spec)?;
        if let Some(dir) = args.log.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("creating log directory {}: {e}", dir.display()))?;
        }
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&args.log)
            .map_err(|e| format!("opening log {}: {e}", args.log.display()))?;
        let _ = fs::remove_file(&args.socket);
        let listener =
            UnixListener::bind(&args.socket).map_err(|e| format!("binding {}: {e}", args.socket.display()))?;
        let attach_path = args.socket.with_extension("attach");
        let _ = fs::remove_file(&attach_path);
        let attach_listener =
            UnixListener::bind(&attach_path).map_err(|e| format!("binding {}: {e}", attach_path.display()))?;
        let stdin_once = container::annotation(&spec, container::STDIN_ONCE_ANNOTATION);
        let shares_pid_ns = !spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).is_some_and(|ns| {
            ns.iter().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none())
        });

        // The cgroup exists from create on (stats and updates of a created
        // container work); the process is only made at Start, as runc does.
        let cgroup = crate::cgroup::ContainerCgroup::create(&spec)?;
        let state = State {
            id: args.id.clone(),
            status: Status::Created as i32,
            pid: 0,
            created_at: now_nanos(),
            ..Default::default()
        };
        let state_file = args.bundle.join("state.pb");
        if let Err(e) = persist(&state_file, &state) {
            if let Some(cg) = &cgroup {
                cg.delete();
            }
            return Err(format!("writing {}: {e}", state_file.display()));
        }
        let mut shim = Shim {
            state,
            state_file,
            socket_path: args.socket.clone(),
            log_path: args.log.clone(),
            signals,
            listener,
            conns: Vec::new(),
            pipes: Vec::new(),
            log: CriLog::new(log_file),
            bundle: args.bundle.clone(),
            hook_spec: if args.runtime.is_none() && spec.hooks().is_some() {
                Some(Box::new(spec.clone()))
            } else {
                None
            },
            spec: Some(spec),
            shutdown: false,
            cgroup,
            attach_listener,
            attach_path,
            attached: Vec::new(),
            stdin: None,
            stdin_once,
            terminal: None,
            shares_pid_ns,
            runtime: args.runtime.clone(),
            held: None,
            oom_watch: None,
            oom_seen: false,
            oom_baseline: None,
        };
        if let Err(e) = shim.create_with_runtime(&args.socket.with_extension("console")) {
            if let Some(cg) = shim.cgroup.take() {
                cg.delete();
            }
            let _ = fs::remove_file(&shim.attach_path);
            let _ = fs::remove_file(&shim.socket_path);
            return Err(e);
        }
        Ok(shim)
    }

    /// With an external runtime, the container (its namespaces, rootfs and
    /// waiting init) is made now, as containerd's runc shim does at create:
    /// a runtime that fails fails CreateContainer.
    fn create_with_runtime(&mut self, console_socket: &Path) -> Result<(), String> {
        let Some(runtime) = self.runtime.clone() else { return Ok(()) };
        let Some(spec) = self.spec.take() else { return Ok(()) };
        let created = runtime.create(&self.state.id, &self.bundle, &spec, console_socket);
        let _ = fs::remove_file(console_socket);
        let created = created?;
        let pid = Pid::from_raw(created.pid as i32);
        // The init is the runtime's child until the runtime exits; ours as
        // a subreaper after. It joins the cgroup the shim made, before it
        // runs anything: the runtime may have been told to leave cgroups
        // alone (crun's `--cgroup-manager=disabled` on a hybrid host).
        let placed = match self.cgroup.as_mut() {
            // A systemd scope the runtime made itself: its limits are ours to write too.
            Some(cg) if cg.is_systemd() => cg.activate(),
            Some(cg) => cg.add(created.pid),
            None => Ok(()),
        };
        if let Err(e) = placed.and_then(|()| self.take_io(created.io)) {
            runtime.delete(&self.state.id);
            let _ = kill(pid, Signal::SIGKILL);
            return Err(e);
        }
        self.state.pid = created.pid;
        self.watch_oom();
        self.save();
        Ok(())
    }

    /// The container's stdio, read from the poll loop (into the log and to
    /// attached clients).
    fn take_io(&mut self, io: container::ShimIo) -> Result<(), String> {
        for fd in std::iter::once(&io.stdout).chain(io.stderr.as_ref()) {
            set_nonblocking(fd).map_err(|e| format!("O_NONBLOCK: {e}"))?;
        }
        if io.terminal {
            self.terminal = Some(io.stdout.try_clone().map_err(|e| format!("dup pty: {e}"))?);
        }
        self.pipes.push(Pipe { fd: io.stdout, name: "stdout", pending: LineBuffer::default() });
        if let Some(fd) = io.stderr {
            self.pipes.push(Pipe { fd, name: "stderr", pending: LineBuffer::default() });
        }
        self.stdin = io.stdin;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.state.pid
    }

    fn save(&self) {
        if let Err(e) = persist(&self.state_file, &self.state) {
            eprintln!("gantry-shim {}: writing state: {e}", self.state.id);
        }
    }

    pub fn serve(&mut self) {
        while !self.shutdown {
            // Readiness is collected first (the PollFds borrow our fds), handled after.
            let (sig_ready, accept_ready, attach_ready, oom_ready, pipes_ready, conns_ready, attached_ready) = {
                let mut fds = vec![
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.attach_listener.as_fd(), PollFlags::POLLIN),
                ];
                // Always a fourth entry (an idle one without a watch), so the
                // indices below stay fixed.
                match &self.oom_watch {
                    Some(w) => fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN)),
                    None => fds.push(PollFd::new(self.signals.as_fd(), PollFlags::empty())),
                }
                fds.extend(self.pipes.iter().map(|p| PollFd::new(p.fd.as_fd(), PollFlags::POLLIN)));
                fds.extend(self.conns.iter().map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)));
                fds.extend(self.attached.iter().map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)));
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => {
                        eprintln!("gantry-shim: poll: {e}");
                        return;
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let (n_pipes, n_conns) = (self.pipes.len(), self.conns.len());
                let conns_at = 4 + n_pipes;
                (
                    ready(&fds[0]),
                    ready(&fds[1]),
                    ready(&fds[2]),
                    self.oom_watch.is_some() && ready(&fds[3]),
                    fds[4..conns_at].iter().map(ready).collect::<Vec<_>>(),
                    fds[conns_at..conns_at + n_conns].iter().map(ready).collect::<Vec<_>>(),
                    fds[conns_at + n_conns..].iter().map(ready).collect::<Vec<_>>(),
                )
            };
            for (i, r) in pipes_ready.iter().enumerate().rev() {
                if *r {
                    self.drain_pipe(i);
                }
            }
            if oom_ready {
                self.read_oom_watch();
            }
            if sig_ready {
                self.reap();
            }
            if accept_ready {
                if let Ok((stream, _)) = self.listener.accept() {
                    self.conns.push(Conn { stream, buf: Vec::new(), waiting: false });
                }
            }
            for (i, r) in conns_ready.iter().enumerate().rev() {
                if *r {
                    self.read_conn(i);
                }
            }
            if attach_ready {
                if let Ok((stream, _)) = self.attach_listener.accept() {
                    self.attach(stream);
                }
            }
            for (i, r) in attached_ready.iter().enumerate().rev() {
                if *r {
                    self.read_attached(i);
                }
            }
        }
        let _ = fs::remove_file(&self.attach_path);
        if let Some(cg) = &self.cgroup {
            cg.delete();
        }
        let _ = fs::remove_file(&self.socket_path);
    }

    /// Reads what a pipe has into the log; at EOF, flushes and drops it.
    fn drain_pipe(&mut self, i: usize) {
        let mut buf = [0u8; 8192];
        loop {
            let pipe = &mut self.pipes[i];
            match nix::unistd::read(pipe.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    let _ = self.log.finish(pipe.name, &mut pipe.pending);
                    self.pipes.remove(i);
                    return;
                }
                Ok(n) => {
                    if let Err(e) = self.log.feed(pipe.name, &mut pipe.pending, &buf[..n]) {
                        eprintln!("gantry-shim: writing log: {e}");
                    }
                    let kind = if pipe.name == "stderr" { attach::STDERR } else { attach::STDOUT };
                    self.broadcast(&attach::frame(kind, &buf[..n]));
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return, // nothing more for now
                Err(_) => {
                    // A pty master reads EIO once the container's side is closed: its EOF.
                    let _ = self.log.finish(pipe.name, &mut pipe.pending);
                    self.pipes.remove(i);
                    return;
                }
            }
        }
    }

    /// Output to every attached client. One that cannot take it now is
    /// dropped rather than stall the container's output and the log.
    fn broadcast(&mut self, bytes: &[u8]) {
        self.attached.retain_mut(|a| matches!(a.stream.write(bytes), Ok(n) if n == bytes.len()));
    }

    fn attach(&mut self, stream: UnixStream) {
        if self.state.status == Status::Stopped as i32 {
            let mut stream = stream;
            let _ = stream.write_all(&attach::frame(attach::EXITED, &[]));
            return;
        }
        // Non-blocking writes; big enough a buffer to take a burst of output.
        if stream.set_nonblocking(true).is_ok() {
            let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &(1 << 20));
            self.attached.push(Attached { stream, buf: Vec::new() });
        }
    }

    fn read_attached(&mut self, i: usize) {
        let mut buf = [0u8; 8192];
        let n = match self.attached[i].stream.read(&mut buf) {
            Ok(0) => {
                self.detached(i);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.detached(i);
                return;
            }
        };
        self.attached[i].buf.extend_from_slice(&buf[..n]);
        while let Some((kind, payload)) = attach::take_frame(&mut self.attached[i].buf) {
            match kind {
                attach::STDIN => {
                    let Some(fd) = &self.stdin else { continue };
                    if !write_all_fd(fd, &payload) {
                        self.stdin = None;
                    }
                }
                // The client's stdin ended: with stdin_once the container's does too.
                attach::CLOSE_STDIN if self.stdin_once && self.terminal.is_none() => self.stdin = None,
                attach::RESIZE if payload.len() == 4 => {
                    if let Some(master) = &self.terminal {
                        let size = libc::winsize {
                            ws_col: u16::from_be_bytes([payload[0], payload[1]]),
                            ws_row: u16::from_be_bytes([payload[2], payload[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
                        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
                    }
                }
                _ => {}
            }
        }
        if self.attached[i].buf.len() > attach::MAX_PAYLOAD + 5 {
            self.detached(i);
        }
    }

    fn detached(&mut self, i: usize) {
        self.attached.remove(i);
        // CRI stdin_once: the container's stdin closes when its first client leaves.
        if self.stdin_once && self.terminal.is_none() {
            self.stdin = None;
        }
    }

    fn reap(&mut self) {
        while self.signals.read_signal().ok().flatten().is_some() {}
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid, code, 0),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.exited(pid, 128 + sig as i32, sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn exited(&mut self, pid: Pid, code: i32, signal: i32) {
        if pid.as_raw() as u32 != self.state.pid || self.state.status == Status::Stopped as i32 {
            return;
        }
        // Log what the process wrote before it died, then record the exit.
        for i in (0..self.pipes.len()).rev() {
            self.drain_pipe(i);
        }
        self.state.status = Status::Stopped as i32;
        self.state.exit_code = code;
        self.state.exit_signal = signal;
        self.state.finished_at = now_nanos();
        self.read_oom_watch();
        self.state.oom_killed = self.oom_seen || self.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        if !self.state.oom_killed && signal == Signal::SIGKILL as i32 {
            self.state.oom_killed = self.oom_killed_in_vanished_scope();
        }
        self.oom_watch = None;
        // Without a PID namespace of its own (the pod's or the host's), the
        // container's other processes outlive its init: end them with it,
        // as runc does for such containers.
        if self.shares_pid_ns {
            if let Some(cg) = &self.cgroup {
                cg.kill_all();
            }
        }
        self.announce_stop();
    }

    /// Watches the cgroup's `memory.events` (cgroup v2) from now on.
    fn watch_oom(&mut self) {
        let Some(file) = self.cgroup.as_ref().and_then(|c| c.memory_events()) else { return };
        let Ok(inotify) = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) else { return };
        if inotify.add_watch(&file, AddWatchFlags::IN_MODIFY).is_ok() {
            // A systemd scope: the ancestor's count too, so that its kills
            // elsewhere (siblings) move the baseline on (`read_oom_watch`).
            if let Some((ancestor, _)) = self.cgroup.as_ref().and_then(|c| c.ancestor_oom_kills()) {
                let _ = inotify.add_watch(&ancestor, AddWatchFlags::IN_MODIFY);
            }
            self.oom_watch = Some(inotify);
            self.read_oom_watch();
        }
    }

    /// A SIGKILLed process whose systemd scope's cgroup is gone already:
    /// whether the OOM killer struck, by the count of its nearest ancestor
    /// (the pod slice) since the watch started.
    fn oom_killed_in_vanished_scope(&self) -> bool {
        let (Some(cg), Some((file, before))) = (&self.cgroup, &self.oom_baseline) else { return false };
        let own = cg.memory_events().is_some_and(|f| f.exists());
        let now = std::fs::read_to_string(file).map(|s| crate::cgroup::oom_kills(&s)).unwrap_or(0);
        !own && now > *before
    }

    /// Drains the watch's events and records an OOM kill the file shows.
    fn read_oom_watch(&mut self) {
        let Some(w) = &self.oom_watch else { return };
        while matches!(w.read_events(), Ok(events) if !events.is_empty()) {}
        let Some(cg) = self.cgroup.as_ref().filter(|_| !self.oom_seen) else { return };
        // The ancestor's count first: a kill of ours after it counts as new.
        let ancestor = cg.ancestor_oom_kills();
        if cg.oom_killed() {
            self.oom_seen = true;
        } else if cg.memory_events().is_some_and(|f| f.exists()) {
            // Still there without a kill: the ancestor's kills so far were others'.
            self.oom_baseline = ancestor;
        }
    }

    fn read_conn(&mut self, i: usize) {
        let mut buf = [0u8; 4096];
        let n = match self.conns[i].stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.conns.remove(i);
                return;
            }
            Ok(n) => n,
        };
        self.conns[i].buf.extend_from_slice(&buf[..n]);
        loop {
            let conn = &mut self.conns[i];
            if conn.buf.len() < 4 {
                return;
            }
            let len = u32::from_be_bytes([conn.buf[0], conn.buf[1], conn.buf[2], conn.buf[3]]) as usize;
            if len > MAX_FRAME {
                self.conns.remove(i);
                return;
            }
            if conn.buf.len() < 4 + len {
                return;
            }
            let body: Vec<u8> = conn.buf.drain(..4 + len).skip(4).collect();
            let reply = match Request::decode(body.as_slice()) {
                Ok(req) => self.handle(i, req),
                Err(e) => Some(Response { kind: Some(response::Kind::Error(format!("bad request: {e}"))) }),
            };
            if let Some(reply) = reply {
                if self.conns[i].stream.write_all(&frame(&reply)).is_err() {
                    self.conns.remove(i);
                    return;
                }
            }
        }
    }

    fn state_reply(&self) -> Option<Response> {
        Some(Response { kind: Some(response::Kind::State(self.state.clone())) })
    }

    fn error_reply(msg: String) -> Option<Response> {
        Some(Response { kind: Some(response::Kind::Error(msg)) })
    }

    /// Answers a request; `None` when the answer comes later (Wait).
    fn handle(&mut self, conn: usize, req: Request) -> Option<Response> {
        match req.kind {
            Some(request::Kind::State(_)) => self.state_reply(),
            Some(request::Kind::Start(r)) => self.start(r.prepare),
            Some(request::Kind::Kill(k)) => {
                if self.state.status != Status::Stopped as i32 {
                    let sig = match Signal::try_from(k.signal) {
                        Ok(s) => s,
                        Err(_) => return Self::error_reply(format!("invalid signal {}", k.signal)),
                    };
                    if self.state.pid == 0 {
                        // Created, never started: there is no process to
                        // signal. The container will not run any more; it
                        // ends as runc's waiting init would, by the signal.
                        self.stopped_before_start(sig);
                        return self.state_reply();
                    }
                    if let Err(e) = kill(Pid::from_raw(self.state.pid as i32), sig) {
                        if e != nix::Error::ESRCH {
                            return Self::error_reply(format!("kill {}: {e}", self.state.pid));
                        }
                    }
                }
                self.state_reply()
            }
            Some(request::Kind::Wait(_)) => {
                if self.state.status == Status::Stopped as i32 {
                    self.state_reply()
                } else {
                    self.conns[conn].waiting = true;
                    None
                }
            }
            Some(request::Kind::Shutdown(_)) => {
                if self.state.status != Status::Stopped as i32 {
                    return Self::error_reply(format!("container {} is still running", self.state.id));
                }
                self.shutdown = true;
                if let Some(runtime) = &self.runtime {
                    runtime.delete(&self.state.id);
                }
                if let Some(spec) = &self.hook_spec {
                    let state = crate::hooks::state_json(&self.state.id, "stopped", 0, &self.bundle, spec);
                    crate::hooks::run_logged(spec, crate::hooks::Point::Poststop, &state);
                }
                // Before the reply: once Remove returns, the cgroup is gone
                // (kubelet then removes the pod's parent cgroup).
                if let Some(cg) = self.cgroup.take() {
                    cg.delete();
                }
                self.state_reply()
            }
            Some(request::Kind::ReopenLog(_)) => {
                // kubelet renamed the file; new lines go to a new one at the path.
                match File::options().create(true).append(true).open(&self.log_path) {
                    Ok(f) => {
                        self.log = CriLog::new(f);
                        self.state_reply()
                    }
                    Err(e) => Self::error_reply(format!("reopening log {}: {e}", self.log_path.display())),
                }
            }
            Some(request::Kind::Update(u)) => match &self.cgroup {
                None => Self::error_reply(format!("container {} has no cgroup", self.state.id)),
                Some(cg) => match update_resources(&u).and_then(|r| cg.apply(&r)) {
                    Ok(()) => self.state_reply(),
                    Err(e) => Self::error_reply(e),
                },
            },
            None => Self::error_reply("empty request".into()),
        }
    }

    /// The container is Stopped: the state goes to disk, attached clients get
    /// everything written so far and then the end, waiters their answer.
    fn announce_stop(&mut self) {
        self.save();
        self.broadcast(&attach::frame(attach::EXITED, &[]));
        self.attached.clear();
        let state = self.state.clone();
        for c in self.conns.iter_mut().filter(|c| c.waiting) {
            c.waiting = false;
            let _ = c.stream.write_all(&frame(&Response { kind: Some(response::Kind::State(state.clone())) }));
        }
    }

    /// A Kill before Start: the container is over without having run.
    fn stopped_before_start(&mut self, sig: Signal) {
        // Signals whose default action is to ignore them would not have
        // ended a waiting process either.
        if matches!(sig, Signal::SIGCHLD | Signal::SIGCONT | Signal::SIGURG | Signal::SIGWINCH) {
            return;
        }
        self.spec = None;
        self.state.status = Status::Stopped as i32;
        self.state.exit_code = 128 + sig as i32;
        self.state.exit_signal = sig as i32;
        self.state.finished_at = now_nanos();
        self.announce_stop();
    }

    /// Start could not make the container's process: it ends here, with
    /// the error recorded (exit code 128, as containerd's StartError).
    fn failed_to_start(&mut self, msg: String) -> Option<Response> {
        self.state.error = msg.clone();
        self.state.status = Status::Stopped as i32;
        self.state.exit_code = 128;
        self.state.started_at = now_nanos();
        self.state.finished_at = self.state.started_at;
        self.announce_stop();
        Self::error_reply(msg)
    }

    /// `start` through the external runtime: its init execs the process.
    fn start_with_runtime(&mut self, runtime: &crate::oci_runtime::OciRuntime) -> Option<Response> {
        if let Err(e) = runtime.start(&self.state.id, &self.bundle) {
            // It will not run: its waiting init goes, the exit is the start error's.
            let _ = kill(Pid::from_raw(self.state.pid as i32), Signal::SIGKILL);
            return self.failed_to_start(e);
        }
        self.state.started_at = now_nanos();
        if self.state.status == Status::Created as i32 {
            self.state.status = Status::Running as i32;
        }
        self.save();
        self.state_reply()
    }

    /// Makes the container's process (namespaces, rootfs; see
    /// `container::create`), in its cgroup, and takes its stdio.
    /// Makes the process, held before exec: its start pipe and status pipe.
    fn spawn(&mut self, spec: &Spec) -> Result<(OwnedFd, File), String> {
        let spawned = container::create(&self.state.id, &self.bundle, spec)?;
        // The process waits for the start byte: in its cgroup before it runs
        // anything (under systemd, gantryd has systemd put it in its scope).
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.add(spawned.pid.as_raw() as u32) {
                let _ = kill(spawned.pid, Signal::SIGKILL);
                let _ = waitpid(spawned.pid, None);
                return Err(e);
            }
        }
        if let Err(e) = self.take_io(spawned.io) {
            let _ = kill(spawned.pid, Signal::SIGKILL);
            let _ = waitpid(spawned.pid, None);
            return Err(e);
        }
        let pid = spawned.pid.as_raw() as u32;
        let state = crate::hooks::state_json(&self.state.id, "created", pid, &self.bundle, spec);
        let runtime_hooks = crate::hooks::run(spec, crate::hooks::Point::Prestart, &state)
            .and_then(|()| crate::hooks::run(spec, crate::hooks::Point::CreateRuntime, &state));
        if let Err(e) = runtime_hooks {
            let _ = kill(spawned.pid, Signal::SIGKILL);
            let _ = waitpid(spawned.pid, None);
            return Err(e);
        }
        // From here on SIGCHLD for this pid is the container's exit.
        self.state.pid = pid;
        Ok((spawned.start, spawned.status))
    }

    /// Start: makes the process (unless `prepare` did), then lets it run.
    /// With `prepare`, stops after making it and answers its pid.
    fn start(&mut self, prepare: bool) -> Option<Response> {
        if self.state.status != Status::Created as i32 {
            let status = Status::try_from(self.state.status).unwrap_or(Status::Unknown);
            return Self::error_reply(format!("container {} is {}, not created", self.state.id, status.as_str_name()));
        }
        if let Some(runtime) = self.runtime.clone() {
            // The runtime's init has existed since create.
            return if prepare { self.state_reply() } else { self.start_with_runtime(&runtime) };
        }
        if self.held.is_none() {
            let Some(spec) = self.spec.take() else {
                return Self::error_reply("container already started".into());
            };
            let result = self.spawn(&spec);
            drop(spec);
            match result {
                Ok(held) => self.held = Some(held),
                Err(e) if self.state.pid == 0 => return self.failed_to_start(e),
                Err(e) => {
                    self.state.started_at = now_nanos();
                    self.state.error = e.clone();
                    self.save();
                    return Self::error_reply(e);
                }
            }
        }
        if prepare {
            return self.state_reply();
        }
        let Some((start, mut exec_status)) = self.held.take() else {
            return Self::error_reply("container already started".into());
        };
        // Its cgroup exists now in any case (a systemd scope is made between
        // prepare and start): the spec's limits go in before it runs.
        if let Some(Err(e)) = self.cgroup.as_mut().map(|cg| cg.activate()) {
            let _ = kill(Pid::from_raw(self.state.pid as i32), Signal::SIGKILL);
            return self.failed_to_start(e);
        }
        self.watch_oom();
        if let Err(e) = File::from(start).write_all(b"s") {
            // Its end of the start pipe is gone: it died; the reaper records how.
            let e = format!("starting container: {e}");
            self.state.started_at = now_nanos();
            self.state.error = e.clone();
            self.save();
            return Self::error_reply(e);
        }
        // EOF: the pipe was closed by a successful exec. Data: why it failed.
        let mut msg = String::new();
        let _ = exec_status.read_to_string(&mut msg);
        self.state.started_at = now_nanos();
        if let Some(err) = msg.strip_prefix('E') {
            // The process exits after reporting; the reaper records its exit.
            self.state.error = err.to_string();
            self.save();
            return Self::error_reply(err.to_string());
        }
        if self.state.status == Status::Created as i32 {
            self.state.status = Status::Running as i32;
        }
        self.save();
        if let Some(spec) = &self.hook_spec {
            let state = crate::hooks::state_json(&self.state.id, "running", self.state.pid, &self.bundle, spec);
            crate::hooks::run_logged(spec, crate::hooks::Point::Poststart, &state);
        }
        self.state_reply()
    }
}
