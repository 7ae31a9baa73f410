//! Child for `host_hostile`: a plugin that speaks the control protocol itself, says `Hello` as
//! plugin `hostile` (one source, `ping-flood`), then sends pings as fast as the socket takes
//! them and never reads what the host sends back. The host's answers pile up in the socket
//! until its sends would block: the host must notice within its ping time-out rather than
//! hang on a send.

#![forbid(unsafe_code)]

use shmplug_host::transport::control::{CONTROL_FD_ENV, ControlChannel, Hello, Message};
use shmplug_host::transport::fdpass;

fn main() {
    let fd: i32 = std::env::var(CONTROL_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("started by a shmplug host (no control descriptor)");
    let stream = fdpass::adopt_inherited_socket(fd).expect("adopting the control socket");
    let channel = ControlChannel::new(stream).expect("control channel");
    let mut hello = Hello::new("hostile");
    hello.sources.push("ping-flood".into());
    channel
        .send(&Message::Hello(hello), &[])
        .expect("saying hello");
    // Until the host kills us, or hangs up.
    for nonce in 0.. {
        if channel.send(&Message::Ping { nonce }, &[]).is_err() {
            break;
        }
    }
}
