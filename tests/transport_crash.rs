//! A peer process that dies mid-stream: the survivor receives everything committed before the
//! death and nothing of a half-written record, its waits end with a time-out instead of a
//! hang, a replacement peer can take over the ring, and every child is reaped.

#![forbid(unsafe_code)]

mod support;

use std::time::Duration;

use shmplug_transport::{Consumer, Error, Ring, fdpass};
use support::child::{Child, assert_gone};
use support::pattern::{self, Lengths};
use support::script::{DONE, MID_WRITE};
use support::{WAIT, cfg, wire};

const PEER: &str = env!("CARGO_BIN_EXE_crash-peer");
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
/// How long to wait for something that must not come.
const QUIET: Duration = Duration::from_millis(100);

/// Reads pattern records `from .. to` of `seed`.
fn read_pattern(rx: &mut Consumer, seed: u64, from: u64, to: u64) {
    for (index, len) in (from..to).zip(Lengths::new(seed).skip(from as usize)) {
        let record = rx
            .read_timeout(WAIT)
            .unwrap_or_else(|e| panic!("record {index}: {e}"));
        assert_eq!(record.len(), len, "length of record {index}");
        assert!(
            pattern::matches(&record, index),
            "content of record {index}"
        );
    }
}

/// Nothing more arrives: not now, and not after waiting.
fn assert_nothing_more(rx: &mut Consumer) {
    match rx.try_read() {
        Ok(None) => {}
        Ok(Some(record)) => panic!("a record of {} bytes appeared", record.len()),
        Err(e) => panic!("try_read: {e}"),
    }
    match rx.read_timeout(QUIET) {
        Err(Error::TimedOut(_)) => {}
        Ok(record) => panic!("a record of {} bytes appeared", record.len()),
        Err(e) => panic!("read_timeout: {e}"),
    }
}

#[test]
fn producer_killed_mid_write_exposes_nothing_and_can_be_replaced() {
    const GOOD: u64 = 1000;
    const MORE: u64 = 1000;
    const SEED: u64 = 0x5eed_0003;
    let ring = Ring::create(1 << 16).expect("ring");
    let (mut child, socket) = Child::spawn(
        PEER,
        &["produce-then-hang", &GOOD.to_string(), &SEED.to_string()],
    );
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut rx = ring.consumer(cfg()).expect("consumer");
    read_pattern(&mut rx, SEED, 0, GOOD);
    assert_eq!(wire::recv(&socket), MID_WRITE);
    let pid = child.id();
    child.kill();
    child.expect_signal(SIGKILL);
    assert_gone(pid);
    assert_nothing_more(&mut rx);

    // A restarted producer takes over where the last commit left off.
    let (mut second, socket) = Child::spawn(
        PEER,
        &[
            "produce-more",
            &GOOD.to_string(),
            &MORE.to_string(),
            &SEED.to_string(),
        ],
    );
    fdpass::send_ring(&socket, &ring).expect("sending the ring again");
    read_pattern(&mut rx, SEED, GOOD, GOOD + MORE);
    assert!(matches!(rx.read_timeout(WAIT), Err(Error::Closed)));
    assert_eq!(wire::recv(&socket), DONE);
    second.expect_success();
}

#[test]
fn producer_aborting_mid_write_exposes_nothing() {
    const GOOD: u64 = 1000;
    const SEED: u64 = 0x5eed_0004;
    let ring = Ring::create(1 << 16).expect("ring");
    let (mut child, socket) = Child::spawn(
        PEER,
        &["produce-then-abort", &GOOD.to_string(), &SEED.to_string()],
    );
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut rx = ring.consumer(cfg()).expect("consumer");
    read_pattern(&mut rx, SEED, 0, GOOD);
    let pid = child.id();
    child.expect_signal(SIGABRT);
    assert_gone(pid);
    assert_nothing_more(&mut rx);
}

/// Writes pattern records `0 .. count` (seed 0) with immediate publication.
fn write_pattern(tx: &mut shmplug_transport::Producer, count: u64) {
    for (index, len) in (0..count).zip(Lengths::new(0)) {
        let mut claim = tx.claim_timeout(len, WAIT).expect("claim");
        pattern::fill(&mut claim, index);
        claim.commit();
    }
}

#[test]
fn consumer_killed_makes_claims_time_out() {
    const CAPACITY: usize = 1 << 14;
    const READ: u64 = 100;
    let ring = Ring::create(CAPACITY).expect("ring");
    let (mut child, socket) = Child::spawn(PEER, &["consume-then-hang", &READ.to_string()]);
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut tx = ring.producer(cfg()).expect("producer");
    write_pattern(&mut tx, READ);
    assert_eq!(wire::recv(&socket), DONE);
    let pid = child.id();
    child.kill();
    child.expect_signal(SIGKILL);
    assert_gone(pid);

    // Nobody frees space any more: the ring fills, then claims time out. A dead consumer
    // leaves no closed flag, so it is not `Closed`.
    let most = CAPACITY / 80 + 1;
    let mut written = 0;
    loop {
        match tx.claim_timeout(64, QUIET) {
            Ok(claim) => claim.commit(),
            Err(Error::TimedOut(_)) => break,
            Err(e) => panic!("after {written} records: {e}"),
        }
        written += 1;
        assert!(
            written <= most,
            "{written} records fit a {CAPACITY}-byte ring"
        );
    }
    assert!(!tx.is_closed());
}

#[test]
fn consumer_exiting_closes_the_ring() {
    const READ: u64 = 100;
    let ring = Ring::create(1 << 14).expect("ring");
    let (mut child, socket) = Child::spawn(PEER, &["consume-then-exit", &READ.to_string()]);
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut tx = ring.producer(cfg()).expect("producer");
    write_pattern(&mut tx, READ);
    assert_eq!(wire::recv(&socket), DONE);
    child.expect_success();
    assert!(tx.is_closed());
    assert!(matches!(tx.claim_timeout(64, WAIT), Err(Error::Closed)));
}
