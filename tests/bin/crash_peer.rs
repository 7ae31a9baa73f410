//! Child for `transport_crash`: a peer that dies at the worst moment.
//!
//! `crash-peer SCENARIO ARGS...`, after receiving a ring over the inherited socket:
//! - `produce-then-hang GOOD SEED`: commits `GOOD` pattern records, claims one more, writes
//!   half of it, says `MID_WRITE` and waits to be killed.
//! - `produce-then-abort GOOD SEED`: the same, but aborts itself mid-write.
//! - `produce-more FROM COUNT SEED`: a replacement producer: writes pattern records
//!   `FROM .. FROM + COUNT` and closes.
//! - `consume-then-hang COUNT`: reads `COUNT` records, says `DONE` and waits to be killed.
//! - `consume-then-exit COUNT`: reads `COUNT` records, closes its end, says `DONE` and exits.

#![forbid(unsafe_code)]

#[path = "../support/mod.rs"]
mod support;

use std::os::unix::net::UnixStream;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use shmplug_transport::{Producer, Ring, fdpass};
use support::pattern::{self, Lengths};
use support::script::{DONE, MID_WRITE};
use support::{WAIT, cfg, peer, wire};

/// Length of the record the producer dies writing: longer than the pattern records these
/// scenarios write, so it could not be mistaken for one, and large enough to be placed on a
/// 64-byte boundary (`layout::LARGE_PAYLOAD`).
const TORN_LEN: usize = 3000;

fn main() {
    let socket = peer::inherited_socket();
    let ring = fdpass::recv_ring(&socket).expect("receiving the ring");
    match peer::arg::<String>(1).as_str() {
        "produce-then-hang" => {
            let mut tx = produce_good(&ring);
            let mut claim = tx.claim_timeout(TORN_LEN, WAIT).expect("claim");
            claim[..TORN_LEN / 2].fill(0xAB);
            wire::send(&socket, MID_WRITE);
            wait_to_be_killed(&socket);
        }
        "produce-then-abort" => {
            let mut tx = produce_good(&ring);
            let mut claim = tx.claim_timeout(TORN_LEN, WAIT).expect("claim");
            claim[..TORN_LEN / 2].fill(0xAB);
            // No core file for a death the test asked for.
            let limit = getrlimit(Resource::Core);
            let _ = setrlimit(
                Resource::Core,
                Rlimit {
                    current: Some(0),
                    ..limit
                },
            );
            std::process::abort();
        }
        "produce-more" => {
            let from: u64 = peer::arg(2);
            let count: u64 = peer::arg(3);
            let lengths = Lengths::new(peer::arg(4)).skip(from as usize);
            let mut tx = ring.producer(cfg()).expect("producer");
            for (index, len) in (from..from + count).zip(lengths) {
                let mut claim = tx.claim_timeout(len, WAIT).expect("claim");
                pattern::fill(&mut claim, index);
                claim.commit_deferred();
            }
            drop(tx);
            wire::send(&socket, DONE);
        }
        "consume-then-hang" | "consume-then-exit" => {
            let count: u64 = peer::arg(2);
            let mut rx = ring.consumer(cfg()).expect("consumer");
            for index in 0..count {
                let record = rx.read_timeout(WAIT).expect("record");
                assert!(pattern::matches(&record, index), "record {index}");
            }
            if peer::arg::<String>(1) == "consume-then-hang" {
                wire::send(&socket, DONE);
                wait_to_be_killed(&socket);
            } else {
                drop(rx);
                wire::send(&socket, DONE);
            }
        }
        other => panic!("unknown scenario {other:?}"),
    }
}

/// Takes the producer and commits the `GOOD` (argument 2) records of seed argument 3: the first
/// half with deferred publication, the rest published one by one.
fn produce_good(ring: &Ring) -> Producer {
    let good: u64 = peer::arg(2);
    let mut tx = ring.producer(cfg()).expect("producer");
    for (index, len) in (0..good).zip(Lengths::new(peer::arg(3))) {
        let mut claim = tx.claim_timeout(len, WAIT).expect("claim");
        pattern::fill(&mut claim, index);
        if index < good / 2 {
            claim.commit_deferred();
        } else {
            // Publishes this record and every deferred one before it.
            claim.commit();
        }
    }
    tx
}

/// Blocks until the parent kills us; exits with an error if it never does.
fn wait_to_be_killed(socket: &UnixStream) -> ! {
    let _ = wire::recv_or_eof(socket);
    eprintln!("crash-peer: was not killed");
    std::process::exit(3);
}
