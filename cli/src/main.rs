//! `shmplug`: manage shmplug plugins and run a source -> functions -> sink pipeline.
#![forbid(unsafe_code)]

mod bench;
mod error;
mod live;
mod observer;
mod pipeline;
mod plugins;
mod pump;
mod run;
mod scaffold;
mod scale;
mod serve;
mod stages;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shmplug_host::registry::Registry;

/// shmplug runs stream-engine plugins (sources, sinks, functions) as supervised processes that
/// exchange tuples with the host through shared memory.
#[derive(Debug, Parser)]
#[command(name = "shmplug", version, about, long_about = None)]
struct Cli {
    /// The plugins directory [default: $SHMPLUG_PLUGINS_DIR, else
    /// $XDG_DATA_HOME/shmplug/plugins, else ~/.local/share/shmplug/plugins].
    #[arg(long, global = true, value_name = "DIR")]
    plugins_dir: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install, list, describe, update and remove plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Run a pipeline file (TOML or JSON): one source, zero or more function calls applied to
    /// fields, one sink. Runs until the source ends, the pipeline's count or duration is
    /// reached, or Ctrl-C (or SIGTERM); then prints a summary (tuples, tuples per second,
    /// latency percentiles, errors, restarts). While it runs, `shmplug status` shows it, and
    /// on a terminal a progress line on stderr is redrawn about every 250 ms.
    Run(run::RunArgs),
    /// Serve eKuiper's REST API for portable plugins (`/plugins/portables`: list, describe,
    /// install from a zip, update, delete, status) and Prometheus metrics (`/metrics`) over
    /// HTTP, on 127.0.0.1:9081 unless --listen says otherwise. Starts every installed plugin
    /// and runs until SIGINT or SIGTERM, then stops them all. Listening beyond this machine
    /// lets whoever reaches the address install and run programs on it.
    Serve(serve::ServeArgs),
    /// Show the running `shmplug run`s: their plugins, processes, instances and counters.
    ///
    /// For each `shmplug run` of this user: its pipeline, uptime, tuples, tuples per second,
    /// errors, and each plugin's phase, process id, restarts, last error and instances. Each
    /// run answers on a socket `run-PID.sock` in $SHMPLUG_RUNTIME_DIR,
    /// else $XDG_RUNTIME_DIR/shmplug, else /tmp/shmplug-UID (sockets of ended runs are
    /// removed). When no run is running, or with --check, it checks the installed plugins
    /// instead: it starts each, waits for its hello, reports its pid, protocol and symbols, and
    /// shuts it down.
    Status(status::StatusArgs),
    /// Measure shmplug beside its baselines and its peer on this machine, in one run: a plugin
    /// source to the host (source_small), the host to a plugin sink (sink_small), calls to an
    /// echo function (function_rtt) and tuples with a 1 MiB field (large_1mib), over shmplug,
    /// rtrb between threads, JSON over a Unix socket, iceoryx2, and the physical references
    /// memcpy and a cache-line ping-pong. Needs no installed plugin: the bench plugin is this
    /// program. Prints a table with ratios and targets, or JSON (--format json).
    Bench(bench::BenchArgs),
    /// Measure what many source instances in one plugin cost: open N instances of the bench
    /// plugin's paced source, read them all from one async runtime for a while, and report the
    /// time to open them, memory and descriptors per instance, the plugin's threads, CPU per
    /// tuple in the host and the plugin, and the fewest and most tuples one instance delivered.
    Scale(scale::ScaleArgs),
    /// The bench plugin (started by `shmplug bench`).
    #[command(name = "bench-plugin", hide = true)]
    BenchPlugin,
    /// The other process of a bench measurement (started by `shmplug bench`).
    #[command(name = "bench-peer", hide = true)]
    BenchPeer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The hidden subcommand that runs the bench plugin.
pub const BENCH_PLUGIN: &str = "bench-plugin";
/// The hidden subcommand that runs a bench peer.
pub const BENCH_PEER: &str = "bench-peer";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench's own processes: the plugin logs through the SDK, the peers only fail loudly.
    match &cli.command {
        Command::BenchPlugin => shmplug_bench::plugin_main(std::env::args()),
        Command::BenchPeer { args } => {
            return match shmplug_bench::peer_main(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shmplug bench peer: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // The bench's processes come and go by the dozen; only problems are worth a line there.
    let quiet = matches!(cli.command, Command::Bench(_) | Command::Scale(_));
    init_logging(cli.verbose, quiet);
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> crate::error::Result<()> {
    let plugins_dir = cli.plugins_dir;
    let registry = || {
        let dir = match plugins_dir {
            Some(dir) => dir,
            None => Registry::default_dir()?,
        };
        Registry::open(dir)
    };
    match cli.command {
        Command::Plugins(plugins::PluginsCommand::New { name, sdk }) => {
            plugins::new(&name, sdk.as_deref())
        }
        Command::Plugins(command) => plugins::execute(&registry()?, command),
        Command::Run(args) => run::execute(&registry()?, &args),
        Command::Serve(args) => serve::execute(registry()?, &args),
        Command::Status(args) => status::execute(&registry()?, &args),
        Command::Bench(args) => bench::execute(&args),
        Command::Scale(args) => scale::execute(&args),
        // `main` runs these before logging starts.
        Command::BenchPlugin | Command::BenchPeer { .. } => Err(crate::error::Error::Bench(
            "bench-plugin and bench-peer are started by `shmplug bench`".into(),
        )),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = colours(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Colours only for a person at a terminal, not in a log file or a pipe, and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
fn colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None));
    }
}
