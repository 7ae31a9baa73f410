//! Criterion set-up for this 2-vCPU machine, and the summary each bench prints at the end: every
//! shmplug figure beside its baseline from the same run, with the ratio.
//!
//! Criterion reports each benchmark on its own; to put two side by side, [`Group::bench`] keeps
//! every `(iterations, elapsed)` pair the benchmark's `iter_custom` routine returns and takes the
//! median time per iteration over the measurement samples (the warm-up calls are dropped).

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};

/// Criterion with short runs: 1 s warm-up, 3 s measurement, 20 samples. Command-line flags
/// (`--quick`, `--warm-up-time`, `--measurement-time`, `--sample-size`, a name filter) override.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args()
}

/// True when the binary runs as a benchmark (`cargo bench`), false under `cargo test --benches`
/// or `--test` / `--list`, where criterion runs each routine once and measures nothing. The same
/// rule criterion applies to its own arguments.
pub fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Median of the values (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Median nanoseconds per iteration over the measurement samples in `log`.
///
/// Criterion's warm-up calls the routine with 1, 2, 4, … iterations, and `--quick` keeps doubling
/// and uses its last two calls; the samples of a normal run follow the doubling prefix.
fn median_ns(log: &[(u64, Duration)]) -> Option<f64> {
    let doubling = log
        .iter()
        .enumerate()
        .take_while(|(i, (iters, _))| {
            u32::try_from(*i).is_ok_and(|i| 1u64.checked_shl(i) == Some(*iters))
        })
        .count();
    let samples = if doubling < log.len() {
        &log[doubling..]
    } else {
        &log[log.len().saturating_sub(2)..]
    };
    let mut per_iter: Vec<f64> = samples
        .iter()
        .map(|(iters, elapsed)| elapsed.as_nanos() as f64 / *iters as f64)
        .collect();
    median(&mut per_iter)
}

/// What the summary knows of one benchmark.
#[derive(Debug, Default)]
struct Entry {
    /// Median nanoseconds per iteration.
    ns: f64,
    /// Core-to-core one-way latency measured just before the benchmark.
    c2c_ns: Option<f64>,
    /// Anything else to print beside the figure.
    note: Option<String>,
}

/// Median time per iteration of each benchmark that ran, keyed `group/function`.
#[derive(Debug, Default)]
pub struct Results {
    entries: BTreeMap<String, Entry>,
}

impl Results {
    /// The median nanoseconds per iteration of `key`, if it ran.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.entries.get(key).map(|e| e.ns)
    }

    /// `" [c2c 61 ns; note]"`: the conditions a figure was measured in.
    fn context(&self, key: &str) -> String {
        let Some(e) = self.entries.get(key) else {
            return String::new();
        };
        let mut parts = Vec::new();
        if let Some(c2c) = e.c2c_ns {
            parts.push(format!("c2c {c2c:.0} ns"));
        }
        if let Some(note) = &e.note {
            parts.push(note.clone());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" [{}]", parts.join("; "))
        }
    }

    /// Prints `"{label}: X M rec/s (Y GB/s); {base_label}: ...; ratio R"` comparing the
    /// throughput of two benchmarks of `size`-byte records (ratio = `key` / `base`); nothing if
    /// `key` did not run (a name filter), the figure alone if `base` did not.
    pub fn throughput_line(
        &self,
        label: &str,
        key: &str,
        base_label: &str,
        base: &str,
        size: usize,
    ) {
        match (self.get(key), self.get(base)) {
            (Some(ns), Some(base_ns)) => println!(
                "{label}: {}{}; {base_label}: {}{}; ratio {:.2}",
                rate(ns, size),
                self.context(key),
                rate(base_ns, size),
                self.context(base),
                base_ns / ns
            ),
            (Some(ns), None) => println!(
                "{label}: {}{}; {base_label}: not measured in this run",
                rate(ns, size),
                self.context(key)
            ),
            (None, _) => {}
        }
    }

    /// Prints `"{label}: X ns; {base_label}: Y ns; ratio R"` for two latency benchmarks
    /// (ratio = `key` / `base`, so above 1 means slower than the baseline).
    pub fn latency_line(&self, label: &str, key: &str, base_label: &str, base: &str) {
        match (self.get(key), self.get(base)) {
            (Some(ns), Some(base_ns)) => println!(
                "{label}: {ns:.0} ns{}; {base_label}: {base_ns:.0} ns{}; ratio {:.2}",
                self.context(key),
                self.context(base),
                ns / base_ns
            ),
            (Some(ns), None) => {
                println!("{label}: {ns:.0} ns; {base_label}: not measured in this run")
            }
            (None, _) => {}
        }
    }
}

/// `"24.10 M rec/s (1.54 GB/s)"` for one record of `size` bytes every `ns` nanoseconds
/// (GB = 10^9 bytes).
fn rate(ns: f64, size: usize) -> String {
    let per_sec = 1e9 / ns;
    format!(
        "{:.2} M rec/s ({:.2} GB/s)",
        per_sec / 1e6,
        per_sec * size as f64 / 1e9
    )
}

/// A criterion benchmark group that also records each benchmark's median into [`Results`].
pub struct Group<'a> {
    inner: BenchmarkGroup<'a, WallTime>,
    name: String,
    results: &'a mut Results,
    probe: bool,
}

impl<'a> Group<'a> {
    /// A group of benchmarks whose iterations each move one record of `size` bytes (`None`:
    /// no throughput, e.g. latency). Flat sampling: every sample runs the same, large number of
    /// iterations, so per-call set-up (a thread spawn, a wake-up) is amortised.
    pub fn new(
        c: &'a mut Criterion,
        results: &'a mut Results,
        name: &str,
        size: Option<usize>,
    ) -> Group<'a> {
        let mut inner = c.benchmark_group(name);
        inner.sampling_mode(SamplingMode::Flat);
        if let Some(size) = size {
            inner.throughput(Throughput::ElementsAndBytes {
                elements: 1,
                bytes: size as u64,
            });
        }
        Group {
            inner,
            name: name.to_owned(),
            results,
            probe: true,
        }
    }

    /// Whether [`bench`](Self::bench) measures the core-to-core latency first (the default).
    /// Turn it off when a peer already spins: three spinning threads on two vCPUs would make
    /// the probe meaningless, and slow.
    pub fn probe_c2c(&mut self, probe: bool) {
        self.probe = probe;
    }

    /// Attaches a core-to-core latency measured elsewhere to `function`'s figure.
    pub fn set_c2c(&mut self, function: &str, c2c_ns: Option<f64>) {
        if let Some(e) = self
            .results
            .entries
            .get_mut(&format!("{}/{function}", self.name))
        {
            e.c2c_ns = c2c_ns;
        }
    }

    /// Runs benchmark `function`: `routine(n)` performs `n` iterations and returns the time
    /// they took. Returns false if a name filter skipped it. Measures the core-to-core latency
    /// first ([`crate::audit::core_to_core_ns`]).
    pub fn bench(&mut self, function: &str, mut routine: impl FnMut(u64) -> Duration) -> bool {
        let c2c_ns = (self.probe && benchmarking()).then(crate::audit::core_to_core_ns);
        let mut log = Vec::new();
        self.inner.bench_function(function, |b| {
            b.iter_custom(|iters| {
                let elapsed = routine(iters);
                log.push((iters, elapsed));
                elapsed
            })
        });
        let key = format!("{}/{function}", self.name);
        if benchmarking()
            && let Some(ns) = median_ns(&log)
        {
            let entry = Entry {
                ns,
                c2c_ns,
                note: None,
            };
            self.results.entries.insert(key, entry);
        }
        !log.is_empty()
    }

    /// Attaches `note` to benchmark `function`'s figure in the summary.
    pub fn note(&mut self, function: &str, note: impl std::fmt::Display) {
        if let Some(e) = self
            .results
            .entries
            .get_mut(&format!("{}/{function}", self.name))
        {
            e.note = Some(note.to_string());
        }
    }

    /// Ends the group.
    pub fn finish(self) {
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_warm_up() {
        let ms = Duration::from_millis;
        let log = [
            (1, ms(1)),
            (2, ms(2)),
            (4, ms(4)),
            (10, ms(30)),
            (10, ms(20)),
            (10, ms(40)),
        ];
        assert_eq!(median_ns(&log), Some(3e6));
        let quick = [(1, ms(1)), (2, ms(2)), (4, ms(4)), (8, ms(16))];
        assert_eq!(median_ns(&quick), Some(1.5e6));
    }
}
