//! Records streamed between two real processes through a ring handed over a Unix socket: ten
//! million small records child -> parent, large records that wrap the ring at aligned
//! positions, and a million records parent -> child parking on eventfds. Every record's length,
//! content and alignment is checked, and the two sides' running checksums compared.

#![forbid(unsafe_code)]

mod support;

use std::time::{Duration, Instant};

use shmplug_transport::layout::{LARGE_PAYLOAD, RECORD_ALIGN};
use shmplug_transport::{EndpointConfig, Error, Park, Ring, fdpass};
use support::child::Child;
use support::pattern::{self, Checksum, Lengths, MAX_LEN};
use support::{WAIT, cfg, wire};

const PEER: &str = env!("CARGO_BIN_EXE_stream-peer");

/// A stream from a child producer to the parent.
struct FromChild {
    count: u64,
    seed: u64,
    /// Records are `8 ..= max` bytes long.
    max: usize,
    /// Each record is written into a claim this much larger, then committed at its length.
    slack: usize,
    capacity: usize,
    /// How the child parks (`stream-peer`'s `PARK` argument).
    child_park: &'static str,
    parent: EndpointConfig,
}

impl Default for FromChild {
    fn default() -> Self {
        FromChild {
            count: 0,
            seed: 1,
            max: MAX_LEN,
            slack: 0,
            capacity: 1 << 20,
            child_park: "futex",
            parent: cfg(),
        }
    }
}

/// Runs `stream`: the parent checks every record and the end of the stream. Returns how long
/// the parent spent reading.
fn from_child(stream: FromChild) -> Duration {
    let FromChild {
        count,
        seed,
        max,
        slack,
        capacity,
        child_park,
        parent,
    } = stream;
    let ring = Ring::create(capacity).expect("ring");
    let args = [count, seed, max as u64, slack as u64].map(|n| n.to_string());
    let (mut child, socket) = Child::spawn(
        PEER,
        &[
            "produce", &args[0], &args[1], &args[2], &args[3], child_park,
        ],
    );
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut rx = ring.consumer(parent).expect("consumer");

    let started = Instant::now();
    let mut lengths = Lengths::up_to(seed, max);
    let mut checksum = Checksum::default();
    let mut index = 0u64;
    loop {
        match rx.read_timeout(WAIT) {
            Ok(record) => {
                let len = lengths.next().expect("endless");
                assert_eq!(record.len(), len, "length of record {index}");
                assert_eq!(record.kind(), 1, "kind of record {index}");
                assert!(
                    pattern::matches(&record, index),
                    "content of record {index}"
                );
                // The producer places a record by its claimed length.
                let align = if (len + slack) as u64 >= LARGE_PAYLOAD {
                    64
                } else {
                    RECORD_ALIGN as usize
                };
                let addr = record.as_ptr() as usize;
                assert!(addr.is_multiple_of(align), "record {index} at {addr:#x}");
                checksum.add(&record);
                index += 1;
            }
            Err(Error::Closed) => break,
            Err(e) => panic!("after {index} records: {e}"),
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(index, count, "records before the end of the stream");
    assert!(matches!(rx.try_read(), Err(Error::Closed)), "stays closed");
    assert_eq!(wire::recv(&socket), count, "child's count");
    assert_eq!(Checksum(wire::recv(&socket)), checksum, "checksums differ");
    child.expect_success();
    elapsed
}

#[test]
fn ten_million_records_from_a_child_producer() {
    const COUNT: u64 = 10_000_000;
    let elapsed = from_child(FromChild {
        count: COUNT,
        seed: 0x5eed_0001,
        ..FromChild::default()
    });
    eprintln!(
        "{COUNT} records child -> parent in {:.2} s ({:.1} M records/s)",
        elapsed.as_secs_f64(),
        COUNT as f64 / elapsed.as_secs_f64() / 1e6
    );
}

#[test]
fn large_records_wrap_the_ring_aligned() {
    // Up to 6000-byte records in a 64 KiB ring: padding at almost every wrap, 64-byte aligned
    // placement for records of 1 KiB or more, and claims larger than what is committed.
    from_child(FromChild {
        count: 100_000,
        seed: 0x5eed_0005,
        max: 6000,
        slack: 100,
        capacity: 1 << 16,
        ..FromChild::default()
    });
}

#[test]
fn parking_at_once_on_both_sides_loses_no_wake_up() {
    // No spinning and the smallest ring: whenever one side gets ahead the other parks at once,
    // so the wake-up handshake (futex on one side, eventfd on the other) runs thousands of
    // times across the process boundary; a lost wake-up would stall until `WAIT`.
    let started = Instant::now();
    from_child(FromChild {
        count: 200_000,
        seed: 0x5eed_0006,
        capacity: 4096,
        child_park: "eventfd-nospin",
        parent: cfg().with_spin(Duration::ZERO),
        ..FromChild::default()
    });
    eprintln!(
        "200000 records, parking at once, in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_million_records_to_a_child_consumer_parking_on_eventfds() {
    const COUNT: u64 = 1_000_000;
    const SEED: u64 = 0x5eed_0002;
    let ring = Ring::create(1 << 16).expect("ring");
    let (mut child, socket) = Child::spawn(
        PEER,
        &[
            "consume",
            &SEED.to_string(),
            &MAX_LEN.to_string(),
            "eventfd",
        ],
    );
    fdpass::send_ring(&socket, &ring).expect("sending the ring");
    let mut tx = ring
        .producer(cfg().with_park(Park::EventFd))
        .expect("producer");

    let started = Instant::now();
    let mut checksum = Checksum::default();
    for (index, len) in (0..COUNT).zip(Lengths::new(SEED)) {
        let mut claim = tx.claim_timeout(len, WAIT).expect("claim");
        pattern::fill(&mut claim, index);
        checksum.add(&claim);
        claim.commit_deferred();
    }
    drop(tx);
    let count = wire::recv(&socket);
    let elapsed = started.elapsed();
    assert_eq!(count, COUNT, "records the child read");
    assert_eq!(Checksum(wire::recv(&socket)), checksum, "checksums differ");
    assert_eq!(wire::recv(&socket), 0, "records the child found wrong");
    child.expect_success();
    eprintln!(
        "{COUNT} records parent -> child in {:.2} s",
        elapsed.as_secs_f64()
    );
}
