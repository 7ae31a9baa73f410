//! Passing descriptors between processes over a Unix socket (`SCM_RIGHTS`).
//!
//! The control plane carries ring descriptors in its own messages; [`send_ring`] and
//! [`recv_ring`] are the minimal framing for tools and tests that only need to hand over a ring.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Error, Result};
use crate::ring::{Ring, RingFds};

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 8;

/// Sends `bytes` with `fds` attached as one message.
///
/// # Errors
/// [`Error::Io`] if the socket refuses the message or accepts only part of it.
///
/// # Panics
/// If more than [`MAX_FDS`] descriptors are passed.
pub fn send_with_fds(socket: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    assert!(
        fds.len() <= MAX_FDS,
        "at most {MAX_FDS} descriptors per message"
    );
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Error::Io {
            context: "attaching descriptors",
            source: std::io::Error::other("control buffer too small"),
        });
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(Error::errno("sending descriptors"))?;
    if sent != bytes.len() {
        return Err(Error::Io {
            context: "sending descriptors",
            source: std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
        });
    }
    Ok(())
}

/// Receives one message into `buf` and the descriptors attached to it (at most [`MAX_FDS`];
/// extra descriptors are closed by the kernel and reported as an error).
///
/// # Errors
/// [`Error::Io`] on a socket error, when the peer has closed (`UnexpectedEof`), or when
/// descriptors were truncated.
pub fn recv_with_fds(socket: &UnixStream, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(Error::errno("receiving descriptors"))?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(Error::Io {
            context: "receiving descriptors",
            source: std::io::Error::other(format!(
                "more than {MAX_FDS} descriptors in one message"
            )),
        });
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Err(Error::Io {
            context: "receiving descriptors",
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    Ok((msg.bytes, fds))
}

/// Takes ownership of a Unix socket this process inherited from its parent under the number
/// `fd` (the host passes it in [`CONTROL_FD_ENV`](crate::control::CONTROL_FD_ENV)), and marks it
/// close-on-exec so that it is not passed on to this process's own children.
///
/// Each number can be adopted once per process; call this early, before anything else could
/// have closed the inherited descriptor and reused its number.
///
/// # Errors
/// [`Error::BadInheritedSocket`] if `fd` is negative, was already adopted, is not open, or is
/// not a Unix socket.
pub fn adopt_inherited_socket(fd: RawFd) -> Result<UnixStream> {
    static ADOPTED: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());
    let refuse = |why: &str| Error::BadInheritedSocket(format!("inherited descriptor {fd}: {why}"));
    if fd < 0 {
        return Err(refuse("not a descriptor number"));
    }
    let mut adopted = ADOPTED.lock().unwrap_or_else(|e| e.into_inner());
    if adopted.contains(&fd) {
        return Err(refuse("already adopted"));
    }
    // SAFETY: the borrow lives only for the two checks below, while `fd` is a non-negative
    // number; if it is not open, fstat fails with EBADF and we stop.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = rustix::fs::fstat(borrowed).map_err(|e| refuse(&format!("not open ({e})")))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(refuse(
            "not a socket; was the plugin started by the shmplug host?",
        ));
    }
    rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC).map_err(Error::errno(
        "marking an inherited descriptor close-on-exec",
    ))?;
    adopted.push(fd);
    // SAFETY: `fd` is open (fstat succeeded) and was inherited from the parent, so no object in
    // this process owns it; `ADOPTED` makes sure this function hands it out only once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(UnixStream::from(owned))
}

/// What [`send_ring`] sends with the descriptors.
pub const RING_TAG: &[u8; 8] = b"SHMRING1";

/// Sends a ring's three descriptors over `socket`.
///
/// # Errors
/// As [`send_with_fds`].
pub fn send_ring(socket: &UnixStream, ring: &Ring) -> Result<()> {
    send_with_fds(socket, RING_TAG, &ring.fds())
}

/// Receives a ring sent with [`send_ring`] and opens it, checking everything it can.
///
/// # Errors
/// [`Error::Io`] on a socket error; [`Error::BadSegment`] if the message or the descriptors
/// are not a ring.
pub fn recv_ring(socket: &UnixStream) -> Result<Ring> {
    let mut buf = [0u8; 16];
    let (n, fds) = recv_with_fds(socket, &mut buf)?;
    if &buf[..n] != RING_TAG {
        return Err(Error::BadSegment(format!(
            "unexpected message {:?} instead of a ring",
            &buf[..n]
        )));
    }
    let [memory, data_ready, space_ready]: [OwnedFd; 3] =
        fds.try_into().map_err(|v: Vec<OwnedFd>| {
            Error::BadSegment(format!("{} descriptors instead of 3", v.len()))
        })?;
    Ring::from_fds(RingFds {
        memory,
        data_ready,
        space_ready,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    #[test]
    fn adopts_an_inherited_socket_once() {
        let (a, b) = UnixStream::pair().unwrap();
        let raw = b.into_raw_fd();
        let mut adopted = adopt_inherited_socket(raw).unwrap();
        assert!(
            matches!(adopt_inherited_socket(raw), Err(Error::BadInheritedSocket(m)) if m.contains("already"))
        );
        std::io::Write::write_all(&mut adopted, b"x").unwrap();
        let mut buf = [0u8; 1];
        std::io::Read::read_exact(&mut &a, &mut buf).unwrap();
        assert_eq!(&buf, b"x");
        let flags = rustix::io::fcntl_getfd(&adopted).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn refuses_what_is_not_an_open_socket() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let err = adopt_inherited_socket(r.as_raw_fd()).unwrap_err();
        assert!(
            matches!(err, Error::BadInheritedSocket(ref m) if m.contains("not a socket")),
            "{err}"
        );
        assert!(adopt_inherited_socket(-1).is_err());
        // A number far above anything open.
        let err = adopt_inherited_socket(1_000_000).unwrap_err();
        assert!(
            matches!(err, Error::BadInheritedSocket(ref m) if m.contains("not open")),
            "{err}"
        );
    }
}
