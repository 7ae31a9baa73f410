//! The child's side: taking the socket its parent left open for it.

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;

use shmplug_transport::fdpass;

use super::{SOCKET_ENV, WAIT};

/// The inherited control socket, with [`WAIT`] time-outs on both directions.
pub fn inherited_socket() -> UnixStream {
    let raw: RawFd = std::env::var(SOCKET_ENV)
        .unwrap_or_else(|_| panic!("{SOCKET_ENV} is not set: run this through the tests"))
        .parse()
        .unwrap_or_else(|e| panic!("{SOCKET_ENV} is not a descriptor number: {e}"));
    let socket = fdpass::adopt_inherited_socket(raw).expect("inherited socket");
    socket.set_read_timeout(Some(WAIT)).expect("read time-out");
    socket
        .set_write_timeout(Some(WAIT))
        .expect("write time-out");
    socket
}

/// Command-line argument `i` (after the program name), parsed.
pub fn arg<T: std::str::FromStr>(i: usize) -> T {
    let text = std::env::args()
        .nth(i)
        .unwrap_or_else(|| panic!("missing argument {i}"));
    text.parse()
        .unwrap_or_else(|_| panic!("argument {i} ({text:?}) does not parse"))
}
