//! The cases of `shmplug bench` under criterion, for developers: `source_small`, `sink_small`,
//! `function_rtt`, `large_1mib` and `pipeline`, each over every implementation that applies
//! (shmplug with a real plugin process under the real host, rtrb between threads, the
//! pipeline's code in one thread, JSON over a Unix socket, iceoryx2, memcpy, a cache-line
//! ping-pong). The measurements are `shmplug_bench`'s,
//! the same code `shmplug bench` runs; criterion adds its statistics and its history, and
//! the time per iteration is the time per tuple (or per call).
//!
//! Each sample starts the other process afresh (that is not timed: a measurement runs from
//! the first tuple the reader sees to the last), so samples are few and long.
//!
//! ```text
//! cargo bench -p shmplug-benches --bench cases                  # a few minutes
//! cargo bench -p shmplug-benches --bench cases -- function_rtt  # one case
//! cargo test  -p shmplug-benches --bench cases                  # each routine once
//! ```

#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::Criterion;
use shmplug_bench::{self as bench, Case, Impl, Launcher, Sizes};

/// The least a throughput sample moves, so that its rate means something.
const MIN_TUPLES: u64 = 64;

fn launcher() -> Launcher {
    Launcher {
        program: env!("CARGO_BIN_EXE_case_peer").into(),
        plugin_args: vec!["bench-plugin".into()],
        peer_args: vec!["bench-peer".into()],
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let launcher = launcher();
    for case in Case::ALL {
        let mut group = c.benchmark_group(case.name());
        for imp in Impl::ALL {
            if !imp.applies_to(case) || !imp.is_available() {
                continue;
            }
            group.bench_function(imp.name(), |b| {
                b.iter_custom(|iters| {
                    let n = iters.max(MIN_TUPLES);
                    let sizes = Sizes {
                        small: n,
                        calls: n,
                        large: n,
                        pipeline: n,
                        slow_divisor: 1,
                    };
                    let m = bench::measure(case, imp, &sizes, &launcher)
                        .unwrap_or_else(|e| panic!("{case} / {imp}: {e}"));
                    let rate = m.tuples_per_s.filter(|r| *r > 0.0).expect("a rate");
                    Duration::from_secs_f64(iters as f64 / rate)
                })
            });
        }
        group.finish();
    }
    c.final_summary();
}
