//! shmplug itself: the real host ([`Plugin`]) and the bench plugin as a real process.

use std::time::Instant;

use super::pipeline::{ANSWER, ARGS, WIDE_FIELDS};
use super::plugin::{self, NAME};
use super::workload::{LARGE_BYTES, Workload};
use super::{BenchError, Case, Launcher, Measurement, STUCK};
use shmplug_host::handles::Calls;
use shmplug_host::transport::tuple::{FieldValue, TupleBatch, TupleWith, ValueView};
use shmplug_host::{InstanceSpec, Plugin, PluginSpec, SupervisorConfig};

/// Calls before timing starts.
const WARM_UP: u64 = 2_000;
/// The most tuples the pipeline takes from the source at once (as `shmplug run` does).
const BATCH: usize = 256;

pub(super) fn measure(case: Case, n: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    let mut config = SupervisorConfig {
        handle_spin: plugin::SPIN,
        ..SupervisorConfig::default()
    };
    if case == Case::Pipeline {
        // The host and the plugin's source, function and sink threads would all spin on 2
        // cores: the host spins as briefly as by default.
        config.handle_spin = SupervisorConfig::default().handle_spin;
    }
    if case == Case::Large1Mib {
        // A record holds at most half the ring; leave room for several in flight.
        config.ring_capacity = 8 * LARGE_BYTES;
    }
    let mut spec = PluginSpec::new(NAME, &launcher.program);
    spec.args = launcher.plugin_args.clone();
    if case == Case::Pipeline {
        let us = shmplug_sdk::DEFAULT_SPIN.as_micros().to_string();
        spec = spec.env(plugin::SPIN_ENV, us);
    }
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
            let report = Report::new()?;
            let mut sink = plugin.sink(report.spec("check"))?;
            let start = Instant::now();
            for i in 0..n {
                workload.with_small(i, |t| sink.send(t))?;
            }
            // Returns once the plugin has collected every tuple and closed the sink.
            sink.stop()?;
            let elapsed = start.elapsed();
            report.expect(n)?;
            Measurement::throughput(n, elapsed, 0)
        }
        Case::Pipeline => pipeline(&plugin, n)?,
        Case::FunctionRtt => function_rtt(&plugin, &workload, n)?,
    };
    plugin.shutdown();
    Ok(measurement)
}

/// The file where the bench plugin's checking sink writes `"<count> <mismatches>"` at close.
struct Report {
    dir: tempfile::TempDir,
}

impl Report {
    fn new() -> Result<Report, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("shmplug-bench-")
            .tempdir()
            .map_err(BenchError::io("making a temporary directory"))?;
        Ok(Report { dir })
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("sink-report")
    }

    /// The sink `symbol` writing here.
    fn spec(&self, symbol: &str) -> InstanceSpec {
        InstanceSpec::new(symbol).property("report", self.path().to_string_lossy())
    }

    /// Fails unless the sink saw `n` tuples and no mismatch.
    fn expect(&self, n: u64) -> Result<(), BenchError> {
        let path = self.path();
        let text = std::fs::read_to_string(&path)
            .map_err(BenchError::io(format!("reading {}", path.display())))?;
        if text.trim() == format!("{n} 0") {
            Ok(())
        } else {
            Err(BenchError::Protocol(format!(
                "the sink reported `{text}` (tuples, mismatches), not `{n} 0`"
            )))
        }
    }
}

/// The pipeline the way `shmplug run`'s pump moves it (`cli/src/pump.rs`, a loop kept small
/// here): a batch of received tuples copied into a [`TupleBatch`], the function called on two
/// fields of each read where they lie ([`FunctionClient::call_each`]), and each tuple written
/// to the checking sink as "the received tuple plus the answer" ([`TupleWith`]) as soon as its
/// answer is in. Timed from the first tuple received to the sink's report of the last.
///
/// [`FunctionClient::call_each`]: shmplug_host::FunctionClient::call_each
pub(super) fn pipeline(plugin: &Plugin, n: u64) -> Result<Measurement, BenchError> {
    let mut source = plugin.source(InstanceSpec::new("wide").property("count", n))?;
    let mut function = plugin.function(InstanceSpec::new("add"))?;
    let report = Report::new()?;
    let mut sink = plugin.sink(report.spec("check_wide"))?;
    let mut batch = TupleBatch::new();
    let mut moved = 0;
    let mut start = None;
    while moved < n {
        batch.clear();
        {
            let view = source.recv_timeout(STUCK)?.ok_or_else(|| {
                BenchError::Protocol(format!("no tuple from the plugin within {STUCK:?}"))
            })?;
            start.get_or_insert_with(Instant::now);
            batch.push(&view)?;
        }
        while batch.len() < BATCH {
            match source.try_recv() {
                Ok(Some(view)) => batch.push(&view)?,
                Ok(None) => break,
                Err(e) if e.is_end_of_stream() => break,
                Err(e) => return Err(e.into()),
            }
        }
        let mut failed = None;
        function.call_each(&Args(&batch), Some(STUCK), |k, answer| {
            let written = answer.and_then(|value| {
                let tuple = batch.get(k).expect("one answer per call");
                let extra = [(ANSWER, FieldValue::View(value))];
                sink.send_deferred(&TupleWith::new(&tuple, &extra))
            });
            if let Err(e) = written {
                failed.get_or_insert(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        sink.flush();
        moved += batch.len() as u64;
    }
    // Returns once the plugin has collected every tuple and closed the sink.
    sink.stop()?;
    let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
    report.expect(n)?;
    function.stop()?;
    source.stop()?;
    Ok(Measurement::throughput(n, elapsed, 0))
}

/// The function's calls: the two [`ARGS`] fields of each tuple of the batch.
struct Args<'b>(&'b TupleBatch);

impl Calls for Args<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn arity(&self, _call: usize) -> usize {
        ARGS.len()
    }

    fn arg(&self, call: usize, index: usize) -> FieldValue<'_> {
        let value = self
            .0
            .fields(call)
            .and_then(|f| f.get(WIDE_FIELDS[ARGS[index]]));
        FieldValue::View(value.unwrap_or(ValueView::Null))
    }
}

/// `function_rtt` against `plugin`'s `echo`: `n` calls (after a warm-up), each timed from its
/// call to its answer validated where it lies, then checked field by field.
pub(super) fn function_rtt(
    plugin: &Plugin,
    workload: &Workload,
    n: u64,
) -> Result<Measurement, BenchError> {
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
    Ok(Measurement::round_trips(&mut samples))
}
