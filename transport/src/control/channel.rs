//! Sending and receiving frames, with their rings, over a Unix stream socket.

use std::io::{ErrorKind, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::error::ControlError;
use super::frame::{HEADER_LEN, decode_body, decode_header, encode_frame};
use super::message::Message;
use crate::doorbell::Doorbell;
use crate::error::{Error, Result};
use crate::fdpass::recv_with_fds;
use crate::ring::{Ring, RingFds};

/// Most rings one message carries (a function's request and reply rings).
const MAX_RINGS: usize = 2;
/// Descriptors per ring: memfd, data eventfd, space eventfd.
const FDS_PER_RING: usize = 3;
/// Most descriptors kept while a frame arrives; any beyond are closed at once and counted.
const MAX_FDS: usize = MAX_RINGS * FDS_PER_RING;

/// One end of the control channel: frames [`Message`]s over a Unix stream socket and passes
/// the rings a message carries as descriptors (`SCM_RIGHTS`) attached to its first byte.
///
/// [`send`](Self::send) and [`recv`](Self::recv) take `&self`: share the channel (in an `Arc`)
/// between a thread that receives and threads that send. Concurrent senders each get their
/// frame out whole; concurrent receivers take turns.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmplug_transport::Ring;
/// use shmplug_transport::control::{ControlChannel, Message, Start};
///
/// let (host, plugin) = ControlChannel::pair()?;
/// plugin.set_read_timeout(Some(Duration::from_secs(5)));
///
/// let ring = Ring::create(64 * 1024)?;
/// let start = Start { instance_id: 1, symbol: "random".into(), ..Start::default() };
/// host.send(&Message::StartSource(start.clone()), &[&ring])?;
///
/// let (message, rings) = plugin.recv()?;
/// assert_eq!(message, Message::StartSource(start));
/// assert_eq!(rings[0].capacity(), ring.capacity());
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Debug)]
pub struct ControlChannel {
    stream: UnixStream,
    /// Held while a frame is written; `Some` once a failed write left part of a frame behind.
    sender: Mutex<Option<String>>,
    receiver: Mutex<Receiver>,
    read_timeout: Mutex<Option<Duration>>,
}

impl ControlChannel {
    /// Wraps one end of a connected Unix stream socket, switching it to blocking mode.
    ///
    /// The channel manages the socket's read time-out itself; use
    /// [`set_read_timeout`](Self::set_read_timeout), not the socket's.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket cannot be switched to blocking mode.
    pub fn new(stream: UnixStream) -> Result<ControlChannel> {
        stream
            .set_nonblocking(false)
            .map_err(Error::io("making the control socket blocking"))?;
        Ok(ControlChannel {
            stream,
            sender: Mutex::new(None),
            receiver: Mutex::new(Receiver::new()),
            read_timeout: Mutex::new(None),
        })
    }

    /// Two connected channels (a socket pair), as a host hands one end to a plugin it starts.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket pair cannot be created.
    pub fn pair() -> Result<(ControlChannel, ControlChannel)> {
        let (a, b) = UnixStream::pair().map_err(Error::io("creating a control socket pair"))?;
        Ok((ControlChannel::new(a)?, ControlChannel::new(b)?))
    }

    /// The socket, for polling it or shutting it down (the peer then sees
    /// [`ControlError::Closed`]). Reading from or writing to it directly breaks the framing.
    pub fn get_ref(&self) -> &UnixStream {
        &self.stream
    }

    /// Gives the socket back, dropping any part of a frame received so far.
    pub fn into_inner(self) -> UnixStream {
        self.stream
    }

    /// Sets how long [`recv`](Self::recv) waits for a whole frame; `None` (the default) waits
    /// forever, a zero duration takes only what has already arrived.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        *lock(&self.read_timeout) = timeout;
    }

    /// The time-out [`recv`](Self::recv) uses.
    pub fn read_timeout(&self) -> Option<Duration> {
        *lock(&self.read_timeout)
    }

    /// Sends `message` as one frame, with `rings` attached: exactly
    /// [`message.ring_count()`](Message::ring_count) of them, in the order the message
    /// documents. Blocks until the kernel has taken the whole frame.
    ///
    /// # Errors
    /// [`ControlError::RingCount`] for the wrong number of rings and [`ControlError::TooLarge`]
    /// for an oversized message (nothing is sent for either); [`ControlError::Closed`] if the
    /// peer has closed the channel; [`Error::Io`] if the socket fails;
    /// [`ControlError::Broken`] after a failure that left part of a frame in the socket.
    ///
    /// A ring whose plugin side wakes through a doorbell slot must be named in the message's
    /// [`Start::doorbell_slots`](super::Start::doorbell_slots) (and only then), and every ring
    /// must still hold its memfd; a mismatch is [`ControlError::DescriptorCount`] and nothing
    /// is sent.
    pub fn send(&self, message: &Message, rings: &[&Ring]) -> Result<()> {
        let expected = message.ring_count();
        if rings.len() != expected {
            let message = message.type_name();
            return Err(ControlError::RingCount {
                message,
                expected,
                given: rings.len(),
            }
            .into());
        }
        let fds: Vec<BorrowedFd<'_>> = rings.iter().flat_map(|ring| ring.fds()).collect();
        let slots: Vec<u32> = rings.iter().filter_map(|r| r.doorbell_slot()).collect();
        let named = match message {
            Message::StartSource(start)
            | Message::StartSink(start)
            | Message::StartFunction(start) => &start.doorbell_slots[..],
            _ => &[],
        };
        if fds.len() != message.descriptor_count() || (!named.is_empty() && named != slots) {
            return Err(ControlError::DescriptorCount {
                message: message.type_name(),
                expected: message.descriptor_count(),
                received: fds.len(),
            }
            .into());
        }
        self.send_frame(message, &fds)
    }

    /// Sends a [`Message::Doorbell`] with `doorbell`'s descriptors: the rings of later starts
    /// may then name its slots.
    ///
    /// # Errors
    /// As [`send`](Self::send); [`ControlError::DescriptorCount`] for a doorbell this side
    /// received (it holds no memfd to send).
    pub fn send_doorbell(&self, doorbell: &Doorbell) -> Result<()> {
        let Some(fds) = doorbell.fds() else {
            return Err(ControlError::DescriptorCount {
                message: Message::Doorbell.type_name(),
                expected: 2,
                received: 0,
            }
            .into());
        };
        self.send_frame(&Message::Doorbell, &fds)
    }

    /// The doorbell the peer sent last ([`Message::Doorbell`]), if any.
    pub fn doorbell(&self) -> Option<Doorbell> {
        lock(&self.receiver).doorbell.clone()
    }

    fn send_frame(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let frame = encode_frame(message)?;
        let mut broken = lock(&self.sender);
        if let Some(cause) = &*broken {
            return Err(ControlError::Broken {
                cause: cause.clone(),
            }
            .into());
        }
        let mut sent = 0;
        while sent < frame.len() {
            let attach = if sent == 0 { fds } else { &[] };
            match send_part(&self.stream, &frame[sent..], attach) {
                Ok(n) => sent += n,
                Err(Errno::INTR) => {}
                Err(errno) => {
                    let error = match errno {
                        Errno::PIPE | Errno::CONNRESET => ControlError::Closed.into(),
                        _ => Error::Io {
                            context: "sending a control message",
                            source: errno.into(),
                        },
                    };
                    if sent > 0 {
                        *broken = Some(error.to_string());
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Receives the next message and the rings attached to it, waiting at most the
    /// [read time-out](Self::set_read_timeout) for the whole frame.
    ///
    /// The rings are opened with [`Ring::from_fds`], which checks them; the message's
    /// documentation says which endpoint of each this side takes.
    ///
    /// # Errors
    /// - [`ControlError::Closed`]: the peer closed the channel between frames.
    /// - [`ControlError::TimedOut`]: no whole frame in time; what arrived is kept for the next
    ///   call.
    /// - [`ControlError::UnknownMessage`], [`ControlError::Malformed`],
    ///   [`ControlError::VersionMismatch`], [`ControlError::DescriptorCount`], or
    ///   [`Error::BadSegment`] for a descriptor that is not a ring: the frame was consumed and
    ///   its descriptors closed; the channel stays usable.
    /// - [`ControlError::Truncated`], [`ControlError::BadMagic`], [`ControlError::FrameVersion`],
    ///   [`ControlError::TooLarge`], or [`Error::Io`]: the framing is lost, and every later
    ///   call returns [`ControlError::Broken`].
    pub fn recv(&self) -> Result<(Message, Vec<Ring>)> {
        self.recv_timeout(self.read_timeout())
    }

    /// As [`recv`](Self::recv), with this time-out instead of the channel's.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Option<Duration>) -> Result<(Message, Vec<Ring>)> {
        let deadline = timeout.and_then(|t| Some((t, Instant::now().checked_add(t)?)));
        let mut rx = lock(&self.receiver);
        if let Some(cause) = &rx.broken {
            return Err(ControlError::Broken {
                cause: cause.clone(),
            }
            .into());
        }
        loop {
            if rx.filled == rx.buf.len() {
                if rx.body_len.is_some() {
                    let (frame, fds, dropped) = rx.take_frame();
                    return open(&frame[HEADER_LEN..], fds, dropped, &mut rx.doorbell);
                }
                match decode_header(&rx.buf) {
                    Ok(len) => {
                        rx.body_len = Some(len);
                        rx.buf.resize(HEADER_LEN + len, 0);
                        continue;
                    }
                    Err(e) => return Err(rx.poison(e)),
                }
            }
            // Once the deadline has passed, reads still take what has already arrived; the
            // first read that would block ends the call.
            let wait = deadline.map(|(_, at)| {
                at.saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(1))
            });
            rx.apply_timeout(&self.stream, wait)?;
            let filled = rx.filled;
            match recv_with_fds(&self.stream, &mut rx.buf[filled..]) {
                Ok((n, fds)) => {
                    rx.keep(fds);
                    if n == 0 {
                        return Err(rx.end_of_stream());
                    }
                    rx.filled += n;
                }
                Err(Error::Io { source, .. }) => match source.kind() {
                    ErrorKind::Interrupted => {}
                    ErrorKind::WouldBlock | ErrorKind::TimedOut if deadline.is_some() => {
                        if let Some((timeout, at)) = deadline
                            && Instant::now() >= at
                        {
                            return Err(ControlError::TimedOut(timeout).into());
                        }
                    }
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => {
                        return Err(rx.end_of_stream());
                    }
                    _ => {
                        let context = "receiving a control message";
                        return Err(rx.poison(Error::Io { context, source }));
                    }
                },
                Err(e) => return Err(rx.poison(e)),
            }
        }
    }
}

/// Sends `bytes` (or a prefix of them) with `fds` attached; returns how many bytes went.
fn send_part(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<usize, Errno> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    // `send` allows at most MAX_RINGS rings, so the buffer always has room.
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::NOBUFS);
    }
    let flags = SendFlags::NOSIGNAL;
    match rustix::net::sendmsg(stream, &[IoSlice::new(bytes)], &mut control, flags)? {
        // A stream socket that accepts nothing without an error has no reader left.
        0 => Err(Errno::PIPE),
        n => Ok(n),
    }
}

/// Checks that `fds` are the descriptors the message in `body` needs and opens its rings (or,
/// for a [`Message::Doorbell`], the doorbell, kept in `doorbell`).
fn open(
    body: &[u8],
    fds: Vec<OwnedFd>,
    dropped: usize,
    doorbell: &mut Option<Doorbell>,
) -> Result<(Message, Vec<Ring>)> {
    let message = decode_body(body)?;
    let expected = message.descriptor_count();
    let received = fds.len() + dropped;
    if received != expected {
        let message = message.type_name();
        return Err(ControlError::DescriptorCount {
            message,
            expected,
            received,
        }
        .into());
    }
    let mut fds = fds.into_iter();
    if message == Message::Doorbell {
        if let (Some(memory), Some(eventfd)) = (fds.next(), fds.next()) {
            *doorbell = Some(Doorbell::from_fds(memory, eventfd)?);
        }
        return Ok((message, Vec::new()));
    }
    let slots = match &message {
        Message::StartSource(start) | Message::StartSink(start) | Message::StartFunction(start) => {
            start.doorbell_slots.clone()
        }
        _ => Vec::new(),
    };
    let malformed = |detail: String| ControlError::Malformed {
        type_name: Some(message.type_name()),
        detail,
    };
    if !slots.is_empty() && slots.len() != message.ring_count() {
        return Err(malformed(format!(
            "{} doorbell slots for {} rings",
            slots.len(),
            message.ring_count()
        ))
        .into());
    }
    let mut rings = Vec::with_capacity(message.ring_count());
    for index in 0..message.ring_count() {
        let (Some(memory), Some(own)) = (fds.next(), fds.next()) else {
            break;
        };
        let ring = match (slots.get(index), message.plugin_wakeup(index)) {
            (Some(&slot), Some(which)) => {
                let Some(doorbell) = doorbell.as_ref() else {
                    return Err(malformed(
                        "doorbell slots named before any doorbell was sent".to_string(),
                    )
                    .into());
                };
                Ring::from_fds_with_doorbell(memory, own, doorbell, slot, which)?
            }
            _ => {
                let Some(space_ready) = fds.next() else {
                    break;
                };
                Ring::from_fds(RingFds {
                    memory,
                    data_ready: own,
                    space_ready,
                })?
            }
        };
        rings.push(ring);
    }
    Ok((message, rings))
}

/// The frame being received, kept across calls so that a time-out loses nothing.
#[derive(Debug)]
struct Receiver {
    /// The frame so far; its length is what is needed next (the header, then header and body).
    buf: Vec<u8>,
    /// Bytes of `buf` received, in `0 ..= buf.len()`.
    filled: usize,
    /// The body length, once the header has been checked.
    body_len: Option<usize>,
    /// Descriptors received with this frame, at most `MAX_FDS`.
    fds: Vec<OwnedFd>,
    /// Descriptors received with this frame beyond `MAX_FDS`, already closed.
    dropped: usize,
    /// Set when the framing is lost: the error that lost it.
    broken: Option<String>,
    /// The read time-out last set on the socket; `None` until one is set.
    socket_timeout: Option<Option<Duration>>,
    /// The doorbell the peer sent last.
    doorbell: Option<Doorbell>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            buf: vec![0; HEADER_LEN],
            filled: 0,
            body_len: None,
            fds: Vec::new(),
            dropped: 0,
            broken: None,
            socket_timeout: None,
            doorbell: None,
        }
    }

    /// The complete frame and its descriptors; resets for the next frame.
    fn take_frame(&mut self) -> (Vec<u8>, Vec<OwnedFd>, usize) {
        let frame = std::mem::replace(&mut self.buf, vec![0; HEADER_LEN]);
        let fds = std::mem::take(&mut self.fds);
        let dropped = std::mem::take(&mut self.dropped);
        self.filled = 0;
        self.body_len = None;
        (frame, fds, dropped)
    }

    fn keep(&mut self, fds: Vec<OwnedFd>) {
        for fd in fds {
            if self.fds.len() < MAX_FDS {
                self.fds.push(fd);
            } else {
                self.dropped += 1;
            }
        }
    }

    /// The peer closed: cleanly between frames, or in the middle of one.
    fn end_of_stream(&mut self) -> Error {
        if self.filled == 0 && self.fds.is_empty() && self.dropped == 0 {
            return ControlError::Closed.into();
        }
        let expected = HEADER_LEN + self.body_len.unwrap_or(0);
        self.poison(
            ControlError::Truncated {
                expected,
                received: self.filled,
            }
            .into(),
        )
    }

    /// Records that the framing is lost and closes the frame's descriptors.
    fn poison(&mut self, error: Error) -> Error {
        self.broken = Some(error.to_string());
        self.fds.clear();
        error
    }

    fn apply_timeout(&mut self, stream: &UnixStream, timeout: Option<Duration>) -> Result<()> {
        if self.socket_timeout != Some(timeout) {
            stream
                .set_read_timeout(timeout)
                .map_err(Error::io("setting the control socket's read time-out"))?;
            self.socket_timeout = Some(timeout);
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
