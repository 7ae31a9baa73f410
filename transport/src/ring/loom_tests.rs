//! loom models of the ring's atomic protocols. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p shmplug-transport --lib --release loom`.
//!
//! The rings here live on the heap with loom's atomics; every access to the data region is
//! reported to loom per 16-byte granule (`sync::Granules`), so reading a record before it is
//! published, or overwriting one before it is released, is a data race loom reports.

use std::time::Duration;

use loom::thread;

use super::*;
use crate::error::Error;

/// Parks at once: under loom, spinning only multiplies the interleavings.
fn cfg() -> EndpointConfig {
    EndpointConfig::default()
        .with_spin(Duration::ZERO)
        .with_publish_bytes(1)
}

fn stamp(claim: &mut Claim<'_>, seq: u8) {
    claim.fill(seq);
}

/// Non-blocking producer and consumer: positions, caching, padding at the wrap.
#[test]
fn loom_positions_and_wrap() {
    loom::model(|| {
        // 256-byte region, largest payload 64: three records wrap once.
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        let sizes = [64usize, 40, 64];
        let producer = thread::spawn(move || {
            for (seq, len) in sizes.into_iter().enumerate() {
                loop {
                    if let Some(mut claim) = p.try_claim(len).unwrap() {
                        stamp(&mut claim, seq as u8);
                        claim.commit();
                        break;
                    }
                    thread::yield_now();
                }
            }
        });
        for (seq, len) in sizes.into_iter().enumerate() {
            loop {
                if let Some(r) = c.try_read().unwrap() {
                    assert_eq!(r.len(), len);
                    assert!(r.iter().all(|&b| b == seq as u8));
                    break;
                }
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert!(matches!(c.try_read(), Err(Error::Closed)));
    });
}

/// Blocking reads park on the futex stand-in: a lost wake-up would leave the consumer asleep
/// with every thread blocked, which loom reports as a deadlock. The producer stays open until
/// the consumer is done, so the wake-up that comes with closing cannot mask a lost one.
#[test]
fn loom_consumer_park_and_wake() {
    loom::model(|| {
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        let (done_tx, done_rx) = loom::sync::mpsc::channel::<()>();
        let producer = thread::spawn(move || {
            for seq in 0..2u8 {
                let mut claim = p.claim(16).unwrap();
                stamp(&mut claim, seq);
                claim.commit();
            }
            done_rx.recv().unwrap();
        });
        for seq in 0..2u8 {
            let r = c.read().unwrap();
            assert!(r.iter().all(|&b| b == seq));
        }
        done_tx.send(()).unwrap();
        producer.join().unwrap();
    });
}

/// Closing wakes a consumer parked on an empty ring, which then sees end of stream after the
/// record committed before the close.
#[test]
fn loom_close_wakes_consumer() {
    loom::model(|| {
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        let producer = thread::spawn(move || {
            let mut claim = p.claim(16).unwrap();
            stamp(&mut claim, 9);
            claim.commit_deferred();
            drop(p);
        });
        assert!(c.read().unwrap().iter().all(|&b| b == 9));
        assert!(matches!(c.read(), Err(Error::Closed)));
        producer.join().unwrap();
    });
}

/// A producer that finds the ring full parks until the consumer releases space. The consumer
/// stays open until the producer is done, so closing cannot mask a lost wake-up.
#[test]
fn loom_producer_park_and_wake() {
    loom::model(|| {
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        let (done_tx, done_rx) = loom::sync::mpsc::channel::<()>();
        let producer = thread::spawn(move || {
            // Each record spans 80 bytes: the fourth must wait for the first to be released.
            for seq in 0..4u8 {
                let mut claim = p.claim(64).unwrap();
                stamp(&mut claim, seq);
                claim.commit();
            }
            done_tx.send(()).unwrap();
            // Keep the producer open too: the consumer must not depend on a close.
            p
        });
        for seq in 0..4u8 {
            let r = c.read().unwrap();
            assert!(r.iter().all(|&b| b == seq));
        }
        done_rx.recv().unwrap();
        drop(producer.join().unwrap());
    });
}

/// The consumer closing wakes a producer parked for space, which then sees `Closed`.
#[test]
fn loom_consumer_close_wakes_producer() {
    loom::model(|| {
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let c = ring.consumer(cfg()).unwrap();
        let producer = thread::spawn(move || {
            loop {
                match p.claim(64) {
                    Ok(claim) => claim.commit(),
                    Err(Error::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        drop(c);
        producer.join().unwrap();
    });
}

/// The event-loop wait every host handle uses: a consumer that finds the ring empty calls
/// `prepare_park` (arm the flag, re-check), awaits its eventfd (here loom's stand-in), then
/// `finish_park` (disarm, drain) and tries again; the producer publishes and signals only when
/// it sees the flag armed. A lost wake-up leaves the consumer asleep on the stand-in with every
/// thread blocked, which loom reports as a deadlock; the producer stays open until the consumer
/// is done, so no close can mask one. Every record arrives, in order, and the eventfd is
/// signalled at most once per arming of the flag.
#[test]
fn loom_consumer_eventfd_park() {
    loom::model(|| {
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        let (done_tx, done_rx) = loom::sync::mpsc::channel::<()>();
        let producer = thread::spawn(move || {
            for seq in 0..2u8 {
                let mut claim = p.try_claim(16).unwrap().expect("room for two records");
                stamp(&mut claim, seq);
                claim.commit();
            }
            done_rx.recv().unwrap();
            p
        });
        let data_ready = ring.shared.data_ready().expect("a heap ring has stand-ins");
        let mut armed = 0;
        for seq in 0..2u8 {
            loop {
                if let Some(r) = c.try_read().unwrap() {
                    assert_eq!(r.len(), 16);
                    assert!(r.iter().all(|&b| b == seq), "record {seq} out of order");
                    break;
                }
                armed += 1;
                if c.prepare_park() {
                    continue;
                }
                data_ready.poll(None);
                c.finish_park();
            }
        }
        done_tx.send(()).unwrap();
        drop(producer.join().unwrap());
        assert!(matches!(c.try_read(), Err(Error::Closed)));
        assert!(
            data_ready.signals() <= armed,
            "woken more often than parked"
        );
    });
}

/// The same wait on the producer side: a producer that finds no room for its record calls
/// `prepare_park(len)`, awaits the space eventfd's stand-in, `finish_park`s and tries again;
/// the consumer releases space and signals only when it sees the flag armed. The consumer
/// polls, so a lost wake-up leaves it spinning for a record the sleeping producer never writes,
/// which loom reports as a model that exceeds its branch limit (the consumer stays open until
/// the producer is done, so no close can mask one). Every record is read in order, and the
/// eventfd is signalled at most once per arming of the flag.
#[test]
fn loom_producer_eventfd_park() {
    loom::model(|| {
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        let (done_tx, done_rx) = loom::sync::mpsc::channel::<()>();
        // The consumer polls instead of parking, so that only the producer's park is modelled.
        let consumer = thread::spawn(move || {
            for seq in 0..4u8 {
                loop {
                    if let Some(r) = c.try_read().unwrap() {
                        assert!(r.iter().all(|&b| b == seq), "record {seq} out of order");
                        break;
                    }
                    thread::yield_now();
                }
            }
            done_rx.recv().unwrap();
            c
        });
        let space_ready = ring
            .shared
            .space_ready()
            .expect("a heap ring has stand-ins");
        let mut armed = 0;
        // Each record spans 80 bytes: the fourth must wait for the first to be released.
        for seq in 0..4u8 {
            loop {
                if let Some(mut claim) = p.try_claim(64).unwrap() {
                    stamp(&mut claim, seq);
                    claim.commit();
                    break;
                }
                armed += 1;
                if p.prepare_park(64) {
                    continue;
                }
                space_ready.poll(None);
                p.finish_park();
            }
        }
        done_tx.send(()).unwrap();
        drop(consumer.join().unwrap());
        assert!(
            space_ready.signals() <= armed,
            "woken more often than parked"
        );
    });
}

/// The acknowledgement protocol of at-least-once sinks: the consumer does each record's work,
/// then releases it and takes the next (acknowledging it); it dies at any point (taking a record, mid-work, after
/// work, with nothing published). The producer reads back what is unacknowledged while the
/// consumer still runs (a process being replaced) and after it died:
/// - a record not read back has its work visible to the producer (never skipped unseen);
/// - after the death, the work done plus the records read back cover every record at least
///   once, and the records done twice are no more than `possibly_done` counts.
#[test]
fn loom_acknowledged_work_is_never_lost() {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU32, Ordering};

    const RECORDS: usize = 2;
    // Phase 2k: dies after finishing k records; 2k + 1: also took the next and did its work,
    // but never released it.
    for phase in 0..=2 * RECORDS {
        loom::model(move || {
            let ring = Ring::heap(256);
            let mut p = ring.producer(cfg()).unwrap();
            for seq in 0..RECORDS {
                let mut claim = p.try_claim(16).unwrap().unwrap();
                stamp(&mut claim, seq as u8);
                claim.commit();
            }
            let mut c = ring.consumer(cfg()).unwrap().acknowledge();
            let done: Arc<[AtomicU32; RECORDS]> = Arc::new(Default::default());
            let work = done.clone();
            let consumer = thread::spawn(move || {
                for _ in 0..phase / 2 {
                    let r = c.try_read().unwrap().unwrap();
                    work[usize::from(r[0])].fetch_add(1, Ordering::Relaxed);
                    drop(r);
                }
                if phase % 2 == 1 {
                    let r = c.try_read().unwrap().unwrap();
                    work[usize::from(r[0])].fetch_add(1, Ordering::Relaxed);
                    // Killed before the release: neither acknowledged nor closed.
                    std::mem::forget(r);
                }
                std::mem::forget(c);
            });
            let mut back = Vec::new();
            p.unacknowledged(|_, bytes| back.push(usize::from(bytes[0])))
                .unwrap();
            for seq in 0..RECORDS {
                if !back.contains(&seq) {
                    assert_eq!(done[seq].load(Ordering::Relaxed), 1, "record {seq} skipped");
                }
            }
            consumer.join().unwrap();
            let mut back = Vec::new();
            let unfinished = p
                .unacknowledged(|_, bytes| back.push(usize::from(bytes[0])))
                .unwrap();
            let mut twice = 0;
            for seq in 0..RECORDS {
                let worked = done[seq].load(Ordering::Relaxed);
                let replayed = u32::from(back.contains(&seq));
                assert!(worked + replayed >= 1, "record {seq} lost");
                if worked + replayed > 1 {
                    twice += 1;
                }
            }
            assert!(
                twice <= unfinished.possibly_done(),
                "{twice} duplicates, {unfinished:?}"
            );
            // A finished record is acknowledged when the next one is taken.
            let acknowledged = if phase % 2 == 1 {
                phase / 2
            } else {
                (phase / 2).saturating_sub(1)
            };
            assert_eq!(unfinished.records as usize, RECORDS - acknowledged);
        });
    }
}

/// An interrupt races a consumer and a producer on their way to sleep: neither sleeps through
/// it (a lost wake-up would leave a thread asleep forever, which loom reports as a deadlock).
#[test]
fn loom_interrupt_ends_a_park() {
    loom::model(|| {
        let ring = Ring::heap(256);
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        // Fill the ring so the producer's next claim waits; the consumer waits on the other
        // ring below, which stays empty.
        for seq in 0..3u8 {
            let mut claim = p.try_claim(64).unwrap().unwrap();
            stamp(&mut claim, seq);
            claim.commit();
        }
        let empty = Ring::heap(256);
        let _keep = empty.producer(cfg()).unwrap();
        let mut idle = empty.consumer(cfg()).unwrap();
        let (stop_p, stop_c) = (p.interrupter(), idle.interrupter());
        let stopper = thread::spawn(move || {
            stop_c.interrupt();
            stop_p.interrupt();
        });
        assert!(matches!(idle.read(), Err(Error::Interrupted)));
        assert!(matches!(p.claim(64), Err(Error::Interrupted)));
        stopper.join().unwrap();
        drop(c.try_read().unwrap());
    });
}

/// Held acknowledgements ([`Consumer::acknowledge_held`]), for sinks that buffer: the consumer
/// takes records into a buffer of its own, and only a flush does their work and acknowledges
/// them. It dies at any point (after taking some, with or without the flush). The producer
/// reads back what is unacknowledged while it runs and after it died:
/// - a record not read back had its work done (a buffered record is never acknowledged);
/// - after the death, the work done plus the records read back cover every record at least
///   once, and the records done twice are no more than `possibly_done` counts.
#[test]
fn loom_held_acknowledgements_cover_what_was_buffered() {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU32, Ordering};

    const RECORDS: usize = 2;
    for taken in 0..=RECORDS {
        for flushed in [false, true] {
            loom::model(move || {
                let ring = Ring::heap(256);
                let mut p = ring.producer(cfg()).unwrap();
                for seq in 0..RECORDS {
                    let mut claim = p.try_claim(16).unwrap().unwrap();
                    stamp(&mut claim, seq as u8);
                    claim.commit();
                }
                let mut c = ring.consumer(cfg()).unwrap().acknowledge_held();
                let done: Arc<[AtomicU32; RECORDS]> = Arc::new(Default::default());
                let work = done.clone();
                let consumer = thread::spawn(move || {
                    let mut buffer = Vec::new();
                    for _ in 0..taken {
                        let r = c.try_read().unwrap().unwrap();
                        buffer.push(usize::from(r[0]));
                        drop(r);
                    }
                    if flushed {
                        for seq in buffer.drain(..) {
                            work[seq].fetch_add(1, Ordering::Relaxed);
                        }
                        c.acknowledge_read();
                    }
                    // Killed: the buffer is lost, nothing more acknowledged or closed.
                    std::mem::forget(c);
                });
                let mut back = Vec::new();
                p.unacknowledged(|_, bytes| back.push(usize::from(bytes[0])))
                    .unwrap();
                for seq in 0..RECORDS {
                    if !back.contains(&seq) {
                        assert_eq!(done[seq].load(Ordering::Relaxed), 1, "record {seq} skipped");
                    }
                }
                consumer.join().unwrap();
                let mut back = Vec::new();
                let unfinished = p
                    .unacknowledged(|_, bytes| back.push(usize::from(bytes[0])))
                    .unwrap();
                let mut twice = 0;
                for seq in 0..RECORDS {
                    let worked = done[seq].load(Ordering::Relaxed);
                    let replayed = u32::from(back.contains(&seq));
                    assert!(worked + replayed >= 1, "record {seq} lost");
                    if worked + replayed > 1 {
                        twice += 1;
                    }
                }
                assert!(
                    twice <= unfinished.possibly_done(),
                    "{twice} duplicates, {unfinished:?}"
                );
                let acknowledged = if flushed { taken } else { 0 };
                assert_eq!(unfinished.records as usize, RECORDS - acknowledged);
            });
        }
    }
}
