//! shmplug itself: the real host ([`Plugin`]) and the bench plugin as a real process.

use std::time::Instant;

use super::plugin::{self, NAME};
use super::workload::{LARGE_BYTES, Workload};
use super::{BenchError, Case, Launcher, Measurement, STUCK};
use shmplug_host::{InstanceSpec, Plugin, PluginSpec, SupervisorConfig};

/// Calls before timing starts.
const WARM_UP: u64 = 2_000;

pub(super) fn measure(case: Case, n: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    let mut config = SupervisorConfig {
        handle_spin: plugin::SPIN,
        ..SupervisorConfig::default()
    };
    if case == Case::Large1Mib {
        // A record holds at most half the ring; leave room for several in flight.
        config.ring_capacity = 8 * LARGE_BYTES;
    }
    let mut spec = PluginSpec::new(NAME, &launcher.program);
    spec.args = launcher.plugin_args.clone();
    let plugin = Plugin::start(spec, config)?;
    let workload = Workload::new();
    let measurement = match case {
        Case::SourceSmall | Case::Large1Mib => {
            let large = case == Case::Large1Mib;
            let symbol = if large { "large" } else { "small" };
            let mut source = plugin.source(InstanceSpec::new(symbol).property("count", n))?;
            let mut start = None;
            for i in 0..n {
                let view = source.recv_timeout(STUCK)?.ok_or_else(|| {
                    BenchError::Protocol(format!("no tuple from the plugin within {STUCK:?}"))
                })?;
                start.get_or_insert_with(Instant::now);
                if large {
                    workload.check_large_view(&view.fields(), i)?;
                } else {
                    workload.check_small_view(&view.fields(), i)?;
                }
            }
            let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
            source.stop()?;
            let bytes = if large { LARGE_BYTES as u64 } else { 0 };
            Measurement::throughput(n.saturating_sub(1), elapsed, bytes)
        }
        Case::SinkSmall => {
            let dir = tempfile::Builder::new()
                .prefix("shmplug-bench-")
                .tempdir()
                .map_err(BenchError::io("making a temporary directory"))?;
            let report = dir.path().join("sink-report");
            let spec = InstanceSpec::new("check").property("report", report.to_string_lossy());
            let mut sink = plugin.sink(spec)?;
            let start = Instant::now();
            for i in 0..n {
                workload.with_small(i, |t| sink.send(t))?;
            }
            // Returns once the plugin has collected every tuple and closed the sink.
            sink.stop()?;
            let elapsed = start.elapsed();
            let text = std::fs::read_to_string(&report)
                .map_err(BenchError::io(format!("reading {}", report.display())))?;
            if text.trim() != format!("{n} 0") {
                return Err(BenchError::Protocol(format!(
                    "the sink reported `{text}` (tuples, mismatches), not `{n} 0`"
                )));
            }
            Measurement::throughput(n, elapsed, 0)
        }
        Case::FunctionRtt => {
            let mut echo = plugin.function(InstanceSpec::new("echo"))?;
            let mut samples = Vec::with_capacity(n as usize);
            // A short run (a test) warms up as long as it measures.
            let warm_up = WARM_UP.min(n);
            for i in 0..warm_up + n {
                let args = workload.small_args(i);
                let start = Instant::now();
                // The answer is read where it lies in the reply ring; the clock stops once it
                // is validated, before the fields are checked.
                let (took, checked) = echo.call_with(&args, STUCK, |answer| {
                    let took = start.elapsed();
                    let checked = match answer.as_list() {
                        Some(items) => workload.check_small_list(items.iter(), i),
                        None => Err(BenchError::Protocol(format!(
                            "echo answered a {}, not a list",
                            answer.type_name()
                        ))),
                    };
                    (took, checked)
                })?;
                checked?;
                if i >= warm_up {
                    samples.push(took.as_nanos() as u64);
                }
            }
            echo.stop()?;
            Measurement::round_trips(&mut samples)
        }
    };
    plugin.shutdown();
    Ok(measurement)
}
