//! Helpers for the tests that run the `mirror` executable.
#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use shmplug_sdk::transport::control::{
    CONTROL_FD_ENV, CONTROL_SOCKET_ENV, ControlChannel, Message,
};
use shmplug_sdk::transport::{EndpointConfig, Ring, TupleReceiver};

/// Every wait in these tests gives up after this long.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `mirror` executable with neither control variable set.
pub fn mirror() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirror"));
    command
        .env_remove(CONTROL_FD_ENV)
        .env_remove(CONTROL_SOCKET_ENV)
        .stdin(Stdio::null());
    command
}

/// Waits for `child` to exit, at most [`WAIT`].
pub fn wait(child: Child) -> ExitStatus {
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(WAIT) {
        Ok(status) => status.expect("waiting for the plugin"),
        Err(_) => panic!("the plugin (pid {pid}) did not exit within {WAIT:?}"),
    }
}

pub fn endpoint() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

/// The next message from the plugin that is not a log.
pub fn next(channel: &ControlChannel) -> Message {
    loop {
        let (message, _) = channel.recv().expect("a message from the plugin");
        if !matches!(message, Message::Log(_)) {
            return message;
        }
    }
}

/// Creates a ring for a source and the host's receiver of it.
pub fn source_ring() -> (Ring, TupleReceiver) {
    let ring = Ring::create(1 << 16).unwrap();
    let receiver = TupleReceiver::new(ring.consumer(endpoint()).unwrap());
    (ring, receiver)
}
