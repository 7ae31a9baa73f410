//! The nanomsg Scalability Protocols (SP) over `ipc://`, the wire eKuiper's portable plugins
//! speak (nng, mangos and pynng all implement it), written from the published mapping:
//!
//! - **Connection header.** Each side sends 8 bytes on connect: `0x00 'S' 'P' 0x00`, its
//!   protocol id (big-endian `u16`), two reserved zero bytes; and checks that the peer's id is
//!   the one its own protocol pairs with (REQ with REP, PUSH with PULL).
//! - **Framing (IPC).** Each message is a type byte (`0x01`, a user message), its length as a
//!   big-endian `u64`, then the payload. There is nothing else on the wire.
//! - **REQ/REP.** A request's payload starts with its backtrace: 32-bit big-endian words, the
//!   last of which has its top bit set (the request id); a reply starts with the same words.
//!   [`Rep`] keeps the backtrace of the latest request and puts it before its reply.
//! - **PUSH/PULL.** The payload is the message, without header.
//!
//! Everything read is untrusted: a header that is not SP, a peer of the wrong protocol, a type
//! byte other than `0x01`, a length above the reader's limit, a backtrace that does not end
//! within [`MAX_HOPS`] words: each is an [`SpError`], never a panic or an allocation of the
//! claimed size. Blocking std sockets; every wait has a time-out.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

/// SP protocol ids (the `u16` in the connection header).
pub mod proto {
    /// REQ v0.
    pub const REQ: u16 = 0x30;
    /// REP v0.
    pub const REP: u16 = 0x31;
    /// PUSH v0.
    pub const PUSH: u16 = 0x50;
    /// PULL v0.
    pub const PULL: u16 = 0x51;
}

/// Most backtrace words a request may carry before its request id (nng's default TTL).
pub const MAX_HOPS: usize = 8;

/// The IPC transport's type byte of a user message.
const USER_MESSAGE: u8 = 0x01;

/// Longest a peer may take to finish a message it started, or the connection header.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong on an SP connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpError {
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// Nothing arrived within the wait.
    #[error("nothing arrived within {0:?}")]
    TimedOut(Duration),
    /// The peer broke the protocol.
    #[error("the peer broke the SP protocol: {0}")]
    Protocol(String),
    /// A message longer than the reader accepts.
    #[error("a message of {len} bytes is longer than the {max} bytes accepted")]
    TooLong {
        /// The length the peer announced.
        len: u64,
        /// The reader's limit.
        max: usize,
    },
}

impl SpError {
    fn io(context: &'static str) -> impl FnOnce(io::Error) -> SpError {
        move |source| match source.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset => SpError::Closed,
            _ => SpError::Io { context, source },
        }
    }
}

/// A `Result` with [`SpError`].
pub type SpResult<T> = std::result::Result<T, SpError>;

/// The peer protocol `own` talks to.
fn peer_of(own: u16) -> u16 {
    match own {
        proto::REQ => proto::REP,
        proto::REP => proto::REQ,
        proto::PUSH => proto::PULL,
        proto::PULL => proto::PUSH,
        other => other,
    }
}

/// One SP connection over a Unix socket, after the header exchange.
#[derive(Debug)]
pub struct SpStream {
    stream: UnixStream,
    /// Longest message accepted.
    max_len: usize,
    /// Bytes read but not yet consumed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl SpStream {
    /// Exchanges connection headers on `stream` as protocol `own`, checking the peer's.
    ///
    /// # Errors
    /// [`SpError::Protocol`] for a header that is not SP or a peer of the wrong protocol;
    /// [`SpError::TimedOut`], [`SpError::Closed`], [`SpError::Io`].
    pub fn handshake(stream: UnixStream, own: u16, max_len: usize) -> SpResult<SpStream> {
        stream
            .set_read_timeout(Some(FRAME_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(FRAME_TIMEOUT)))
            .map_err(SpError::io("setting SP socket time-outs"))?;
        let mut header = [0u8, b'S', b'P', 0, 0, 0, 0, 0];
        header[4..6].copy_from_slice(&own.to_be_bytes());
        (&stream)
            .write_all(&header)
            .map_err(SpError::io("sending the SP header"))?;
        let mut peer = [0u8; 8];
        (&stream)
            .read_exact(&mut peer)
            .map_err(timed_out_or(SpError::io("reading the SP header")))?;
        if peer[..4] != [0, b'S', b'P', 0] || peer[6..] != [0, 0] {
            return Err(SpError::Protocol(format!(
                "its connection header {peer:02x?} is not an SP header"
            )));
        }
        let id = u16::from_be_bytes([peer[4], peer[5]]);
        if id != peer_of(own) {
            return Err(SpError::Protocol(format!(
                "the peer speaks protocol {id:#x}; protocol {own:#x} needs {:#x}",
                peer_of(own)
            )));
        }
        Ok(SpStream {
            stream,
            max_len,
            buf: Vec::new(),
            start: 0,
            end: 0,
        })
    }

    /// Connects to the listener at `path` as protocol `own`, retrying for up to `timeout`
    /// while nobody listens there yet.
    ///
    /// # Errors
    /// As [`handshake`](Self::handshake); [`SpError::TimedOut`] if nobody listened in time.
    pub fn connect(path: &Path, own: u16, max_len: usize, timeout: Duration) -> SpResult<Self> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(1);
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => return SpStream::handshake(stream, own, max_len),
                Err(e)
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    return Err(SpError::io("connecting to an SP socket")(e));
                }
                Err(_) if Instant::now() >= deadline => return Err(SpError::TimedOut(timeout)),
                Err(_) => {
                    // Nobody listens yet (the plugin binds its socket while it handles the
                    // start command): a short back-off, bounded by the deadline.
                    let left = deadline.saturating_duration_since(Instant::now());
                    std::thread::sleep(delay.min(left));
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// Sends one message made of `parts`, written back to back.
    ///
    /// # Errors
    /// [`SpError::Closed`] if the peer is gone, [`SpError::Io`] (a send time-out included).
    pub fn send(&mut self, parts: &[&[u8]]) -> SpResult<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut header = [0u8; 9];
        header[0] = USER_MESSAGE;
        header[1..].copy_from_slice(&(len as u64).to_be_bytes());
        let mut slices = Vec::with_capacity(parts.len() + 1);
        slices.push(io::IoSlice::new(&header));
        slices.extend(parts.iter().map(|p| io::IoSlice::new(p)));
        write_all_vectored(&mut self.stream, &mut slices)
            .map_err(SpError::io("sending an SP message"))
    }

    /// True if a message (or its first byte) can be read without waiting, within `timeout`.
    ///
    /// # Errors
    /// [`SpError::Io`] if polling fails.
    pub fn wait_readable(&self, timeout: Duration) -> SpResult<bool> {
        if self.end > self.start {
            return Ok(true);
        }
        let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
        let spec = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        loop {
            match rustix::event::poll(&mut fds, Some(&spec)) {
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(SpError::io("waiting on an SP socket")(e.into())),
            }
        }
    }

    /// Receives the next message into `out` (replacing its contents), waiting up to `timeout`
    /// for it to begin; once begun, the rest must follow within a few seconds.
    ///
    /// # Errors
    /// [`SpError::TimedOut`] if none began in time; [`SpError::Closed`];
    /// [`SpError::Protocol`], [`SpError::TooLong`] for a frame the peer should not send (the
    /// connection is then out of step and must be dropped).
    pub fn recv_timeout(&mut self, out: &mut Vec<u8>, timeout: Duration) -> SpResult<()> {
        if !self.wait_readable(timeout)? {
            return Err(SpError::TimedOut(timeout));
        }
        self.fill(9)?;
        let header = &self.buf[self.start..self.start + 9];
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[1..]);
        let len = u64::from_be_bytes(len_bytes);
        let refused = if header[0] != USER_MESSAGE {
            Some(SpError::Protocol(format!(
                "message type byte {:#04x}, expected {USER_MESSAGE:#04x}",
                header[0]
            )))
        } else if len > self.max_len as u64 {
            Some(SpError::TooLong {
                len,
                max: self.max_len,
            })
        } else {
            None
        };
        if let Some(e) = refused {
            // Out of step with the peer for good: later reads see a closed connection.
            self.shutdown();
            self.start = self.end;
            return Err(e);
        }
        let len = len as usize;
        self.start += 9;
        out.clear();
        // What is buffered first, then straight into `out`.
        let buffered = len.min(self.end - self.start);
        out.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        if buffered < len {
            out.resize(len, 0);
            (&self.stream)
                .read_exact(&mut out[buffered..])
                .map_err(timed_out_or(SpError::io("reading an SP message")))?;
        }
        Ok(())
    }

    /// Makes at least `n` bytes available in the buffer (blocking up to the frame time-out).
    fn fill(&mut self, n: usize) -> SpResult<()> {
        const CHUNK: usize = 64 * 1024;
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < CHUNK.max(n) {
            self.buf.resize(CHUNK.max(n), 0);
        }
        while self.end < n {
            let read = (&self.stream)
                .read(&mut self.buf[self.end..])
                .map_err(timed_out_or(SpError::io("reading an SP message")))?;
            if read == 0 {
                return Err(SpError::Closed);
            }
            self.end += read;
        }
        Ok(())
    }

    /// Shuts the connection down in both directions (a blocked reader or writer returns).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl AsFd for SpStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

fn write_all_vectored(stream: &mut UnixStream, slices: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    let mut slices = slices;
    io::IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A read that ran out of its socket time-out mid-message is the peer stalling: an error that
/// says so; any other failure as `other` makes it.
fn timed_out_or(other: impl FnOnce(io::Error) -> SpError) -> impl FnOnce(io::Error) -> SpError {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => SpError::Protocol(format!(
            "it stopped sending in the middle of a message for {FRAME_TIMEOUT:?}"
        )),
        _ => other(e),
    }
}

/// A listening `ipc://` socket file. The file is replaced if one is already there (a socket
/// left by a process that died) and removed when the listener is dropped, unless another
/// listener has replaced it meanwhile.
#[derive(Debug)]
pub struct SpListener {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the file this listener bound, to remove only its own.
    id: (u64, u64),
}

impl SpListener {
    /// Binds `path`, replacing a socket file already there.
    ///
    /// # Errors
    /// [`SpError::Io`] if the path holds something other than a socket, or binding fails.
    pub fn bind(path: &Path) -> SpResult<SpListener> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(SpError::Io {
                    context: "binding an ipc:// socket: the path exists and is not a socket",
                    source: io::ErrorKind::AlreadyExists.into(),
                });
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(SpError::io("binding an ipc:// socket"))?;
        let meta = std::fs::symlink_metadata(path).map_err(SpError::io("inspecting a socket"))?;
        Ok(SpListener {
            listener,
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection within `timeout` and exchanges headers as protocol `own`.
    ///
    /// # Errors
    /// [`SpError::TimedOut`] if nobody connected; as [`SpStream::handshake`].
    pub fn accept(&self, own: u16, max_len: usize, timeout: Duration) -> SpResult<SpStream> {
        self.accept_while(own, max_len, timeout, || true)
    }

    /// As [`accept`](Self::accept), giving up early (with [`SpError::TimedOut`]) once
    /// `keep_waiting` says so; it is asked about every 20 ms.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_while(
        &self,
        own: u16,
        max_len: usize,
        timeout: Duration,
        keep_waiting: impl Fn() -> bool,
    ) -> SpResult<SpStream> {
        const STEP: Duration = Duration::from_millis(20);
        let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !keep_waiting() {
                return Err(SpError::TimedOut(timeout));
            }
            let spec = Timespec::try_from(left.min(STEP)).unwrap_or(Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            });
            match rustix::event::poll(&mut fds, Some(&spec)) {
                Ok(0) => {}
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(SpError::io("waiting for a connection")(e.into())),
            }
        }
        let (stream, _) = self
            .listener
            .accept()
            .map_err(SpError::io("accepting a connection"))?;
        SpStream::handshake(stream, own, max_len)
    }
}

impl Drop for SpListener {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The REP side of REQ/REP on one connection: receives requests and answers the latest.
#[derive(Debug)]
pub struct Rep {
    stream: SpStream,
    /// The backtrace (request id included) of the request to answer next.
    pending: Option<Vec<u8>>,
    scratch: Vec<u8>,
}

impl Rep {
    /// REP over an accepted or connected stream of protocol REP.
    pub fn new(stream: SpStream) -> Rep {
        Rep {
            stream,
            pending: None,
            scratch: Vec::new(),
        }
    }

    /// Receives the next request within `timeout`, returning its body; its backtrace is kept
    /// for the next [`reply`](Self::reply).
    ///
    /// # Errors
    /// As [`SpStream::recv_timeout`]; [`SpError::Protocol`] for a backtrace that does not end
    /// within [`MAX_HOPS`] words.
    pub fn recv(&mut self, timeout: Duration) -> SpResult<&[u8]> {
        self.stream.recv_timeout(&mut self.scratch, timeout)?;
        let mut end = None;
        for hop in 0..MAX_HOPS {
            let Some(word) = self.scratch.get(hop * 4..hop * 4 + 4) else {
                break;
            };
            if word[0] & 0x80 != 0 {
                end = Some(hop * 4 + 4);
                break;
            }
        }
        let Some(end) = end else {
            return Err(SpError::Protocol(
                "a request without a request id in its first 8 header words".into(),
            ));
        };
        self.pending = Some(self.scratch[..end].to_vec());
        Ok(&self.scratch[end..])
    }

    /// True if a request has been received and not answered.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// True if a message can be read now (within `timeout`).
    ///
    /// # Errors
    /// As [`SpStream::wait_readable`].
    pub fn readable(&self, timeout: Duration) -> SpResult<bool> {
        self.stream.wait_readable(timeout)
    }

    /// Answers the latest request with `body`.
    ///
    /// # Errors
    /// [`SpError::Protocol`] if no request is pending; as [`SpStream::send`].
    pub fn reply(&mut self, body: &[u8]) -> SpResult<()> {
        let Some(backtrace) = self.pending.take() else {
            return Err(SpError::Protocol(
                "a reply without a request to answer".into(),
            ));
        };
        self.stream.send(&[&backtrace, body])
    }

    /// The connection, to shut it down.
    pub fn stream(&self) -> &SpStream {
        &self.stream
    }
}

/// The REQ side of REQ/REP on one connection (a test peer, and the bench's plugin stand-in).
#[derive(Debug)]
pub struct Req {
    stream: SpStream,
    next_id: u32,
    scratch: Vec<u8>,
}

impl Req {
    /// REQ over a connected stream of protocol REQ.
    pub fn new(stream: SpStream) -> Req {
        Req {
            stream,
            next_id: 1,
            scratch: Vec::new(),
        }
    }

    /// Sends a request and waits up to `timeout` for its reply (replies to older requests are
    /// discarded, as REQ does).
    ///
    /// # Errors
    /// As [`SpStream::recv_timeout`]; [`SpError::TimedOut`] if no reply came in time.
    pub fn request(&mut self, body: &[u8], timeout: Duration) -> SpResult<&[u8]> {
        let id = self.next_id | 0x8000_0000;
        self.next_id = (self.next_id + 1) & 0x7fff_ffff;
        self.stream.send(&[&id.to_be_bytes(), body])?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.stream.recv_timeout(&mut self.scratch, left)?;
            if self.scratch.len() >= 4 && self.scratch[..4] == id.to_be_bytes() {
                return Ok(&self.scratch[4..]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
