//! Child for `transport_cross_process`: receives a ring over the inherited socket and streams
//! the pattern records through it.
//!
//! - `stream-peer produce COUNT SEED MAX SLACK PARK`: takes the producer, writes `COUNT`
//!   pattern records of `8 ..= MAX` bytes with deferred publication, each into a claim `SLACK`
//!   bytes larger than the record, closes, then reports the count and checksum on the socket.
//! - `stream-peer consume SEED MAX PARK`: takes the consumer, reads and checks records until
//!   the ring closes, then reports the count, checksum and number of bad records on the socket.
//!
//! `PARK` is `futex` or `eventfd`, optionally followed by `-nospin` (park at once, never spin).

#![forbid(unsafe_code)]

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use shmplug_transport::{EndpointConfig, Error, Park, fdpass};
use support::pattern::{self, Checksum, Lengths};
use support::{WAIT, cfg, peer, wire};

fn main() {
    let socket = peer::inherited_socket();
    let ring = fdpass::recv_ring(&socket).expect("receiving the ring");
    match peer::arg::<String>(1).as_str() {
        "produce" => {
            let count: u64 = peer::arg(2);
            let lengths = Lengths::up_to(peer::arg(3), peer::arg(4));
            let slack: usize = peer::arg(5);
            let config = config(&peer::arg::<String>(6));
            let mut tx = ring.producer(config).expect("producer");
            let mut checksum = Checksum::default();
            for (index, len) in (0..count).zip(lengths) {
                let mut claim = tx.claim_timeout(len + slack, WAIT).expect("claim");
                let record = &mut claim[..len];
                pattern::fill(record, index);
                checksum.add(record);
                claim.commit_len_deferred(len);
            }
            // Publishes the last batch and marks the end of the stream.
            drop(tx);
            wire::send(&socket, count);
            wire::send(&socket, checksum.0);
        }
        "consume" => {
            let mut lengths = Lengths::up_to(peer::arg(2), peer::arg(3));
            let config = config(&peer::arg::<String>(4));
            let mut rx = ring.consumer(config).expect("consumer");
            let (mut count, mut bad) = (0u64, 0u64);
            let mut checksum = Checksum::default();
            loop {
                match rx.read_timeout(WAIT) {
                    Ok(record) => {
                        let len = lengths.next().expect("endless");
                        if record.len() != len || !pattern::matches(&record, count) {
                            bad += 1;
                        }
                        checksum.add(&record);
                        count += 1;
                    }
                    Err(Error::Closed) => break,
                    Err(e) => panic!("stream-peer consume: after {count} records: {e}"),
                }
            }
            wire::send(&socket, count);
            wire::send(&socket, checksum.0);
            wire::send(&socket, bad);
        }
        other => panic!("unknown mode {other:?}"),
    }
}

fn config(park: &str) -> EndpointConfig {
    let (park, spin) = match park.strip_suffix("-nospin") {
        Some(park) => (park, Duration::ZERO),
        None => (park, cfg().spin),
    };
    let park = match park {
        "futex" => Park::Futex,
        "eventfd" => Park::EventFd,
        other => panic!("unknown park mode {other:?}"),
    };
    cfg().with_park(park).with_spin(spin)
}
