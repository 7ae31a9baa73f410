//! A peer process that breaks the ring's invariants gets a typed error on the other side,
//! never a panic or garbage, and every record committed before the fault still arrives.
//!
//! The child (`faulty-peer`) writes the faults with `script::scribble` (a `pwrite` into the segment's memfd,
//! feature), the way a buggy plugin would write its shared state.

#![forbid(unsafe_code)]

mod support;

use shmplug_transport::{Error, Ring, fdpass};
use support::child::Child;
use support::script::{CHECK, DONE, GO, SAW_CLOSED};
use support::{WAIT, cfg, pattern, wire};

const PEER: &str = env!("CARGO_BIN_EXE_faulty-peer");
/// Must match `faulty-peer`.
const CAPACITY: usize = 1 << 16;
const GOOD_RECORDS: u64 = 5;

/// The child produces good records, then scribbles `scenario`; the parent's consumer must
/// return `Error::Corrupt { what: expected, .. }`, stay poisoned, and close the ring for the
/// child.
fn producer_fault(scenario: &str, expected: &str) {
    let ring = Ring::create(CAPACITY).expect("ring");
    let (mut child, socket) = Child::spawn(PEER, &[scenario]);
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut rx = ring.consumer(cfg()).expect("consumer");
    for index in 0..GOOD_RECORDS {
        let record = rx.read_timeout(WAIT).expect("good record");
        assert!(pattern::matches(&record, index), "good record {index}");
    }
    wire::send(&socket, GO);
    assert_eq!(wire::recv(&socket), DONE);

    let first = expect_corrupt(rx.read_timeout(WAIT).map(|r| r.len()), expected);
    assert!(
        first.contains("ring corrupt") && first.contains(expected),
        "message: {first}"
    );
    // Poisoned: the same error again, also from the non-blocking form.
    expect_corrupt(rx.try_read().map(|r| r.map(|r| r.len())), expected);
    // The consumer closed its end, so the faulty producer is told to stop.
    wire::send(&socket, CHECK);
    assert_eq!(wire::recv(&socket), SAW_CLOSED, "child's next claim");
    child.expect_success();
}

/// Asserts `result` is `Error::Corrupt` with `what == expected`; returns its message.
fn expect_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, expected: &str) -> String {
    match result {
        Err(e @ Error::Corrupt { what, .. }) => {
            assert_eq!(what, expected, "{e}");
            e.to_string()
        }
        other => panic!("expected Error::Corrupt {{ what: {expected:?}, .. }}, got {other:?}"),
    }
}

#[test]
fn write_position_moving_backwards() {
    producer_fault("write-backwards", "write position");
}

#[test]
fn write_position_past_capacity() {
    producer_fault("write-past-capacity", "write position");
}

#[test]
fn write_position_misaligned() {
    producer_fault("write-misaligned", "write position");
}

#[test]
fn record_length_past_the_region() {
    producer_fault("length-past-region", "record length");
}

#[test]
fn record_length_past_the_write_position() {
    producer_fault("length-past-write", "record length");
}

#[test]
fn record_kind_zero() {
    producer_fault("kind-zero", "record kind");
}

#[test]
fn read_position_past_the_write_position() {
    let ring = Ring::create(CAPACITY).expect("ring");
    let (mut child, socket) = Child::spawn(PEER, &["read-ahead"]);
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut tx = ring.producer(cfg()).expect("producer");
    for index in 0..GOOD_RECORDS {
        let mut claim = tx.claim_timeout(24, WAIT).expect("claim");
        pattern::fill(&mut claim, index);
        claim.commit();
    }
    assert_eq!(wire::recv(&socket), DONE);
    // The producer looks at the read position only when the ring seems full, so write until
    // it does; a 64-byte record takes 80 bytes of the ring.
    let most = CAPACITY / 80 + 1;
    let mut written = 0;
    let error = loop {
        match tx.claim_timeout(64, WAIT) {
            Ok(claim) => claim.commit(),
            Err(e) => break e,
        }
        written += 1;
        assert!(written <= most, "wrote {written} records without noticing");
    };
    assert!(
        matches!(
            error,
            Error::Corrupt {
                what: "read position",
                ..
            }
        ),
        "{error:?}"
    );
    // The producer closed its end: the child drains what was published, then sees the end.
    wire::send(&socket, CHECK);
    assert_eq!(wire::recv(&socket), SAW_CLOSED, "child's consumer");
    child.expect_success();
}

/// Positions are `u64` byte counts that start at zero; a peer that leaves values near 2^64 in a
/// ring before this side takes its endpoint must get a `Corrupt` error, not an arithmetic
/// overflow (a panic in debug builds, wrapped positions that let stale bytes through in
/// release builds).
fn huge_positions<T: std::fmt::Debug>(
    scenario: &str,
    open_and_use: impl FnOnce(&Ring) -> Result<T, Error>,
) {
    let ring = Ring::create(CAPACITY).expect("ring");
    let (mut child, socket) = Child::spawn(PEER, &[scenario]);
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    assert_eq!(wire::recv(&socket), DONE);
    let outcome = open_and_use(&ring);
    assert!(
        matches!(outcome, Err(Error::Corrupt { .. })),
        "expected Error::Corrupt, got {outcome:?}"
    );
    drop(socket);
    child.expect_success();
}

#[test]
fn positions_near_the_top_of_u64_are_refused_by_a_consumer() {
    huge_positions("huge-positions-for-consumer", |ring| {
        let mut rx = ring.consumer(cfg())?;
        let first = rx.read_timeout(WAIT)?.to_vec();
        let second = rx.read_timeout(WAIT)?.to_vec();
        Ok((first, second))
    });
}

#[test]
fn positions_near_the_top_of_u64_are_refused_by_a_producer() {
    huge_positions("huge-positions-for-producer", |ring| {
        let mut tx = ring.producer(cfg())?;
        tx.claim_timeout(32, WAIT).map(|claim| claim.len())
    });
}

/// The child sends `scenario` in place of a ring; receiving it must fail with `BadSegment`
/// whose message contains `expected`.
fn forged_ring(scenario: &str, expected: &str) {
    let (mut child, socket) = Child::spawn(PEER, &[scenario]);
    match fdpass::recv_ring(&socket) {
        Err(Error::BadSegment(message)) => {
            assert!(message.contains(expected), "{scenario}: {message}");
        }
        other => panic!("{scenario}: expected Error::BadSegment, got {other:?}"),
    }
    drop(socket);
    child.expect_success();
}

#[test]
fn bad_magic_is_refused() {
    forged_ring("bad-magic", "bad magic");
}

#[test]
fn bad_layout_version_is_refused() {
    forged_ring("bad-version", "layout version");
}

#[test]
fn capacity_disagreeing_with_the_segment_is_refused() {
    forged_ring("bad-capacity", "segment is");
}

#[test]
fn unsealed_memfd_is_refused() {
    forged_ring("unsealed", "not sealed");
}

#[test]
fn pipe_in_place_of_an_eventfd_is_refused() {
    forged_ring("pipe-for-eventfd", "expected an eventfd");
}
