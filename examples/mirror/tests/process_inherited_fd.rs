//! The `mirror` executable started as the host starts it: the control socket inherited as a
//! descriptor named by `SHMPLUG_CONTROL_FD`. Alone in its test binary, because the descriptor
//! is made inheritable for the spawn.

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use serde_json::json;
use shmplug_sdk::transport::control::{ControlChannel, Message, Start};
use support::{WAIT, mirror, next, source_ring, wait};

#[test]
fn it_takes_over_an_inherited_socket_and_exits_when_the_host_goes() {
    let (host_end, plugin_end) = UnixStream::pair().unwrap();
    // Inheritable: clear close-on-exec on the plugin's end only.
    rustix::io::fcntl_setfd(&plugin_end, rustix::io::FdFlags::empty()).unwrap();
    let child = mirror()
        .env("SHMPLUG_CONTROL_FD", plugin_end.as_raw_fd().to_string())
        .spawn()
        .unwrap();
    drop(plugin_end);
    let host = ControlChannel::new(host_end).unwrap();
    host.set_read_timeout(Some(WAIT));
    let Message::Hello(hello) = next(&host) else {
        panic!("expected hello")
    };
    assert_eq!(hello.sources, ["counter", "random"]);
    assert_eq!(hello.rewindable, ["counter"]);

    // A source that runs until it is stopped; the host then goes away without a word.
    let (ring, mut tuples) = source_ring();
    let start = Start {
        instance_id: 1,
        symbol: "random".into(),
        properties: json!({"interval": "1ms", "pattern": {"v": 1}})
            .as_object()
            .unwrap()
            .clone(),
        ..Start::default()
    };
    host.send(&Message::StartSource(start), &[&ring]).unwrap();
    assert_eq!(next(&host), Message::Started { instance_id: 1 });
    tuples.recv_timeout(WAIT).unwrap();
    drop(host);
    assert!(wait(child).success());
}
