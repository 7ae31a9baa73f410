//! Child for `transport_corruption`: a peer that breaks the ring's invariants on purpose.
//!
//! `faulty-peer SCENARIO`, where SCENARIO is
//! - one of [`PRODUCER_FAULTS`]: receives a ring, takes the producer, commits
//!   [`GOOD_RECORDS`] records, waits for `GO`, scribbles the fault, answers `DONE`, then on
//!   `CHECK` reports what its next claim returns;
//! - `read-ahead`: receives a ring, takes the consumer, reads [`GOOD_RECORDS`] records, moves
//!   the read position past anything written, answers `DONE`, then on `CHECK` drains the ring
//!   and reports how it ended;
//! - `huge-positions-for-consumer`, `huge-positions-for-producer`: receives a ring and, before
//!   the parent takes its endpoint, leaves positions just below 2^64 in it (consistent with
//!   each other), answers `DONE` and waits for the parent to hang up;
//! - `bad-magic`, `bad-version`, `bad-capacity`, `unsealed`, `pipe-for-eventfd`: sends
//!   something that is not a valid ring in place of one, then waits for the parent to hang up.

#![forbid(unsafe_code)]

#[path = "../support/mod.rs"]
mod support;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
use shmplug_transport::layout::{HEADER_SIZE, LAYOUT_VERSION, MAGIC};
use shmplug_transport::{Error, Ring, fdpass};
use support::script::{self, CHECK, DONE, GO, SAW_CLOSED, SAW_OTHER_ERROR, SAW_SUCCESS};
use support::{WAIT, cfg, pattern, peer, wire};

/// Records committed before the fault (the parent must receive all of them).
const GOOD_RECORDS: u64 = 5;
/// Payload length of each good record.
const GOOD_LEN: usize = 24;
/// Capacity of the rings the parent creates for these scenarios (it checks it).
const CAPACITY: usize = 1 << 16;

/// Scenarios in which the producer scribbles.
const PRODUCER_FAULTS: &[&str] = &[
    "write-backwards",
    "write-past-capacity",
    "write-misaligned",
    "length-past-region",
    "length-past-write",
    "kind-zero",
];

fn main() {
    let socket = peer::inherited_socket();
    let scenario: String = peer::arg(1);
    match scenario.as_str() {
        s if PRODUCER_FAULTS.contains(&s) => faulty_producer(&socket, s),
        "read-ahead" => faulty_consumer(&socket),
        "huge-positions-for-consumer" | "huge-positions-for-producer" => {
            huge_positions(&socket, &scenario);
        }
        _ => forged_ring(&socket, &scenario),
    }
}

fn faulty_producer(socket: &UnixStream, scenario: &str) {
    let ring = fdpass::recv_ring(socket).expect("receiving the ring");
    assert_eq!(ring.capacity(), CAPACITY);
    let mut tx = ring.producer(cfg()).expect("producer");
    for index in 0..GOOD_RECORDS {
        let mut claim = tx.claim_timeout(GOOD_LEN, WAIT).expect("claim");
        pattern::fill(&mut claim, index);
        claim.commit();
    }
    assert_eq!(wire::recv(socket), GO);

    let write = GOOD_RECORDS * script::record_span(GOOD_LEN);
    let set_write =
        |pos: u64| script::scribble(&ring, script::WRITE_POS_OFFSET, &pos.to_le_bytes());
    let next_header = |len: u32, kind: u32| {
        script::scribble(
            &ring,
            script::data_offset(write, CAPACITY),
            &script::record_header(len, kind),
        );
    };
    match scenario {
        "write-backwards" => set_write(write - 16),
        "write-past-capacity" => set_write(write + CAPACITY as u64 + 16),
        "write-misaligned" => set_write(write + 3),
        "length-past-region" => {
            next_header(CAPACITY as u32, 1);
            set_write(write + 32);
        }
        "length-past-write" => {
            next_header(100, 1);
            set_write(write + 32);
        }
        "kind-zero" => {
            next_header(8, 0);
            set_write(write + 32);
        }
        other => unreachable!("{other}"),
    }
    wire::send(socket, DONE);

    assert_eq!(wire::recv(socket), CHECK);
    let seen = match tx.try_claim(8) {
        Ok(_) => SAW_SUCCESS,
        Err(Error::Closed) => SAW_CLOSED,
        Err(_) => SAW_OTHER_ERROR,
    };
    wire::send(socket, seen);
}

fn faulty_consumer(socket: &UnixStream) {
    let ring = fdpass::recv_ring(socket).expect("receiving the ring");
    let mut rx = ring.consumer(cfg()).expect("consumer");
    for index in 0..GOOD_RECORDS {
        let record = rx.read_timeout(WAIT).expect("good record");
        assert!(pattern::matches(&record, index), "good record {index}");
    }
    // Far ahead of anything the producer wrote, and aligned, so only the range check fails.
    script::scribble(&ring, script::READ_POS_OFFSET, &(1u64 << 40).to_le_bytes());
    wire::send(socket, DONE);

    assert_eq!(wire::recv(socket), CHECK);
    let seen = loop {
        match rx.read_timeout(WAIT) {
            Ok(_) => continue,
            Err(Error::Closed) => break SAW_CLOSED,
            Err(_) => break SAW_OTHER_ERROR,
        }
    };
    wire::send(socket, seen);
}

fn huge_positions(socket: &UnixStream, scenario: &str) {
    let ring = fdpass::recv_ring(socket).expect("receiving the ring");
    assert_eq!(ring.capacity(), CAPACITY);
    // 32 bytes before a multiple of the capacity: the region's last 32 bytes.
    let read = u64::MAX - 31;
    if scenario == "huge-positions-for-consumer" {
        // One 16-byte record published at the end of the region, with a header that claims
        // 32 bytes (more than the 16 published)...
        script::scribble(&ring, script::READ_POS_OFFSET, &read.to_le_bytes());
        script::scribble(&ring, script::WRITE_POS_OFFSET, &(read + 16).to_le_bytes());
        script::scribble(
            &ring,
            script::data_offset(read, CAPACITY),
            &script::record_header(16, 1),
        );
        // ...and bytes at the start of the region that were never published.
        script::scribble(
            &ring,
            script::data_offset(0, CAPACITY),
            &script::record_header(5, 1),
        );
        script::scribble(&ring, script::data_offset(16, CAPACITY), b"STALE");
    } else {
        script::scribble(&ring, script::READ_POS_OFFSET, &(read + 16).to_le_bytes());
        script::scribble(&ring, script::WRITE_POS_OFFSET, &(read + 16).to_le_bytes());
    }
    wire::send(socket, DONE);
    assert_eq!(wire::recv_or_eof(socket), None);
}

fn forged_ring(socket: &UnixStream, scenario: &str) {
    let ring = Ring::create(CAPACITY).expect("ring");
    match scenario {
        "bad-magic" => script::scribble(&ring, script::META_MAGIC_OFFSET, b"NOTARING"),
        "bad-version" => script::scribble(
            &ring,
            script::META_VERSION_OFFSET,
            &(LAYOUT_VERSION + 1).to_le_bytes(),
        ),
        "bad-capacity" => script::scribble(
            &ring,
            script::META_CAPACITY_OFFSET,
            &(CAPACITY as u64 / 2).to_le_bytes(),
        ),
        "unsealed" | "pipe-for-eventfd" => {}
        other => panic!("unknown scenario {other:?}"),
    }
    let [memory, data_ready, space_ready] = ring.fds()[..] else {
        panic!("a new ring has three descriptors")
    };
    match scenario {
        "unsealed" => {
            // A memfd with a perfectly good header, but the sender could still shrink it.
            let fd = memfd_create("unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .expect("memfd");
            ftruncate(&fd, (HEADER_SIZE + CAPACITY) as u64).expect("size");
            let mut meta = [0u8; 24];
            meta[..8].copy_from_slice(&MAGIC.to_le_bytes());
            meta[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
            meta[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
            meta[16..].copy_from_slice(&(CAPACITY as u64).to_le_bytes());
            rustix::io::pwrite(&fd, &meta, 0).expect("header");
            let fds = [fd.as_fd(), data_ready, space_ready];
            fdpass::send_with_fds(socket, script::RING_TAG, &fds).expect("send");
        }
        "pipe-for-eventfd" => {
            let (read_end, _write_end) = rustix::pipe::pipe().expect("pipe");
            let fds = [memory, read_end.as_fd(), space_ready];
            fdpass::send_with_fds(socket, script::RING_TAG, &fds).expect("send");
        }
        _ => fdpass::send_ring(socket, &ring).expect("send"),
    }
    // Keep everything open until the parent has looked at it.
    assert_eq!(wire::recv_or_eof(socket), None);
}
