//! Arbitrary positions and record bytes from a "peer": the consumer must return records inside
//! the region or a typed error, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmplug_transport::layout::{HEADER_SIZE, READ_POSITION_OFFSET, WRITE_POSITION_OFFSET};
use shmplug_transport::{EndpointConfig, Error, Ring};

const CAPACITY: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let ring = Ring::create(CAPACITY).unwrap();
    let (positions, region) = data.split_at(16);
    let region = &region[..region.len().min(CAPACITY)];
    // Write as a peer would, through the segment's memfd.
    let memfd = ring.fds()[0];
    let scribble = |offset: usize, bytes: &[u8]| {
        rustix::io::pwrite(memfd, bytes, offset as u64).unwrap();
    };
    scribble(HEADER_SIZE, region);
    // A consumer opened on invalid positions must refuse them.
    scribble(READ_POSITION_OFFSET, &positions[8..16]);
    scribble(WRITE_POSITION_OFFSET, &positions[..8]);
    let Ok(mut consumer) = ring.consumer(EndpointConfig::default()) else {
        return;
    };
    for _ in 0..CAPACITY {
        let outcome = match consumer.try_read() {
            Ok(Some(record)) => {
                assert!(record.len() <= ring.max_record_len());
                std::hint::black_box(record.iter().fold(0u8, |a, &b| a ^ b));
                continue;
            }
            Ok(None) | Err(Error::Closed) => return,
            Err(e) => e,
        };
        assert!(matches!(outcome, Error::Corrupt { .. }), "unexpected error {outcome}");
        // Poisoned for good.
        assert!(matches!(consumer.try_read(), Err(Error::Corrupt { .. })));
        return;
    }
});
