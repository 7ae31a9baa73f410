//! The tuple validator against the reference it replaced (depth walk plus rkyv's bytecheck), on
//! real archives and on mutations of them: both must accept the same records and read the same
//! values from them.

use std::collections::BTreeMap;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::{MAX_DEPTH, Tuple, TupleView, Value, check, check_reference};

fn archive(tuple: &Tuple) -> AlignedVec {
    rkyv::to_bytes::<rancor::Error>(tuple).expect("serializes")
}

/// Checks `bytes` with both validators; panics if they disagree. True if both accept.
fn agree(bytes: &[u8]) -> bool {
    let read = |root| TupleView::from_checked(root, bytes).to_owned();
    match (check::validate(bytes), check_reference::validate(bytes)) {
        (Ok(new), Ok(old)) => {
            assert_eq!(
                read(new),
                read(old),
                "both accept {bytes:?} but read differently"
            );
            true
        }
        (Err(_), Err(_)) => false,
        (new, old) => panic!(
            "the validators disagree on {bytes:?}: new {:?}, reference {:?}",
            new.map(read),
            old.map(read)
        ),
    }
}

fn nested(levels: usize) -> Value {
    let mut v = Value::Int(1);
    for i in 0..levels {
        v = if i % 2 == 0 {
            Value::List(vec![v])
        } else {
            Value::Map(BTreeMap::from([("m".to_owned(), v)]))
        };
    }
    v
}

/// Tuples that use every variant, both string representations, empty and nested containers.
fn samples() -> Vec<Tuple> {
    let every = Value::List(vec![
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(-7),
        Value::Float(f64::NAN),
        Value::from(""),
        Value::from("inline8!"),
        Value::from("out of line, and with ünïcödé"),
        Value::Bytes(vec![0xff, 0, 0x80]),
        Value::Bytes(vec![]),
        Value::List(vec![]),
        Value::Map(BTreeMap::new()),
        Value::Timestamp(1_700_000_000_000_000_000),
    ]);
    vec![
        Tuple::default(),
        Tuple::new(5)
            .with_field("a", 1)
            .with_meta("topic", "room/1"),
        Tuple::new(-1)
            .with_field("every", every)
            .with_field("a key longer than eight", "v")
            .with_field("é", Value::Float(-0.0))
            .with_meta(
                "m",
                Value::Map(BTreeMap::from([("x".to_owned(), Value::Null)])),
            ),
        Tuple::new(0).with_field("deep", nested(6)),
    ]
}

#[test]
fn tags_and_payloads_sit_where_the_validator_reads_them() {
    // A tuple whose one field holds `value`: the root is the last 24 bytes, the field's entry
    // is the 24 bytes before it, its value the entry's last 16.
    let value_bytes = |value: Value| {
        let bytes = archive(&Tuple::new(0).with_field("f", value));
        let at = bytes.len() - 24 - 16;
        bytes[at..at + 16].to_vec()
    };
    let tags = [
        Value::Null,
        Value::Bool(true),
        Value::Int(0x0102_0304_0506_0708),
        Value::Float(1.5),
        Value::from("s"),
        Value::Bytes(vec![1]),
        Value::List(vec![]),
        Value::Map(BTreeMap::new()),
        Value::Timestamp(3),
    ];
    for (tag, value) in tags.into_iter().enumerate() {
        assert_eq!(usize::from(value_bytes(value.clone())[0]), tag, "{value:?}");
    }
    assert_eq!(value_bytes(Value::Bool(true))[1], 1);
    assert_eq!(
        value_bytes(Value::Int(0x0102_0304_0506_0708))[8..],
        0x0102_0304_0506_0708i64.to_le_bytes()
    );
    // An inline string's bytes start at 4, ended by 0xff.
    assert_eq!(value_bytes(Value::from("s"))[4..6], [b's', 0xff]);
    // A vector's length follows its 4-byte relative pointer.
    assert_eq!(
        value_bytes(Value::Bytes(vec![1, 2, 3]))[8..12],
        3u32.to_le_bytes()
    );
}

#[test]
fn the_validators_accept_real_archives_alike() {
    for tuple in samples() {
        let bytes = archive(&tuple);
        assert!(agree(&bytes), "{tuple:?} is accepted");
        let view = TupleView::from_bytes(&bytes).expect("valid");
        assert_eq!(view.to_owned(), tuple);
    }
}

#[test]
fn the_validators_agree_on_the_depth_limit() {
    let ok = archive(&Tuple::new(0).with_field("deep", nested(MAX_DEPTH)));
    assert!(agree(&ok), "depth MAX_DEPTH is allowed");
    let deep = archive(&Tuple::new(0).with_field("deep", nested(MAX_DEPTH + 1)));
    assert!(!agree(&deep), "one level deeper is not");
    let err = check::validate(&deep).expect_err("too deep");
    assert!(err.contains("nest deeper"), "{err}");
}

#[test]
fn the_validators_agree_on_every_one_byte_mutation() {
    let mut accepted = 0;
    let mut rejected = 0;
    for tuple in samples() {
        let bytes = archive(&tuple);
        for at in 0..bytes.len() {
            for mutate in [
                |b: u8| b ^ 0x01,
                |b| b ^ 0x80,
                |b| b ^ 0x40,
                |_| 0,
                |_| 0xff,
                |b: u8| b.wrapping_add(8),
            ] {
                let mut copy = bytes.clone();
                copy[at] = mutate(copy[at]);
                if agree(&copy) {
                    accepted += 1;
                } else {
                    rejected += 1;
                }
            }
        }
    }
    // Both outcomes occur, so the comparison is not vacuous.
    assert!(
        accepted > 100 && rejected > 100,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn the_validators_agree_on_random_mutations_and_cuts() {
    // A small xorshift, seeded: the same inputs on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let samples: Vec<AlignedVec> = samples().iter().map(archive).collect();
    for _ in 0..20_000 {
        let bytes = &samples[next() as usize % samples.len()];
        let mut copy = AlignedVec::<16>::new();
        // Sometimes drop a multiple of 8 bytes from the front (the root stays aligned).
        let cut = (next() as usize % 4) * 8 * usize::from(next() % 4 == 0);
        copy.extend_from_slice(&bytes[cut.min(bytes.len())..]);
        for _ in 0..1 + next() % 4 {
            if copy.is_empty() {
                break;
            }
            let at = next() as usize % copy.len();
            copy[at] = next() as u8;
        }
        agree(&copy);
    }
}

#[test]
fn the_validators_reject_short_and_misaligned_records() {
    assert!(!agree(&[]));
    assert!(!agree(&[0; 16]));
    let bytes = archive(&Tuple::new(1).with_field("a", 1));
    let mut shifted = AlignedVec::<16>::new();
    shifted.extend_from_slice(&[0; 4]);
    shifted.extend_from_slice(&bytes);
    assert!(!agree(&shifted[4..]), "root not 8-aligned");
}
