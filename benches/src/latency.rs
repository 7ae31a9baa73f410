//! Latency percentiles, which criterion (a mean-and-median tool) does not give: time many single
//! round trips, halve each, and report p50 / p99 / p99.9.

use std::time::Instant;

use crate::payload::AlignedBuf;

/// Round trips timed by [`one_way_percentiles`] in a full run.
pub const SAMPLES: usize = 200_000;
/// Untimed round trips first, to warm caches, branch predictors and the CPU clock.
pub const WARM_UP: usize = 20_000;

/// Percentiles of one-way latency in nanoseconds (each round trip halved).
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    /// Round trips timed.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Runs `round_trip(record)` `warm_up` times untimed, then `samples` times each timed with its
/// own pair of `Instant::now()` calls, on a 64-byte record whose first 8 bytes carry a sequence
/// number (no timestamp crosses the ring: both clock reads are on this side).
pub fn one_way_percentiles(
    samples: usize,
    warm_up: usize,
    mut round_trip: impl FnMut(&[u8]),
) -> Percentiles {
    let mut record = AlignedBuf::pattern(64);
    let mut rtt_ns = Vec::with_capacity(samples);
    for seq in 0..(warm_up + samples) as u64 {
        record.as_mut_slice()[..8].copy_from_slice(&seq.to_le_bytes());
        let start = Instant::now();
        round_trip(record.as_slice());
        let rtt = start.elapsed();
        if seq >= warm_up as u64 {
            rtt_ns.push(rtt.as_nanos() as u64);
        }
    }
    rtt_ns.sort_unstable();
    let at = |q: f64| {
        let i = ((rtt_ns.len() as f64 * q) as usize).min(rtt_ns.len().saturating_sub(1));
        rtt_ns.get(i).map_or(f64::NAN, |&ns| ns as f64 / 2.0)
    };
    Percentiles {
        samples,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: rtt_ns.last().map_or(f64::NAN, |&ns| ns as f64 / 2.0),
    }
}

/// Median cost of one `Instant::now()` pair, in nanoseconds: included in every timed round trip
/// (so in every one-way figure at half weight).
pub fn clock_overhead_ns() -> f64 {
    let mut v: Vec<f64> = (0..10_000)
        .map(|_| {
            let start = Instant::now();
            start.elapsed().as_nanos() as f64
        })
        .collect();
    crate::report::median(&mut v).unwrap_or(f64::NAN)
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.0} ns, p99 {:.0} ns, p99.9 {:.0} ns, max {:.0} ns ({} round trips, RTT/2)",
            self.p50, self.p99, self.p999, self.max, self.samples
        )
    }
}
