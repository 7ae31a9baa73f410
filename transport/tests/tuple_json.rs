//! Conversion to and from `serde_json`: round trips of everything JSON can represent, through
//! text and through a ring, and the documented mapping of what it cannot.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use shmplug_transport::tuple::{MAX_DEPTH, Tuple, TupleReceiver, TupleSender, Value};
use shmplug_transport::{EndpointConfig, Error, Ring};

fn cfg() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

/// Values JSON represents exactly: no bytes, no timestamps, finite floats.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)].prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        prop_oneof![Just(String::new()), "\\PC{0,16}", any::<String>()].prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..5).prop_map(Value::Map),
        ]
    })
}

fn json_tuple() -> impl Strategy<Value = Tuple> {
    (
        any::<i64>(),
        proptest::collection::btree_map("[a-z]{0,8}", json_value(), 0..3),
        proptest::collection::btree_map("\\PC{0,8}", json_value(), 0..6),
    )
        .prop_map(|(timestamp, meta, fields)| Tuple {
            timestamp,
            meta,
            fields,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn values_round_trip_through_json_text(value in json_value()) {
        prop_assert_eq!(&Value::from_json(&value.to_json()).expect("converts"), &value);
        // Through text, exactly with serde_json's `float_roundtrip` (a dev-dependency feature).
        let text = serde_json::to_string(&value.to_json()).expect("serializes");
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("parses");
        prop_assert_eq!(Value::from_json(&parsed).expect("converts"), value);
    }

    #[test]
    fn tuples_round_trip_through_json_and_views_agree(tuple in json_tuple()) {
        let json = tuple.to_json();
        prop_assert_eq!(&Tuple::from_json(&json).expect("converts"), &tuple);
        let message = tuple.to_json_message();
        let from_message = Tuple::from_json_message(&message, tuple.timestamp).expect("converts");
        prop_assert_eq!(&from_message.fields, &tuple.fields);

        let ring = Ring::create(1 << 18).expect("ring");
        let mut tx = TupleSender::new(ring.producer(cfg()).expect("producer"));
        let mut rx = TupleReceiver::new(ring.consumer(cfg()).expect("consumer"));
        tx.send(&tuple).expect("send");
        let view = rx.recv_timeout(Duration::from_secs(20)).expect("recv");
        prop_assert_eq!(view.to_json(), json);
        prop_assert_eq!(view.to_json_message(), message);
    }
}

#[test]
fn types_json_lacks_map_as_documented() {
    let t = Tuple::new(0)
        .with_field("bytes", b"foobar".to_vec())
        .with_field("at", Value::Timestamp(1_700_000_000_500_000_000))
        .with_field("epoch", Value::Timestamp(0))
        .with_field("nan", f64::NAN)
        .with_field("inf", f64::NEG_INFINITY)
        .with_field("one", 1.0)
        .with_field("big", i64::MAX);
    let expected = json!({
        "bytes": "Zm9vYmFy",
        "at": "2023-11-14T22:13:20.5Z",
        "epoch": "1970-01-01T00:00:00Z",
        "nan": null,
        "inf": null,
        "one": 1.0,
        "big": i64::MAX,
    });
    assert_eq!(t.to_json_message(), expected);
    assert_eq!(
        serde_json::to_string(&json!({"one": 1.0})).expect("text"),
        r#"{"one":1.0}"#
    );
    let back = Tuple::from_json_message(&expected, 0).expect("converts");
    assert_eq!(
        back.fields["bytes"],
        Value::from("Zm9vYmFy"),
        "strings stay strings"
    );
    assert_eq!(back.fields["one"], Value::Float(1.0));
    assert_eq!(back.fields["big"], Value::Int(i64::MAX));
    let huge = Value::from_json(&json!(u64::MAX)).expect("converts");
    assert_eq!(huge, Value::Float(u64::MAX as f64));
}

#[test]
fn json_depth_is_limited() {
    let nest = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!([inner]));
    assert!(Value::from_json(&nest(MAX_DEPTH)).is_ok());
    assert!(matches!(
        Value::from_json(&nest(MAX_DEPTH + 1)),
        Err(Error::InvalidTuple(_))
    ));
    let message = json!({ "deep": nest(MAX_DEPTH + 1) });
    assert!(matches!(
        Tuple::from_json_message(&message, 0),
        Err(Error::InvalidTuple(_))
    ));
}

#[test]
fn malformed_json_tuples_are_refused() {
    for bad in [
        json!([1, 2]),
        json!({"timestamp": "soon"}),
        json!({"timestamp": 1.5}),
        json!({"fields": [1]}),
        json!({"meta": 3}),
        json!({"temperature": 21.5}),
    ] {
        assert!(
            matches!(Tuple::from_json(&bad), Err(Error::InvalidTuple(_))),
            "{bad}"
        );
    }
    assert!(Tuple::from_json_message(&json!("text"), 0).is_err());
    assert_eq!(
        Tuple::from_json(&json!({})).expect("all members optional"),
        Tuple::default()
    );
}
