//! One-word messages over the control socket (its time-outs are set by whoever owns it).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// Sends one `u64`.
pub fn send(mut socket: &UnixStream, word: u64) {
    socket
        .write_all(&word.to_le_bytes())
        .expect("sending on the test socket");
}

/// Receives one `u64`, panicking on end of file or time-out.
pub fn recv(mut socket: &UnixStream) -> u64 {
    let mut b = [0u8; 8];
    socket
        .read_exact(&mut b)
        .expect("receiving on the test socket");
    u64::from_le_bytes(b)
}

/// Receives one `u64`, or `None` once the peer has closed the socket.
pub fn recv_or_eof(mut socket: &UnixStream) -> Option<u64> {
    let mut b = [0u8; 8];
    match socket.read_exact(&mut b) {
        Ok(()) => Some(u64::from_le_bytes(b)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
        Err(e) => panic!("receiving on the test socket: {e}"),
    }
}
