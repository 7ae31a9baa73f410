//! Unit and property tests of the ring within one process.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::error::Error;
use crate::layout::{KIND_PADDING, RecordHeader};
use crate::sync::Ordering;

const WAIT: Duration = Duration::from_secs(20);

fn cfg() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

fn pair(capacity: usize) -> (Ring, Producer, Consumer) {
    let ring = Ring::create(capacity).unwrap();
    let p = ring.producer(cfg()).unwrap();
    let c = ring.consumer(cfg()).unwrap();
    (ring, p, c)
}

fn put(p: &mut Producer, bytes: &[u8]) {
    let mut claim = p.claim_timeout(bytes.len(), WAIT).unwrap();
    claim.copy_from_slice(bytes);
    claim.commit();
}

#[test]
fn records_arrive_in_order_with_their_kind() {
    let (_ring, mut p, mut c) = pair(4096);
    assert!(c.try_read().unwrap().is_none());
    put(&mut p, b"one");
    let mut claim = p.try_claim(3).unwrap().unwrap();
    claim.copy_from_slice(b"two");
    claim.set_kind(7);
    claim.commit();
    let r = c.try_read().unwrap().unwrap();
    assert_eq!((&*r, r.kind()), (&b"one"[..], 1));
    drop(r);
    let r = c.read_timeout(WAIT).unwrap();
    assert_eq!((&*r, r.kind()), (&b"two"[..], 7));
    drop(r);
    assert!(c.try_read().unwrap().is_none());
}

#[test]
fn payloads_are_aligned_and_large_ones_to_64_bytes() {
    let (_ring, mut p, mut c) = pair(1 << 16);
    for len in [0usize, 1, 15, 16, 17, 100, 1023, 1024, 1500, 4000] {
        let claim = p.claim_timeout(len, WAIT).unwrap();
        let addr = claim.as_ptr() as usize;
        assert_eq!(addr % 16, 0, "len {len}");
        if len >= 1024 {
            assert_eq!(addr % 64, 0, "len {len}");
        }
        claim.commit();
        let r = c.read_timeout(WAIT).unwrap();
        assert_eq!(r.len(), len);
        assert_eq!(r.as_ptr() as usize, addr);
    }
}

#[test]
fn too_large_is_refused_and_largest_fits_repeatedly() {
    let (ring, mut p, mut c) = pair(4096);
    let max = ring.max_record_len();
    assert_eq!(max, 4096 / 2 - 64);
    match p.try_claim(max + 1) {
        Err(Error::TooLarge { size, max: m }) => assert_eq!((size, m), (max + 1, max)),
        other => panic!("{other:?}"),
    }
    // Largest records at every phase of the ring, interleaved with odd small ones.
    for round in 0..50 {
        put(&mut p, &vec![round as u8; max]);
        let r = c.read_timeout(WAIT).unwrap();
        assert!(r.len() == max && r.iter().all(|&b| b == round as u8));
        drop(r);
        put(&mut p, &vec![1; round * 7 % 200]);
        c.read_timeout(WAIT).unwrap();
        // One thread plays both sides: hand the space back before writing again.
        c.flush();
    }
}

#[test]
fn abandoned_claim_is_never_seen() {
    let (_ring, mut p, mut c) = pair(4096);
    {
        // Written, then abandoned without a commit.
        let mut claim = p.claim_timeout(100, WAIT).unwrap();
        claim.fill(0xAA);
    }
    assert!(c.try_read().unwrap().is_none());
    put(&mut p, b"after");
    assert_eq!(&*c.try_read().unwrap().unwrap(), b"after");
}

#[test]
fn commit_len_shrinks_the_record() {
    let (_ring, mut p, mut c) = pair(4096);
    let mut claim = p.claim_timeout(1000, WAIT).unwrap();
    claim[..3].copy_from_slice(b"abc");
    claim.commit_len(3);
    put(&mut p, b"next");
    assert_eq!(&*c.read_timeout(WAIT).unwrap(), b"abc");
    assert_eq!(&*c.read_timeout(WAIT).unwrap(), b"next");
}

#[test]
fn full_ring_reports_full_then_times_out() {
    let (ring, mut p, _c) = pair(4096);
    let max = ring.max_record_len();
    put(&mut p, &vec![0; max]);
    put(&mut p, &vec![0; max]);
    assert!(p.try_claim(max).unwrap().is_none());
    let t = Duration::from_millis(20);
    match p.claim_timeout(max, t) {
        Err(Error::TimedOut(d)) => assert_eq!(d, t),
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_times_out_on_empty_ring() {
    let (_ring, _p, mut c) = pair(4096);
    assert!(matches!(
        c.read_timeout(Duration::from_millis(20)),
        Err(Error::TimedOut(_))
    ));
}

#[test]
fn deferred_commits_publish_on_flush_batch_and_close() {
    let ring = Ring::create(4096).unwrap();
    let mut p = ring.producer(cfg().with_publish_bytes(256)).unwrap();
    let mut c = ring.consumer(cfg()).unwrap();
    let claim = p.claim_timeout(8, WAIT).unwrap();
    claim.commit_deferred();
    assert!(
        c.try_read().unwrap().is_none(),
        "deferred record published early"
    );
    p.flush();
    assert!(c.try_read().unwrap().is_some());
    // 24-byte records (32-byte spans): the 8th reaches the 256-byte batch.
    for i in 0..8 {
        assert!(
            c.try_read().unwrap().is_none(),
            "published before the batch filled ({i})"
        );
        p.claim_timeout(8, WAIT).unwrap().commit_deferred();
    }
    for _ in 0..8 {
        assert!(c.try_read().unwrap().is_some());
    }
    p.claim_timeout(8, WAIT).unwrap().commit_deferred();
    drop(p);
    assert!(c.try_read().unwrap().is_some());
    assert!(matches!(c.try_read(), Err(Error::Closed)));
}

#[test]
fn consumer_drains_then_sees_close() {
    let (_ring, mut p, mut c) = pair(4096);
    put(&mut p, b"a");
    put(&mut p, b"b");
    p.close();
    assert!(matches!(p.try_claim(1), Err(Error::Closed)));
    assert_eq!(&*c.read_timeout(WAIT).unwrap(), b"a");
    assert_eq!(&*c.read_timeout(WAIT).unwrap(), b"b");
    assert!(matches!(c.read_timeout(WAIT), Err(Error::Closed)));
    assert!(matches!(c.try_read(), Err(Error::Closed)));
}

#[test]
fn producer_sees_consumer_close_even_while_parked() {
    let (ring, mut p, mut c) = pair(4096);
    put(&mut p, &vec![0; ring.max_record_len()]);
    put(&mut p, &vec![0; ring.max_record_len()]);
    std::thread::scope(|s| {
        let h = s.spawn(move || p.claim_timeout(ring.max_record_len(), WAIT).map(|_| ()));
        c.close();
        assert!(matches!(h.join().unwrap(), Err(Error::Closed)));
    });
}

#[test]
fn an_interrupt_ends_waits_for_room_and_records_at_once_and_for_good() {
    let (ring, mut p, mut c) = pair(4096);
    put(&mut p, &vec![0; ring.max_record_len()]);
    put(&mut p, &vec![0; ring.max_record_len()]);
    let stop_p = p.interrupter();
    let ring2 = Ring::create(4096).unwrap();
    let _p2 = ring2.producer(cfg()).unwrap();
    let mut c2 = ring2.consumer(cfg()).unwrap();
    let stop_c = c2.interrupter();
    std::thread::scope(|s| {
        // Both wait with a time-out far beyond the test's: only the interrupts end them.
        let producer = s.spawn(|| p.claim_timeout(ring.max_record_len(), WAIT).map(|_| ()));
        let consumer = s.spawn(|| c2.read_timeout(WAIT).map(|_| ()));
        stop_p.interrupt();
        stop_c.interrupt();
        assert!(matches!(producer.join().unwrap(), Err(Error::Interrupted)));
        assert!(matches!(consumer.join().unwrap(), Err(Error::Interrupted)));
    });
    // Later waits end at once too; tries still work, and records already there are read.
    assert!(matches!(
        p.claim_timeout(ring.max_record_len(), WAIT),
        Err(Error::Interrupted)
    ));
    assert!(p.try_claim(16).unwrap().is_none());
    assert!(matches!(c2.read_timeout(WAIT), Err(Error::Interrupted)));
    assert!(c.try_read().unwrap().is_some());
}

#[test]
fn endpoints_are_taken_once_per_process() {
    let ring = Ring::create(4096).unwrap();
    let p = ring.producer(cfg()).unwrap();
    assert!(matches!(
        ring.producer(cfg()),
        Err(Error::AlreadyTaken("producer"))
    ));
    drop(p);
    let c = ring.consumer(cfg()).unwrap();
    assert!(matches!(
        ring.consumer(cfg()),
        Err(Error::AlreadyTaken("consumer"))
    ));
    drop(c);
}

#[test]
fn a_closed_end_cannot_be_taken_again() {
    let ring = Ring::create(4096).unwrap();
    let mut p = ring.producer(cfg()).unwrap();
    put(&mut p, b"one");
    drop(p); // closes
    assert!(matches!(ring.producer(cfg()), Err(Error::Closed)));
    let mut c = ring.consumer(cfg()).unwrap();
    assert_eq!(&*c.read_timeout(WAIT).unwrap(), b"one");
    assert!(matches!(c.read_timeout(WAIT), Err(Error::Closed)));
    drop(c);
    assert!(matches!(ring.consumer(cfg()), Err(Error::Closed)));
}

#[test]
fn positions_near_the_top_of_u64_are_refused() {
    let ring = Ring::create(4096).unwrap();
    let top = u64::MAX - 31;
    ring.shared
        .control()
        .read_pos
        .0
        .store(top, Ordering::Release);
    ring.shared
        .control()
        .write_pos
        .0
        .store(top + 16, Ordering::Release);
    expect_corrupt(ring.consumer(cfg()).map(|_| ()), "positions");
    expect_corrupt(ring.producer(cfg()).map(|_| ()), "positions");
}

#[test]
fn is_ready_peeks_without_consuming() {
    let (_ring, mut p, mut c) = pair(4096);
    assert!(!c.is_ready().unwrap());
    put(&mut p, b"x");
    assert!(c.is_ready().unwrap());
    assert!(c.is_ready().unwrap());
    assert_eq!(&*c.try_read().unwrap().unwrap(), b"x");
    assert!(!c.is_ready().unwrap());
    drop(p);
    assert!(matches!(c.is_ready(), Err(Error::Closed)));
}

#[test]
fn a_dead_peer_end_can_be_closed_for_it() {
    // The producer "dies" (is forgotten without closing) while the consumer sleeps.
    let (ring, mut p, mut c) = pair(4096);
    put(&mut p, b"last");
    std::mem::forget(p);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            assert_eq!(&*c.read_timeout(WAIT).unwrap(), b"last");
            c.read_timeout(WAIT).map(|_| ())
        });
        ring.close_producer_end();
        assert!(matches!(h.join().unwrap(), Err(Error::Closed)));
    });

    let (ring, mut p, c) = pair(4096);
    std::mem::forget(c);
    ring.close_consumer_end();
    assert!(matches!(p.try_claim(8), Err(Error::Closed)));
}

#[test]
fn eventfd_parking_wakes_both_ways() {
    let ring = Ring::create(4096).unwrap();
    let config = cfg().with_park(Park::EventFd).with_spin(Duration::ZERO);
    let mut p = ring.producer(config).unwrap();
    let mut c = ring.consumer(config).unwrap();
    let max = ring.max_record_len();
    std::thread::scope(|s| {
        s.spawn(move || {
            for i in 0..200u32 {
                let mut claim = p.claim_timeout(max, WAIT).unwrap();
                claim[..4].copy_from_slice(&i.to_le_bytes());
                claim.commit();
            }
        });
        for i in 0..200u32 {
            let r = c.read_timeout(WAIT).unwrap();
            assert_eq!(r[..4], i.to_le_bytes());
        }
        assert!(matches!(c.read_timeout(WAIT), Err(Error::Closed)));
    });
}

#[test]
fn prepare_park_reports_readiness() {
    let (_ring, mut p, mut c) = pair(4096);
    assert!(!c.prepare_park(), "nothing to read yet");
    put(&mut p, b"x");
    // The producer saw the flag and signalled the eventfd.
    let fd = _ring.fds()[1];
    let mut pfd = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut pfd, Some(&zero)).unwrap(), 1);
    c.finish_park();
    assert_eq!(rustix::event::poll(&mut pfd, Some(&zero)).unwrap(), 0);
    assert!(c.prepare_park(), "a record is ready");
    assert_eq!(&*c.try_read().unwrap().unwrap(), b"x");
}

// ---- corruption: the peer scribbles on shared state ----

fn scribble_header(ring: &Ring, pos: u64, header: RecordHeader) {
    let shared = &ring.shared;
    shared.write_at(shared.offset(pos), &header.to_bytes());
}

fn expect_corrupt<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::Corrupt { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected corrupt {what}, got {other:?}"),
    }
}

#[test]
fn write_position_past_capacity_poisons_the_consumer() {
    let (ring, _p, mut c) = pair(4096);
    ring.shared
        .control()
        .write_pos
        .0
        .store(4096 + 16, Ordering::Release);
    expect_corrupt(c.try_read().map(|r| r.is_some()), "write position");
    // Poisoned: the same error again, and the producer is told we are gone.
    expect_corrupt(c.try_read().map(|r| r.is_some()), "write position");
    assert_eq!(
        ring.shared
            .control()
            .signals
            .0
            .consumer_closed
            .load(Ordering::Acquire),
        1
    );
}

#[test]
fn write_position_going_backwards_or_misaligned_is_corrupt() {
    let (ring, mut p, mut c) = pair(4096);
    put(&mut p, b"abc");
    c.try_read().unwrap().unwrap();
    ring.shared
        .control()
        .write_pos
        .0
        .store(0, Ordering::Release);
    expect_corrupt(c.try_read().map(|r| r.is_some()), "write position");

    let (ring, _p, mut c) = pair(4096);
    ring.shared
        .control()
        .write_pos
        .0
        .store(8, Ordering::Release);
    expect_corrupt(c.try_read().map(|r| r.is_some()), "write position");
}

#[test]
fn record_headers_are_checked() {
    let cases = [
        (RecordHeader { len: 4000, kind: 1 }, "record length"), // past the write position
        (
            RecordHeader {
                len: 10_000,
                kind: 1,
            },
            "record length",
        ), // past the region's end
        (RecordHeader { len: 3, kind: 0 }, "record kind"),
        (
            RecordHeader {
                len: 3000,
                kind: KIND_PADDING,
            },
            "record length",
        ),
    ];
    for (header, what) in cases {
        let (ring, mut p, mut c) = pair(4096);
        put(&mut p, &[0; 40]);
        scribble_header(&ring, 0, header);
        expect_corrupt(c.try_read().map(|r| r.is_some()), what);
    }
    // A record longer than the largest allowed, though inside the published range.
    let (ring, _p, mut c) = pair(4096);
    ring.shared
        .control()
        .write_pos
        .0
        .store(4096, Ordering::Release);
    scribble_header(
        &ring,
        0,
        RecordHeader {
            len: 4096 - 16,
            kind: 1,
        },
    );
    expect_corrupt(c.try_read().map(|r| r.is_some()), "record length");
}

#[test]
fn read_position_out_of_range_poisons_the_producer() {
    for bad in [4096u64 * 4, 8, u64::MAX - 15] {
        let (ring, mut p, _c) = pair(4096);
        put(&mut p, &vec![0; ring.max_record_len()]);
        put(&mut p, &vec![0; ring.max_record_len()]);
        ring.shared
            .control()
            .read_pos
            .0
            .store(bad, Ordering::Release);
        // Only consulted when the ring looks full.
        expect_corrupt(
            p.try_claim(ring.max_record_len()).map(|c| c.is_some()),
            "read position",
        );
        expect_corrupt(p.try_claim(1).map(|c| c.is_some()), "read position");
    }
}

#[test]
fn opening_checks_positions() {
    let ring = Ring::create(4096).unwrap();
    ring.shared
        .control()
        .write_pos
        .0
        .store(16, Ordering::Release);
    ring.shared
        .control()
        .read_pos
        .0
        .store(32, Ordering::Release);
    expect_corrupt(ring.consumer(cfg()).map(|_| ()), "positions");
    expect_corrupt(ring.producer(cfg()).map(|_| ()), "positions");
    // A failed open poisons and closes that end (telling the peer), and does not leave it
    // taken: trying again says `Closed`, not `AlreadyTaken`.
    assert!(matches!(ring.consumer(cfg()), Err(Error::Closed)));
    assert!(matches!(ring.producer(cfg()), Err(Error::Closed)));
}

/// Payloads read back by `unacknowledged`.
fn read_back(p: &Producer) -> (Vec<Vec<u8>>, Unfinished) {
    let mut back = Vec::new();
    let unfinished = p
        .unacknowledged(|_, bytes| back.push(bytes.to_vec()))
        .unwrap();
    (back, unfinished)
}

#[test]
fn held_acknowledgements_keep_released_records_until_acknowledge_read() {
    let (_ring, mut p, c) = pair(1 << 16);
    let mut c = c.acknowledge_held();
    let records: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
    for record in &records {
        put(&mut p, record);
    }
    // Three read and released (the reader came back for the third, so two are released and
    // one is taken): none acknowledged, all three possibly done, and their space held.
    for _ in 0..3 {
        drop(c.try_read().unwrap().unwrap());
    }
    assert!(c.unacknowledged_len() > 0);
    let (back, unfinished) = read_back(&p);
    assert_eq!(back, records);
    assert_eq!(unfinished.taken, 3);
    assert_eq!(unfinished.possibly_done(), 3);
    assert!(!p.all_acknowledged());
    // Acknowledged: only the one not read is left.
    c.acknowledge_read();
    assert_eq!(c.unacknowledged_len(), 0);
    let (back, unfinished) = read_back(&p);
    assert_eq!(back, records[3..]);
    assert_eq!(unfinished.possibly_done(), 0);
}

#[test]
fn unacknowledged_records_are_read_back_from_the_acknowledged_position() {
    let (ring, mut p, c) = pair(1 << 16);
    let mut c = c.acknowledge();
    let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000]).collect();
    for record in &records[..3] {
        put(&mut p, record);
    }
    // Two done (acknowledged, the read position not yet published), the third taken.
    drop(c.try_read().unwrap().unwrap());
    drop(c.try_read().unwrap().unwrap());
    assert_eq!(ring.shared.control().read_pos.0.load(Ordering::Acquire), 0);
    let held = c.try_read().unwrap().unwrap();
    for record in &records[3..] {
        let mut claim = p.try_claim(record.len()).unwrap().unwrap();
        claim.copy_from_slice(record);
        // Committed but not yet published: still read back.
        claim.commit_deferred();
    }
    let (back, unfinished) = read_back(&p);
    assert_eq!(back, records[2..]);
    assert_eq!(
        unfinished,
        Unfinished {
            records: 3,
            taken: 1,
            acknowledged: true
        }
    );
    assert_eq!(unfinished.possibly_done(), 1);
    // Released, but done only once the reader comes back for more.
    drop(held);
    assert_eq!(read_back(&p).1.possibly_done(), 1);
    assert!(c.try_read().unwrap().is_none());
    let (back, unfinished) = read_back(&p);
    assert_eq!((back.len(), unfinished.possibly_done()), (2, 0));
}

#[test]
fn without_acknowledgements_everything_past_the_read_position_is_read_back() {
    let (_ring, mut p, mut c) = pair(4096);
    for i in 0..3u8 {
        put(&mut p, &[i; 10]);
    }
    drop(c.try_read().unwrap().unwrap());
    let (back, unfinished) = read_back(&p);
    // The consumer released one record but published no read position yet: it may have
    // finished any of them.
    assert_eq!(back.len(), 3);
    assert_eq!(unfinished.possibly_done(), 3);
}

#[test]
fn overwritten_unacknowledged_records_are_an_error_not_a_panic() {
    let (ring, mut p, c) = pair(4096);
    let _c = c.acknowledge();
    put(&mut p, &[1; 10]);
    put(&mut p, &[2; 10]);
    // The consumer scribbles over the second header, and claims impossible positions.
    ring.shared.write_at(32, &[0xff; 16]);
    let acks = &ring.shared.control().acks.0;
    acks.acked.store(u64::MAX - 15, Ordering::Release);
    acks.taken.store(7, Ordering::Release);
    let mut back = Vec::new();
    let err = p
        .unacknowledged(|_, bytes| back.push(bytes.to_vec()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                what: "unacknowledged record",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(back, [vec![1; 10]]);
}

// ---- property tests ----

#[derive(Clone, Debug)]
enum Op {
    Write(usize),
    WriteDeferred(usize),
    Flush,
    Read,
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..max).prop_map(Op::Write),
        3 => (0..200usize).prop_map(Op::WriteDeferred),
        1 => Just(Op::Flush),
        5 => Just(Op::Read),
    ]
}

fn fill(seq: u64, len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(move |i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Single thread, random interleavings: the consumer sees exactly the published records, in
    /// order, byte for byte, whatever the sizes and wherever the ring wraps.
    #[test]
    fn model_matches_a_queue(ops in proptest::collection::vec(op(2048 - 64), 1..300)) {
        let (ring, mut p, mut c) = pair(4096);
        let max = ring.max_record_len();
        let mut model = std::collections::VecDeque::new();
        let mut pending = Vec::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Write(len) | Op::WriteDeferred(len) => {
                    let deferred = matches!(op, Op::WriteDeferred(_));
                    prop_assert!(len <= max);
                    if let Some(mut claim) = p.try_claim(len).unwrap() {
                        for (b, v) in claim.iter_mut().zip(fill(seq, len)) { *b = v; }
                        if deferred { claim.commit_deferred(); pending.push((seq, len)); }
                        else { claim.commit(); model.extend(pending.drain(..)); model.push_back((seq, len)); }
                        seq += 1;
                    }
                }
                Op::Flush => { p.flush(); model.extend(pending.drain(..)); }
                Op::Read => match c.try_read().unwrap() {
                    Some(r) => {
                        let (s, len) = model.pop_front().expect("record the model does not have");
                        prop_assert_eq!(r.len(), len);
                        prop_assert!(r.iter().copied().eq(fill(s, len)));
                    }
                    None => {
                        prop_assert!(model.is_empty(), "published records missing");
                    }
                },
            }
            // Deferred records become visible once a batch (512 bytes here) fills: fold them in
            // when the consumer can see them.
            if !pending.is_empty() && ring.shared.control().write_pos.0.load(Ordering::Acquire) == p.write_pos_for_tests() {
                model.extend(pending.drain(..));
            }
        }
        drop(p);
        model.extend(pending.drain(..));
        loop {
            match c.try_read() {
                Ok(Some(r)) => {
                    let (s, len) = model.pop_front().expect("extra record");
                    prop_assert!(r.len() == len && r.iter().copied().eq(fill(s, len)));
                }
                Ok(None) => prop_assert!(false, "closed ring reported empty"),
                Err(Error::Closed) => break,
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
        prop_assert!(model.is_empty());
    }

    /// Two threads, random sizes, random close: every record arrives intact and in order, then
    /// end-of-stream.
    #[test]
    fn threads_move_random_records(
        sizes in proptest::collection::vec(0usize..3000, 1..400),
        capacity_log in 12u32..15,
        deferred in any::<bool>(),
    ) {
        let ring = Ring::create(1 << capacity_log).unwrap();
        let max = ring.max_record_len();
        let sizes: Vec<usize> = sizes.into_iter().map(|s| s.min(max)).collect();
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        std::thread::scope(|s| {
            let sizes2 = sizes.clone();
            s.spawn(move || {
                for (seq, len) in sizes2.into_iter().enumerate() {
                    let mut claim = p.claim_timeout(len, WAIT).unwrap();
                    for (b, v) in claim.iter_mut().zip(fill(seq as u64, len)) { *b = v; }
                    if deferred { claim.commit_deferred() } else { claim.commit() }
                }
            });
            for (seq, len) in sizes.iter().enumerate() {
                let r = c.read_timeout(WAIT).unwrap();
                assert_eq!(r.len(), *len);
                assert!(r.iter().copied().eq(fill(seq as u64, *len)), "record {seq} damaged");
            }
            assert!(matches!(c.read_timeout(WAIT), Err(Error::Closed)));
        });
    }

    /// The consumer closing early stops the producer with `Closed`, never a hang.
    #[test]
    fn consumer_close_stops_producer(read_before_close in 0usize..200) {
        let ring = Ring::create(4096).unwrap();
        let mut p = ring.producer(cfg()).unwrap();
        let mut c = ring.consumer(cfg()).unwrap();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                for i in 0.. {
                    match p.claim_timeout(100, WAIT) {
                        Ok(claim) => claim.commit(),
                        Err(Error::Closed) => return i,
                        Err(e) => panic!("{e}"),
                    }
                }
                unreachable!()
            });
            for _ in 0..read_before_close {
                c.read_timeout(WAIT).unwrap();
            }
            c.close();
            assert!(h.join().unwrap() >= read_before_close);
        });
    }
}

#[test]
fn has_room_tells_what_try_claim_would_do_and_claims_nothing() {
    let (_ring, mut p, mut c) = pair(4096);
    let big = p.max_record_len();
    assert!(p.has_room(big).unwrap());
    let mut written = 0;
    while p.has_room(big).unwrap() {
        put(&mut p, &vec![1u8; big]);
        written += 1;
    }
    assert!(written >= 1);
    assert!(p.try_claim(big).unwrap().is_none());
    assert!(matches!(p.has_room(big + 1), Err(Error::TooLarge { .. })));
    for _ in 0..written {
        drop(c.try_read().unwrap().unwrap());
    }
    c.flush();
    assert!(p.has_room(big).unwrap());
    // Nothing was claimed by asking: the next record is the only one the consumer sees.
    put(&mut p, b"x");
    assert_eq!(&*c.read_timeout(WAIT).unwrap(), b"x");
    c.close();
    assert!(matches!(p.has_room(16), Err(Error::Closed)));
}
