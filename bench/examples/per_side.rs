//! Per-side cost of a small tuple over a ring, each side on its own core, taking turns.
//!
//! The producer writes a burst of [`BURST`] small tuples (the bench's `source_small` tuple,
//! encoded in place, published in a batch) while the consumer waits; then the consumer reads
//! the burst (copy-then-validate, as the host reads a plugin's ring, and the bench's check of
//! every field) while the producer waits. Each burst is timed on its own side, so the figures
//! are each side's cost per tuple with the ring's lines crossing cores as in a real run, but
//! without the two sides slowing each other down. Prints the minimum, 10th percentile and
//! median over [`ROUNDS`] bursts. Run it with
//! `cargo run --release -p shmplug-bench --example per_side`.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use shmplug_bench::workload::Workload;
use shmplug_transport::{EndpointConfig, Ring, TupleReceiver, TupleSender, Validation};

/// Tuples per burst (about 350 KiB, a third of the ring).
const BURST: u64 = 2000;
/// Bursts per side.
const ROUNDS: u64 = 3000;

/// Runs this thread on `cpu` if the machine has it (a hint: on one CPU both sides share it).
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Minimum, 10th percentile and median.
fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 10], v[v.len() / 2])
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let w = Workload::new();
    let ring = Ring::create(1 << 20)?;
    let mut tx = TupleSender::new(ring.producer(EndpointConfig::default())?);
    let mut rx = TupleReceiver::with_validation(
        ring.consumer(EndpointConfig::default())?,
        Validation::COPY_THEN_VALIDATE,
    );
    // Even: the producer's turn for burst `turn / 2`; odd: the consumer's; `ABORT`: a side
    // failed, the other stops too.
    const ABORT: u64 = u64::MAX;
    let turn = AtomicU64::new(0);
    let wait_for = |t: u64| -> Result<(), Box<dyn Error + Send + Sync>> {
        loop {
            match turn.load(Ordering::Acquire) {
                now if now == t => return Ok(()),
                ABORT => return Err("the other side failed".into()),
                _ => std::hint::spin_loop(),
            }
        }
    };
    let aborting = |e: Box<dyn Error + Send + Sync>| {
        turn.store(ABORT, Ordering::Release);
        e
    };
    let consumer = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            pin(1);
            (|| {
                let mut took = Vec::with_capacity(ROUNDS as usize);
                for r in 0..ROUNDS {
                    wait_for(2 * r + 1)?;
                    let start = Instant::now();
                    for j in 0..BURST {
                        let view = rx.try_recv()?.ok_or("a published tuple was missing")?;
                        w.check_small_view(&view.fields(), r * BURST + j)?;
                    }
                    rx.consumer().flush();
                    took.push(start.elapsed().as_nanos() as f64 / BURST as f64);
                    turn.store(2 * r + 2, Ordering::Release);
                }
                Ok(took)
            })()
            .map_err(aborting)
        });
        pin(0);
        let produced = (|| {
            let mut took = Vec::with_capacity(ROUNDS as usize);
            for r in 0..ROUNDS {
                wait_for(2 * r)?;
                let start = Instant::now();
                for j in 0..BURST {
                    if !w.with_small(r * BURST + j, |t| tx.try_send_deferred(t))? {
                        return Err("the ring was full".into());
                    }
                }
                tx.flush();
                took.push(start.elapsed().as_nanos() as f64 / BURST as f64);
                turn.store(2 * r + 1, Ordering::Release);
            }
            Ok(took)
        })()
        .map_err(aborting);
        let consumed = consumer.join().map_err(|_| "the consumer panicked")?;
        Ok::<_, Box<dyn Error + Send + Sync>>((produced?, consumed?))
    })?;
    let (p, c) = (quantiles(consumer.0), quantiles(consumer.1));
    println!(
        "ns per tuple (min / p10 / median of {ROUNDS} bursts of {BURST}): \
         producer {:.1} / {:.1} / {:.1}, consumer {:.1} / {:.1} / {:.1}",
        p.0, p.1, p.2, c.0, c.1, c.2
    );
    Ok(())
}
