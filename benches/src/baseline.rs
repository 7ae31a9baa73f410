//! The baselines every shmplug figure is printed beside: a single-thread `memcpy` (the ceiling
//! for moving bytes at all) and rtrb (the in-process SPSC ring we learn from) carrying the same
//! bytes between two threads.

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::payload::{AlignedBuf, RING_BYTES, checksum};

/// Size of each of the two buffers of [`Memcpy::large_buffers`]: 4 MiB, four times this
/// machine's 1 MiB L2 and an eighth of its L3, so the copies stream through L3 instead of
/// repeating inside L1 or L2.
pub const MEMCPY_BUFFER_BYTES: usize = 4 << 20;

/// Single-thread `memcpy` (`copy_from_slice`) of record-sized pieces into a 64-byte aligned
/// destination buffer, walking through it and wrapping at its end.
pub struct Memcpy {
    src: AlignedBuf,
    dst: AlignedBuf,
    /// The source walks along with the destination (else every record is copied from its start).
    walk_src: bool,
    offset: usize,
}

impl Memcpy {
    /// The ceiling for moving bytes at all: record `i` is copied from a source buffer to the same
    /// offset of a destination buffer, both 64-byte aligned and [`MEMCPY_BUFFER_BYTES`] long.
    pub fn large_buffers() -> Memcpy {
        Memcpy {
            src: AlignedBuf::pattern(MEMCPY_BUFFER_BYTES),
            dst: AlignedBuf::zeroed(MEMCPY_BUFFER_BYTES),
            walk_src: true,
            offset: 0,
        }
    }

    /// The producer's copy alone: every record is copied from one cache-hot, 64-byte aligned
    /// `size`-byte source (as the benches' producers do) into a [`RING_BYTES`] destination walked
    /// like a ring's data region. A ring between two cores cannot beat this.
    pub fn producer_copy(size: usize) -> Memcpy {
        Memcpy {
            src: AlignedBuf::pattern(size),
            dst: AlignedBuf::zeroed(RING_BYTES),
            walk_src: false,
            offset: 0,
        }
    }

    /// Copies `records` records of `size` bytes and returns how long that took.
    ///
    /// # Panics
    /// If `size` is larger than the source buffer.
    pub fn run(&mut self, size: usize, records: u64) -> Duration {
        // Opaque to the optimiser, as the ring's claim length is: no copy specialised for 64 B.
        let size = black_box(size);
        assert!(size <= self.src.as_slice().len());
        let dst_len = self.dst.as_slice().len();
        let start = Instant::now();
        for _ in 0..records {
            if self.offset + size > dst_len {
                self.offset = 0;
            }
            let from = if self.walk_src { self.offset } else { 0 };
            self.dst.as_mut_slice()[self.offset..self.offset + size]
                .copy_from_slice(&self.src.as_slice()[from..from + size]);
            self.offset += size;
        }
        black_box(self.dst.as_mut_slice());
        start.elapsed()
    }
}

/// Both ends of an rtrb ring of bytes with [`RING_BYTES`] slots.
pub struct RtrbBytes {
    tx: rtrb::Producer<u8>,
    rx: rtrb::Consumer<u8>,
}

impl Default for RtrbBytes {
    fn default() -> Self {
        let (tx, rx) = rtrb::RingBuffer::new(RING_BYTES);
        RtrbBytes { tx, rx }
    }
}

impl RtrbBytes {
    /// Moves `records` copies of `payload` to a consumer thread, which checksums each in place,
    /// and returns the time from the first write until the consumer has finished the last.
    ///
    /// The producer copies each record in with `push_entire_slice` (one `memcpy` into the ring,
    /// one index publication); the consumer takes it with `read_chunk(len)` and reads it in place.
    /// [`RING_BYTES`] is a multiple of every record size, so a record never wraps.
    ///
    /// # Panics
    /// If the consumer's checksums do not add up.
    pub fn run(&mut self, payload: &[u8], records: u64) -> Duration {
        let len = black_box(payload.len());
        let ready = AtomicBool::new(false);
        let rx = &mut self.rx;
        let tx = &mut self.tx;
        let (start, end, sum) = thread::scope(|s| {
            let consumer = s.spawn(|| {
                ready.store(true, Ordering::Release);
                let mut sum = 0u64;
                let mut left = records;
                while left > 0 {
                    match rx.read_chunk(len) {
                        Ok(chunk) => {
                            let (first, second) = chunk.as_slices();
                            debug_assert!(second.is_empty());
                            sum = sum.wrapping_add(checksum(first));
                            chunk.commit_all();
                            left -= 1;
                        }
                        Err(_) => spin_loop(),
                    }
                }
                (Instant::now(), sum)
            });
            while !ready.load(Ordering::Acquire) {
                spin_loop();
            }
            let start = Instant::now();
            for _ in 0..records {
                while tx.push_entire_slice(payload).is_err() {
                    spin_loop();
                }
            }
            let (end, sum) = consumer.join().expect("rtrb consumer thread panicked");
            (start, end, sum)
        });
        assert_eq!(sum, records.wrapping_mul(checksum(payload)));
        end - start
    }
}

/// Both ends of an rtrb ring of 64-byte arrays, with [`RING_BYTES`] / 64 slots.
pub struct RtrbArrays {
    tx: rtrb::Producer<[u8; 64]>,
    rx: rtrb::Consumer<[u8; 64]>,
}

impl Default for RtrbArrays {
    fn default() -> Self {
        let (tx, rx) = rtrb::RingBuffer::new(RING_BYTES / 64);
        RtrbArrays { tx, rx }
    }
}

impl RtrbArrays {
    /// As [`RtrbBytes::run`] for 64-byte records carried as `[u8; 64]` items: `push` copies the
    /// array in, `pop` copies it out (into registers), the consumer checksums the copy.
    ///
    /// # Panics
    /// If the consumer's checksums do not add up.
    pub fn run(&mut self, payload: &[u8; 64], records: u64) -> Duration {
        let ready = AtomicBool::new(false);
        let rx = &mut self.rx;
        let tx = &mut self.tx;
        let (start, end, sum) = thread::scope(|s| {
            let consumer = s.spawn(|| {
                ready.store(true, Ordering::Release);
                let mut sum = 0u64;
                let mut left = records;
                while left > 0 {
                    match rx.pop() {
                        Ok(item) => {
                            sum = sum.wrapping_add(checksum(&item));
                            left -= 1;
                        }
                        Err(_) => spin_loop(),
                    }
                }
                (Instant::now(), sum)
            });
            while !ready.load(Ordering::Acquire) {
                spin_loop();
            }
            let start = Instant::now();
            for _ in 0..records {
                let mut item = *black_box(payload);
                while let Err(rtrb::PushError::Full(back)) = tx.push(item) {
                    item = back;
                    spin_loop();
                }
            }
            let (end, sum) = consumer.join().expect("rtrb consumer thread panicked");
            (start, end, sum)
        });
        assert_eq!(sum, records.wrapping_mul(checksum(payload)));
        end - start
    }
}

/// Round trips of a 64-byte record between this thread and an echo thread over two rtrb byte
/// rings, both sides spinning: the latency baseline.
pub struct RtrbEcho<'scope> {
    tx: rtrb::Producer<u8>,
    rx: rtrb::Consumer<u8>,
    _echo: thread::ScopedJoinHandle<'scope, ()>,
}

impl<'scope> RtrbEcho<'scope> {
    /// Starts the echo thread in `scope`; it stops when this value is dropped.
    pub fn start<'env>(scope: &'scope thread::Scope<'scope, 'env>) -> RtrbEcho<'scope> {
        let (tx, mut peer_rx) = rtrb::RingBuffer::<u8>::new(64 * 1024);
        let (mut peer_tx, rx) = rtrb::RingBuffer::<u8>::new(64 * 1024);
        let echo = scope.spawn(move || {
            loop {
                if let Ok(chunk) = peer_rx.read_chunk(64) {
                    let (first, _) = chunk.as_slices();
                    while peer_tx.push_entire_slice(first).is_err() {
                        spin_loop();
                    }
                    chunk.commit_all();
                } else if peer_rx.is_abandoned() {
                    return;
                } else {
                    spin_loop();
                }
            }
        });
        RtrbEcho {
            tx,
            rx,
            _echo: echo,
        }
    }

    /// Sends `record` (64 bytes, its first 8 a sequence number) and waits for it to come back.
    ///
    /// # Panics
    /// If what comes back is not what was sent.
    pub fn round_trip(&mut self, record: &[u8]) {
        while self.tx.push_entire_slice(record).is_err() {
            spin_loop();
        }
        loop {
            if let Ok(chunk) = self.rx.read_chunk(record.len()) {
                let (first, _) = chunk.as_slices();
                assert_eq!(first[..8], record[..8], "echo out of sequence");
                chunk.commit_all();
                return;
            }
            spin_loop();
        }
    }
}
