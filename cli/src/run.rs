//! `shmplug run PIPELINE`: source -> functions -> sink, with a summary at the end. The data
//! path is the [`Pump`]; while it runs, an [`Observer`] thread answers `shmplug status` and
//! draws the progress line; the loop only publishes its counters once per batch.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use clap::Args;
use shmplug_host::registry::Registry;
use shmplug_host::{
    Delivery, FunctionClient, Plugin, PluginSpec, SinkWriter, SourceReader, SupervisorConfig,
};

use crate::live::{self, Live};
use crate::observer::{Observer, Server};
use crate::pipeline::{DeliveryChoice, Pipeline};
use crate::pump::{Outcome, Pump, Stats, Step};
use crate::stages::{self, Stages};

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
    // Plugins run in the pipeline file's directory, so that a relative path in a property
    // means what the file's author sees beside it; each finds its own in SHMPLUG_PLUGIN_DIR.
    let base_dir = Pipeline::base_dir(&args.pipeline)?;
    let mut plugins: HashMap<String, Plugin> = HashMap::new();
    for name in &names {
        let info = registry.describe(name)?;
        let spec = PluginSpec {
            dir: Some(base_dir.clone()),
            ..PluginSpec::from_info(&info)
        };
        let plugin = Plugin::start(spec, SupervisorConfig::default())?;
        plugins.insert(name.clone(), plugin);
    }
    // Symbols are checked before anything opens; the source opens before the sink.
    let Stages {
        mut calls,
        mut source,
        mut sink,
    } = stages::open(&pipeline, |name| plugins.get(name), "shmplug-run")?;
    let names_of_functions: Vec<String> = pipeline
        .functions
        .iter()
        .map(|c| format!("{} ({})", c.symbol, c.output))
        .collect();

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
    let in_order: Vec<&Plugin> = names.iter().map(|n| &plugins[n]).collect();
    let progress = std::io::stderr().is_terminal();
    let (end, elapsed, stats, delivered) = std::thread::scope(|scope| {
        let observer = match Observer::start(scope, &live, in_order, server, progress) {
            Ok(observer) => observer,
            Err(e) => {
                tracing::warn!("no status socket or progress line for this run: {e}");
                None
            }
        };
        let mut pump = Pump::new(calls.len());
        let end = run_loop(
            &mut pump,
            &live,
            &mut source,
            &mut calls,
            &mut sink,
            &limits,
            &interrupted,
        );
        let elapsed = live.uptime();
        drop(source);
        let delivered = sink.stats();
        // End the sink's stream and wait for the plugin to confirm it has written and closed
        // everything, so the run's output is complete when the command returns.
        if let Err(e) = sink.stop() {
            tracing::warn!("the sink did not confirm its stop: {e}");
            pump.stats.errors += 1;
        }
        if let Some(observer) = observer {
            observer.finish();
        }
        (end, elapsed, pump.stats, delivered)
    });
    drop(calls);
    let restarts: u64 = plugins.values().map(|p| p.status().restarts).sum();
    drop(plugins);
    print_summary(&end, elapsed, &stats, &names_of_functions, restarts);
    println!(
        "delivery:   {} ({} tuples replayed to a restarted sink, {} possible duplicates)",
        match pipeline.sink.delivery.map(DeliveryChoice::delivery) {
            Some(Delivery::AtMostOnce) => "at-most-once",
            _ => "at-least-once",
        },
        delivered.replayed,
        delivered.duplicates
    );
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

/// Moves batches until the source ends, a limit is reached, Ctrl-C or a failure; publishes
/// the counters to [`Live`] once per batch.
fn run_loop(
    pump: &mut Pump,
    live: &Live,
    source: &mut SourceReader,
    calls: &mut [(FunctionClient, Step)],
    sink: &mut SinkWriter,
    limits: &Limits,
    interrupted: &AtomicBool,
) -> End {
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return End::Interrupted;
        }
        let tuples = pump.stats.tuples;
        if limits.count.is_some_and(|c| tuples >= c) {
            return End::Count;
        }
        if limits.duration.is_some_and(|d| live.uptime() >= d) {
            return End::Duration;
        }
        // Take what the source has ready, up to a batch, so that function calls are
        // pipelined and the plugin's threads wake once per batch rather than once per tuple.
        let limit = limits
            .count
            .map_or(BATCH, |c| BATCH.min((c - tuples) as usize));
        let outcome = pump.step(source, calls, sink, limit, Duration::from_millis(100));
        live.publish(pump.stats.tuples, pump.stats.errors);
        match outcome {
            Outcome::Moved | Outcome::Idle => {}
            Outcome::SourceEnded => return End::SourceEnded,
            Outcome::Failed(reason) => return End::Failed(reason),
        }
    }
}

fn print_summary(end: &End, elapsed: Duration, stats: &Stats, functions: &[String], restarts: u64) {
    let tuples = stats.tuples;
    let rate = if elapsed.is_zero() {
        0.0
    } else {
        tuples as f64 / elapsed.as_secs_f64()
    };
    let latency = |q: f64| Duration::from_nanos(stats.latency.value_at_quantile(q));
    println!("ended:      {}", describe(end));
    println!(
        "tuples:     {tuples} in {:.3?} ({rate:.0} tuples/s)",
        elapsed
    );
    println!(
        "latency:    p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}  (batch received to sent on to the sink)",
        latency(0.50),
        latency(0.90),
        latency(0.99),
        Duration::from_nanos(stats.latency.max())
    );
    let stage = |name: &str, time: Duration| {
        let share = if elapsed.is_zero() {
            0.0
        } else {
            100.0 * time.as_secs_f64() / elapsed.as_secs_f64()
        };
        let per_tuple = if tuples == 0 {
            Duration::ZERO
        } else {
            time / u32::try_from(tuples).unwrap_or(u32::MAX)
        };
        println!("  {name:<24} {time:>10.3?}  {share:>5.1}%  {per_tuple:>9.1?}/tuple");
    };
    println!(
        "time:       by stage (host's view: waiting on a plugin counts for its stage; the last \
         function's includes writing to the sink, which overlaps it)"
    );
    stage("source", stats.source);
    for (name, time) in functions.iter().zip(&stats.functions) {
        stage(&format!("function {name}"), *time);
    }
    stage("sink", stats.sink);
    println!("errors:     {}", stats.errors);
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
