//! What a native in-process plugin pays: owned tuples (each built with the builder, as a
//! plugin would) through an `rtrb` queue between two threads of this process.

use std::hint::spin_loop;
use std::thread;
use std::time::Instant;

use shmplug_transport::tuple::{Tuple, Value};

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
