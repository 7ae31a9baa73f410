//! Tuples through a real ring: property tests of round trips in every validation mode, borrowed
//! and owned writes, the depth limit, oversized tuples, and the blocking, non-blocking and
//! time-out forms of the channels.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use rkyv::util::AlignedVec;
use shmplug_transport::tuple::{
    Encode, Encoder, MAX_DEPTH, Tuple, TupleReceiver, TupleRef, TupleSender, TupleView, Validation,
    Value, ValueRef,
};
use shmplug_transport::{EndpointConfig, Error, Ring};

const WAIT: Duration = Duration::from_secs(20);

fn cfg() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

fn channel(capacity: usize, validation: Validation) -> (Ring, TupleSender, TupleReceiver) {
    let ring = Ring::create(capacity).expect("ring");
    let tx = TupleSender::new(ring.producer(cfg()).expect("producer"));
    let rx = TupleReceiver::with_validation(ring.consumer(cfg()).expect("consumer"), validation);
    (ring, tx, rx)
}

fn modes() -> [Validation; 3] {
    // SAFETY: the only writer of these rings is this test's `Encoder`, which writes valid tuples
    // and never touches a committed record.
    let trusted = unsafe { Validation::trusted() };
    [
        Validation::VALIDATED,
        Validation::COPY_THEN_VALIDATE,
        trusted,
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        any::<u64>().prop_map(f64::from_bits),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0)]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,12}",
        "\\PC{0,16}",
        any::<String>()
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        int().prop_map(Value::Int),
        float().prop_map(Value::Float),
        text().prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Value::Bytes),
        int().prop_map(Value::Timestamp),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::btree_map(text(), inner, 0..6).prop_map(Value::Map),
        ]
    })
}

fn tuple() -> impl Strategy<Value = Tuple> {
    let meta = proptest::collection::btree_map(text(), value(), 0..3);
    let fields = proptest::collection::btree_map(text(), value(), 0..8);
    (int(), meta, fields).prop_map(|(timestamp, meta, fields)| Tuple {
        timestamp,
        meta,
        fields,
    })
}

/// The borrowed form of an owned value; list and map slices are leaked (tests only).
fn borrowed(v: &Value) -> ValueRef<'_> {
    match v {
        Value::Null => ValueRef::Null,
        Value::Bool(b) => ValueRef::Bool(*b),
        Value::Int(i) => ValueRef::Int(*i),
        Value::Float(f) => ValueRef::Float(*f),
        Value::String(s) => ValueRef::String(s),
        Value::Bytes(b) => ValueRef::Bytes(b),
        Value::List(l) => ValueRef::List(Vec::leak(l.iter().map(borrowed).collect())),
        Value::Map(m) => ValueRef::Map(borrowed_map(m)),
        Value::Timestamp(t) => ValueRef::Timestamp(*t),
    }
}

fn borrowed_map(m: &BTreeMap<String, Value>) -> &[(&str, ValueRef<'_>)] {
    Vec::leak(m.iter().map(|(k, v)| (k.as_str(), borrowed(v))).collect())
}

fn encode(tuple: &impl Encode) -> AlignedVec<16> {
    let mut buf = AlignedVec::<16>::new();
    buf.resize(tuple.size_bound().expect("bound"), 0);
    let len = Encoder::new()
        .encode_into(tuple, &mut buf)
        .expect("encodes");
    buf.resize(len, 0);
    buf
}

/// Every field is found by name with its value, in order.
fn assert_view_matches(view: &TupleView<'_>, tuple: &Tuple) {
    assert_eq!(view.timestamp(), tuple.timestamp);
    assert_eq!(view.len(), tuple.fields.len());
    for ((name, value), (vname, vvalue)) in tuple.fields.iter().zip(view.iter()) {
        assert_eq!(name, vname);
        assert!(vvalue == *value, "{name}: {vvalue:?} != {value:?}");
        assert!(
            view.get(name).is_some_and(|v| v == *value),
            "lookup {name:?}"
        );
    }
    for (name, value) in &tuple.meta {
        assert!(
            view.meta().get(name).is_some_and(|v| v == *value),
            "meta {name:?}"
        );
    }
    assert!(view.get("\u{0}no such field\u{0}").is_none());
    assert_eq!(&view.to_owned(), tuple);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn tuples_round_trip_through_a_ring_in_every_mode(tuple in tuple(), mode in 0usize..3) {
        let (_ring, mut tx, mut rx) = channel(1 << 20, modes()[mode]);
        tx.send(&tuple).expect("send");
        let view = rx.recv_timeout(WAIT).expect("recv");
        assert_view_matches(&view, &tuple);
    }

    #[test]
    fn borrowed_tuples_write_the_owned_bytes(tuple in tuple()) {
        let borrowed = TupleRef {
            timestamp: tuple.timestamp,
            meta: borrowed_map(&tuple.meta),
            fields: borrowed_map(&tuple.fields),
        };
        let owned_bytes = encode(&tuple);
        let borrowed_bytes = encode(&borrowed);
        prop_assert_eq!(owned_bytes.as_slice(), borrowed_bytes.as_slice());
        prop_assert!(owned_bytes.len() <= tuple.size_bound().expect("bound"));
        prop_assert!(owned_bytes.len() <= borrowed.size_bound().expect("bound"));

        let (_ring, mut tx, mut rx) = channel(1 << 20, Validation::VALIDATED);
        tx.send(&borrowed).expect("send");
        let view = rx.recv_timeout(WAIT).expect("recv");
        assert_view_matches(&view, &tuple);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Many tuples through a small ring (it wraps many times), sender on another thread.
    #[test]
    fn a_stream_of_tuples_arrives_in_order(tuples in proptest::collection::vec(tuple(), 1..40)) {
        let (_ring, mut tx, mut rx) = channel(1 << 16, Validation::VALIDATED);
        std::thread::scope(|s| {
            let sent = &tuples;
            s.spawn(move || {
                for _ in 0..5 {
                    for t in sent {
                        tx.send_timeout(t, WAIT).expect("send");
                    }
                }
            });
            for _ in 0..5 {
                for t in &tuples {
                    let view = rx.recv_timeout(WAIT).expect("recv");
                    assert_eq!(&view.to_owned(), t);
                }
            }
            assert!(matches!(rx.recv_timeout(WAIT), Err(Error::Closed)));
        });
    }
}

/// A field nested `levels` deep, alternating lists and maps, with unicode on the way down.
fn nested(levels: usize) -> Value {
    let mut v = Value::String("gr\u{fc}n \u{1f600}".to_owned());
    for i in 0..levels {
        v = if i % 2 == 0 {
            Value::List(vec![Value::Null, v])
        } else {
            Value::Map([("\u{e9}".to_owned(), v)].into())
        };
    }
    v
}

#[test]
fn nesting_up_to_the_limit_round_trips_and_deeper_is_refused() {
    for mode in modes() {
        let (_ring, mut tx, mut rx) = channel(1 << 16, mode);
        let ok = Tuple::new(1).with_field("deep", nested(MAX_DEPTH));
        tx.send(&ok).expect("depth MAX_DEPTH is allowed");
        assert_eq!(rx.recv_timeout(WAIT).expect("recv").to_owned(), ok);

        let deep = Tuple::new(2).with_field("deep", nested(MAX_DEPTH + 1));
        let err = tx.send(&deep).expect_err("too deep");
        assert!(matches!(err, Error::InvalidTuple(_)), "{err}");
        assert!(
            rx.try_recv().expect("still healthy").is_none(),
            "nothing was written"
        );
    }
}

#[test]
fn a_tuple_larger_than_a_record_is_refused_and_nothing_is_visible() {
    let (ring, mut tx, mut rx) = channel(4096, Validation::VALIDATED);
    let max = ring.max_record_len();
    assert_eq!(tx.max_tuple_len(), max);
    let big = Tuple::new(0).with_field("blob", vec![7u8; max]);
    match tx.send(&big) {
        Err(Error::TooLarge { size, max: m }) => {
            assert_eq!(size, encode(&big).len(), "the exact archived size");
            assert_eq!(m, max);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(
        !tx.try_send(&big).is_ok_and(|sent| sent),
        "try_send refuses it too"
    );
    assert!(rx.try_recv().expect("healthy").is_none());
    let small = Tuple::new(1).with_field("ok", true);
    tx.send(&small).expect("the ring still works");
    assert_eq!(rx.recv_timeout(WAIT).expect("recv").to_owned(), small);
}

#[test]
fn a_tuple_whose_bound_exceeds_a_record_but_which_fits_is_sent() {
    let (ring, mut tx, mut rx) = channel(4096, Validation::VALIDATED);
    let max = ring.max_record_len();
    // Eight-byte keys are stored inline but counted by the bound: find a tuple in the gap.
    let mut n = 1;
    let tuple = loop {
        let t = (0..n).fold(Tuple::new(3), |t, i| {
            t.with_field(format!("k{i:07}"), Value::Null)
        });
        let (bound, exact) = (t.size_bound().expect("bound"), encode(&t).len());
        if bound > max && exact <= max {
            break t;
        }
        assert!(exact <= max, "no gap found");
        n += 1;
    };
    tx.send(&tuple).expect("fits exactly");
    assert_eq!(rx.recv_timeout(WAIT).expect("recv").to_owned(), tuple);
}

#[test]
fn large_byte_strings_round_trip() {
    let (_ring, mut tx, mut rx) = channel(1 << 20, Validation::COPY_THEN_VALIDATE);
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let fields = [("blob", ValueRef::Bytes(&blob)), ("n", ValueRef::Int(1))];
    tx.send(&TupleRef::new(9, &fields)).expect("send");
    let view = rx.recv_timeout(WAIT).expect("recv");
    assert_eq!(view.get("blob").and_then(|v| v.as_bytes()), Some(&blob[..]));
}

#[test]
fn non_blocking_and_time_out_forms() {
    let (_ring, mut tx, mut rx) = channel(4096, Validation::VALIDATED);
    assert!(rx.try_recv().expect("empty").is_none());
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(1)),
        Err(Error::TimedOut(_))
    ));
    let t = Tuple::new(0).with_field("payload", vec![1u8; 900]);
    let mut sent = 0;
    while tx.try_send(&t).expect("try_send") {
        sent += 1;
    }
    assert!(sent >= 1, "at least one fits");
    assert!(matches!(
        tx.send_timeout(&t, Duration::from_millis(1)),
        Err(Error::TimedOut(_))
    ));
    for _ in 0..sent {
        assert_eq!(rx.try_recv().expect("recv").expect("a tuple").to_owned(), t);
    }
    assert!(rx.try_recv().expect("empty").is_none());
    drop(tx);
    assert!(matches!(rx.recv_timeout(WAIT), Err(Error::Closed)));
}

#[test]
fn deferred_sends_are_published_by_flush() {
    let (_ring, mut tx, mut rx) = channel(1 << 16, Validation::VALIDATED);
    for i in 0..3 {
        tx.send_deferred(&Tuple::new(i)).expect("send");
    }
    assert!(
        rx.try_recv().expect("healthy").is_none(),
        "not yet published"
    );
    tx.flush();
    for i in 0..3 {
        assert_eq!(
            rx.try_recv().expect("recv").expect("published").timestamp(),
            i
        );
    }
}

#[test]
fn encoder_writes_between_other_records() {
    let ring = Ring::create(1 << 16).expect("ring");
    let mut producer = ring.producer(cfg()).expect("producer");
    let mut consumer = ring.consumer(cfg()).expect("consumer");
    let mut encoder = Encoder::new();
    let t = Tuple::new(4).with_field("x", 1i64);
    let len = encoder.write(&mut producer, &t).expect("write");
    assert_eq!(
        encoder.try_write(&mut producer, &t).expect("try_write"),
        Some(len)
    );
    let record = consumer.read_timeout(WAIT).expect("read");
    assert_eq!(record.kind(), shmplug_transport::tuple::RECORD_KIND);
    assert_eq!(record.len(), len);
    assert_eq!(TupleView::from_bytes(&record).expect("valid").to_owned(), t);
}

#[test]
fn try_send_deferred_fills_the_ring_unpublished_until_flush() {
    let (_ring, mut tx, mut rx) = channel(4096, Validation::VALIDATED);
    let t = Tuple::new(0).with_field("payload", vec![2u8; 900]);
    let mut sent = 0;
    while tx.try_send_deferred(&t).expect("try_send_deferred") {
        sent += 1;
    }
    assert!(sent >= 1, "at least one fits");
    tx.flush();
    for _ in 0..sent {
        assert_eq!(rx.try_recv().expect("recv").expect("a tuple").to_owned(), t);
    }
    assert!(rx.try_recv().expect("empty").is_none());
}
