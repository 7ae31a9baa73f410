//! CPU burned by a reader parked on a ring: not a criterion bench (there is nothing to repeat),
//! a measurement that prints its figures.
//!
//! A consumer with the default configuration (50 µs spin budget) calls `read()` on an empty ring
//! and stays parked until the producer commits a record one second later; its thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`, the clock behind `getrusage(RUSAGE_THREAD)`, at nanosecond
//! resolution) over that second is the idle cost. Measured for both ways of parking (futex and
//! eventfd), and once more for a reader woken by a record every 10 ms (100 records/s), where each
//! wake-up also spends the spin budget before parking again.
//!
//! `cargo bench -p shmplug-benches --bench idle`. Under `cargo test --benches` (no `--bench`
//! flag) it waits 0.1 s instead of 1 s.

#![forbid(unsafe_code)]

use std::thread;
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};
use shmplug_benches::report;
use shmplug_transport::{EndpointConfig, Park, Ring};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let window = if report::benchmarking() {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    };
    let spin = EndpointConfig::default().spin;
    println!(
        "== idle: CPU time of a reader waiting on a ring (spin budget {spin:?}, then park) =="
    );
    for park in [Park::Futex, Park::EventFd] {
        let (cpu, wall) = idle_reader(park, window);
        println!(
            "idle parked reader ({park:?} park): {:.3} ms CPU per second (waited {:.3} s, {:.1} µs CPU)",
            per_second_ms(cpu, wall),
            wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6
        );
    }
    let every = Duration::from_millis(10);
    for park in [Park::Futex, Park::EventFd] {
        let (cpu, wall, records) = trickle_reader(park, window, every);
        println!(
            "parked reader at {:.0} records/s ({park:?} park): {:.3} ms CPU per second ({records} records in {:.3} s)",
            1.0 / every.as_secs_f64(),
            per_second_ms(cpu, wall),
            wall.as_secs_f64()
        );
    }
}

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn per_second_ms(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() * 1e3 / wall.as_secs_f64()
}

/// A reader blocks in `read()` on an empty ring until a record arrives after `window`; returns
/// its CPU time and the wall time it waited.
fn idle_reader(park: Park, window: Duration) -> (Duration, Duration) {
    let ring = Ring::create(64 * 1024).expect("creating a ring");
    let mut tx = ring.producer(EndpointConfig::default()).expect("producer");
    let mut rx = ring
        .consumer(EndpointConfig::default().with_park(park))
        .expect("consumer");
    thread::scope(|s| {
        let reader = s.spawn(move || {
            let (cpu0, wall0) = (thread_cpu(), Instant::now());
            drop(rx.read().expect("read"));
            (thread_cpu() - cpu0, wall0.elapsed())
        });
        thread::sleep(window);
        tx.claim(8).expect("claim").commit();
        reader.join().expect("reader panicked")
    })
}

/// A reader reads records that arrive every `every` for `window`; returns its CPU time, the wall
/// time, and how many records it read.
fn trickle_reader(park: Park, window: Duration, every: Duration) -> (Duration, Duration, u64) {
    let ring = Ring::create(64 * 1024).expect("creating a ring");
    let mut tx = ring.producer(EndpointConfig::default()).expect("producer");
    let mut rx = ring
        .consumer(EndpointConfig::default().with_park(park))
        .expect("consumer");
    thread::scope(|s| {
        let reader = s.spawn(move || {
            let (cpu0, wall0) = (thread_cpu(), Instant::now());
            let mut records = 0;
            loop {
                match rx.read() {
                    Ok(record) => drop(record),
                    Err(e) if e.is_closed() => break,
                    Err(e) => panic!("{e}"),
                }
                records += 1;
            }
            (thread_cpu() - cpu0, wall0.elapsed(), records)
        });
        let start = Instant::now();
        let mut next = start + every;
        while next <= start + window {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            tx.claim(8).expect("claim").commit();
            next += every;
        }
        drop(tx);
        reader.join().expect("reader panicked")
    })
}
