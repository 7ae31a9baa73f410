//! Unit tests of the format's internals: borrowed and owned forms archive alike, and the depth
//! walker agrees with rkyv's layout.

use std::collections::BTreeMap;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::check::{TAG_LIST, TAG_MAP, validate};
use super::check_reference::check_depth;
use super::*;

/// A tuple channel over a fresh 64 KiB ring, with a short spin, for tests within one thread.
pub(super) fn channel() -> (TupleSender, TupleReceiver) {
    let ring = crate::Ring::create(1 << 16).unwrap();
    let config = crate::EndpointConfig::default().with_spin(std::time::Duration::from_micros(5));
    (
        TupleSender::new(ring.producer(config).unwrap()),
        TupleReceiver::new(ring.consumer(config).unwrap()),
    )
}

fn archive<T>(value: &T) -> AlignedVec
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    rkyv::to_bytes::<rancor::Error>(value).expect("serializes")
}

fn map(entries: &[(&str, Value)]) -> BTreeMap<String, Value> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[test]
fn owned_and_borrowed_values_archive_to_the_same_bytes() {
    let long = "a string longer than the eight inline bytes";
    let bytes = [0u8, 1, 2, 255];
    let inner = [ValueRef::Int(-1), ValueRef::String("x")];
    let entries = [
        ("k", ValueRef::Bool(true)),
        ("a key past eight bytes", ValueRef::Null),
    ];
    let pairs: [(Value, ValueRef<'_>); 13] = [
        (Value::Null, ValueRef::Null),
        (Value::Bool(false), ValueRef::Bool(false)),
        (Value::Bool(true), ValueRef::Bool(true)),
        (Value::Int(i64::MIN), ValueRef::Int(i64::MIN)),
        (Value::Float(f64::NAN), ValueRef::Float(f64::NAN)),
        (Value::String(String::new()), ValueRef::String("")),
        (Value::String(long.to_owned()), ValueRef::String(long)),
        (Value::Bytes(bytes.to_vec()), ValueRef::Bytes(&bytes)),
        (Value::List(vec![]), ValueRef::List(&[])),
        (
            Value::List(vec![Value::Int(-1), Value::from("x")]),
            ValueRef::List(&inner),
        ),
        (Value::Map(BTreeMap::new()), ValueRef::Map(&[])),
        (
            // Sorted like the BTreeMap, so the orders agree.
            Value::Map(map(&[
                ("a key past eight bytes", Value::Null),
                ("k", Value::Bool(true)),
            ])),
            ValueRef::Map(&[entries[1], entries[0]]),
        ),
        (Value::Timestamp(i64::MAX), ValueRef::Timestamp(i64::MAX)),
    ];
    for (owned, borrowed) in &pairs {
        assert_eq!(
            archive(owned).as_slice(),
            archive(borrowed).as_slice(),
            "{owned:?}"
        );
    }
}

#[test]
fn owned_and_borrowed_tuples_archive_to_the_same_bytes() {
    let list = [ValueRef::Float(1.5), ValueRef::Timestamp(-5)];
    let fields = [("a", ValueRef::List(&list)), ("b", ValueRef::Bytes(b"xyz"))];
    let meta = [("topic", ValueRef::String("t/1"))];
    let borrowed = TupleRef {
        timestamp: 99,
        meta: &meta,
        fields: &fields,
    };
    let owned = Tuple::new(99)
        .with_field("a", vec![Value::Float(1.5), Value::Timestamp(-5)])
        .with_field("b", b"xyz".to_vec())
        .with_meta("topic", "t/1");
    assert_eq!(archive(&owned).as_slice(), archive(&borrowed).as_slice());
}

#[test]
fn walker_constants_match_the_archived_layout() {
    let list = archive(&Value::List(vec![Value::Int(7)]));
    let map = archive(&Value::Map(map(&[("k", Value::Int(7))])));
    // The root value is the last 16 bytes; its first byte is the tag.
    assert_eq!(list[list.len() - 16], TAG_LIST);
    assert_eq!(map[map.len() - 16], TAG_MAP);
}

/// `levels` lists nested in one another around an integer, archived by rkyv directly (which
/// does not limit depth), as the only field of a tuple.
fn nested(levels: usize) -> Tuple {
    let mut v = Value::Int(1);
    for i in 0..levels {
        v = if i % 2 == 0 {
            Value::List(vec![v])
        } else {
            Value::Map(map(&[("m", v)]))
        };
    }
    Tuple::new(0).with_field("deep", v)
}

#[test]
fn walker_accepts_the_depth_limit_and_rejects_one_more() {
    let ok = archive(&nested(MAX_DEPTH));
    check_depth(&ok).expect("depth MAX_DEPTH is allowed");
    validate(&ok).expect("and valid");
    let deep = archive(&nested(MAX_DEPTH + 1));
    let err = check_depth(&deep).expect_err("one level too deep");
    assert!(err.contains("nest deeper"), "{err}");
    // rkyv alone would accept it: the walker is what stops it.
    rkyv::access::<ArchivedTuple, rancor::Error>(&deep).expect("bytecheck accepts any depth");
}

#[test]
fn writers_refuse_values_deeper_than_the_limit() {
    assert!(nested(MAX_DEPTH).size_bound().is_ok());
    let err = nested(MAX_DEPTH + 1).size_bound().expect_err("too deep");
    assert!(matches!(err, crate::Error::InvalidTuple(_)), "{err}");
}

#[test]
fn size_bound_covers_the_archive() {
    let samples = [Tuple::default(), nested(10), nested(MAX_DEPTH)];
    for tuple in samples {
        let bound = tuple.size_bound().expect("bound");
        let actual = archive(&tuple).len();
        assert!(actual <= bound, "{actual} > {bound}");
    }
}

#[test]
fn a_tuple_past_the_encoders_estimate_takes_the_general_path() {
    let (mut tx, mut rx) = channel();
    let small = Tuple::new(1).with_field("a", 1);
    let large = Tuple::new(2).with_field("s", "x".repeat(5000));
    for tuple in [&small, &large, &large, &small] {
        tx.send(tuple).expect("sent");
        let view = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("received");
        assert_eq!(&view.to_owned(), tuple);
    }
}

#[test]
fn a_tuple_too_deep_for_the_one_pass_writer_leaves_nothing_in_the_ring() {
    let (mut tx, mut rx) = channel();
    let err = tx.send(&nested(MAX_DEPTH + 1)).expect_err("too deep");
    assert!(matches!(err, crate::Error::InvalidTuple(_)), "{err}");
    tx.send(&Tuple::new(3)).expect("sent");
    let view = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("received");
    assert_eq!(view.timestamp(), 3);
}

#[test]
fn offsets_travel_before_their_tuples_and_every_read_takes_them() {
    let (mut tx, mut rx) = channel();
    let one = Tuple::new(1).with_field("n", 1i64);
    // A tuple without an offset, one with, one with two (the last counts).
    tx.send(&one).unwrap();
    tx.send_offset(&Offset::from_u64(7)).unwrap();
    tx.send(&one).unwrap();
    tx.send_offset(&Offset::new(b"old").unwrap()).unwrap();
    assert!(
        tx.try_send_offset(&Offset::new(b"file:3").unwrap())
            .unwrap()
    );
    tx.send(&one).unwrap();
    assert!(rx.ready().unwrap());
    assert_eq!(rx.next_offset(), None);
    drop(rx.try_recv().unwrap().unwrap());
    assert!(rx.ready().unwrap());
    assert_eq!(rx.next_offset(), Some(Offset::from_u64(7)));
    drop(rx.recv().unwrap());
    assert_eq!(rx.next_offset(), None, "receiving the tuple clears it");
    drop(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap());
    assert!(!rx.ready().unwrap());
    // An offset alone: taken, and waiting for its tuple.
    tx.send_offset(&Offset::from_u64(9)).unwrap();
    tx.flush();
    assert!(!rx.ready().unwrap());
    assert_eq!(rx.next_offset(), Some(Offset::from_u64(9)));
    assert!(rx.try_recv().unwrap().is_none());
}

#[test]
fn an_offset_record_longer_than_the_limit_poisons_the_receiver() {
    let (mut tx, mut rx) = channel();
    let mut claim = tx.producer().claim(MAX_OFFSET_LEN + 1).unwrap();
    claim.set_kind(OFFSET_KIND);
    claim.commit();
    tx.send(&Tuple::new(1)).unwrap();
    let e = rx.try_recv().unwrap_err();
    assert!(matches!(e, crate::Error::InvalidTuple(_)), "{e}");
    assert!(e.to_string().contains("offset record of 65 bytes"), "{e}");
    assert!(rx.try_recv().is_err(), "poisoned");
}
