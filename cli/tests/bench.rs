//! `shmplug bench`: every case over every implementation measures real figures (with few
//! tuples), the reader's checks catch nothing wrong, and `--format json` prints exactly the
//! documented object.

use std::process::Command;

use shmplug_bench::{self as bench, Case, Impl, Launcher, Sizes};

fn launcher() -> Launcher {
    Launcher {
        program: env!("CARGO_BIN_EXE_shmplug").into(),
        plugin_args: vec!["bench-plugin".into()],
        peer_args: vec!["bench-peer".into()],
    }
}

const TINY: Sizes = Sizes {
    small: 5_000,
    calls: 300,
    large: 6,
    pipeline: 3_000,
    slow_divisor: 2,
};

#[test]
fn every_case_and_implementation_measures() {
    for case in Case::ALL {
        for imp in Impl::ALL {
            if !imp.applies_to(case) || !imp.is_available() {
                continue;
            }
            let m = bench::measure(case, imp, &TINY, &launcher())
                .unwrap_or_else(|e| panic!("{case} / {imp}: {e}"));
            let rate = m.tuples_per_s.expect("every measurement has a rate");
            assert!(rate.is_finite() && rate > 0.0, "{case} / {imp}: {m:?}");
            match case {
                Case::FunctionRtt => {
                    let (p50, p99) = (m.p50_ns.unwrap(), m.p99_ns.unwrap());
                    assert!(p50 > 0.0 && p50 <= p99, "{case} / {imp}: {m:?}");
                    assert_eq!(m.bytes_per_s, None);
                }
                Case::Large1Mib => {
                    let bytes = m.bytes_per_s.expect("a byte rate");
                    assert!((bytes / rate - (1 << 20) as f64).abs() < 1.0, "{m:?}");
                    assert_eq!(m.p50_ns, None);
                }
                Case::SourceSmall | Case::SinkSmall | Case::Pipeline => {
                    assert_eq!((m.bytes_per_s, m.p50_ns, m.p99_ns), (None, None, None));
                }
            }
        }
    }
}

#[test]
fn the_pipeline_runs_over_shmplug_native_and_json_only() {
    // json_nng: the same host over eKuiper's protocol.
    let lines: Vec<Impl> = Impl::ALL
        .into_iter()
        .filter(|i| i.applies_to(Case::Pipeline))
        .collect();
    assert_eq!(
        lines,
        [Impl::Shmplug, Impl::Native, Impl::JsonUds, Impl::JsonNng]
    );
    assert!(Case::ALL.contains(&Case::Pipeline));
    // A line without a pipeline says so rather than measuring something else.
    let err = bench::measure(Case::Pipeline, Impl::RtrbInprocess, &TINY, &launcher());
    assert!(err.is_err());
}

#[test]
fn json_output_is_one_object_with_the_documented_fields() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmplug"))
        .args([
            "bench",
            "--quick",
            "--format",
            "json",
            "--case",
            "function_rtt",
            "--impl",
            "pingpong,rtrb_inprocess,memcpy",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run shmplug bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let results = json["results"].as_array().expect("a results array");
    // memcpy does not apply to function_rtt: one entry per applicable pair.
    assert_eq!(results.len(), 2, "{json}");
    for (row, imp) in results.iter().zip(["rtrb_inprocess", "pingpong"]) {
        let row = row.as_object().unwrap();
        let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "bytes_per_s",
                "case",
                "impl",
                "p50_ns",
                "p99_ns",
                "tuples_per_s"
            ]
        );
        assert_eq!(row["case"], "function_rtt");
        assert_eq!(row["impl"], imp);
        assert!(row["p50_ns"].as_f64().unwrap() > 0.0);
        assert!(row["bytes_per_s"].is_null());
    }
    assert!(json.as_object().unwrap().len() == 1, "{json}");
}

#[test]
fn unknown_names_are_refused_with_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmplug"))
        .args(["bench", "--case", "source_huge"])
        .output()
        .expect("run shmplug bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown case `source_huge`"), "{stderr}");
}

#[test]
fn a_peer_started_by_hand_explains_itself() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmplug"))
        .arg("bench-peer")
        .output()
        .expect("run shmplug bench-peer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run `shmplug bench`"), "{stderr}");
}

#[test]
fn scale_opens_every_instance_and_reports_what_each_costs() {
    let config = bench::scale::ScaleConfig {
        instances: 12,
        rate: 50.0,
        window: std::time::Duration::from_millis(800),
        ring_capacity: 1 << 12,
        stalled: false,
        threads: false,
    };
    let r = bench::scale::measure(config, &launcher()).expect("the scale measurement");
    assert_eq!(r.instances, 12);
    assert_eq!(r.source, "paced");
    // The paced source is polled: its instances share the executor's threads (one per CPU)
    // instead of a thread each.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    assert!(
        r.plugin_threads <= 2 + cpus && r.plugin_threads < 12,
        "{r:?}"
    );
    assert_eq!(r.starved, 0, "every instance delivers: {r:?}");
    assert!(
        r.min_per_instance >= 1 && r.min_per_instance <= r.max_per_instance,
        "{r:?}"
    );
    // The CPU time may be below the clock's tick (10 ms) in so short a window: zero is a
    // measurement, a negative or infinite figure is not.
    assert!(
        r.tuples > 0 && r.cpu_us_per_tuple.is_finite() && r.cpu_us_per_tuple >= 0.0,
        "{r:?}"
    );
    assert!(r.open_s > 0.0, "{r:?}");

    // The command prints the same report as JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_shmplug"))
        .args([
            "scale",
            "--instances",
            "8",
            "--rate",
            "20",
            "--seconds",
            "0.3",
        ])
        .args(["--format", "json"])
        .output()
        .expect("running shmplug scale");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["instances"], 8);
    assert_eq!(json["starved"], 0, "{json}");
    // A source instance holds one ring: one descriptor in the host (the eventfd it waits on;
    // the memfd is closed once sent, and the plugin's side wakes through the doorbell).
    // (Counted in a process of its own: this test binary's other tests open descriptors of
    // their own meanwhile.)
    let fds = json["host_fds_per_instance"].as_f64().expect("a number");
    assert!((0.5..=1.5).contains(&fds), "{json}");
    let out = Command::new(env!("CARGO_BIN_EXE_shmplug"))
        .args(["scale", "--instances", "0"])
        .output()
        .expect("running shmplug scale");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--instances"));
}
