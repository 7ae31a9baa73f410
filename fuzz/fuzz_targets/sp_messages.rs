//! Arbitrary bytes, as an eKuiper plugin process could write them after a valid SP header on
//! one of its sockets, read by the host's SP decoder as REQ/REP requests (their backtrace and
//! request id) and as PUSH/PULL messages. Each read must return a message within the reader's
//! limit or an error, never panic, block or allocate more than the limit.

#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmplug_host::ekuiper::sp::{Rep, SpStream, proto};

const MAX: usize = 1 << 16;

/// A stream of `own`'s protocol whose peer sent a valid header, then `data`, then its end.
fn stream(own: u16, peer: u16, data: &[u8]) -> Option<(SpStream, UnixStream)> {
    let (ours, theirs) = UnixStream::pair().ok()?;
    let mut header = [0u8, b'S', b'P', 0, 0, 0, 0, 0];
    header[4..6].copy_from_slice(&peer.to_be_bytes());
    (&theirs).write_all(&header).ok()?;
    // Inputs stay far below a socket's buffer, so this does not block.
    (&theirs).write_all(data).ok()?;
    theirs.shutdown(std::net::Shutdown::Write).ok()?;
    let stream = SpStream::handshake(ours, own, MAX).expect("a valid header is accepted");
    Some((stream, theirs))
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    if let Some((stream, _peer)) = stream(proto::REP, proto::REQ, data) {
        let mut rep = Rep::new(stream);
        while let Ok(body) = rep.recv(Duration::ZERO) {
            assert!(body.len() <= MAX);
            rep.reply(b"ok").expect("a received request can be answered");
        }
    }
    if let Some((mut pull, _peer)) = stream(proto::PULL, proto::PUSH, data) {
        let mut buf = Vec::new();
        while pull.recv_timeout(&mut buf, Duration::ZERO).is_ok() {
            assert!(buf.len() <= MAX);
        }
    }
});
