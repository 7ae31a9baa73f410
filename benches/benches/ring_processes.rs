//! Ring throughput to a peer process for 64 B, 1 KiB and 64 KiB records, and the one-way latency
//! of a 64 B record between processes, each beside baselines measured in the same run: rtrb
//! between threads and a single-thread memcpy for throughput; the shmplug ring and rtrb between
//! threads for latency. See the crate docs (`benches/src/lib.rs`) for the method.
//!
//! `cargo bench -p shmplug-benches --bench ring_processes` (add `-- --quick` for a smoke pass).

#![forbid(unsafe_code)]

use std::thread;
use std::time::{Duration, Instant};

use shmplug_benches::audit::{self, CpuAudit};
use shmplug_benches::baseline::{Memcpy, RtrbBytes, RtrbEcho};
use shmplug_benches::latency::{self, Percentiles};
use shmplug_benches::peer::{Mode, Peer};
use shmplug_benches::report::{self, Group, Results};
use shmplug_benches::rings::{self, Publish, ThreadEcho};
use shmplug_benches::{AlignedBuf, SIZES, size_id, size_label};
use shmplug_transport::EndpointConfig;

const PEER: &str = env!("CARGO_BIN_EXE_ring_peer");

/// Spin budget of both sides in the latency runs, and of the bench waiting for an ack: long
/// enough that nobody parks.
const LATENCY_SPIN: Duration = Duration::from_secs(1);

fn main() {
    let audit = CpuAudit::start();
    let mut c = report::criterion();
    let mut results = Results::default();
    let throughput_config = rings::throughput_config();
    for size in SIZES {
        let payload = AlignedBuf::pattern(size);
        let payload = payload.as_slice();
        let mut g = Group::new(
            &mut c,
            &mut results,
            &format!("processes/{}", size_id(size)),
            Some(size),
        );
        // The bench waits for the ack spinning, so that a wake-up (tens of µs here, with
        // millisecond tails) does not end each measurement.
        let mut peer = Peer::spawn(
            PEER,
            Mode::Sink,
            throughput_config,
            throughput_config.with_spin(LATENCY_SPIN),
            throughput_config.spin,
        )
        .expect("starting ring_peer");
        g.bench("shmplug_deferred", |n| {
            rings::run_to_peer(&mut peer, payload, n, Publish::Deferred)
        });
        g.note("shmplug_deferred", std::mem::take(&mut peer.parks));
        if size == 64 {
            g.bench("shmplug_commit", |n| {
                rings::run_to_peer(&mut peer, payload, n, Publish::EveryRecord)
            });
            g.note("shmplug_commit", std::mem::take(&mut peer.parks));
        }
        drop(peer);
        let mut rtrb = RtrbBytes::default();
        g.bench("rtrb_threads_u8_chunks", |n| rtrb.run(payload, n));
        drop(rtrb);
        // One thread: where the cores sit does not matter.
        g.probe_c2c(false);
        let mut memcpy = Memcpy::large_buffers();
        g.bench("memcpy_large_buffers", |n| memcpy.run(size, n));
        let mut memcpy = Memcpy::producer_copy(size);
        g.bench("memcpy_producer_copy", |n| memcpy.run(size, n));
        g.finish();
    }

    let spin = EndpointConfig::default().with_spin(LATENCY_SPIN);
    let record = AlignedBuf::pattern(64);
    let record = record.as_slice();
    let full = report::benchmarking();
    let (samples, warm_up) = if full {
        (latency::SAMPLES, latency::WARM_UP)
    } else {
        (1000, 100)
    };
    let mut percentiles: Vec<(&str, Option<f64>, Percentiles)> = Vec::new();
    let mut g = Group::new(&mut c, &mut results, "latency_64B", None);
    // The echo side spins from the start; measure the core-to-core latency before it starts.
    g.probe_c2c(false);
    let c2c = || full.then(audit::core_to_core_ns);
    // Criterion's time per iteration is reported as one-way: each iteration is a round trip
    // and the routine returns half its time.
    let before = c2c();
    let mut peer =
        Peer::spawn(PEER, Mode::Echo, spin, spin, LATENCY_SPIN).expect("starting ring_peer");
    if g.bench("one_way_shmplug_processes", |n| {
        half(n, || rings::round_trip(&mut peer.tx, &mut peer.rx, record))
    }) {
        let p = latency::one_way_percentiles(samples, warm_up, |r| {
            rings::round_trip(&mut peer.tx, &mut peer.rx, r)
        });
        percentiles.push(("shmplug ring, processes", before, p));
    }
    drop(peer);
    g.set_c2c("one_way_shmplug_processes", before);
    let before = c2c();
    thread::scope(|s| {
        let mut echo = ThreadEcho::start(s, spin);
        if g.bench("one_way_shmplug_threads", |n| {
            half(n, || rings::round_trip(&mut echo.tx, &mut echo.rx, record))
        }) {
            let p = latency::one_way_percentiles(samples, warm_up, |r| {
                rings::round_trip(&mut echo.tx, &mut echo.rx, r)
            });
            percentiles.push(("shmplug ring, threads", before, p));
        }
    });
    g.set_c2c("one_way_shmplug_threads", before);
    let before = c2c();
    thread::scope(|s| {
        let mut echo = RtrbEcho::start(s);
        if g.bench("one_way_rtrb_threads", |n| {
            half(n, || echo.round_trip(record))
        }) {
            let p = latency::one_way_percentiles(samples, warm_up, |r| echo.round_trip(r));
            percentiles.push(("rtrb, threads", before, p));
        }
    });
    g.set_c2c("one_way_rtrb_threads", before);
    g.finish();
    c.final_summary();
    if !full {
        return;
    }

    println!(
        "\n== ring_processes summary: medians of this run; ratio = shmplug / baseline throughput =="
    );
    println!("(shmplug endpoints, both processes: {throughput_config:?})");
    println!("{}", audit.report());
    for size in SIZES {
        let (id, label) = (size_id(size), size_label(size));
        let key = |f: &str| format!("processes/{id}/{f}");
        let deferred = format!("ring {label} processes, commit_deferred");
        results.throughput_line(
            &deferred,
            &key("shmplug_deferred"),
            "rtrb u8 chunks (threads)",
            &key("rtrb_threads_u8_chunks"),
            size,
        );
        if size == 64 {
            results.throughput_line(
                &format!("ring {label} processes, commit per record"),
                &key("shmplug_commit"),
                "rtrb u8 chunks (threads)",
                &key("rtrb_threads_u8_chunks"),
                size,
            );
        }
        results.throughput_line(
            &deferred,
            &key("shmplug_deferred"),
            "memcpy 4 MiB -> 4 MiB",
            &key("memcpy_large_buffers"),
            size,
        );
        results.throughput_line(
            &deferred,
            &key("shmplug_deferred"),
            "memcpy hot source -> 1 MiB (the producer's copy alone)",
            &key("memcpy_producer_copy"),
            size,
        );
    }
    println!(
        "\n== one-way latency of a 64 B record, spinning consumer; ratio = shmplug / baseline time =="
    );
    let key = |f: &str| format!("latency_64B/{f}");
    results.latency_line(
        "mean one-way, processes",
        &key("one_way_shmplug_processes"),
        "rtrb threads",
        &key("one_way_rtrb_threads"),
    );
    results.latency_line(
        "mean one-way, processes",
        &key("one_way_shmplug_processes"),
        "shmplug threads",
        &key("one_way_shmplug_threads"),
    );
    for (what, c2c, p) in &percentiles {
        match c2c {
            Some(c2c) => println!("one-way latency 64 B, {what}: {p} [c2c {c2c:.0} ns]"),
            None => println!("one-way latency 64 B, {what}: {p}"),
        }
    }
    if percentiles.is_empty() {
        return;
    }
    let clock = latency::clock_overhead_ns();
    println!(
        "(each timed round trip includes one Instant::now() pair, {clock:.0} ns: {:.0} ns of each one-way percentile)",
        clock / 2.0
    );
}

/// Runs `round_trip` `n` times and returns half the time taken: one-way latency per iteration.
fn half(n: u64, mut round_trip: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        round_trip();
    }
    start.elapsed() / 2
}
