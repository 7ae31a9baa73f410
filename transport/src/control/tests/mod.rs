//! Tests of the control protocol: the codec over byte buffers ([`frame`]), the channel over
//! real socket pairs with real rings ([`channel`]), and frames that cross the stream in pieces,
//! late, large or from several threads ([`stream`]).

use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::error::Error;
use crate::ring::{EndpointConfig, Ring};

mod channel;
mod frame;
mod stream;

/// One of every message type, with contents that exercise escaping and large numbers.
fn every_message() -> Vec<Message> {
    let start = |symbol: &str, data_source: Option<&str>| Start {
        instance_id: u64::MAX,
        rule_id: "rule \"1\"".into(),
        op_id: "op/ü".into(),
        symbol: symbol.into(),
        data_source: data_source.map(str::to_owned),
        properties: json!({"interval": 1000, "nested": {"list": [1, -2.5, null, true, "x"]}})
            .as_object()
            .unwrap()
            .clone(),
        state: json!({"count": 41, "last": "2026-12-03T14:00:00Z"})
            .as_object()
            .unwrap()
            .clone(),
        send_offsets: symbol == "random",
        rewind_to: (symbol == "random").then(|| vec![7, 0, 0, 0, 0, 0, 0, 0]),
        reply_batches: symbol == "echo",
        doorbell_slots: Vec::new(),
    };
    vec![
        Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            plugin_name: "mirror".into(),
            sources: vec!["random".into()],
            sinks: vec!["file".into()],
            functions: vec!["echo".into(), "count".into()],
            not_repeatable: vec!["count".into()],
            call_batches: true,
            aggregates: vec!["count".into()],
            rewindable: vec!["random".into()],
        }),
        Message::StartSource(start("random", Some("topic/a"))),
        Message::StartSink(start("file", None)),
        Message::StartFunction(start("echo", None)),
        Message::Started { instance_id: 3 },
        Message::Failed {
            instance_id: 3,
            error: "cannot open /nonexistent: no such file".into(),
        },
        Message::Stop { instance_id: 3 },
        Message::Stopped { instance_id: 3 },
        Message::Ping {
            nonce: 0xdead_beef_0123_4567,
        },
        Message::Pong {
            nonce: 0xdead_beef_0123_4567,
        },
        Message::Shutdown,
        Message::Log(Log {
            level: LogLevel::Warn,
            target: "mirror::random".into(),
            message: "line one\nline two\t\u{1f980}".into(),
            instance_id: Some(9),
        }),
        Message::Error {
            message: "symbol `nope` not found; the plugin offers: random".into(),
        },
        Message::State {
            instance_id: 3,
            key: "count".into(),
            value: Some(json!({"n": 42, "seen": ["a", "b"]})),
        },
        Message::Validate {
            request_id: 5,
            symbol: "echo".into(),
            args: vec![ArgShape::Field {
                name: "välue \"x\"".into(),
            }],
        },
        Message::Validated {
            request_id: 5,
            error: Some("echo takes 1 argument, got 2".into()),
        },
        Message::Doorbell,
    ]
}

/// A frame with a valid header around `body`, whatever `body` is.
fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&FRAME_MAGIC);
    frame.extend_from_slice(&FRAME_VERSION.to_le_bytes());
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

/// The control error inside `result`, or a panic naming what came instead.
#[track_caller]
fn control_error<T: std::fmt::Debug>(result: crate::Result<T>) -> ControlError {
    match result {
        Err(Error::Control(e)) => e,
        other => panic!("expected a control error, got {other:?}"),
    }
}

// Helpers for the tests over sockets.

/// Generous bound on every blocking read; a passing test never waits for it.
pub(super) const WAIT: Duration = Duration::from_secs(20);
/// Time-out for reads that are expected to time out.
pub(super) const SHORT: Duration = Duration::from_millis(30);

pub(super) fn pair() -> (ControlChannel, ControlChannel) {
    let (a, b) = ControlChannel::pair().unwrap();
    a.set_read_timeout(Some(WAIT));
    b.set_read_timeout(Some(WAIT));
    (a, b)
}

/// A channel and the raw socket of its peer, for writing bytes the channel would never send.
pub(super) fn raw_pair() -> (UnixStream, ControlChannel) {
    let (raw, other) = UnixStream::pair().unwrap();
    let channel = ControlChannel::new(other).unwrap();
    channel.set_read_timeout(Some(WAIT));
    (raw, channel)
}

pub(super) fn config() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

/// Writes a record into `ours` and reads it from `theirs`: the two share memory.
pub(super) fn assert_same_ring(ours: &Ring, theirs: &Ring, payload: &[u8]) {
    let mut producer = ours.producer(config()).unwrap();
    let mut consumer = theirs.consumer(config()).unwrap();
    let mut claim = producer.claim_timeout(payload.len(), WAIT).unwrap();
    claim.copy_from_slice(payload);
    claim.commit();
    assert_eq!(&*consumer.read_timeout(WAIT).unwrap(), payload);
}
