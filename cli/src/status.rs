//! `shmplug status`: the running `shmplug run`s (their plugins, processes, instances and
//! counters), asked over their sockets; or, with `--check` or when nothing runs, a start-up
//! check of the installed plugins.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use comfy_table::{CellAlignment, Table, presets};
use shmplug_host::registry::{Listed, PluginInfo, Registry};
use shmplug_host::{Error, Plugin, PluginSpec, SupervisorConfig};

use crate::live::{self, InstanceSnapshot, REQUEST, RunSnapshot};

/// How long a run may take to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer accepted.
const MAX_ANSWER: u64 = 16 << 20;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this plugin.
    pub name: Option<String>,
    /// Ignore running runs: start each installed plugin, wait for its hello, report the time
    /// it took, its pid, protocol version and symbols, and shut it down. Exits non-zero if any
    /// plugin fails to start.
    #[arg(long, conflicts_with = "format")]
    pub check: bool,
    /// `table` for people; `json` prints an array with one object per run (pid, pipeline,
    /// started_unix_ms, uptime_secs, tuples, tuples_per_sec, errors, restarts, and plugins with
    /// phase, pid, restarts, last_error and instances, each with its counters, `starved_ms`
    /// while starved and `starvations`), and never starts plugins.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How `shmplug status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A readable table.
    Table,
    /// The runs' JSON answers, as one array.
    Json,
}

pub fn execute(registry: &Registry, args: &StatusArgs) -> crate::error::Result<()> {
    if args.check {
        return check(registry, args.name.as_deref());
    }
    let dir = live::runtime_dir();
    let (mut runs, mut failures) = ask_runs(&dir);
    if let Some(name) = &args.name {
        runs.retain(|run| run.plugins.iter().any(|p| &p.name == name));
        for run in &mut runs {
            run.plugins.retain(|p| &p.name == name);
        }
    }
    match args.format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&runs).expect("status serialises");
            println!("{text}");
        }
        Format::Table if runs.is_empty() && failures.is_empty() => {
            let only = args
                .name
                .as_ref()
                .map_or_else(String::new, |n| format!(" with plugin `{n}`"));
            println!(
                "no `shmplug run`{only} is running (none has a socket in `{}`); checking the \
                 installed plugins instead:",
                dir.display()
            );
            return check(registry, args.name.as_deref());
        }
        Format::Table => {
            for run in &runs {
                print_run(run);
            }
        }
    }
    let Some(first) = failures.pop() else {
        return Ok(());
    };
    for other in failures {
        eprintln!("error: {other}");
    }
    Err(first.into())
}

/// Asks every live run in `dir`; removes sockets whose process is gone.
fn ask_runs(dir: &Path) -> (Vec<RunSnapshot>, Vec<Error>) {
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for (_, path) in live::live_sockets(dir) {
        match ask(&path) {
            Ok(run) => runs.push(run),
            // The run ended between the listing and the connect, or the pid now belongs to
            // another process and the socket is a left-over: nothing is running there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                tracing::debug!("`{}`: {e}", path.display());
            }
            Err(source) => failures.push(Error::Io {
                context: "asking the running `shmplug run` for its status at",
                path,
                source,
            }),
        }
    }
    (runs, failures)
}

/// One request and its answer, within [`TIMEOUT`].
fn ask(path: &Path) -> io::Result<RunSnapshot> {
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(format!("{REQUEST}\n").as_bytes())?;
    let mut answer = Vec::new();
    let mut limited = (&stream).take(MAX_ANSWER);
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete answer within {TIMEOUT:?}; is the run stuck?"),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match limited.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no complete answer within {TIMEOUT:?}; is the run stuck?"),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&answer)
        && let Some(error) = map.get("error").and_then(|e| e.as_str())
    {
        return Err(io::Error::other(format!(
            "the run refused the request: {error}"
        )));
    }
    serde_json::from_slice(&answer).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the answer is not a run's status ({e}); are `shmplug status` and the run the \
                 same version?"
            ),
        )
    })
}

fn print_run(run: &RunSnapshot) {
    println!(
        "run {}: {} (plugins in {})",
        run.pid,
        run.pipeline.display(),
        run.plugins_dir.display()
    );
    println!(
        "  started {}, up {:.1} s; {} tuples ({:.0} tuples/s), {} errors, {} restarts",
        live::utc(run.started_unix_ms),
        run.uptime_secs,
        run.tuples,
        run.tuples_per_sec,
        run.errors,
        run.restarts
    );
    // Two tables, indented under the run: its plugins, then their instances.
    let mut plugins = Table::new();
    plugins.load_preset(presets::NOTHING).set_header([
        "  PLUGIN",
        "PHASE",
        "PID",
        "RESTARTS",
        "LAST ERROR",
    ]);
    let mut instances = Table::new();
    instances.load_preset(presets::NOTHING).set_header([
        "  INSTANCE",
        "PLUGIN",
        "KIND",
        "SYMBOL",
        "RULE",
        "IN",
        "OUT",
        "ERRORS",
        "STATE",
    ]);
    for plugin in &run.plugins {
        let phase = match plugin.restart_attempt {
            Some(attempt) => format!("{} ({attempt})", plugin.phase),
            None => plugin.phase.clone(),
        };
        let pid = plugin.pid.map_or_else(|| "-".into(), |p| p.to_string());
        plugins.add_row([
            format!("  {}", plugin.name),
            phase,
            pid,
            plugin.restarts.to_string(),
            plugin.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
        for i in &plugin.instances {
            let replays = if i.replayed > 0 {
                format!(
                    "; {} replayed, {} possible duplicates",
                    i.replayed, i.duplicates
                )
            } else {
                String::new()
            };
            // A source only sends, a sink only receives; a function does both.
            let (tuples_in, tuples_out) = match i.kind.as_str() {
                "source" => ("-".to_owned(), i.tuples_out.to_string()),
                "sink" => (i.tuples_in.to_string(), "-".to_owned()),
                _ => (i.tuples_in.to_string(), i.tuples_out.to_string()),
            };
            instances.add_row([
                format!("  {}", i.id),
                plugin.name.clone(),
                i.kind.clone(),
                i.symbol.clone(),
                i.rule_id.clone(),
                tuples_in,
                tuples_out,
                i.errors.to_string(),
                format!(
                    "{}{}{replays}",
                    if i.live { "live" } else { "starting" },
                    starvation(i)
                ),
            ]);
        }
    }
    for column in [2, 3] {
        if let Some(column) = plugins.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    for column in [0, 5, 6, 7] {
        if let Some(column) = instances.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{plugins}");
    if !instances.is_empty() {
        println!("{instances}");
    }
}

/// What the STATE column says of an instance's starvation: `; STARVED 1.2 s` while it is
/// starved (with the episodes when there were more), `; starved 2x` once it was.
fn starvation(i: &InstanceSnapshot) -> String {
    match (i.starved_ms, i.starvations) {
        (Some(ms), n) if n > 1 => format!("; STARVED {:.1} s ({n} times)", ms as f64 / 1e3),
        (Some(ms), _) => format!("; STARVED {:.1} s", ms as f64 / 1e3),
        (None, 0) => String::new(),
        (None, n) => format!("; starved {n}x"),
    }
}

/// Starts each installed plugin (or the one named), reports its hello, shuts it down.
fn check(registry: &Registry, only: Option<&str>) -> crate::error::Result<()> {
    let infos: Vec<PluginInfo> = match only {
        Some(name) => vec![registry.describe(name)?],
        None => registry
            .list()?
            .into_iter()
            .filter_map(|l| match l {
                Listed::Plugin(info) => Some(info),
                Listed::Broken { name, error } => {
                    println!("{name:<20} BROKEN   {error}");
                    None
                }
            })
            .collect(),
    };
    let mut failed = 0;
    for info in infos {
        let started = Instant::now();
        match Plugin::start(PluginSpec::from_info(&info), SupervisorConfig::default()) {
            Ok(plugin) => {
                let hello = plugin.hello().unwrap_or_else(|| {
                    shmplug_host::transport::control::Hello::new(info.name.clone())
                });
                println!(
                    "{:<20} OK       hello in {:.1?}, pid {}, protocol {}, sources [{}] sinks [{}] \
                     functions [{}]",
                    info.name,
                    started.elapsed(),
                    plugin.status().pid.unwrap_or(0),
                    hello.protocol_version,
                    hello.sources.join(", "),
                    hello.sinks.join(", "),
                    hello.functions.join(", ")
                );
                plugin.shutdown();
            }
            Err(e) => {
                failed += 1;
                println!("{:<20} FAILED   {e}", info.name);
            }
        }
    }
    if failed > 0 {
        return Err(Error::Unavailable {
            plugin: format!("{failed} plugin(s)"),
            reason: "they failed to start; see above".into(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(starved_ms: Option<u64>, starvations: u64) -> InstanceSnapshot {
        // An answer of an older run lacks the starvation fields: they default.
        let mut i: InstanceSnapshot = serde_json::from_str(
            r#"{"id": 1, "kind": "source", "symbol": "s", "rule_id": "r", "live": true}"#,
        )
        .unwrap();
        assert_eq!((i.starved_ms, i.starvations), (None, 0));
        i.starved_ms = starved_ms;
        i.starvations = starvations;
        i
    }

    #[test]
    fn the_state_column_says_whether_an_instance_is_starved() {
        assert_eq!(starvation(&instance(None, 0)), "");
        assert_eq!(starvation(&instance(Some(1250), 1)), "; STARVED 1.2 s");
        assert_eq!(
            starvation(&instance(Some(3000), 2)),
            "; STARVED 3.0 s (2 times)"
        );
        assert_eq!(starvation(&instance(None, 2)), "; starved 2x");
    }
}
