//! The bench plugin: a real shmplug plugin (built on the SDK, run as its own process under the
//! host) with the cases' source, sink and echo function.
//!
//! - source `small` / `large` / `wide`: emits tuples `0..count` of the
//!   [`workload`](super::workload) (`wide`: of the [`pipeline`](super::pipeline); property
//!   `count`) as fast as the ring takes them, then ends its stream;
//! - sink `check` / `check_wide`: checks every field of every tuple (`check_wide`: and the
//!   pipeline function's answer) and, at close, writes `"<count> <mismatches>"` to the file
//!   named by property `report`;
//! - function `echo`: answers its arguments as a list;
//! - function `add`: the pipeline's function ([`pipeline::function`](super::pipeline::function)).

use std::time::{Duration, Instant};

use shmplug_sdk::{
    Emitter, Function, FunctionContext, Next, PluginConfig, PluginError, PolledSource, Props, Sink,
    SinkContext, Source, SourceContext,
};
use shmplug_transport::EndpointConfig;
use shmplug_transport::tuple::{TupleView, Value, ValueView};

use super::pipeline;
use super::workload::Workload;

/// The plugin's name, as the host expects it in `Hello`.
pub(super) const NAME: &str = "shmplug-bench";

/// How long the plugin's ring endpoints spin before they sleep: long enough that a round trip
/// never sleeps while the bench runs (the bench owns the machine while it measures).
pub(super) const SPIN: Duration = Duration::from_millis(5);

/// The environment variable that replaces [`SPIN`] for a run, in microseconds: the `pipeline`
/// case has four threads that wait (the host's and the plugin's source, function and sink) on
/// two cores, where 5 ms spins would take turns at the scheduler's pace, so it runs the plugin
/// with the SDK's default spin, as a user's plugin runs.
pub(super) const SPIN_ENV: &str = "SHMPLUG_BENCH_SPIN_US";

/// The spin of this plugin process: [`SPIN_ENV`] if set to a number, else [`SPIN`].
fn spin() -> Duration {
    std::env::var(SPIN_ENV)
        .ok()
        .and_then(|us| us.parse().ok())
        .map_or(SPIN, Duration::from_micros)
}

/// Runs the bench plugin; for the program's command line that [`Launcher::plugin_args`]
/// selects (`args` as from `std::env::args()`). Never returns.
///
/// [`Launcher::plugin_args`]: super::Launcher::plugin_args
pub fn plugin_main(args: impl IntoIterator<Item = String>) -> ! {
    shmplug_sdk::start(args, config())
}

fn config() -> PluginConfig {
    PluginConfig::new(NAME)
        .source("small", || Emit::new(Shape::Small))
        .source("large", || Emit::new(Shape::Large))
        .source("wide", || Emit::new(Shape::Wide))
        .sink("check", Check::default)
        .sink("check_wide", || Check {
            wide: true,
            ..Check::default()
        })
        .polled_source("paced", Paced::default)
        .source("paced_thread", PacedThread::default)
        .function("echo", || Echo)
        .function("add", || Add)
        .with_endpoint(EndpointConfig::default().with_spin(spin()))
}

fn count(props: &Props) -> Result<u64, PluginError> {
    props
        .get("count")
        .and_then(|c| c.as_u64())
        .ok_or_else(|| PluginError::property("count", "expected a non-negative integer"))
}

#[derive(Clone, Copy)]
enum Shape {
    Small,
    Large,
    Wide,
}

struct Emit {
    shape: Shape,
    count: u64,
}

impl Emit {
    fn new(shape: Shape) -> Emit {
        Emit { shape, count: 0 }
    }
}

impl Source for Emit {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.count = count(props)?;
        Ok(())
    }

    fn open(&mut self, _ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let workload = Workload::new();
        for i in 0..self.count {
            match self.shape {
                Shape::Small => workload.with_small(i, |t| emitter.emit_deferred(t))?,
                Shape::Large => workload.with_large(i, |t| emitter.emit_deferred(t))?,
                Shape::Wide => pipeline::with_wide(&workload, i, |t| emitter.emit_deferred(t))?,
            }
        }
        emitter.flush();
        Ok(())
    }
}

#[derive(Default)]
struct Check {
    /// Checks the pipeline's wide tuples plus answers, not small tuples.
    wide: bool,
    workload: Option<Workload>,
    report: String,
    count: u64,
    mismatches: u64,
}

impl Sink for Check {
    fn configure(&mut self, props: &Props) -> Result<(), PluginError> {
        self.report = props
            .get("report")
            .and_then(|r| r.as_str())
            .ok_or_else(|| PluginError::property("report", "expected a file path"))?
            .to_owned();
        self.workload = Some(Workload::new());
        Ok(())
    }

    fn collect(&mut self, _ctx: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
        let workload = self
            .workload
            .as_ref()
            .ok_or("the sink was not configured")?;
        let fields = tuple.fields();
        let checked = if self.wide {
            pipeline::check_view(workload, &fields, self.count)
        } else {
            workload.check_small_view(&fields, self.count)
        };
        if checked.is_err() {
            self.mismatches += 1;
        }
        self.count += 1;
        Ok(())
    }

    fn close(&mut self, _ctx: &SinkContext) -> Result<(), PluginError> {
        std::fs::write(&self.report, format!("{} {}", self.count, self.mismatches))
            .map_err(|e| PluginError::new(format!("writing {}: {e}", self.report)))
    }
}

struct Echo;

impl Function for Echo {
    fn exec(
        &mut self,
        _ctx: &FunctionContext,
        args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        Ok(Value::List(args.iter().map(ValueView::to_owned).collect()))
    }
}

struct Add;

impl Function for Add {
    fn exec(
        &mut self,
        _ctx: &FunctionContext,
        args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        let arg = |k: usize| args.get(k).and_then(ValueView::as_f64);
        pipeline::function(arg(0), arg(1))
            .map(Value::Float)
            .ok_or_else(|| PluginError::new("add takes two numbers"))
    }
}

/// The workload the paced sources emit from, shared by their instances (it holds a large
/// tuple's megabyte, which ten thousand instances should not each allocate).
static PACED_WORKLOAD: std::sync::LazyLock<Workload> = std::sync::LazyLock::new(Workload::new);

/// The `rate` property of the paced sources: tuples per second, default 10.
fn paced_interval(props: &Props) -> Result<Duration, PluginError> {
    let rate = match props.get("rate") {
        None => 10.0,
        Some(r) => r
            .as_f64()
            .filter(|r| *r > 0.0 && r.is_finite())
            .ok_or_else(|| PluginError::property("rate", "expected tuples per second above 0"))?,
    };
    Ok(Duration::from_secs_f64(1.0 / rate))
}

/// Source `paced`: small tuples at `rate` per second (property, default 10), from its first
/// poll until it is stopped (the `scale` measurement). A [`PolledSource`]: its instances run
/// on the SDK's executor threads.
#[derive(Default)]
struct Paced {
    interval: Duration,
    start: Option<Instant>,
    /// The next tuple's number.
    next: u64,
}

/// Tuples one poll emits at most before it lets the other instances have a turn.
const PACED_BATCH: u64 = 64;

impl PolledSource for Paced {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.interval = paced_interval(props)?;
        Ok(())
    }

    fn poll(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<Next, PluginError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let now = Instant::now();
        for _ in 0..PACED_BATCH {
            // On a schedule, so a late wake-up does not slow the rate down.
            let due = start + self.interval.mul_f64(self.next as f64);
            if due > now {
                return Ok(Next::At(due));
            }
            PACED_WORKLOAD.with_small(self.next, |t| emitter.emit(t))?;
            self.next += 1;
        }
        Ok(Next::Now)
    }
}

/// Source `paced_thread`: `paced` as a blocking [`Source`] with a thread of its own per
/// instance, for comparison (`shmplug scale --threads`).
#[derive(Default)]
struct PacedThread {
    interval: Duration,
}

impl Source for PacedThread {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.interval = paced_interval(props)?;
        Ok(())
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let start = Instant::now();
        for i in 0u64.. {
            // On a schedule, so a late wake-up does not slow the rate down.
            let due = start + self.interval.mul_f64(i as f64);
            ctx.sleep(due.saturating_duration_since(Instant::now()))?;
            PACED_WORKLOAD.with_small(i, |t| emitter.emit(t))?;
        }
        Ok(())
    }
}
