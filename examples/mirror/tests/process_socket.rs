//! The `mirror` executable, started by hand and driven by a test host over a socket path.

mod support;

use std::os::unix::net::UnixListener;

use serde_json::json;
use shmplug_sdk::transport::control::{ControlChannel, Message, PROTOCOL_VERSION, Start};
use shmplug_sdk::transport::tuple::call;
use shmplug_sdk::transport::{Ring, Tuple, TupleReceiver, TupleSender, ValueRef};
use support::{WAIT, endpoint, mirror, next, source_ring, wait};

#[test]
fn started_by_hand_it_explains_itself_and_exits_2() {
    let output = mirror().output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(text.starts_with("mirror: a shmplug plugin"), "{text}");
    assert!(text.contains("sources:   counter, random"), "{text}");
    assert!(text.contains("sinks:     file"), "{text}");
    assert!(text.contains("functions: echo"), "{text}");
    assert!(text.contains("SHMPLUG_CONTROL_FD") && text.contains("SHMPLUG_CONTROL_SOCKET"));
}

#[test]
fn describe_prints_its_hello_and_matches_the_manifest() {
    let output = mirror().arg("--describe").output().unwrap();
    assert!(output.status.success());
    let hello: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(include_str!("../mirror.json")).unwrap();
    assert_eq!(hello["plugin_name"], "mirror");
    assert_eq!(hello["protocol_version"], PROTOCOL_VERSION.to_string());
    for kind in ["sources", "sinks", "functions"] {
        assert_eq!(hello[kind], manifest[kind], "{kind}");
    }
    assert_eq!(manifest["executable"], "mirror");
    assert_eq!(manifest["language"], "rust");
}

#[test]
fn it_serves_a_host_listening_on_a_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let child = mirror()
        .env("SHMPLUG_CONTROL_SOCKET", &socket)
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    let host = ControlChannel::new(stream).unwrap();
    host.set_read_timeout(Some(WAIT));
    let Message::Hello(hello) = next(&host) else {
        panic!("expected hello")
    };
    assert_eq!(hello.plugin_name, "mirror");
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);

    // random -> host
    let (ring, mut tuples) = source_ring();
    let props = json!({"interval": 0, "count": 200, "seed": 3, "pattern": {"v": 10}});
    let start = Start {
        instance_id: 1,
        rule_id: "r1".into(),
        op_id: "op".into(),
        symbol: "random".into(),
        data_source: Some("topic".into()),
        properties: props.as_object().unwrap().clone(),
        ..Start::default()
    };
    host.send(&Message::StartSource(start), &[&ring]).unwrap();
    assert_eq!(next(&host), Message::Started { instance_id: 1 });
    let mut received = Vec::new();
    loop {
        match tuples.recv_timeout(WAIT) {
            Ok(view) => received.push(view.to_owned()),
            Err(e) if e.is_closed() => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(received.len(), 200);
    assert!(
        received
            .iter()
            .all(|t| { matches!(t.fields["v"], shmplug_sdk::Value::Int(10..=12)) })
    );

    // host -> echo -> host
    let requests = Ring::create(1 << 16).unwrap();
    let replies = Ring::create(1 << 16).unwrap();
    let mut calls = TupleSender::new(requests.producer(endpoint()).unwrap());
    let mut answers = TupleReceiver::new(replies.consumer(endpoint()).unwrap());
    let start = Start {
        instance_id: 2,
        symbol: "echo".into(),
        ..Start::default()
    };
    host.send(&Message::StartFunction(start), &[&requests, &replies])
        .unwrap();
    assert_eq!(next(&host), Message::Started { instance_id: 2 });
    call::send_call(&mut calls, 1, &[ValueRef::String("ping")]).unwrap();
    let view = answers.recv_timeout(WAIT).unwrap();
    let (seq, result) = call::parse_reply(&view).unwrap();
    assert_eq!((seq, result.unwrap().as_str()), (1, Some("ping")));
    drop(view);

    // host -> file
    let out = dir.path().join("out.jsonl");
    let sink_ring = Ring::create(1 << 16).unwrap();
    let mut sink = TupleSender::new(sink_ring.producer(endpoint()).unwrap());
    let props = json!({"path": out, "interval": 0});
    let start = Start {
        instance_id: 3,
        symbol: "file".into(),
        properties: props.as_object().unwrap().clone(),
        ..Start::default()
    };
    host.send(&Message::StartSink(start), &[&sink_ring])
        .unwrap();
    assert_eq!(next(&host), Message::Started { instance_id: 3 });
    for tuple in &received[..5] {
        sink.send(tuple).unwrap();
    }
    sink.send(&Tuple::new(0).with_field("last", true)).unwrap();
    host.send(&Message::Stop { instance_id: 3 }, &[]).unwrap();
    // The stop may overtake tuples still in the ring, so the file holds at most all of them;
    // the sink closed (and flushed) before `Stopped`.
    assert_eq!(next(&host), Message::Stopped { instance_id: 3 });
    let lines = std::fs::read_to_string(&out).unwrap();
    assert!(lines.lines().count() <= 6, "{lines}");
    for line in lines.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }

    host.send(&Message::Ping { nonce: 9 }, &[]).unwrap();
    assert_eq!(next(&host), Message::Pong { nonce: 9 });
    host.send(&Message::Shutdown, &[]).unwrap();
    assert!(wait(child).success());
}

#[test]
fn a_control_setting_that_does_not_work_is_explained() {
    // Standard input is /dev/null: not a socket.
    let output = mirror().env("SHMPLUG_CONTROL_FD", "0").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(
        text.contains("cannot take over the control socket SHMPLUG_CONTROL_FD=0"),
        "{text}"
    );
    assert!(text.contains("not a socket"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let nobody = dir.path().join("nobody-listens.sock");
    let output = mirror()
        .env("SHMPLUG_CONTROL_SOCKET", &nobody)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(
        text.contains("cannot connect to the host's control socket")
            && text.contains("nobody-listens"),
        "{text}"
    );
}
