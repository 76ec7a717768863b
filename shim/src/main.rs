//! gantry-shim: one per container. Runs the container from an OCI bundle,
//! holds its stdio (written to the CRI log file) and its exit status, and
//! answers gantryd on a unix socket. Single-threaded by design: it is
//! resident once per container on every node, so it must stay tiny.
//!
//! Usage: gantry-shim --id ID --bundle DIR --socket PATH --log FILE
//!          [--runtime BINARY --runtime-root DIR [--runtime-option OPT]…]
//!          (an external OCI runtime makes the container, see `oci_runtime`)
//!        gantry-shim pause   (a pod sandbox's process, see `pause`)
//!        gantry-shim exec …  (one more process in a container, see `exec`)
//!        gantry-shim port-forward …  (a connection into a pod, see `portforward`)
//!        gantry-shim mount-rootfs …  (an ID-mapped rootfs, see `userns`)
//!
//! It detaches at once (own session, re-parented to init or the nearest
//! subreaper) and prints one line on stdout before the launching process
//! exits: `ready CONTAINER_PID SHIM_PID` or `error: MESSAGE`. CONTAINER_PID
//! is 0: the container's process is only made at `Start` (as runc does).

mod cgroup;
mod cgroup_mounts;
mod container;
mod device_filter;
mod exec;
mod hooks;
mod hugetlb;
mod in_root;
mod log;
mod mount_api;
mod oci_runtime;
mod pause;
mod portforward;
mod privileges;
mod pty;
mod rootfs;
mod sealed_exe;
mod seccomp;
// Shared with gantryd, which uses only `known`.
mod server;
#[allow(dead_code)]
mod syscall_table;
mod sysctl;
mod userns;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;

use server::Args;

use nix::fcntl::OFlag;
use nix::unistd::{dup2, fork, pipe2, setsid, ForkResult};

fn parse_args() -> Result<Args, String> {
    let mut id = None;
    let mut bundle = None;
    let mut socket = None;
    let mut log = None;
    let mut runtime = None;
    let mut runtime_root = None;
    let mut runtime_options = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--id" => &mut id,
            "--bundle" => &mut bundle,
            "--socket" => &mut socket,
            "--log" => &mut log,
            "--runtime" => &mut runtime,
            "--runtime-root" => &mut runtime_root,
            "--runtime-option" => {
                runtime_options.push(it.next().ok_or_else(|| format!("{flag} needs a value"))?);
                continue;
            }
            "--version" => {
                println!("gantry-shim {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        };
        *slot = Some(it.next().ok_or_else(|| format!("{flag} needs a value"))?);
    }
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("missing {name}"));
    let runtime = match (runtime, runtime_root) {
        (Some(binary), Some(root)) => {
            Some(oci_runtime::OciRuntime { binary: binary.into(), root: root.into(), options: runtime_options })
        }
        (None, None) if runtime_options.is_empty() => None,
        _ => return Err("--runtime and --runtime-root go together".into()),
    };
    Ok(Args {
        runtime,
        id: need(id, "--id")?,
        bundle: need(bundle, "--bundle")?.into(),
        socket: need(socket, "--socket")?.into(),
        log: need(log, "--log")?.into(),
    })
}

fn main() {
    let sub = std::env::args().nth(1);
    // CVE-2019-5736: whatever runs in (or execs into) a container runs from
    // a read-only copy of this binary (see `sealed_exe`). The pause process
    // is exec'd from that copy already; mount-rootfs and port-forward never
    // enter a container's PID namespace, where its processes could name them.
    if !matches!(sub.as_deref(), Some("mount-rootfs" | "port-forward" | "--version")) {
        if let Err(e) = sealed_exe::ensure() {
            let msg = format!("cannot run from a read-only copy of gantry-shim: {e}");
            match sub.as_deref() {
                Some("exec") => eprintln!("gantry-shim exec: {msg}"),
                Some("pause") => eprintln!("gantry-shim pause: {msg}"),
                _ => println!("error: {msg}"),
            }
            std::process::exit(if sub.as_deref() == Some("exec") { 126 } else { 1 });
        }
    }
    if sub.as_deref() == Some("pause") {
        pause::run();
    }
    if std::env::args().nth(1).as_deref() == Some("exec") {
        let rest: Vec<String> = std::env::args().skip(2).collect();
        exec::run(&rest);
    }
    if std::env::args().nth(1).as_deref() == Some("mount-rootfs") {
        let rest: Vec<String> = std::env::args().skip(2).collect();
        userns::run_mount_rootfs(&rest);
    }
    if std::env::args().nth(1).as_deref() == Some("port-forward") {
        let rest: Vec<String> = std::env::args().skip(2).collect();
        portforward::run(&rest);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gantry-shim: {e}\nusage: gantry-shim --id ID --bundle DIR --socket PATH --log FILE");
            std::process::exit(2);
        }
    };
    let (ready_r, ready_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            println!("error: pipe: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: nothing has started a thread yet; the shim never does.
    match unsafe { fork() } {
        Err(e) => {
            println!("error: fork: {e}");
            std::process::exit(1);
        }
        Ok(ForkResult::Parent { .. }) => {
            // Relay the detached child's first word, then leave it to init.
            drop(ready_w);
            // One line: `ready …` or `error: …`.
            let mut msg = String::new();
            let _ = BufReader::new(File::from(ready_r)).read_line(&mut msg);
            if msg.is_empty() {
                msg = "error: shim died during start-up\n".into();
            }
            print!("{msg}");
            std::process::exit(if msg.starts_with("ready") { 0 } else { 1 });
        }
        Ok(ForkResult::Child) => {
            drop(ready_r);
            let mut ready = File::from(ready_w);
            let _ = setsid();
            // Create's notes (e.g. a controller enabled) go to the shim log.
            log_stderr(&args);
            match server::Shim::create(&args) {
                Ok(mut shim) => {
                    let _ = writeln!(ready, "ready {} {}", shim.pid(), std::process::id());
                    drop(ready);
                    detach_stdio();
                    shim.serve();
                    std::process::exit(0);
                }
                Err(e) => {
                    let _ = writeln!(ready, "error: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// stdin/stdout to /dev/null (stderr already goes to the shim log).
fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = dup2(null.as_raw_fd(), 0);
        let _ = dup2(null.as_raw_fd(), 1);
    }
}

/// stderr to `BUNDLE/shim.log`, for post-mortems.
fn log_stderr(args: &Args) {
    if let Ok(log) = File::options().create(true).append(true).open(args.bundle.join("shim.log")) {
        let _ = dup2(log.as_raw_fd(), 2);
    }
}
