//! Terminals from the container's own devpts instance, made as runc and
//! crun make them: through /dev/ptmx inside the container's mount
//! namespace, so the slave is /dev/pts/N there (`tty` can name it, and its
//! group and mode are the container's devpts options). The master goes to
//! whoever relays the terminal (the shim for a container, gantryd for an
//! exec) over a unix socket, as SCM_RIGHTS.

use std::fs::OpenOptions;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::Uid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Whether the container's terminals come from its own devpts: it has a
/// mount namespace and a devpts mounted at /dev/pts. Otherwise (a pause
/// process, a spec without /dev/pts) only the host's devpts exists for it.
pub fn from_container(spec: &Spec) -> bool {
    let mount_ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|ns| ns.typ() == LinuxNamespaceType::Mount));
    let devpts = spec.mounts().as_ref().is_some_and(|mounts| {
        mounts.iter().any(|m| m.destination() == Path::new("/dev/pts") && m.typ().as_deref() == Some("devpts"))
    });
    mount_ns && devpts
}

/// The host's pty, for containers without their own devpts.
pub fn open_host() -> Result<Pty, String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
    Ok(Pty { master: pty.master, slave: pty.slave })
}

/// A new pty from the devpts behind /dev/ptmx of our current root (the
/// container's, after pivot_root or setns). The slave is given to `uid`,
/// the process's user, as runc does, so it keeps full use of its terminal
/// after dropping privileges; its group stays the devpts's (`gid=5`).
pub fn open_in_root(uid: u32) -> Result<Pty, String> {
    let open = |path: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .map_err(|e| format!("opening {path}: {e}"))
    };
    let master = open("/dev/ptmx")?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK (unlockpt) reads one int through the pointer, which
    // outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(format!("unlocking the pty: {}", std::io::Error::last_os_error()));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN (the pty's number, what ptsname formats) writes one
    // unsigned int through the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(format!("getting the pty's number: {}", std::io::Error::last_os_error()));
    }
    let slave = open(&format!("/dev/pts/{n}"))?;
    // An exec opens it in a running container, which may have put anything there.
    let is_tty = slave.metadata().is_ok_and(|m| m.file_type().is_char_device());
    if !is_tty {
        return Err(format!("/dev/pts/{n} in the container is not a terminal"));
    }
    nix::unistd::fchown(slave.as_raw_fd(), Some(Uid::from_raw(uid)), None)
        .map_err(|e| format!("giving /dev/pts/{n} to uid {uid}: {e}"))?;
    Ok(Pty { master: master.into(), slave: slave.into() })
}

/// Sends `fd` (a pty master) over the unix socket `socket`.
pub fn send_fd(socket: BorrowedFd, fd: BorrowedFd) -> Result<(), String> {
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(|e| format!("sending the pty master: {e}"))
}

/// Receives the descriptor `send_fd` sent, without waiting: the sender
/// sends it before it reports ready, so it is there or it never comes.
pub fn receive_fd(socket: BorrowedFd) -> Result<OwnedFd, String> {
    receive(socket, MsgFlags::MSG_DONTWAIT)
}

/// Waits for the descriptor: from an external runtime's console socket,
/// whose message (the master and the slave's name) may still be on its way.
pub fn receive_fd_blocking(socket: BorrowedFd) -> Result<OwnedFd, String> {
    receive(socket, MsgFlags::empty())
}

fn receive(socket: BorrowedFd, flags: MsgFlags) -> Result<OwnedFd, String> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), flags | MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receiving the pty master: {e}"))?;
    for c in msg.cmsgs().map_err(|e| format!("receiving the pty master: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our
                // table for this message; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err("the container process sent no pty master".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_a_socketpair() {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).expect("pair");
        let file = tempfile::tempfile().expect("temp file");
        send_fd(a.as_fd(), file.as_fd()).expect("send");
        let got = std::fs::File::from(receive_fd(b.as_fd()).expect("receive"));
        let (m1, m2) = (file.metadata().expect("stat"), got.metadata().expect("stat"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m1.dev(), m1.ino()), (m2.dev(), m2.ino()));
        // Nothing more was sent: no wait, an error.
        assert!(receive_fd(b.as_fd()).is_err());
    }
}
