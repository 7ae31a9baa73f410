//! Rings handed over the control channel carry records: within one process over a socket
//! pair, and to a real child process that plays a plugin.
//!
//! The child is this test binary run again with only the ignored test `control_child_plugin`
//! and an environment variable naming an abstract Unix socket to connect to (no file in
//! `/tmp`, nothing to clean up).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shmplug_transport::control::{
    ControlChannel, ControlError, Hello, Log, LogLevel, Message, Start,
};
use shmplug_transport::{Consumer, EndpointConfig, Error, Producer, Ring};

/// Bound on every blocking wait; a passing test never reaches it.
const WAIT: Duration = Duration::from_secs(20);
/// Environment variable that makes `control_child_plugin` act as the plugin.
const CHILD_SOCKET: &str = "SHMPLUG_CONTROL_TEST_SOCKET";
const SOURCE_RECORDS: u64 = 1000;
const SINK_RECORDS: u64 = 500;

fn config() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(20))
}

fn put(producer: &mut Producer, bytes: &[u8]) {
    let mut claim = producer.claim_timeout(bytes.len(), WAIT).unwrap();
    claim.copy_from_slice(bytes);
    claim.commit();
}

/// The next record, or `None` once the producer has closed the ring.
fn take(consumer: &mut Consumer) -> Option<Vec<u8>> {
    match consumer.read_timeout(WAIT) {
        Ok(record) => Some(record.to_vec()),
        Err(Error::Closed) => None,
        Err(e) => panic!("{e}"),
    }
}

fn start(instance_id: u64, symbol: &str) -> Start {
    Start {
        instance_id,
        rule_id: "rule1".into(),
        op_id: "op1".into(),
        symbol: symbol.into(),
        ..Start::default()
    }
}

#[test]
fn control_ring_sent_over_a_socket_pair_carries_records_both_ways() {
    let (host, plugin) = ControlChannel::pair().unwrap();
    plugin.set_read_timeout(Some(WAIT));
    let source = Ring::create(4096).unwrap();
    let sink = Ring::create(4096).unwrap();
    host.send(&Message::StartSource(start(1, "random")), &[&source])
        .unwrap();
    host.send(&Message::StartSink(start(2, "file")), &[&sink])
        .unwrap();

    let (message, received_source) = plugin.recv().unwrap();
    assert!(matches!(message, Message::StartSource(s) if s.instance_id == 1));
    let (message, received_sink) = plugin.recv().unwrap();
    assert!(matches!(message, Message::StartSink(s) if s.instance_id == 2));

    // Source: the plugin produces on the ring it received, the host consumes its own.
    let mut producer = received_source[0].producer(config()).unwrap();
    let mut consumer = source.consumer(config()).unwrap();
    put(&mut producer, b"from the plugin");
    assert_eq!(take(&mut consumer).unwrap(), b"from the plugin");
    // Sink: the other way round.
    let mut producer = sink.producer(config()).unwrap();
    let mut consumer = received_sink[0].consumer(config()).unwrap();
    put(&mut producer, b"from the host");
    assert_eq!(take(&mut consumer).unwrap(), b"from the host");
    drop(producer);
    assert_eq!(take(&mut consumer), None);
}

/// Kills and reaps the child if the test fails before it exits.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Accepts one connection, giving up after [`WAIT`].
fn accept(listener: &UnixListener) -> UnixStream {
    use rustix::event::{PollFd, PollFlags, Timespec};
    listener.set_nonblocking(true).unwrap();
    let timeout = Timespec {
        tv_sec: WAIT.as_secs() as _,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(listener, PollFlags::IN)];
    let ready = rustix::event::poll(&mut fds, Some(&timeout)).unwrap();
    assert_eq!(ready, 1, "the child did not connect within {WAIT:?}");
    listener.accept().unwrap().0
}

#[test]
fn control_rings_cross_a_process_boundary() {
    let name = format!("shmplug-control-test-{}", std::process::id());
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "control_child_plugin",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SOCKET, &name)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let host = ControlChannel::new(accept(&listener)).unwrap();
    host.set_read_timeout(Some(WAIT));

    let Message::Hello(hello) = host.recv().unwrap().0 else {
        panic!("no hello")
    };
    assert_eq!(
        (hello.plugin_name.as_str(), &hello.sources[..]),
        ("child", &["counter".to_owned()][..])
    );

    // Source: the child counts into the ring, then closes it.
    let ring = Ring::create(4096).unwrap();
    let mut consumer = ring.consumer(config()).unwrap();
    host.send(&Message::StartSource(start(1, "counter")), &[&ring])
        .unwrap();
    assert_eq!(host.recv().unwrap().0, Message::Started { instance_id: 1 });
    for i in 0..SOURCE_RECORDS {
        assert_eq!(take(&mut consumer).unwrap(), i.to_le_bytes());
    }
    assert_eq!(take(&mut consumer), None);

    // Sink: the host writes, the child sums and reports the sum in a log message.
    let ring = Ring::create(4096).unwrap();
    let mut producer = ring.producer(config()).unwrap();
    host.send(&Message::StartSink(start(2, "sum")), &[&ring])
        .unwrap();
    assert_eq!(host.recv().unwrap().0, Message::Started { instance_id: 2 });
    for i in 0..SINK_RECORDS {
        put(&mut producer, &i.to_le_bytes());
    }
    drop(producer);
    let Message::Log(log) = host.recv().unwrap().0 else {
        panic!("no log")
    };
    assert_eq!(
        log.message,
        format!("sum {}", SINK_RECORDS * (SINK_RECORDS - 1) / 2)
    );
    assert_eq!((log.level, log.instance_id), (LogLevel::Info, Some(2)));

    // Function: calls on the request ring, results on the reply ring.
    let (requests, replies) = (Ring::create(4096).unwrap(), Ring::create(4096).unwrap());
    let mut calls = requests.producer(config()).unwrap();
    let mut results = replies.consumer(config()).unwrap();
    host.send(
        &Message::StartFunction(start(3, "upper")),
        &[&requests, &replies],
    )
    .unwrap();
    assert_eq!(host.recv().unwrap().0, Message::Started { instance_id: 3 });
    for i in 0..100 {
        put(&mut calls, format!("call {i}").as_bytes());
        assert_eq!(take(&mut results).unwrap(), format!("CALL {i}").as_bytes());
    }
    drop(calls);
    assert_eq!(take(&mut results), None);

    // An unknown symbol fails loudly; ping, stop and shutdown are answered.
    let ring = Ring::create(4096).unwrap();
    host.send(&Message::StartSource(start(4, "nope")), &[&ring])
        .unwrap();
    assert!(
        matches!(host.recv().unwrap().0, Message::Failed { instance_id: 4, error } if error.contains("nope"))
    );
    host.send(&Message::Ping { nonce: 42 }, &[]).unwrap();
    assert_eq!(host.recv().unwrap().0, Message::Pong { nonce: 42 });
    host.send(&Message::Stop { instance_id: 3 }, &[]).unwrap();
    assert_eq!(host.recv().unwrap().0, Message::Stopped { instance_id: 3 });
    host.send(&Message::Shutdown, &[]).unwrap();
    match host.recv() {
        Err(Error::Control(ControlError::Closed)) => {}
        other => panic!("expected the child to close the channel, got {other:?}"),
    }
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child plugin failed: {status}");
}

/// The plugin side of [`control_rings_cross_a_process_boundary`]; does nothing unless that
/// test started it.
#[test]
#[ignore = "run by control_rings_cross_a_process_boundary in a child process"]
fn control_child_plugin() {
    let Ok(name) = std::env::var(CHILD_SOCKET) else {
        return;
    };
    let stream = UnixStream::connect_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let channel = ControlChannel::new(stream).unwrap();
    channel.set_read_timeout(Some(WAIT));
    let hello = Hello {
        sources: vec!["counter".into()],
        sinks: vec!["sum".into()],
        functions: vec!["upper".into()],
        ..Hello::new("child")
    };
    channel.send(&Message::Hello(hello), &[]).unwrap();
    loop {
        let (message, rings) = channel.recv().unwrap();
        let reply = match message {
            Message::StartSource(s) if s.symbol == "counter" => {
                let mut producer = rings[0].producer(config()).unwrap();
                channel
                    .send(
                        &Message::Started {
                            instance_id: s.instance_id,
                        },
                        &[],
                    )
                    .unwrap();
                for i in 0..SOURCE_RECORDS {
                    put(&mut producer, &i.to_le_bytes());
                }
                continue;
            }
            Message::StartSink(s) => {
                let mut consumer = rings[0].consumer(config()).unwrap();
                channel
                    .send(
                        &Message::Started {
                            instance_id: s.instance_id,
                        },
                        &[],
                    )
                    .unwrap();
                let mut sum = 0;
                while let Some(record) = take(&mut consumer) {
                    sum += u64::from_le_bytes(record.try_into().unwrap());
                }
                let message = format!("sum {sum}");
                let target = "control_rings::child".into();
                Message::Log(Log {
                    level: LogLevel::Info,
                    target,
                    message,
                    instance_id: Some(s.instance_id),
                })
            }
            Message::StartFunction(s) => {
                let mut requests = rings[0].consumer(config()).unwrap();
                let mut replies = rings[1].producer(config()).unwrap();
                channel
                    .send(
                        &Message::Started {
                            instance_id: s.instance_id,
                        },
                        &[],
                    )
                    .unwrap();
                while let Some(call) = take(&mut requests) {
                    put(&mut replies, &call.to_ascii_uppercase());
                }
                continue;
            }
            Message::StartSource(s) => {
                let error = format!(
                    "source symbol `{}` not found; this plugin offers `counter`",
                    s.symbol
                );
                Message::Failed {
                    instance_id: s.instance_id,
                    error,
                }
            }
            Message::Ping { nonce } => Message::Pong { nonce },
            Message::Stop { instance_id } => Message::Stopped { instance_id },
            Message::Shutdown => return,
            other => panic!("unexpected {other:?}"),
        };
        channel.send(&reply, &[]).unwrap();
    }
}
