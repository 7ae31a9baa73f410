//! `shmplug`: manage shmplug plugins and run a source -> functions -> sink pipeline.
#![forbid(unsafe_code)]

mod pipeline;
mod plugins;
mod run;

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
    /// reached, or Ctrl-C; then prints a summary (tuples, tuples per second, latency
    /// percentiles, errors, restarts).
    Run(run::RunArgs),
    /// Check installed plugins: start each (or the one named), wait for its hello, report
    /// the time it took, its pid, protocol version and symbols, and shut it down. Exits
    /// non-zero if any plugin fails to start.
    Status {
        /// Only this plugin.
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> shmplug_host::Result<()> {
    let dir = match cli.plugins_dir {
        Some(dir) => dir,
        None => Registry::default_dir()?,
    };
    let registry = Registry::open(dir)?;
    match cli.command {
        Command::Plugins(command) => plugins::execute(&registry, command),
        Command::Run(args) => run::execute(&registry, &args),
        Command::Status { name } => plugins::status(&registry, name.as_deref()),
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
