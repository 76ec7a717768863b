//! `gantry-shim port-forward --pid PID --port PORT`: joins the network
//! namespace of PID (a pod's pause process), connects to 127.0.0.1:PORT
//! there and relays stdin to the connection and the connection to stdout.
//! gantryd runs one per forwarded connection. A failure to connect is a
//! message on stderr and exit code 1.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};

pub fn run(args: &[String]) -> ! {
    if let Err(e) = forward(args) {
        eprintln!("gantry-shim port-forward: {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

fn forward(args: &[String]) -> Result<(), String> {
    let (mut pid, mut port) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--pid" => pid = it.next().and_then(|p| p.parse::<i32>().ok()),
            "--port" => port = it.next().and_then(|p| p.parse::<u16>().ok()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let (pid, port) = (pid.ok_or("missing or bad --pid")?, port.ok_or("missing or bad --port")?);
    crate::sealed_exe::hide_while_joining()?;
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| format!("the pod's process {pid} is gone: {e}"))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining the pod's network namespace: {e}"))?;
    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connecting to port {port}: {e}"))?;
    relay(&mut conn)
}

fn relay(conn: &mut TcpStream) -> Result<(), String> {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let mut fds = vec![PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        poll(&mut fds, PollTimeout::NONE).map_err(|e| format!("poll: {e}"))?;
        let conn_ready = fds[0].any().unwrap_or(false);
        let stdin_ready = stdin_open && fds.get(1).and_then(|f| f.any()).unwrap_or(false);
        drop(fds);
        if stdin_ready {
            let n = stdin.read(&mut buf).map_err(|e| format!("reading stdin: {e}"))?;
            if n == 0 {
                stdin_open = false;
                let _ = conn.shutdown(Shutdown::Write);
            } else {
                conn.write_all(&buf[..n]).map_err(|e| format!("writing to the connection: {e}"))?;
            }
        }
        if conn_ready {
            let n = match conn.read(&mut buf) {
                Ok(n) => n,
                // A reset after the peer answered is its way of closing.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(format!("reading from the connection: {e}")),
            };
            if n == 0 {
                return Ok(());
            }
            stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()).map_err(|e| format!("writing stdout: {e}"))?;
        }
    }
}
