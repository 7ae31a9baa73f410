//! A hostile plugin cannot crash, corrupt, bloat or hang its host.
//!
//! Each test runs one attack of `hostile-plugin` (see `tests/bin/hostile_plugin.rs`) under a
//! real host, the `hostile-host` process, beside a healthy mirror plugin, and checks what the
//! host reports: it exits normally (a crash would be a signal exit, seen here, not a dead test
//! harness), every tuple it accepted is exactly what the plugin meant to send, the error names
//! plugin, symbol and instance and every later receive repeats it, the healthy plugin kept
//! delivering, and the host's descriptors and resident memory did not grow. A plugin that stops
//! itself (SIGSTOP) is noticed within the ping time-out; garbage, oversized and wrong-version
//! control frames end the plugin with an error that says what was wrong; a flood of control
//! frames carrying descriptors leaves the host's descriptor table as it was; a garbage function
//! reply, or a valid batch of replies to calls never made, fails that call and every later one;
//! and a late answer to a timed-out call, batched with the next call's, is skipped, not taken.

#![forbid(unsafe_code)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use serde_json::Value;

const HOST: &str = env!("CARGO_BIN_EXE_hostile-host");
const HOSTILE: &str = env!("CARGO_BIN_EXE_hostile-plugin");
const MIRROR: &str = env!("CARGO_BIN_EXE_mirror-plugin");
const FLOODER: &str = env!("CARGO_BIN_EXE_ping-flooder");

/// Bound on one host run (the host bounds itself at 60 s).
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Resident memory the host may gain during an attack: allocator noise, not the 1 GiB copy a
/// rewritten length used to cause.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// Runs the host with attack `mode`, asserts it exited with status 0, returns its report.
fn run(mode: &str) -> Value {
    let plugin = if mode == "ping-flood" {
        FLOODER
    } else {
        HOSTILE
    };
    let mut out = tempfile::tempfile().expect("temporary file");
    let mut child = Command::new(HOST)
        .args([plugin, MIRROR, mode])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("cloning the file"))
        .spawn()
        .expect("spawning hostile-host");
    // A zombie keeps its pid, so this works even if the host already exited.
    let pidfd = pidfd_open(Pid::from_child(&child), PidfdFlags::empty()).expect("pidfd_open");
    let deadline = Instant::now() + RUN_LIMIT;
    let exited = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => break false,
            Ok(_) => break true,
            Err(Errno::INTR) => continue,
            Err(e) => panic!("polling the host's pidfd: {e}"),
        }
    };
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{mode}: the host hung for {RUN_LIMIT:?}");
    }
    let status = child.wait().expect("reaping the host");
    assert!(
        status.success(),
        "{mode}: the host did not exit normally: {status} (signal {:?})",
        status.signal()
    );
    let mut text = String::new();
    std::io::Seek::rewind(&mut out).expect("rewinding");
    out.read_to_string(&mut text).expect("reading the report");
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{mode}: report {text:?}: {e}"))
}

/// What every attack must leave true.
fn assert_contained(mode: &str, report: &Value) {
    assert_eq!(
        report["bad"],
        Value::Array(vec![]),
        "{mode}: the host accepted tuples that differ from what was sent: {report}"
    );
    assert!(
        report["healthy_after"].as_u64() >= Some(50),
        "{mode}: the healthy plugin stopped delivering: {report}"
    );
    assert!(
        report["fds_after"].as_u64() <= report["fds_before"].as_u64(),
        "{mode}: the host's descriptors grew: {report}"
    );
    let (before, after) = (
        report["rss_before_kib"].as_u64().unwrap_or(0),
        report["rss_after_kib"].as_u64().unwrap_or(u64::MAX),
    );
    assert!(
        after <= before + RSS_SLACK_KIB,
        "{mode}: the host's memory grew: {report}"
    );
}

/// The host reported an error that names plugin, symbol and instance, and says what failed.
fn assert_names_the_culprit(mode: &str, report: &Value) {
    let error = report["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{mode}: no error reported: {report}"));
    let instance = report["instance"].as_u64().expect("instance id");
    for needle in [
        "plugin `hostile`".to_owned(),
        format!("`{mode}`"),
        format!("instance {instance}"),
    ] {
        assert!(
            error.contains(&needle),
            "{mode}: {error:?} lacks {needle:?}"
        );
    }
    assert!(
        !error.contains("without error information"),
        "{mode}: the error must say what failed: {error}"
    );
}

/// An attack that leaves an invalid record: the host must report it, naming the culprit.
fn assert_caught(mode: &str) -> Value {
    let report = run(mode);
    assert_contained(mode, &report);
    assert_eq!(report["stopped"], Value::Bool(true), "{mode}: {report}");
    assert_names_the_culprit(mode, &report);
    assert_eq!(
        report["again_same"],
        Value::Bool(true),
        "{mode}: later receives must fail the same way: {report}"
    );
    report
}

#[test]
fn a_record_rewritten_while_the_host_reads_it_is_contained() {
    assert_caught("rewrite");
}

#[test]
fn a_time_of_check_sweep_over_the_field_lengths_is_contained() {
    assert_caught("toctou");
}

#[test]
fn a_scribbled_write_position_is_caught() {
    for mode in [
        "write-huge",
        "write-unaligned",
        "write-backwards",
        "write-past-capacity",
    ] {
        let report = assert_caught(mode);
        assert_eq!(report["accepted"], 5, "{mode}: the good records first");
    }
}

#[test]
fn garbage_records_are_caught() {
    for mode in ["header-garbage", "tuple-garbage"] {
        let report = assert_caught(mode);
        assert_eq!(report["accepted"], 5, "{mode}: the good records first");
    }
}

#[test]
fn a_hole_punched_in_the_ring_is_caught() {
    assert_caught("punch-hole");
}

#[test]
fn the_seals_refuse_resizing_and_new_seals() {
    for mode in ["truncate-shrink", "truncate-grow", "add-seals"] {
        let report = run(mode);
        assert_contained(mode, &report);
        assert_eq!(report["stopped"], Value::Bool(true), "{mode}: {report}");
        assert_eq!(report["refused"], Value::Bool(true), "{mode}: {report}");
        assert_eq!(report["ended"], Value::Bool(true), "{mode}: {report}");
        assert_eq!(report["accepted"], 1, "{mode}: {report}");
    }
}

#[test]
fn a_plugin_that_stops_itself_is_noticed_within_the_ping_time_out() {
    let report = run("sigstop");
    assert_contained("sigstop", &report);
    assert_names_the_culprit("sigstop", &report);
    // Pings go out every 200 ms; allow a loaded machine two seconds on top.
    let limit = report["ping_timeout_ms"].as_u64().expect("time-out") + 200 + 2000;
    let noticed = report["noticed_ms"].as_u64().expect("noticed");
    assert!(
        noticed <= limit,
        "sigstop: noticed after {noticed} ms, limit {limit} ms: {report}"
    );
}

#[test]
fn hostile_control_frames_are_contained() {
    // Each of these ends the plugin's control channel: the host kills the plugin and says why.
    for mode in [
        "control-garbage",
        "control-oversized",
        "control-wrong-version",
    ] {
        let report = run(mode);
        assert_contained(mode, &report);
        assert_names_the_culprit(mode, &report);
        assert_eq!(report["accepted"], 5, "{mode}: the good records first");
    }
}

#[test]
fn thousands_of_control_frames_carrying_descriptors_leak_nothing() {
    let report = run("control-fds");
    assert_contained("control-fds", &report);
    // The flood is answered or refused; either way the stream then ends normally.
    assert_eq!(report["ended"], Value::Bool(true), "{report}");
    assert_eq!(report["accepted"], 6, "{report}");
    assert_eq!(report["sent"], 2000, "the whole flood went out: {report}");
    // One warning for the flood (and at most one more with the count of the rest), not one
    // per frame.
    let warnings = report["warnings"].as_u64().expect("a warning count");
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for 2000 bad frames: {report}"
    );
}

#[test]
fn a_garbage_function_reply_poisons_the_reply_ring() {
    let report = assert_caught("bad-reply");
    assert_eq!(report["accepted"], 1, "the first answer is good: {report}");
}

#[test]
fn a_late_answer_in_a_batch_of_replies_is_not_taken_for_the_next_call() {
    use shmplug_host::transport::{Value as TupleValue, ValueRef};
    use shmplug_host::{Error, InstanceSpec, Plugin, PluginSpec, SupervisorConfig};
    let config = SupervisorConfig {
        handle_spin: Duration::from_micros(5),
        ..SupervisorConfig::default()
    };
    let plugin = Plugin::start(PluginSpec::new("hostile", HOSTILE), config).unwrap();
    let mut late = plugin.function(InstanceSpec::new("late")).unwrap();
    // The plugin holds this answer until the next call is written: the call times out.
    let first = late.call_timeout(&[ValueRef::Int(1)], Duration::from_millis(100));
    assert!(matches!(first, Err(Error::TimedOut { .. })), "{first:?}");
    // Its late answer comes first, in one batch with this call's: skipped, not taken.
    let wait = Duration::from_secs(30);
    for n in 2..5 {
        let answer = late.call_timeout(&[ValueRef::Int(n)], wait).unwrap();
        assert_eq!(answer, TupleValue::Int(n));
    }
    late.stop().unwrap();
    plugin.shutdown();
}

#[test]
fn a_batch_of_replies_to_calls_never_made_poisons_the_reply_ring() {
    let report = assert_caught("over-answer");
    assert_eq!(report["accepted"], 1, "the first answer is good: {report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("answers 5 calls") && error.contains("only 1 were made"),
        "{report}"
    );
}

#[test]
fn a_plugin_that_floods_pings_and_never_reads_is_noticed_within_the_ping_time_out() {
    let report = run("ping-flood");
    assert_contained("ping-flood", &report);
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("it does not read its control socket: sending it a p"),
        "ping-flood: {report}"
    );
    // The send that blocks gives up after the ping time-out; allow a loaded machine two
    // seconds on top (it took 15 s when the host's sends could block for ever).
    let limit = report["ping_timeout_ms"].as_u64().expect("time-out") + 2000;
    let noticed = report["noticed_ms"].as_u64().expect("noticed");
    assert!(
        noticed <= limit,
        "ping-flood: noticed after {noticed} ms, limit {limit} ms: {report}"
    );
}
