//! Corrupt and hostile records: bit flips, truncations and random bytes are rejected with an
//! error and never panic; hand-built archives nested far too deep, or whose lists share
//! children, are rejected before rkyv's recursive validation can exhaust the stack or the CPU;
//! a receiver that meets a bad record is poisoned.

use std::time::Duration;

use proptest::prelude::*;
use rkyv::util::AlignedVec;
use shmplug_transport::tuple::{
    Encoder, MAX_DEPTH, RECORD_KIND, Tuple, TupleReceiver, TupleView, Validation, Value,
};
use shmplug_transport::{EndpointConfig, Error, Ring};

const WAIT: Duration = Duration::from_secs(20);

fn cfg() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

fn aligned(bytes: &[u8]) -> AlignedVec<16> {
    let mut buf = AlignedVec::<16>::new();
    buf.extend_from_slice(bytes);
    buf
}

fn encode(tuple: &Tuple) -> Vec<u8> {
    let mut buf = AlignedVec::<16>::new();
    buf.resize(1 << 16, 0);
    let len = Encoder::new()
        .encode_into(tuple, &mut buf)
        .expect("encodes");
    buf[..len].to_vec()
}

/// Validates `bytes` and, if they pass, reads everything in them; must never panic.
fn exercise(bytes: &[u8]) -> Result<(), Error> {
    let buf = aligned(bytes);
    let view = TupleView::from_bytes(&buf)?;
    let _ = view.timestamp();
    for (name, value) in view.iter() {
        let _ = view.get(name);
        let _ = value.to_json();
    }
    let _ = view.meta().to_json();
    let owned = view.to_owned();
    let _ = owned.to_json();
    Ok(())
}

fn sample() -> impl Strategy<Value = Tuple> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        "\\PC{0,12}".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        any::<i64>().prop_map(Value::Timestamp),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            proptest::collection::btree_map("[a-z]{0,10}", inner, 0..4).prop_map(Value::Map),
        ]
    });
    (
        any::<i64>(),
        proptest::collection::btree_map("[a-z]{0,10}", value, 0..6),
    )
        .prop_map(|(ts, fields)| Tuple {
            timestamp: ts,
            meta: Default::default(),
            fields,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn bit_flips_are_rejected_or_read_safely(
        tuple in sample(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8),
    ) {
        let mut bytes = encode(&tuple);
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        if let Err(e) = exercise(&bytes) {
            prop_assert!(matches!(e, Error::InvalidTuple(_)), "{}", e);
        }
    }

    #[test]
    fn truncations_are_rejected(tuple in sample(), cut in any::<prop::sample::Index>(), front in any::<bool>()) {
        let bytes = encode(&tuple);
        let keep = cut.index(bytes.len());
        let part = if front { &bytes[bytes.len() - keep..] } else { &bytes[..keep] };
        // Almost always invalid; what matters is an error rather than a panic.
        if let Err(e) = exercise(part) {
            prop_assert!(matches!(e, Error::InvalidTuple(_)), "{}", e);
        }
    }

    #[test]
    fn random_bytes_are_rejected_or_read_safely(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = exercise(&bytes);
    }
}

#[test]
fn misaligned_archives_are_rejected() {
    let bytes = encode(&Tuple::new(1).with_field("x", 1i64));
    let mut buf = AlignedVec::<16>::new();
    buf.resize(bytes.len() + 8, 0);
    buf[4..4 + bytes.len()].copy_from_slice(&bytes);
    let err = TupleView::from_bytes(&buf[4..4 + bytes.len()]).expect_err("misaligned");
    assert!(matches!(err, Error::InvalidTuple(_)), "{err}");
    assert!(TupleView::from_bytes(&aligned(&bytes)).is_ok());
}

/// A 16-byte archived `List` value at `at` whose `len` elements start at `target`.
fn list_value(at: usize, target: usize, len: u32) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0] = 6; // the `List` tag
    let rel = i32::try_from(target as i64 - (at as i64 + 4)).expect("small archive");
    v[4..8].copy_from_slice(&rel.to_le_bytes());
    v[8..12].copy_from_slice(&len.to_le_bytes());
    v
}

/// The 8 bytes of an archived inline string (short strings carry no pointer).
fn inline_key(key: &str) -> Vec<u8> {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&key.to_owned()).expect("serializes");
    bytes[bytes.len() - 8..].to_vec()
}

/// Appends an entry `"k": List(len at target)` and the root of a tuple whose only field it is.
fn finish(mut b: Vec<u8>, target: usize, len: u32) -> Vec<u8> {
    let entry = b.len();
    b.extend(inline_key("k"));
    let at = b.len();
    b.extend(list_value(at, target, len));
    let root = b.len();
    assert_eq!(root % 8, 0);
    b.extend(0i64.to_le_bytes()); // timestamp
    b.extend(list_value(root + 4, 0, 0)[4..12].iter()); // meta: empty, pointing at 0
    let fields_at = root + 16;
    b.extend(list_value(fields_at - 4, entry, 1)[4..12].iter());
    b
}

/// A tuple whose field is `levels` lists nested in one another around an integer, laid out
/// as rkyv does (children first).
fn hostile_chain(levels: usize) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[0] = 2; // `Int(0)`
    let mut prev = 0;
    for _ in 1..levels {
        let at = b.len();
        b.extend(list_value(at, prev, 1));
        prev = at;
    }
    finish(b, prev, 1)
}

/// `levels` two-element lists, each pointing both its elements at the one below: a DAG that a
/// naive walk would visit 2^levels times.
fn hostile_dag(levels: usize) -> Vec<u8> {
    let mut b = vec![0u8; 32];
    b[0] = 2;
    b[16] = 2;
    let mut prev = 0;
    for _ in 0..levels {
        let at = b.len();
        b.extend(list_value(at, prev, 2));
        b.extend(list_value(at + 16, prev, 2));
        prev = at;
    }
    finish(b, prev, 2)
}

#[test]
fn hand_built_chains_validate_up_to_the_limit() {
    // The hand-built layout is what rkyv writes: a chain within the limit is valid.
    let bytes = aligned(&hostile_chain(MAX_DEPTH));
    let view = TupleView::from_bytes(&bytes).expect("valid");
    let mut depth = 0;
    let mut v = view.get("k").expect("field").to_owned();
    while let Value::List(mut items) = v {
        depth += 1;
        v = items.pop().expect("one element");
    }
    assert_eq!((depth, v), (MAX_DEPTH, Value::Int(0)));
    let err = TupleView::from_bytes(&aligned(&hostile_chain(MAX_DEPTH + 1))).expect_err("too deep");
    assert!(err.to_string().contains("nest deeper"), "{err}");
}

#[test]
fn very_deep_records_cannot_exhaust_a_small_stack() {
    // 200 000 levels would take several megabytes of stack in a recursion without a depth
    // limit (bytecheck's); the check
    // runs here on a 256 KiB stack and must reject it, and still accept the deepest valid one.
    let deep = hostile_chain(200_000);
    let ok = hostile_chain(MAX_DEPTH);
    let result = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let deep_err = TupleView::from_bytes(&aligned(&deep)).map(drop);
            let ok = aligned(&ok);
            let ok_len =
                TupleView::from_bytes(&ok).map(|v| v.to_owned().to_json().to_string().len());
            (deep_err, ok_len)
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
    assert!(matches!(result.0, Err(Error::InvalidTuple(_))));
    assert!(result.1.is_ok_and(|len| len > MAX_DEPTH));
}

#[test]
fn shared_children_are_rejected_in_linear_time() {
    let dag = aligned(&hostile_dag(48));
    let err = TupleView::from_bytes(&dag).expect_err("overlapping parts");
    assert!(matches!(err, Error::InvalidTuple(_)));
}

fn raw_record(ring: &Ring, kind: u32, bytes: &[u8]) -> shmplug_transport::Producer {
    let mut producer = ring.producer(cfg()).expect("producer");
    let mut claim = producer.claim_timeout(bytes.len(), WAIT).expect("claim");
    claim.copy_from_slice(bytes);
    claim.set_kind(kind);
    claim.commit();
    producer
}

#[test]
fn a_bad_record_poisons_the_receiver_in_every_mode() {
    // SAFETY: the only record this trusted receiver reads is too short for a tuple, which even
    // trusted mode checks; nothing is read through `access_unchecked`.
    let trusted = unsafe { Validation::trusted() };
    let cases: [(Validation, u32, Vec<u8>); 5] = [
        (Validation::VALIDATED, RECORD_KIND, vec![0xff; 64]),
        (Validation::COPY_THEN_VALIDATE, RECORD_KIND, vec![0xff; 64]),
        (
            Validation::VALIDATED,
            RECORD_KIND,
            encode(&Tuple::new(1))[..8].to_vec(),
        ),
        (Validation::VALIDATED, 1, encode(&Tuple::new(1))),
        (trusted, RECORD_KIND, vec![0; 8]),
    ];
    for (mode, kind, bytes) in cases {
        let ring = Ring::create(4096).expect("ring");
        let mut producer = raw_record(&ring, kind, &bytes);
        let mut rx = TupleReceiver::with_validation(ring.consumer(cfg()).expect("consumer"), mode);
        let first = rx.recv_timeout(WAIT).expect_err("invalid");
        assert!(matches!(first, Error::InvalidTuple(_)), "{mode:?}: {first}");
        assert!(
            !first.to_string().contains("without error information"),
            "{mode:?}: the message says what failed: {first}"
        );
        // Told at once, before the receiver is called again.
        assert!(
            matches!(producer.try_claim(16), Err(Error::Closed)),
            "the producer is told"
        );
        // A caller that waits for readiness comes back for the error instead of sleeping.
        assert!(
            rx.consumer().is_ready().is_err(),
            "{mode:?}: poisoned is ready"
        );
        let again = rx.try_recv().expect_err("poisoned");
        assert_eq!(again.to_string(), first.to_string());
        let later = rx
            .recv_timeout(Duration::from_millis(1))
            .expect_err("poisoned");
        assert_eq!(later.to_string(), first.to_string());
        let blocking = rx.recv().expect_err("poisoned");
        assert_eq!(blocking.to_string(), first.to_string());
    }
}

#[test]
fn a_valid_record_after_a_bad_one_is_not_read() {
    let ring = Ring::create(4096).expect("ring");
    let mut producer = raw_record(&ring, RECORD_KIND, &[1; 40]);
    Encoder::new()
        .write(&mut producer, &Tuple::new(2))
        .expect("write");
    let mut rx = TupleReceiver::new(ring.consumer(cfg()).expect("consumer"));
    assert!(matches!(rx.recv_timeout(WAIT), Err(Error::InvalidTuple(_))));
    assert!(
        matches!(rx.recv_timeout(WAIT), Err(Error::InvalidTuple(_))),
        "still poisoned"
    );
}
