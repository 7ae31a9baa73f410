//! `shmplug bench`: the cases over every implementation, side by side in one run.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Instant;

use clap::{Args, ValueEnum};
use comfy_table::{CellAlignment, Table, presets};
use indicatif::{ProgressBar, ProgressStyle};
use shmplug_bench::{self as bench, Case, Impl, Launcher, Measurement, Sizes, stats};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A short run (within a minute on 2 vCPUs): fewer tuples, each measurement once.
    #[arg(long)]
    pub quick: bool,
    /// `table` for people, `json` for programs: one object on stdout,
    /// {"results": [{"case", "impl", "tuples_per_s", "bytes_per_s", "p50_ns", "p99_ns"}]},
    /// null where a figure does not apply.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only these cases (comma-separated): source_small, sink_small, function_rtt, large_1mib,
    /// pipeline.
    #[arg(long, value_delimiter = ',', value_name = "CASE")]
    pub case: Vec<String>,
    /// Only these implementations (comma-separated): shmplug, native, rtrb_inprocess,
    /// rtrb_bytes, json_uds, json_nng, iceoryx2, memcpy, pingpong.
    #[arg(long = "impl", value_delimiter = ',', value_name = "IMPL")]
    pub imps: Vec<String>,
    /// How many times a full run repeats each measurement (medians are quoted); the order
    /// rotates each round so that no implementation always runs first.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table with ratios and targets.
    Table,
    /// One JSON object.
    Json,
}

/// The JSON output; the names and their order are a stable interface.
#[derive(serde::Serialize)]
struct Output {
    results: Vec<Row>,
}

/// One row of the JSON output.
#[derive(serde::Serialize)]
struct Row {
    case: &'static str,
    #[serde(rename = "impl")]
    imp: &'static str,
    #[serde(flatten)]
    figures: Measurement,
}

pub fn execute(args: &BenchArgs) -> crate::error::Result<()> {
    let cases = pick(&args.case, Case::from_name, &Case::ALL, "case")?;
    let imps = pick(&args.imps, Impl::from_name, &Impl::ALL, "implementation")?;
    for imp in imps.iter().filter(|i| !i.is_available()) {
        eprintln!("skipping {imp}: this shmplug was built without the `{imp}` cargo feature");
    }
    let pairs: Vec<(Case, Impl)> = cases
        .iter()
        .flat_map(|&case| {
            Impl::ALL
                .iter()
                .filter(|i| imps.contains(i))
                .map(move |&imp| (case, imp))
        })
        .filter(|&(case, imp)| imp.applies_to(case) && imp.is_available())
        .collect();
    let launcher = launcher()?;
    let (sizes, rounds) = if args.quick {
        (Sizes::QUICK, 1)
    } else {
        (Sizes::FULL, args.repeat as usize)
    };
    let started = Instant::now();
    let mut runs: BTreeMap<(Case, Impl), Vec<Measurement>> = BTreeMap::new();
    let mut failures = Vec::new();
    // On a terminal, a progress bar (fitted to its width) says which measurement runs.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new((rounds * pairs.len()) as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:24} {pos}/{len} {wide_msg}") {
            bar.set_style(style);
        }
        bar
    });
    for round in 0..rounds {
        for k in 0..pairs.len() {
            let (case, imp) = pairs[(k + round) % pairs.len()];
            if let Some(bar) = &bar {
                bar.set_message(format!("round {}/{rounds}: {case} / {imp}", round + 1));
            }
            let measured = bench::measure(case, imp, &sizes, &launcher);
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            match measured {
                Ok(m) => runs.entry((case, imp)).or_default().push(m),
                Err(e) => {
                    let say = || eprintln!("error: {case} / {imp}: {e}");
                    match &bar {
                        Some(bar) => bar.suspend(say),
                        None => say(),
                    }
                    failures.push(format!("{case} / {imp}"));
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let medians: BTreeMap<(Case, Impl), Measurement> = pairs
        .iter()
        .map(|&key| (key, median(runs.get(&key).map_or(&[][..], Vec::as_slice))))
        .collect();
    match args.format {
        Format::Json => {
            let results: Vec<Row> = pairs
                .iter()
                .map(|&(case, imp)| Row {
                    case: case.name(),
                    imp: imp.name(),
                    figures: medians[&(case, imp)],
                })
                .collect();
            let json = serde_json::to_string(&Output { results }).map_err(|e| {
                crate::error::Error::Bench(format!("cannot write the results as JSON: {e}"))
            })?;
            println!("{json}");
        }
        Format::Table => {
            print_table(&pairs, &medians, rounds, &sizes);
            print_targets(&medians);
            println!(
                "\n{} measurements in {:.1} s; {} on {}",
                pairs.len() * rounds,
                started.elapsed().as_secs_f64(),
                if rounds > 1 {
                    format!("medians of {rounds} rounds")
                } else {
                    "one round (--quick)".into()
                },
                machine()
            );
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(crate::error::Error::Bench(format!(
            "{} measurement(s) failed: {}",
            failures.len(),
            failures.join(", ")
        )))
    }
}

fn pick<T: Copy>(
    names: &[String],
    parse: impl Fn(&str) -> Option<T>,
    all: &[T],
    what: &str,
) -> crate::error::Result<Vec<T>> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    names
        .iter()
        .map(|n| {
            parse(n).ok_or_else(|| {
                crate::error::Error::Bench(format!(
                    "unknown {what} `{n}`; see `shmplug bench --help`"
                ))
            })
        })
        .collect()
}

/// The median of each figure over the rounds.
fn median(runs: &[Measurement]) -> Measurement {
    let of = |f: fn(&Measurement) -> Option<f64>| stats::median(runs.iter().filter_map(f));
    Measurement {
        tuples_per_s: of(|m| m.tuples_per_s),
        bytes_per_s: of(|m| m.bytes_per_s),
        p50_ns: of(|m| m.p50_ns),
        p99_ns: of(|m| m.p99_ns),
    }
}

fn print_table(
    pairs: &[(Case, Impl)],
    medians: &BTreeMap<(Case, Impl), Measurement>,
    rounds: usize,
    sizes: &Sizes,
) {
    println!("{}", table(pairs, medians));
    println!(
        "\nshmplug / it: shmplug's rate over this row's (above 1: shmplug moves more); for \
         function_rtt, shmplug's p50 over this row's (below 1: shmplug answers sooner)"
    );
    println!(
        "per measurement: {} small tuples, {} calls, {} 1 MiB tuples, {} through the pipeline \
         (json_uds and json_nng a quarter); {} round(s)",
        sizes.small, sizes.calls, sizes.large, sizes.pipeline, rounds
    );
}

/// The results, one row per measurement, the cases apart, figures aligned right.
fn table(pairs: &[(Case, Impl)], medians: &BTreeMap<(Case, Impl), Measurement>) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header([
        "case",
        "impl",
        "tuples/s",
        "GB/s",
        "p50",
        "p99",
        "shmplug / it",
    ]);
    let mut last = None;
    for &(case, imp) in pairs {
        if last.is_some_and(|c| c != case) {
            table.add_row([""; 7]);
        }
        last = Some(case);
        let m = &medians[&(case, imp)];
        let ours = medians.get(&(case, Impl::Shmplug));
        let versus = if imp == Impl::Shmplug {
            String::new()
        } else if case == Case::FunctionRtt {
            ratio(ours.and_then(|o| o.p50_ns), m.p50_ns, "p50 x")
        } else {
            ratio(ours.and_then(|o| o.tuples_per_s), m.tuples_per_s, "x")
        };
        table.add_row([
            case.name().to_owned(),
            imp.name().to_owned(),
            m.tuples_per_s.map_or("-".into(), rate),
            m.bytes_per_s
                .map_or("-".into(), |b| format!("{:.2}", b / 1e9)),
            m.p50_ns.map_or("-".into(), nanos),
            m.p99_ns.map_or("-".into(), nanos),
            versus,
        ]);
    }
    for column in 2..7 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// `ours / theirs` for rates, printed as "x R"; for latencies the same division gives how
/// many times slower (or faster, below 1) shmplug is.
fn ratio(ours: Option<f64>, theirs: Option<f64>, unit: &str) -> String {
    match (ours, theirs) {
        (Some(o), Some(t)) if t > 0.0 => format!("{unit}{:.2}", o / t),
        _ => "-".into(),
    }
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn nanos(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The project's targets, each judged on this run's medians.
fn print_targets(m: &BTreeMap<(Case, Impl), Measurement>) {
    let get = |case, imp, f: fn(&Measurement) -> Option<f64>| m.get(&(case, imp)).and_then(f);
    let tps = |case, imp| get(case, imp, |x| x.tuples_per_s);
    let p50 = |imp| get(Case::FunctionRtt, imp, |x| x.p50_ns);
    let bps = |imp| get(Case::Large1Mib, imp, |x| x.bytes_per_s);
    let small = |imp| tps(Case::SourceSmall, imp);
    let ours = small(Impl::Shmplug);
    let rtt = p50(Impl::Shmplug);
    let div = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let piped = |imp| tps(Case::Pipeline, imp);
    let targets: [(&str, Option<f64>, f64, bool); 11] = [
        (
            "source_small shmplug, M tuples/s",
            ours.map(|r| r / 1e6),
            10.0,
            true,
        ),
        (
            "source_small vs rtrb_inprocess, x",
            div(ours, small(Impl::RtrbInprocess)),
            1.0,
            true,
        ),
        (
            "source_small vs json_uds, x",
            div(ours, small(Impl::JsonUds)),
            10.0,
            true,
        ),
        (
            "source_small vs iceoryx2, x",
            div(ours, small(Impl::Iceoryx2)),
            5.0,
            true,
        ),
        ("function_rtt p50, µs", rtt.map(|n| n / 1e3), 1.0, false),
        (
            "function_rtt p99, µs",
            get(Case::FunctionRtt, Impl::Shmplug, |x| x.p99_ns).map(|n| n / 1e3),
            10.0,
            false,
        ),
        (
            "function_rtt p50 / pingpong p50",
            div(rtt, p50(Impl::Pingpong)),
            5.0,
            false,
        ),
        (
            "function_rtt p50 / iceoryx2 p50",
            div(rtt, p50(Impl::Iceoryx2)),
            0.5,
            false,
        ),
        (
            "large_1mib vs memcpy, x",
            div(bps(Impl::Shmplug), bps(Impl::Memcpy)),
            0.5,
            true,
        ),
        (
            "pipeline vs native (in-process), x",
            div(piped(Impl::Shmplug), piped(Impl::Native)),
            0.5,
            true,
        ),
        (
            "pipeline vs json_uds, x",
            div(piped(Impl::Shmplug), piped(Impl::JsonUds)),
            10.0,
            true,
        ),
    ];
    println!("\ntargets (this run):");
    for (what, value, bound, at_least) in targets {
        let Some(v) = value else { continue };
        let met = if at_least { v >= bound } else { v <= bound };
        let sign = if at_least { ">=" } else { "<=" };
        println!(
            "  {what:<36} {v:>8.2}  (target {sign} {bound}) {}",
            if met { "met" } else { "MISSED" }
        );
    }
    if let Some(json) = div(p50(Impl::JsonUds), rtt) {
        let met = json >= 50.0;
        println!(
            "  {:<36} {json:>8.2}  (target >= 50) {}",
            "json_uds p50 / function_rtt p50",
            if met { "met" } else { "MISSED" }
        );
    }
}

/// "2 CPUs (model), load 0.52" from /proc, best effort.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{cpus} CPUs ({model}), load average {load}")
}

/// How the bench starts its plugin and peers: this program with a hidden subcommand.
pub(crate) fn launcher() -> crate::error::Result<Launcher> {
    let program = std::env::current_exe()
        .map_err(|e| crate::error::Error::io("finding this program", "/proc/self/exe", e))?;
    Ok(Launcher {
        program,
        plugin_args: vec![crate::BENCH_PLUGIN.into()],
        peer_args: vec![crate::BENCH_PEER.into()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_the_figures_and_keeps_the_cases_apart() {
        let pairs = [
            (Case::SourceSmall, Impl::Shmplug),
            (Case::SourceSmall, Impl::JsonUds),
            (Case::FunctionRtt, Impl::Shmplug),
        ];
        let throughput = |r| Measurement {
            tuples_per_s: Some(r),
            ..Measurement::default()
        };
        let medians = BTreeMap::from([
            (pairs[0], throughput(12_500_000.0)),
            (pairs[1], throughput(250_000.0)),
            (
                pairs[2],
                Measurement {
                    tuples_per_s: Some(1_000_000.0),
                    p50_ns: Some(850.0),
                    p99_ns: Some(2_400.0),
                    ..Measurement::default()
                },
            ),
        ]);
        let text = table(&pairs, &medians).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            words(lines[0]),
            "case impl tuples/s GB/s p50 p99 shmplug / it"
        );
        assert_eq!(words(lines[1]), "source_small shmplug 12.50 M - - -");
        assert_eq!(
            words(lines[2]),
            "source_small json_uds 250.0 k - - - x50.00"
        );
        assert_eq!(lines[3].trim(), "", "{text}");
        assert_eq!(
            words(lines[4]),
            "function_rtt shmplug 1.00 M - 850 ns 2.40 µs"
        );
        // Right-aligned: every row ends in the same column.
        let width = lines[0].trim_end().chars().count();
        assert_eq!(lines[2].trim_end().chars().count(), width, "{text}");
    }
}
