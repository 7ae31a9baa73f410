//! What a native in-process plugin pays: owned tuples (each built with the builder, as a
//! plugin would) through an `rtrb` queue between two threads of this process; and what a
//! careful in-process design pays (`rtrb_bytes`): the same encoded bytes shmplug moves, through
//! an `rtrb` byte queue, nothing allocated per tuple.

use std::hint::spin_loop;
use std::thread;
use std::time::Instant;

use rkyv::util::AlignedVec;
use shmplug_transport::tuple::{Encoder, Tuple, TupleView, Value};

use super::workload::{LARGE_BYTES, Workload};
use super::{BenchError, Case, Measurement, STUCK};

/// Queue slots for small tuples (a ring of 1 MiB holds about as many).
const SMALL_SLOTS: usize = 4096;
/// Queue slots for 1 MiB tuples.
const LARGE_SLOTS: usize = 8;
/// Calls before timing starts.
const WARM_UP: u64 = 2_000;

pub(super) fn measure(case: Case, n: u64) -> Result<Measurement, BenchError> {
    match case {
        Case::SourceSmall | Case::SinkSmall | Case::Large1Mib => stream(case, n),
        Case::FunctionRtt => round_trips(n),
        Case::Pipeline => Err(BenchError::Protocol(
            "rtrb_inprocess has no pipeline; `native` is its in-process line".into(),
        )),
    }
}

/// Spins until `ready()` gives a value, failing after [`STUCK`] (the other thread died).
fn spin<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> Result<T, BenchError> {
    let start = Instant::now();
    loop {
        for _ in 0..1024 {
            if let Some(v) = ready() {
                return Ok(v);
            }
            spin_loop();
        }
        if start.elapsed() > STUCK {
            return Err(BenchError::Protocol(format!(
                "{what}: nothing within {STUCK:?}"
            )));
        }
    }
}

/// One thread builds and pushes tuples, the other pops, checks and drops them. The same for
/// a source and a sink: in one process there is no host and plugin side.
fn stream(case: Case, n: u64) -> Result<Measurement, BenchError> {
    let large = case == Case::Large1Mib;
    let workload = Workload::new();
    let slots = if large { LARGE_SLOTS } else { SMALL_SLOTS };
    let (mut tx, mut rx) = rtrb::RingBuffer::<Tuple>::new(slots);
    thread::scope(|s| {
        let producer = s.spawn(|| -> Result<(), BenchError> {
            for i in 0..n {
                let mut tuple = Some(if large {
                    workload.owned_large(i)
                } else {
                    workload.owned_small(i)
                });
                spin("rtrb producer", || match tx.push(tuple.take()?) {
                    Ok(()) => Some(()),
                    Err(rtrb::PushError::Full(t)) => {
                        tuple = Some(t);
                        None
                    }
                })?;
            }
            Ok(())
        });
        let mut start = None;
        for i in 0..n {
            let tuple = spin("rtrb consumer", || rx.pop().ok())?;
            start.get_or_insert_with(Instant::now);
            if large {
                workload.check_large_owned(&tuple, i)?;
            } else {
                workload.check_small_owned(&tuple, i)?;
            }
        }
        let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
        producer
            .join()
            .map_err(|_| BenchError::Protocol("the rtrb producer thread panicked".into()))??;
        let bytes = if large { LARGE_BYTES as u64 } else { 0 };
        Ok(Measurement::throughput(n.saturating_sub(1), elapsed, bytes))
    })
}

/// Bytes of the byte queue: 1 MiB for small tuples (as shmplug's ring), 8 MiB for large ones.
fn byte_capacity(large: bool) -> usize {
    if large { 8 << 20 } else { 1 << 20 }
}

/// One thread encodes each tuple (a `TupleRef` over the workload's data, with shmplug's
/// [`Encoder`]) into a reused aligned buffer and pushes its length (`u32`, little-endian) and
/// bytes into an `rtrb` byte queue; the other copies each record out into its own reused
/// aligned buffer (the queue's bytes are not aligned, and a copy is what the host makes too),
/// validates it with [`TupleView::from_bytes`] and checks its fields. No allocation per tuple.
pub(super) fn stream_bytes(case: Case, n: u64) -> Result<Measurement, BenchError> {
    let large = case == Case::Large1Mib;
    let workload = Workload::new();
    let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(byte_capacity(large));
    thread::scope(|s| {
        let producer = s.spawn(|| -> Result<(), BenchError> {
            let mut encoder = Encoder::new();
            let mut buf = AlignedVec::<16>::new();
            buf.resize(if large { LARGE_BYTES + 4096 } else { 4096 }, 0);
            for i in 0..n {
                let len = if large {
                    workload.with_large(i, |t| encoder.encode_into(t, &mut buf))?
                } else {
                    workload.with_small(i, |t| encoder.encode_into(t, &mut buf))?
                };
                let header = (len as u32).to_le_bytes();
                let need = header.len() + len;
                spin("rtrb_bytes producer", || (tx.slots() >= need).then_some(()))?;
                // Two chunks: a slice iterator alone copies at memcpy speed, a chained one does not.
                let chunk = tx.write_chunk_uninit(header.len()).map_err(queue)?;
                chunk.fill_from_iter(header);
                let chunk = tx.write_chunk_uninit(len).map_err(queue)?;
                chunk.fill_from_iter(buf[..len].iter().copied());
            }
            Ok(())
        });
        let mut copy = AlignedVec::<16>::new();
        let mut start = None;
        for i in 0..n {
            spin("rtrb_bytes consumer", || (rx.slots() >= 4).then_some(()))?;
            let header = rx.read_chunk(4).map_err(queue)?;
            let mut len = [0u8; 4];
            let (a, b) = header.as_slices();
            len[..a.len()].copy_from_slice(a);
            len[a.len()..].copy_from_slice(b);
            header.commit_all();
            let len = u32::from_le_bytes(len) as usize;
            spin("rtrb_bytes consumer", || (rx.slots() >= len).then_some(()))?;
            let record = rx.read_chunk(len).map_err(queue)?;
            start.get_or_insert_with(Instant::now);
            let (a, b) = record.as_slices();
            copy.clear();
            copy.extend_from_slice(a);
            copy.extend_from_slice(b);
            record.commit_all();
            let view = TupleView::from_bytes(&copy)?;
            if large {
                workload.check_large_view(&view.fields(), i)?;
            } else {
                workload.check_small_view(&view.fields(), i)?;
            }
        }
        let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
        producer.join().map_err(|_| {
            BenchError::Protocol("the rtrb_bytes producer thread panicked".into())
        })??;
        let bytes = if large { LARGE_BYTES as u64 } else { 0 };
        Ok(Measurement::throughput(n.saturating_sub(1), elapsed, bytes))
    })
}

/// A chunk the queue said it had room (or bytes) for was refused: cannot happen with one
/// producer and one consumer, reported rather than unwrapped.
fn queue(e: rtrb::chunks::ChunkError) -> BenchError {
    BenchError::Protocol(format!(
        "the rtrb byte queue refused a chunk it had room for: {e}"
    ))
}

/// Calls as owned argument lists through one queue, replies through another; the echo thread
/// answers each call with a list of its arguments.
fn round_trips(n: u64) -> Result<Measurement, BenchError> {
    let workload = Workload::new();
    // A short run (a test) warms up as long as it measures.
    let warm_up = WARM_UP.min(n);
    let total = warm_up + n;
    let (mut call_tx, mut call_rx) = rtrb::RingBuffer::<Vec<Value>>::new(64);
    let (mut reply_tx, mut reply_rx) = rtrb::RingBuffer::<Value>::new(64);
    thread::scope(|s| {
        let echo = s.spawn(move || -> Result<(), BenchError> {
            for _ in 0..total {
                let args = spin("rtrb echo", || call_rx.pop().ok())?;
                let mut reply = Some(Value::List(args));
                spin("rtrb echo", || match reply_tx.push(reply.take()?) {
                    Ok(()) => Some(()),
                    Err(rtrb::PushError::Full(r)) => {
                        reply = Some(r);
                        None
                    }
                })?;
            }
            Ok(())
        });
        let mut samples = Vec::with_capacity(n as usize);
        for i in 0..total {
            let start = Instant::now();
            let args = workload.small_values(i);
            call_tx
                .push(args)
                .map_err(|_| BenchError::Protocol("the rtrb call queue is full".into()))?;
            let reply = spin("rtrb caller", || reply_rx.pop().ok())?;
            let took = start.elapsed();
            match reply {
                Value::List(items) => workload.check_small_values(&items, i)?,
                _ => return Err(BenchError::Protocol("echo answered a non-list".into())),
            }
            if i >= warm_up {
                samples.push(took.as_nanos() as u64);
            }
        }
        echo.join()
            .map_err(|_| BenchError::Protocol("the rtrb echo thread panicked".into()))??;
        Ok(Measurement::round_trips(&mut samples))
    })
}
