//! Frames that cross the stream in pieces, late, large, or from several threads at once.

use std::io::Write;
use std::sync::Arc;

use super::*;
use crate::fdpass::send_with_fds;

#[test]
fn time_out_keeps_the_partial_frame() {
    let (mut raw, channel) = raw_pair();
    let ring = Ring::create(4096).unwrap();
    let frame = encode_frame(&Message::StartSource(Start {
        instance_id: 4,
        ..Start::default()
    }))
    .unwrap();
    // The descriptors ride on the first bytes; the rest comes later.
    send_with_fds(&raw, &frame[..5], &ring.fds()).unwrap();
    let e = control_error(channel.recv_timeout(Some(SHORT)));
    assert!(matches!(e, ControlError::TimedOut(t) if t == SHORT), "{e}");
    raw.write_all(&frame[5..HEADER_LEN + 3]).unwrap();
    let e = control_error(channel.recv_timeout(Some(Duration::ZERO)));
    assert!(matches!(e, ControlError::TimedOut(Duration::ZERO)), "{e}");
    raw.write_all(&frame[HEADER_LEN + 3..]).unwrap();
    let (message, rings) = channel.recv().unwrap();
    assert_eq!(
        message,
        Message::StartSource(Start {
            instance_id: 4,
            ..Start::default()
        })
    );
    assert_same_ring(&ring, &rings[0], b"after a time-out");
}

#[test]
fn zero_time_out_reads_a_frame_that_already_arrived() {
    let (host, plugin) = pair();
    host.send(&Message::Pong { nonce: 8 }, &[]).unwrap();
    assert_eq!(
        plugin.recv_timeout(Some(Duration::ZERO)).unwrap().0,
        Message::Pong { nonce: 8 }
    );
}

#[test]
fn frame_split_into_single_bytes_with_descriptors_on_the_body() {
    let (mut raw, channel) = raw_pair();
    let ring = Ring::create(4096).unwrap();
    let frame = encode_frame(&Message::StartSink(Start {
        symbol: "file".into(),
        ..Start::default()
    }))
    .unwrap();
    for byte in &frame[..HEADER_LEN + 1] {
        raw.write_all(std::slice::from_ref(byte)).unwrap();
    }
    send_with_fds(&raw, &frame[HEADER_LEN + 1..HEADER_LEN + 2], &ring.fds()).unwrap();
    for byte in &frame[HEADER_LEN + 2..] {
        raw.write_all(std::slice::from_ref(byte)).unwrap();
    }
    let (message, rings) = channel.recv().unwrap();
    assert!(
        matches!(&message, Message::StartSink(start) if start.symbol == "file"),
        "{message:?}"
    );
    assert_same_ring(&ring, &rings[0], b"split");
}

#[test]
fn large_message_crosses_a_full_socket_buffer() {
    let (host, plugin) = pair();
    let overhead = encode_frame(&Message::Error {
        message: String::new(),
    })
    .unwrap()
    .len();
    let message = Message::Error {
        message: "y".repeat(MAX_FRAME_LEN - overhead),
    };
    std::thread::scope(|s| {
        s.spawn(|| host.send(&message, &[]).unwrap());
        assert_eq!(plugin.recv().unwrap().0, message);
    });
}

#[test]
fn concurrent_senders_never_interleave_frames() {
    let (host, plugin) = pair();
    let host = Arc::new(host);
    const PER_THREAD: u64 = 200;
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let host = &host;
            s.spawn(move || {
                let ring = Ring::create(4096).unwrap();
                for i in 0..PER_THREAD {
                    let start = Start {
                        instance_id: t * PER_THREAD + i,
                        rule_id: "r".repeat(i as usize * 50),
                        ..Start::default()
                    };
                    host.send(&Message::StartSource(start), &[&ring]).unwrap();
                }
            });
        }
        let mut seen = vec![false; 2 * PER_THREAD as usize];
        for _ in 0..2 * PER_THREAD {
            let (message, rings) = plugin.recv().unwrap();
            let Message::StartSource(start) = message else {
                panic!("{message:?}")
            };
            assert_eq!(
                start.rule_id.len(),
                (start.instance_id % PER_THREAD) as usize * 50
            );
            assert_eq!(rings.len(), 1);
            seen[start.instance_id as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    });
}
