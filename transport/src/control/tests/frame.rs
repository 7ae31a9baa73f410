//! The codec over byte buffers: round trips, the wire format, and every way a frame is refused.

use proptest::prelude::*;
use serde_json::json;

use super::*;

#[test]
fn every_message_round_trips_and_names_its_type() {
    let messages = every_message();
    assert_eq!(
        messages.len(),
        Message::TYPES.len(),
        "every_message must cover every type"
    );
    for (message, type_name) in messages.iter().zip(Message::TYPES) {
        assert_eq!(message.type_name(), *type_name);
        let frame = encode_frame(message).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&frame[HEADER_LEN..]).unwrap();
        assert_eq!(body["type"], *type_name, "{body}");
        assert_eq!(
            decode_frame(&frame).unwrap(),
            (message.clone(), frame.len())
        );
    }
}

#[test]
fn ring_counts_follow_the_message_type() {
    let counts: Vec<usize> = every_message().iter().map(Message::ring_count).collect();
    assert_eq!(counts, [0, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let descriptors: Vec<usize> = every_message()
        .iter()
        .map(Message::descriptor_count)
        .collect();
    assert_eq!(
        descriptors,
        [0, 3, 3, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    );
    // A ring whose plugin side wakes through a doorbell slot travels without that eventfd.
    let slotted = Message::StartFunction(Start {
        doorbell_slots: vec![4, 5],
        ..Start::default()
    });
    assert_eq!(slotted.descriptor_count(), 4);
}

#[test]
fn wire_format_is_pinned() {
    let frame = encode_frame(&Message::Ping { nonce: 7 }).unwrap();
    let body = br#"{"type":"ping","nonce":7}"#;
    let mut expected = b"SHPC\x01\x00\x00\x00".to_vec();
    expected.extend_from_slice(&(body.len() as u32).to_le_bytes());
    expected.extend_from_slice(body);
    assert_eq!(frame, expected);
    let hello = encode_frame(&Message::Hello(Hello::new("p"))).unwrap();
    assert_eq!(
        &hello[HEADER_LEN..],
        br#"{"type":"hello","protocol_version":"1.4","plugin_name":"p","sources":[],"sinks":[],"functions":[]}"#
    );
    // 1.2's rewind fields: absent unless set, so a 1.1 peer reads the same start as before.
    let rewound = Message::StartSource(Start {
        instance_id: 2,
        symbol: "s".into(),
        send_offsets: true,
        rewind_to: Some(vec![1, 2]),
        ..Start::default()
    });
    let frame = encode_frame(&rewound).unwrap();
    assert_eq!(
        &frame[HEADER_LEN..],
        br#"{"type":"start_source","instance_id":2,"rule_id":"","op_id":"","symbol":"s","properties":{},"send_offsets":true,"rewind_to":[1,2]}"#
    );
    let plain = encode_frame(&Message::StartSource(Start::default())).unwrap();
    assert!(!plain[HEADER_LEN..].windows(6).any(|w| w == b"rewind"));
    // 1.3's reply batches: absent unless set.
    assert!(!plain[HEADER_LEN..].windows(5).any(|w| w == b"reply"));
    let batched = Message::StartFunction(Start {
        reply_batches: true,
        ..Start::default()
    });
    let frame = encode_frame(&batched).unwrap();
    assert!(frame[HEADER_LEN..].ends_with(br#","reply_batches":true}"#));
    let delete = Message::State {
        instance_id: 3,
        key: "k".into(),
        value: None,
    };
    let frame = encode_frame(&delete).unwrap();
    assert_eq!(
        &frame[HEADER_LEN..],
        br#"{"type":"state","instance_id":3,"key":"k"}"#
    );
    assert_eq!(decode_frame(&frame).unwrap().0, delete);
    let shutdown = encode_frame(&Message::Shutdown).unwrap();
    assert_eq!(&shutdown[HEADER_LEN..], br#"{"type":"shutdown"}"#);
}

#[test]
fn frames_decode_one_after_another_from_a_stream_buffer() {
    let mut stream = Vec::new();
    for message in every_message() {
        stream.extend(encode_frame(&message).unwrap());
    }
    let mut rest = &stream[..];
    for message in every_message() {
        let (decoded, used) = decode_frame(rest).unwrap();
        assert_eq!(decoded, message);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
}

#[test]
fn truncated_frame_is_refused_at_every_length() {
    let frame = encode_frame(&Message::Stop { instance_id: 1 }).unwrap();
    for len in 0..frame.len() {
        let expected = if len < HEADER_LEN {
            HEADER_LEN
        } else {
            frame.len()
        };
        match control_error(decode_frame(&frame[..len])) {
            ControlError::Truncated {
                expected: e,
                received,
            } => {
                assert_eq!((e, received), (expected, len));
            }
            other => panic!("prefix of {len} bytes: {other}"),
        }
    }
}

#[test]
fn bad_magic_is_refused() {
    let e = control_error(decode_frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(
        matches!(e, ControlError::BadMagic { found } if found == *b"GET "),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("does not speak shmplug's control protocol"),
        "{e}"
    );
}

#[test]
fn unknown_frame_version_is_refused() {
    let mut frame = encode_frame(&Message::Shutdown).unwrap();
    frame[4..8].copy_from_slice(&2u32.to_le_bytes());
    let e = control_error(decode_frame(&frame));
    assert!(
        matches!(
            e,
            ControlError::FrameVersion {
                found: 2,
                supported: 1
            }
        ),
        "{e}"
    );
}

#[test]
fn oversized_frame_is_refused_before_its_body_arrives() {
    for announced in [MAX_BODY_LEN as u32 + 1, u32::MAX] {
        let mut header = frame_of(b"");
        header[8..12].copy_from_slice(&announced.to_le_bytes());
        let e = control_error(decode_frame(&header));
        assert!(
            matches!(e, ControlError::TooLarge { len, max: MAX_BODY_LEN } if len == u64::from(announced)),
            "{e}"
        );
    }
    let mut header = frame_of(b"");
    header[8..12].copy_from_slice(&(MAX_BODY_LEN as u32).to_le_bytes());
    assert_eq!(decode_header(&header).unwrap(), MAX_BODY_LEN);
}

#[test]
fn oversized_message_is_refused_by_the_encoder() {
    let message = Message::Error {
        message: "x".repeat(MAX_BODY_LEN),
    };
    let e = control_error(encode_frame(&message));
    assert!(
        matches!(e, ControlError::TooLarge { len, max: MAX_BODY_LEN } if len > MAX_BODY_LEN as u64),
        "{e}"
    );
    // Just under the limit is fine.
    let overhead = encode_frame(&Message::Error {
        message: String::new(),
    })
    .unwrap()
    .len();
    let message = Message::Error {
        message: "x".repeat(MAX_FRAME_LEN - overhead),
    };
    let frame = encode_frame(&message).unwrap();
    assert_eq!(frame.len(), MAX_FRAME_LEN);
    assert_eq!(decode_frame(&frame).unwrap().0, message);
}

#[test]
fn unknown_message_type_is_refused_by_name() {
    let e = control_error(decode_frame(&frame_of(
        br#"{"type":"teleport","to":"mars"}"#,
    )));
    assert!(
        matches!(&e, ControlError::UnknownMessage { type_name } if type_name == "teleport"),
        "{e}"
    );
    let long = format!(r#"{{"type":"{}"}}"#, "z".repeat(10_000));
    let e = control_error(decode_frame(&frame_of(long.as_bytes())));
    assert!(e.to_string().len() < 300, "{e}");
}

#[test]
fn malformed_bodies_are_refused_with_the_reason() {
    let cases: &[(&[u8], Option<&str>, &str)] = &[
        (b"", None, "EOF"),
        (b"not json", None, "expected"),
        (b"{\"type\":\"ping\",\"nonce\":1}x", None, "trailing"),
        (b"[\"ping\", 1]", None, "an array, not a JSON object"),
        (b"{}", None, "no `type` field"),
        (b"{\"type\":5}", None, "`type` field is a number"),
        (b"{\"type\":\"ping\"}", Some("ping"), "missing field `nonce`"),
        (b"{\"type\":\"ping\",\"nonce\":-1}", Some("ping"), "invalid value"),
        (b"{\"type\":\"stop\",\"instance_id\":18446744073709551616}", Some("stop"), ""),
        (b"{\"type\":\"log\",\"level\":\"loud\",\"target\":\"\",\"message\":\"\"}", Some("log"), "loud"),
        (b"{\"type\":\"start_sink\",\"instance_id\":1,\"rule_id\":\"r\",\"op_id\":\"o\",\"symbol\":\"s\",\"properties\":[]}", Some("start_sink"), "expected a map"),
        (b"{\"type\":\"hello\",\"protocol_version\":\"one\",\"plugin_name\":\"p\"}", Some("hello"), "`one`"),
        (b"{\"type\":\"hello\",\"protocol_version\":1,\"plugin_name\":\"p\"}", Some("hello"), "a number"),
        (b"{\"type\":\"hello\",\"plugin_name\":\"p\"}", Some("hello"), "protocol_version"),
    ];
    for (body, type_name, needle) in cases {
        let shown = String::from_utf8_lossy(body);
        match control_error(decode_frame(&frame_of(body))) {
            ControlError::Malformed {
                type_name: t,
                detail,
            } => {
                assert_eq!(t, *type_name, "{shown}: {detail}");
                assert!(detail.contains(needle), "{shown}: {detail}");
            }
            other => panic!("{shown}: {other}"),
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let body = format!(
        r#"{{"type":"error","message":"x","deep":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = control_error(decode_frame(&frame_of(body.as_bytes())));
    assert!(matches!(e, ControlError::Malformed { .. }), "{e}");
}

#[test]
fn hello_with_another_major_version_names_both_versions() {
    let body = json!({"type": "hello", "protocol_version": "2.1", "plugin_name": "mirror"});
    let e = control_error(decode_frame(&frame_of(body.to_string().as_bytes())));
    match &e {
        ControlError::VersionMismatch {
            plugin,
            ours,
            theirs,
        } => {
            assert_eq!(
                (plugin.as_str(), *ours, *theirs),
                ("mirror", PROTOCOL_VERSION, ProtocolVersion::new(2, 1))
            );
        }
        other => panic!("{other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("2.1") && text.contains(&PROTOCOL_VERSION.to_string()),
        "{text}"
    );
    // The version is checked first, so a future Hello whose other fields changed still gets
    // the version error, not a field error.
    let body = json!({"type": "hello", "protocol_version": "0.3", "sources": {"changed": true}});
    let e = control_error(decode_frame(&frame_of(body.to_string().as_bytes())));
    assert!(
        matches!(&e, ControlError::VersionMismatch { plugin, .. } if plugin == "?"),
        "{e}"
    );
}

#[test]
fn hello_with_another_minor_version_and_unknown_fields_is_accepted() {
    let body = json!({
        "type": "hello", "protocol_version": "1.42", "plugin_name": "p",
        "sources": ["s"], "features": ["from-the-future"],
    });
    let (message, _) = decode_frame(&frame_of(body.to_string().as_bytes())).unwrap();
    let Message::Hello(hello) = message else {
        panic!("{message:?}")
    };
    assert_eq!(hello.protocol_version, ProtocolVersion::new(1, 42));
    assert_eq!(hello.sources, ["s"]);
    assert!(hello.sinks.is_empty() && hello.functions.is_empty());
}

#[test]
fn optional_fields_may_be_left_out() {
    let body = br#"{"type":"start_source","instance_id":1,"rule_id":"r","op_id":"o","symbol":"s"}"#;
    let Message::StartSource(start) = decode_frame(&frame_of(body)).unwrap().0 else {
        panic!()
    };
    assert_eq!(start.data_source, None);
    assert!(start.properties.is_empty());
    let body = br#"{"type":"log","level":"info","target":"t","message":"m"}"#;
    let Message::Log(log) = decode_frame(&frame_of(body)).unwrap().0 else {
        panic!()
    };
    assert_eq!(log.instance_id, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_frame(&bytes);
        let _ = decode_frame(&frame_of(&bytes));
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0..13usize,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut frame = encode_frame(&every_message()[which]).unwrap();
        for (at, byte) in flips {
            let at = at % frame.len();
            frame[at] = byte;
        }
        if let Ok((message, used)) = decode_frame(&frame) {
            prop_assert!(used <= frame.len());
            let again = encode_frame(&message).unwrap();
            prop_assert_eq!(decode_frame(&again).unwrap().0.type_name(), message.type_name());
        }
    }
}
