//! `shmplug scale`: what many source instances in one plugin process cost.

use std::time::Duration;

use shmplug_bench::scale::{self, ScaleConfig, ScaleReport};

use crate::bench::launcher;
use crate::error::{Error, Result};

/// Arguments of `shmplug scale`.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Source instances to open in the one plugin process.
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Tuples per second each instance emits.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds to count tuples once every instance is open.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Ring capacity of each instance, bytes (a power of two, at least 4096).
    #[arg(long, default_value_t = 1 << 16)]
    ring_capacity: usize,
    /// Nobody reads: the rings fill (give a high --rate) and the window measures what the
    /// waiting sources cost.
    #[arg(long)]
    stalled: bool,
    /// Give every instance a thread of its own (a blocking source) instead of running them
    /// on the plugin's executor (a polled source), for comparison.
    #[arg(long)]
    threads: bool,
    /// `table` for people, `json` for programs (one object on stdout).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

/// Runs `shmplug scale`.
///
/// # Errors
/// Bad arguments, and the measurement's failures.
pub fn execute(args: &ScaleArgs) -> Result<()> {
    if args.instances == 0 || !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(Error::Bench(
            "--instances and --rate must be above 0".into(),
        ));
    }
    let window = Duration::try_from_secs_f64(args.seconds)
        .ok()
        .filter(|w| !w.is_zero())
        .ok_or_else(|| {
            Error::Bench(format!(
                "--seconds {} is not a duration above 0",
                args.seconds
            ))
        })?;
    let config = ScaleConfig {
        instances: args.instances,
        rate: args.rate,
        window,
        ring_capacity: args.ring_capacity,
        stalled: args.stalled,
        threads: args.threads,
    };
    let report = scale::measure(config, &launcher()?).map_err(|e| Error::Bench(e.to_string()))?;
    if args.format == "json" {
        let json = serde_json::to_string(&report).map_err(|e| Error::Bench(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn table(r: &ScaleReport) -> String {
    let expected = r.rate * r.window_s;
    let mode = match (r.stalled, r.source) {
        (true, source) => format!("source `{source}`, stalled: nobody reads"),
        (false, source) => format!("source `{source}`"),
    };
    let head = format!(
        "instances:  {} source instances at {} tuples/s each ({mode}), counted for {:.1} s\n\
         open:       {:.2} s for all ({:.2} ms each)\n\
         memory:     {:.1} KiB per instance in the host, {:.1} KiB in the plugin\n\
         descriptors: {:.1} per instance in the host, {:.1} in the plugin\n\
         threads:    {} in the plugin's process\n",
        r.instances,
        r.rate,
        r.window_s,
        r.open_s,
        r.open_s * 1e3 / r.instances.max(1) as f64,
        r.host_kib_per_instance,
        r.plugin_kib_per_instance,
        r.host_fds_per_instance,
        r.plugin_fds_per_instance,
        r.plugin_threads,
    );
    if r.stalled {
        return format!(
            "{head}cpu:        host {:.1} % of a core, plugin {:.1} %, with every ring full\n",
            r.host_cpu * 100.0,
            r.plugin_cpu * 100.0,
        );
    }
    format!(
        "{head}tuples:     {} ({:.0}/s; {:.0} expected per instance)\n\
         cpu:        host {:.1} % of a core, plugin {:.1} %; {:.1} µs per tuple\n\
         fairness:   {} to {} tuples per instance; {} instances delivered nothing\n",
        r.tuples,
        r.tuples as f64 / r.window_s.max(f64::MIN_POSITIVE),
        expected,
        r.host_cpu * 100.0,
        r.plugin_cpu * 100.0,
        r.cpu_us_per_tuple,
        r.min_per_instance,
        r.max_per_instance,
        r.starved,
    )
}
