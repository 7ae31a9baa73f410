//! The channel over real socket pairs, with real rings: round trips and refusals.

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};

use super::*;
use crate::fdpass::send_with_fds;

#[test]
fn every_message_round_trips_with_its_rings() {
    let (host, plugin) = pair();
    for message in every_message() {
        if message == Message::Doorbell {
            let doorbell = crate::Doorbell::create(64).unwrap();
            host.send_doorbell(&doorbell).unwrap();
            let (received, rings) = plugin.recv().unwrap();
            assert_eq!(received, Message::Doorbell);
            assert!(rings.is_empty());
            let received = plugin.doorbell().expect("the channel keeps the doorbell");
            received.ring(7);
            assert!(doorbell.take(7), "both sides share the flags");
            continue;
        }
        let rings: Vec<Ring> = (0..message.ring_count())
            .map(|_| Ring::create(4096).unwrap())
            .collect();
        let refs: Vec<&Ring> = rings.iter().collect();
        host.send(&message, &refs).unwrap();
        let (received, received_rings) = plugin.recv().unwrap();
        assert_eq!(received, message);
        assert_eq!(received_rings.len(), rings.len());
        for (i, (ours, theirs)) in rings.iter().zip(&received_rings).enumerate() {
            assert_same_ring(
                ours,
                theirs,
                format!("{} ring {i}", message.type_name()).as_bytes(),
            );
        }
    }
}

#[test]
fn wrong_ring_count_is_refused_and_nothing_is_sent() {
    let (host, plugin) = pair();
    let ring = Ring::create(4096).unwrap();
    let e = control_error(host.send(&Message::Ping { nonce: 1 }, &[&ring]));
    assert!(
        matches!(
            e,
            ControlError::RingCount {
                message: "ping",
                expected: 0,
                given: 1
            }
        ),
        "{e}"
    );
    let start = Message::StartFunction(Start::default());
    let e = control_error(host.send(&start, &[&ring]));
    assert!(
        matches!(
            e,
            ControlError::RingCount {
                message: "start_function",
                expected: 2,
                given: 1
            }
        ),
        "{e}"
    );
    let e = control_error(plugin.recv_timeout(Some(SHORT)));
    assert!(matches!(e, ControlError::TimedOut(t) if t == SHORT), "{e}");
}

#[test]
fn wrong_descriptor_count_is_refused_and_the_channel_stays_usable() {
    let (raw, channel) = raw_pair();
    let ring = Ring::create(4096).unwrap();
    let [memory, data_ready, space_ready] = ring.fds()[..] else {
        panic!("a new ring has three descriptors")
    };
    let cases: [(Message, Vec<BorrowedFd<'_>>, usize); 4] = [
        (
            Message::StartSource(Start::default()),
            vec![memory, data_ready],
            3,
        ),
        (Message::StartSink(Start::default()), vec![], 3),
        (
            Message::StartFunction(Start::default()),
            vec![memory, data_ready, space_ready],
            6,
        ),
        (
            Message::Ping { nonce: 1 },
            vec![memory, data_ready, space_ready],
            0,
        ),
    ];
    for (message, fds, expected) in cases {
        send_with_fds(&raw, &encode_frame(&message).unwrap(), &fds).unwrap();
        match control_error(channel.recv()) {
            ControlError::DescriptorCount {
                message: m,
                expected: e,
                received,
            } => {
                assert_eq!((m, e, received), (message.type_name(), expected, fds.len()));
            }
            other => panic!("{other}"),
        }
        send_with_fds(
            &raw,
            &encode_frame(&Message::Pong { nonce: 2 }).unwrap(),
            &[],
        )
        .unwrap();
        assert_eq!(channel.recv().unwrap().0, Message::Pong { nonce: 2 });
    }
}

#[test]
fn descriptors_that_are_not_a_ring_are_refused() {
    let (raw, channel) = raw_pair();
    let (a, b) = UnixStream::pair().unwrap();
    let ring = Ring::create(4096).unwrap();
    let [_, data_ready, space_ready] = ring.fds()[..] else {
        panic!("a new ring has three descriptors")
    };
    let fds = [a.as_fd(), data_ready, space_ready];
    send_with_fds(
        &raw,
        &encode_frame(&Message::StartSink(Start::default())).unwrap(),
        &fds,
    )
    .unwrap();
    let e = channel.recv().unwrap_err();
    assert!(matches!(e, Error::BadSegment(_)), "{e}");
    drop(b);
}

#[test]
fn truncated_frame_is_refused_then_the_channel_is_broken() {
    let (mut raw, channel) = raw_pair();
    let frame = encode_frame(&Message::Stop { instance_id: 5 }).unwrap();
    raw.write_all(&frame[..frame.len() - 1]).unwrap();
    raw.shutdown(Shutdown::Write).unwrap();
    let e = control_error(channel.recv());
    assert!(
        matches!(e, ControlError::Truncated { expected, received } if expected == frame.len() && received == frame.len() - 1),
        "{e}"
    );
    assert!(matches!(
        control_error(channel.recv()),
        ControlError::Broken { .. }
    ));
}

#[test]
fn header_cut_short_is_a_truncated_frame() {
    let (mut raw, channel) = raw_pair();
    raw.write_all(b"SHPC\x01").unwrap();
    drop(raw);
    let e = control_error(channel.recv());
    assert!(
        matches!(
            e,
            ControlError::Truncated {
                expected: HEADER_LEN,
                received: 5
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_magic_breaks_the_channel() {
    let (mut raw, channel) = raw_pair();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let e = control_error(channel.recv());
    assert!(
        matches!(e, ControlError::BadMagic { found } if found == *b"GET "),
        "{e}"
    );
    let e = control_error(channel.recv());
    assert!(
        matches!(&e, ControlError::Broken { cause } if cause.contains("GET")),
        "{e}"
    );
    assert!(e.is_fatal());
}

#[test]
fn oversized_frame_is_refused_from_its_header_alone() {
    let (mut raw, channel) = raw_pair();
    let mut header = frame_of(b"");
    header[8..12].copy_from_slice(&(MAX_BODY_LEN as u32 + 1).to_le_bytes());
    raw.write_all(&header).unwrap();
    let e = control_error(channel.recv());
    assert!(
        matches!(
            e,
            ControlError::TooLarge {
                max: MAX_BODY_LEN,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_and_malformed_messages_leave_the_channel_usable() {
    let (mut raw, channel) = raw_pair();
    raw.write_all(&frame_of(br#"{"type":"teleport"}"#)).unwrap();
    raw.write_all(&frame_of(br#"{"type":"ping"}"#)).unwrap();
    raw.write_all(&encode_frame(&Message::Ping { nonce: 3 }).unwrap())
        .unwrap();
    let e = control_error(channel.recv());
    assert!(
        matches!(&e, ControlError::UnknownMessage { type_name } if type_name == "teleport"),
        "{e}"
    );
    let e = control_error(channel.recv());
    assert!(
        matches!(
            e,
            ControlError::Malformed {
                type_name: Some("ping"),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(channel.recv().unwrap().0, Message::Ping { nonce: 3 });
}

#[test]
fn hello_with_wrong_version_is_refused_naming_both_versions() {
    let (host, plugin) = pair();
    let hello = Hello {
        protocol_version: ProtocolVersion::new(PROTOCOL_VERSION.major + 1, 0),
        ..Hello::new("mirror")
    };
    plugin.send(&Message::Hello(hello), &[]).unwrap();
    let e = control_error(host.recv());
    let text = e.to_string();
    assert!(matches!(e, ControlError::VersionMismatch { .. }), "{e}");
    assert!(
        text.contains("mirror") && text.contains(&format!("{}.0", PROTOCOL_VERSION.major + 1)),
        "{text}"
    );
    assert!(text.contains(&PROTOCOL_VERSION.to_string()), "{text}");
    // The host can still tell the plugin why.
    host.send(
        &Message::Error {
            message: text.clone(),
        },
        &[],
    )
    .unwrap();
    assert_eq!(plugin.recv().unwrap().0, Message::Error { message: text });
}

#[test]
fn peer_closing_between_frames_is_closed_not_an_error() {
    let (host, plugin) = pair();
    host.send(&Message::Shutdown, &[]).unwrap();
    drop(host);
    assert_eq!(plugin.recv().unwrap().0, Message::Shutdown);
    assert!(matches!(control_error(plugin.recv()), ControlError::Closed));
    assert!(matches!(
        control_error(plugin.send(&Message::Ping { nonce: 1 }, &[])),
        ControlError::Closed
    ));
}

#[test]
fn shutting_down_the_socket_closes_the_channel() {
    let (host, plugin) = pair();
    host.get_ref().shutdown(Shutdown::Both).unwrap();
    assert!(matches!(control_error(plugin.recv()), ControlError::Closed));
}

#[test]
fn rings_with_doorbell_slots_travel_with_two_descriptors_and_wake_through_the_doorbell() {
    use crate::{Doorbell, EndpointConfig, Wakeup};
    let (host, plugin) = pair();
    let doorbell = Doorbell::create(64).unwrap();
    let calls = Ring::create_with_doorbell(4096, &doorbell, Wakeup::Data).unwrap();
    let replies = Ring::create_with_doorbell(4096, &doorbell, Wakeup::Space).unwrap();
    assert_eq!(
        (calls.doorbell_slot(), replies.doorbell_slot()),
        (Some(0), Some(1))
    );
    assert_eq!(calls.fds().len(), 2, "the memfd and the host's own eventfd");
    let start = Start {
        instance_id: 1,
        symbol: "echo".into(),
        doorbell_slots: vec![0, 1],
        ..Start::default()
    };
    // Slots the message does not name are refused before anything is sent.
    let unnamed = Message::StartFunction(Start {
        doorbell_slots: Vec::new(),
        ..start.clone()
    });
    let e = control_error(host.send(&unnamed, &[&calls, &replies]));
    assert!(matches!(e, ControlError::DescriptorCount { .. }), "{e:?}");
    // Named before the doorbell came: the receiver refuses the start, and carries on.
    let message = Message::StartFunction(start);
    host.send(&message, &[&calls, &replies]).unwrap();
    let e = control_error(plugin.recv());
    assert!(e.to_string().contains("before any doorbell"), "{e}");

    host.send_doorbell(&doorbell).unwrap();
    host.send(&message, &[&calls, &replies]).unwrap();
    assert_eq!(plugin.recv().unwrap().0, Message::Doorbell);
    let (received, rings) = plugin.recv().unwrap();
    assert_eq!(received, message);
    assert_eq!(rings[0].doorbell_slot(), Some(0));
    assert!(
        rings[0].memory_fd().is_none(),
        "the receiver closes the memfd"
    );

    // The plugin's producer parks the event-loop way on a full reply ring; the host's
    // consumer makes room and rings slot 1.
    let mut tx = rings[1].producer(EndpointConfig::default()).unwrap();
    let mut rx = replies.consumer(EndpointConfig::default()).unwrap();
    let len = tx.max_record_len();
    while tx.has_room(len).unwrap() {
        let mut claim = tx.claim(len).unwrap();
        claim.fill(1);
        claim.commit();
    }
    assert!(!tx.prepare_park(len), "the ring is full");
    let plugin_doorbell = plugin.doorbell().unwrap();
    // Releasing a record while the producer waits publishes the room at once.
    drop(rx.read().unwrap());
    assert!(
        plugin_doorbell.take(1),
        "the consumer rang the producer's slot"
    );
    assert!(!plugin_doorbell.take(0));
    tx.finish_park();
    assert!(tx.has_room(len).unwrap());
}
