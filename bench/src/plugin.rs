//! The bench plugin: a real shmplug plugin (built on the SDK, run as its own process under the
//! host) with the cases' source, sink and echo function.
//!
//! - source `small` / `large`: emits tuples `0..count` of the [`workload`](super::workload)
//!   (property `count`) as fast as the ring takes them, then ends its stream;
//! - sink `check`: checks every field of every tuple against the workload and, at close,
//!   writes `"<count> <mismatches>"` to the file named by property `report`;
//! - function `echo`: answers its arguments as a list.

use std::time::Duration;

use shmplug_sdk::{
    Emitter, Function, FunctionContext, PluginConfig, PluginError, Props, Sink, SinkContext,
    Source, SourceContext,
};
use shmplug_transport::EndpointConfig;
use shmplug_transport::tuple::{TupleView, Value, ValueView};

use super::workload::Workload;

/// The plugin's name, as the host expects it in `Hello`.
pub(super) const NAME: &str = "shmplug-bench";

/// How long the plugin's ring endpoints spin before they sleep: long enough that a round trip
/// never sleeps while the bench runs (the bench owns the machine while it measures).
pub(super) const SPIN: Duration = Duration::from_millis(5);

/// Runs the bench plugin; for the program's command line that [`Launcher::plugin_args`]
/// selects (`args` as from `std::env::args()`). Never returns.
///
/// [`Launcher::plugin_args`]: super::Launcher::plugin_args
pub fn plugin_main(args: impl IntoIterator<Item = String>) -> ! {
    shmplug_sdk::start(args, config())
}

fn config() -> PluginConfig {
    PluginConfig::new(NAME)
        .source("small", || Emit {
            large: false,
            count: 0,
        })
        .source("large", || Emit {
            large: true,
            count: 0,
        })
        .sink("check", Check::default)
        .function("echo", || Echo)
        .with_endpoint(EndpointConfig::default().with_spin(SPIN))
}

fn count(props: &Props) -> Result<u64, PluginError> {
    props
        .get("count")
        .and_then(|c| c.as_u64())
        .ok_or_else(|| PluginError::property("count", "expected a non-negative integer"))
}

struct Emit {
    large: bool,
    count: u64,
}

impl Source for Emit {
    fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.count = count(props)?;
        Ok(())
    }

    fn open(&mut self, _ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let workload = Workload::new();
        for i in 0..self.count {
            if self.large {
                workload.with_large(i, |t| emitter.emit_deferred(t))?;
            } else {
                workload.with_small(i, |t| emitter.emit_deferred(t))?;
            }
        }
        emitter.flush();
        Ok(())
    }
}

#[derive(Default)]
struct Check {
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
        if workload
            .check_small_view(&tuple.fields(), self.count)
            .is_err()
        {
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
