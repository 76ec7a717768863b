//! `gantry-shim pause`: the process that holds a pod sandbox's namespaces,
//! so no pause image has to be pulled. It brings loopback up in the pod's
//! network namespace, then sleeps, reaping the zombies that a shared PID
//! namespace hands to its init, until SIGTERM or SIGINT.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub fn run() -> ! {
    // A pod sharing its PID namespace sees this process as its pid 1, and
    // it runs in the host's mount namespace: its /proc/1/root and exe must
    // stay closed to the containers' processes (CVE-2019-5736 and worse).
    if crate::sealed_exe::hide_while_joining().is_err() {
        std::process::exit(1);
    }
    if let Err(e) = loopback_up() {
        eprintln!("gantry-shim pause: bringing up lo: {e}");
    }
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    if signals.thread_block().is_err() {
        std::process::exit(1);
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}

/// `ip link set lo up`, with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls.
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").or_else(|_| std::net::UdpSocket::bind("[::1]:0"));
    // Binding to 127.0.0.1 fails while lo is down; any datagram socket will do.
    let fd = match sock {
        Ok(s) => s,
        Err(_) => std::net::UdpSocket::bind("0.0.0.0:0")?,
    };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is an open socket and req a valid, named ifreq for this request.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
