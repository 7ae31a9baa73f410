//! `shmplug run PIPELINE`: source -> functions -> sink, with a summary at the end. While it
//! runs, an [`Observer`] thread answers `shmplug status` and draws the progress line; the loop
//! only publishes its counters once per batch.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clap::Args;
use shmplug_host::registry::Registry;
use shmplug_host::transport::{Tuple, Value, ValueRef};
use shmplug_host::{
    FunctionClient, Plugin, PluginSpec, SinkWriter, SourceReader, SupervisorConfig,
};

use crate::live::{self, Live};
use crate::observer::{Observer, Server};
use crate::pipeline::Pipeline;

/// Most tuples taken from the source at once (and sent through each function as one pipelined
/// batch of calls).
const BATCH: usize = 256;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file (`.toml`, or JSON otherwise).
    pub pipeline: PathBuf,
    /// Stop after this many tuples (overrides the file's `limits.count`).
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (overrides the file's `limits.duration_secs`).
    #[arg(long)]
    pub duration: Option<f64>,
}

/// Why the run ended.
#[derive(Debug)]
enum End {
    SourceEnded,
    Count,
    Duration,
    Interrupted,
    Failed(String),
}

pub fn execute(registry: &Registry, args: &RunArgs) -> crate::error::Result<()> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    let limits = Limits {
        count: args.count.or(pipeline.limits.count),
        duration: args
            .duration
            .or(pipeline.limits.duration_secs)
            .map(Duration::from_secs_f64),
    };
    // Before any plugin starts, so that Ctrl-C from now on ends the run cleanly.
    let interrupted = stop_signal_flag();

    let names = pipeline.plugins();
    let mut plugins: HashMap<String, Plugin> = HashMap::new();
    for name in &names {
        let info = registry.describe(name)?;
        let plugin = Plugin::start(PluginSpec::from_info(&info), SupervisorConfig::default())?;
        plugins.insert(name.clone(), plugin);
    }
    let plugin = |name: &str| &plugins[name];
    let mut calls: Vec<(FunctionClient, &crate::pipeline::Call)> = Vec::new();
    for call in &pipeline.functions {
        calls.push((plugin(&call.plugin).function(call.spec())?, call));
    }
    let mut sink = plugin(&pipeline.sink.plugin).sink(pipeline.sink.spec())?;
    let mut source = plugin(&pipeline.source.plugin).source(pipeline.source.spec())?;

    let live = Live::new(&args.pipeline, registry.root());
    let server = match Server::bind(&live::runtime_dir()) {
        Ok(server) => {
            tracing::debug!("serving `shmplug status` on `{}`", server.path().display());
            Some(server)
        }
        Err(e) => {
            tracing::warn!("`shmplug status` will not see this run: cannot serve it: {e}");
            None
        }
    };
    let in_order: Vec<&Plugin> = names.iter().map(|n| plugin(n)).collect();
    let progress = std::io::stderr().is_terminal();
    let (end, elapsed, mut latencies, tuples, errors) = std::thread::scope(|scope| {
        let observer = match Observer::start(scope, &live, in_order, server, progress) {
            Ok(observer) => observer,
            Err(e) => {
                tracing::warn!("no status socket or progress line for this run: {e}");
                None
            }
        };
        let mut pump = Pump {
            live: &live,
            latencies: Vec::new(),
            tuples: 0,
            errors: 0,
        };
        let end = pump.run(&mut source, &mut calls, &mut sink, &limits, &interrupted);
        let elapsed = live.uptime();
        drop(source);
        // End the sink's stream and wait for the plugin to confirm it has written and closed
        // everything, so the run's output is complete when the command returns.
        if let Err(e) = sink.stop() {
            tracing::warn!("the sink did not confirm its stop: {e}");
            pump.errors += 1;
        }
        if let Some(observer) = observer {
            observer.finish();
        }
        (end, elapsed, pump.latencies, pump.tuples, pump.errors)
    });
    drop(calls);
    let restarts: u64 = plugins.values().map(|p| p.status().restarts).sum();
    drop(plugins);
    print_summary(&end, tuples, elapsed, &mut latencies, errors, restarts);
    match end {
        End::Failed(reason) => Err(crate::error::Error::Pipeline {
            path: args.pipeline.clone(),
            detail: format!("the run failed: {reason}"),
        }),
        _ => Ok(()),
    }
}

/// When to stop besides the source's end and Ctrl-C.
struct Limits {
    count: Option<u64>,
    duration: Option<Duration>,
}

/// The loop's totals; published to [`Live`] once per batch.
struct Pump<'a> {
    live: &'a Live,
    latencies: Vec<Duration>,
    tuples: u64,
    errors: u64,
}

impl Pump<'_> {
    fn run(
        &mut self,
        source: &mut SourceReader,
        calls: &mut [(FunctionClient, &crate::pipeline::Call)],
        sink: &mut SinkWriter,
        limits: &Limits,
        interrupted: &AtomicBool,
    ) -> End {
        loop {
            if interrupted.load(Ordering::SeqCst) {
                return End::Interrupted;
            }
            if limits.count.is_some_and(|c| self.tuples >= c) {
                return End::Count;
            }
            if limits.duration.is_some_and(|d| self.live.uptime() >= d) {
                return End::Duration;
            }
            // Take what the source has ready, up to a batch, so that function calls are
            // pipelined and the plugin's threads wake once per batch rather than once per tuple.
            let limit = limits
                .count
                .map_or(BATCH, |c| BATCH.min((c - self.tuples) as usize));
            let mut batch: Vec<Tuple> = Vec::with_capacity(limit);
            match source.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(view)) => batch.push(view.to_owned()),
                Ok(None) => continue,
                Err(e) if e.is_end_of_stream() => return End::SourceEnded,
                Err(e) => return End::Failed(e.to_string()),
            }
            let received = Instant::now();
            let mut source_end = None;
            while batch.len() < limit {
                match source.try_recv() {
                    Ok(Some(view)) => batch.push(view.to_owned()),
                    Ok(None) => break,
                    Err(e) if e.is_end_of_stream() => break,
                    Err(e) => {
                        source_end = Some(End::Failed(e.to_string()));
                        break;
                    }
                }
            }
            for (client, call) in calls.iter_mut() {
                self.errors += apply(client, call, &mut batch);
            }
            let mut sink_end = None;
            for tuple in &batch {
                match sink.send(tuple) {
                    Ok(()) => self.tuples += 1,
                    Err(e) if e.is_end_of_stream() => {
                        sink_end = Some(End::Failed(e.to_string()));
                        break;
                    }
                    Err(e) => {
                        self.errors += 1;
                        tracing::warn!("{e}");
                    }
                }
            }
            let done = received.elapsed();
            self.latencies
                .extend(std::iter::repeat_n(done, batch.len()));
            self.live.publish(self.tuples, self.errors);
            if let Some(end) = sink_end.or(source_end) {
                return end;
            }
        }
    }
}

/// Calls `call` on every tuple of `batch` as one pipelined batch of calls and stores each
/// result in the call's output field (null on error). Returns the number of errors.
fn apply(client: &mut FunctionClient, call: &crate::pipeline::Call, batch: &mut [Tuple]) -> u64 {
    let mut errors = 0;
    let values: Vec<Vec<Value>> = batch
        .iter()
        .map(|tuple| {
            let field = |name: &String| tuple.fields.get(name).cloned();
            call.args
                .iter()
                .map(|n| field(n).unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    let refs: Vec<Vec<ValueRef<'_>>> = values
        .iter()
        .map(|args| args.iter().map(value_ref).collect())
        .collect();
    let arg_lists: Vec<&[ValueRef<'_>]> = refs.iter().map(Vec::as_slice).collect();
    let results = match client.call_batch(&arg_lists) {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!("{e}");
            errors += batch.len() as u64;
            batch.iter().map(|_| Ok(Value::Null)).collect()
        }
    };
    for (tuple, result) in batch.iter_mut().zip(results) {
        let value = result.unwrap_or_else(|e| {
            errors += 1;
            tracing::warn!("{e}");
            Value::Null
        });
        tuple.fields.insert(call.output.clone(), value);
    }
    errors
}

/// Borrows an owned value as the transport's borrowed form, for a call's arguments.
fn value_ref(value: &Value) -> ValueRef<'_> {
    // A list or map argument would need its items borrowed as `ValueRef`s too; the
    // command-line runner passes null (functions taking collections need an engine).
    value.as_ref().unwrap_or(ValueRef::Null)
}

fn print_summary(
    end: &End,
    tuples: u64,
    elapsed: Duration,
    latencies: &mut [Duration],
    errors: u64,
    restarts: u64,
) {
    latencies.sort_unstable();
    let percentile = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index.min(latencies.len() - 1)]
    };
    let rate = if elapsed.is_zero() {
        0.0
    } else {
        tuples as f64 / elapsed.as_secs_f64()
    };
    println!("ended:      {}", describe(end));
    println!(
        "tuples:     {tuples} in {:.3?} ({rate:.0} tuples/s)",
        elapsed
    );
    println!(
        "latency:    p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}  (batch received to sent on to the sink)",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!("errors:     {errors}");
    println!("restarts:   {restarts}");
}

fn describe(end: &End) -> String {
    match end {
        End::SourceEnded => "the source ended".into(),
        End::Count => "count reached".into(),
        End::Duration => "duration reached".into(),
        End::Interrupted => "interrupted (Ctrl-C or SIGTERM)".into(),
        End::Failed(reason) => format!("failed: {reason}"),
    }
}

/// A flag set on Ctrl-C (SIGINT) or SIGTERM, by a small tokio runtime on its own thread; a
/// second signal exits at once (status 130), for a run that does not stop. Returns once the
/// handlers are installed.
fn stop_signal_flag() -> Arc<AtomicBool> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let (ready_tx, ready_rx) = mpsc::sync_channel::<std::io::Result<()>>(1);
    let spawned = std::thread::Builder::new()
        .name("shmplug-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async {
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(int), Ok(term)) => (int, term),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                set.store(true, Ordering::SeqCst);
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!("\nsecond interrupt: exiting without cleaning up");
                std::process::exit(130);
            });
        });
    let installed = match spawned {
        Ok(_) => ready_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| Err(std::io::Error::other("the signal thread did not start"))),
        Err(e) => Err(e),
    };
    if let Err(e) = installed {
        tracing::warn!("Ctrl-C will not stop the run gracefully: {e}");
    }
    flag
}
