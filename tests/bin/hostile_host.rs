//! Child for `host_hostile`: a host process that runs one attack of the hostile plugin beside a
//! healthy mirror plugin, and reports what it saw as one JSON line on stdout.
//!
//! `hostile-host HOSTILE_EXECUTABLE MIRROR_EXECUTABLE MODE` starts both plugins under one host,
//! reads the mirror's `random` source, then opens the hostile source `MODE` and reads it until
//! it fails or ends, checking every tuple it accepts (see `hostile_plugin.rs`); then reads the
//! healthy source again. It counts its own descriptors and resident memory before the attack
//! and after the hostile instance is stopped. A crash of this process shows as a signal exit in
//! the test, which does not die with it.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use shmplug_host::transport::{Value, ValueRef};
use shmplug_host::{InstanceSpec, Plugin, PluginSpec, SourceReader, SupervisorConfig};
use tracing_subscriber::layer::SubscriberExt as _;

/// Healthy tuples to read after the attack.
const HEALTHY_AFTER: u64 = 50;
/// How long a plugin may leave a ping unanswered.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on the whole run.
const BUDGET: Duration = Duration::from_secs(60);

/// Warnings the host logged (reported as `warnings`: a flood of bad frames must not become a
/// flood of warnings).
static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// Counts the host's warning events.
struct CountWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountWarnings))
        .expect("installing the warning counter");
    let args: Vec<String> = std::env::args().collect();
    let [_, hostile_exe, mirror_exe, mode] = &args[..] else {
        panic!("usage: hostile-host HOSTILE_EXECUTABLE MIRROR_EXECUTABLE MODE");
    };
    let deadline = Instant::now() + BUDGET;
    let config = SupervisorConfig {
        ping_interval: Duration::from_millis(200),
        ping_timeout: PING_TIMEOUT,
        ring_capacity: 1 << 16,
        handle_spin: Duration::from_micros(5),
        max_restarts: Some(0),
        ..SupervisorConfig::default()
    };
    let mirror = Plugin::start(PluginSpec::new("mirror", mirror_exe), config.clone())
        .expect("starting mirror");
    let mut healthy = mirror
        .source(
            InstanceSpec::new("random")
                .property("interval", 1)
                .property("pattern", json!({"a": 1})),
        )
        .expect("starting the healthy source");
    let hostile =
        Plugin::start(PluginSpec::new("hostile", hostile_exe), config).expect("starting hostile");
    let mut healthy_before = 0;
    while healthy_before < 10 {
        healthy_before += read_healthy(&mut healthy, deadline);
    }
    let fds_before = open_fds();
    let rss_before = rss_kib();

    if mode == "ping-flood" {
        let report = ping_flood(&hostile, &mut healthy, deadline, fds_before, rss_before);
        println!("{report}");
        drop(healthy);
        hostile.shutdown();
        mirror.shutdown();
        return;
    }
    if mode == "bad-reply" || mode == "over-answer" {
        let report = function_attack(
            &hostile,
            mode,
            &mut healthy,
            deadline,
            fds_before,
            rss_before,
        );
        println!("{report}");
        drop(healthy);
        hostile.shutdown();
        mirror.shutdown();
        return;
    }
    let mut reader = hostile
        .source(InstanceSpec::new(mode.as_str()))
        .expect("starting the hostile source");
    let instance = reader.instance_id();
    let opened = Instant::now();
    let mut accepted = 0u64;
    let mut bad = Vec::new();
    let mut refused = None;
    let mut sent = None;
    let mut error = None;
    let mut again_same = false;
    let mut noticed_ms = None;
    let mut ended = false;
    let mut healthy_during = 0;
    while Instant::now() < deadline {
        let failed = match reader.recv_timeout(Duration::from_millis(5)) {
            Ok(Some(view)) => {
                accepted += 1;
                if let Some(r) = view.get("refused") {
                    refused = r.as_bool();
                }
                if let Some(n) = view.get("sent") {
                    sent = n.as_i64();
                }
                if let Err(what) = check(&view) {
                    bad.push(what);
                }
                None
            }
            Ok(None) => None,
            Err(e) if e.is_end_of_stream() => {
                ended = true;
                break;
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(first) = failed {
            // The ring is poisoned for good: every kind of receive says the same.
            let later = [
                reader.try_recv().map(|t| t.is_some()),
                reader
                    .recv_timeout(Duration::from_millis(2))
                    .map(|t| t.is_some()),
                reader.recv().map(|_| true),
            ];
            again_same = later
                .iter()
                .all(|r| r.as_ref().is_err_and(|e| e.to_string() == first));
            error = Some(first);
            noticed_ms = Some(opened.elapsed().as_millis() as u64);
            break;
        }
        healthy_during += read_healthy_now(&mut healthy);
    }
    let stopped = reader.stop().map_err(|e| e.to_string());

    let (healthy_after, fds_after) = after_attack(&mut healthy, deadline, fds_before);
    let rss_after = rss_kib();
    let report = json!({
        "mode": mode,
        "instance": instance,
        "accepted": accepted,
        "bad": bad,
        "refused": refused,
        "sent": sent,
        "error": error,
        "again_same": again_same,
        "noticed_ms": noticed_ms,
        "ping_timeout_ms": PING_TIMEOUT.as_millis() as u64,
        "ended": ended,
        "stopped": stopped.is_ok(),
        "healthy_during": healthy_during,
        "healthy_after": healthy_after,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "warnings": WARNINGS.load(Ordering::Relaxed),
    });
    println!("{report}");
    drop(healthy);
    hostile.shutdown();
    mirror.shutdown();
}

/// After an attack: reads [`HEALTHY_AFTER`] tuples from the healthy plugin, then waits (bounded)
/// for the host's descriptors to fall back to `fds_before` (those of a stopped instance close
/// once the plugin confirmed the stop, which the supervisor may still be finishing on its
/// thread). Returns the tuples read and the descriptors then open.
fn after_attack(healthy: &mut SourceReader, deadline: Instant, fds_before: usize) -> (u64, usize) {
    let mut healthy_after = 0;
    while healthy_after < HEALTHY_AFTER && Instant::now() < deadline {
        healthy_after += read_healthy(healthy, deadline);
    }
    let mut fds_after = open_fds();
    while fds_after > fds_before && Instant::now() < deadline {
        std::thread::yield_now();
        fds_after = open_fds();
    }
    (healthy_after, fds_after)
}

/// Waits for the supervisor to give up on a plugin that floods it with pings and never reads
/// the answers (`ping-flooder`), and reports how long that took and what it said.
fn ping_flood(
    hostile: &Plugin,
    healthy: &mut SourceReader,
    deadline: Instant,
    fds_before: usize,
    rss_before: u64,
) -> serde_json::Value {
    let flooding = Instant::now();
    let mut noticed_ms = None;
    let mut error = None;
    let mut healthy_during = 0;
    while Instant::now() < deadline {
        let status = hostile.status();
        if status.restarts > 0 || status.pid.is_none() {
            noticed_ms = Some(flooding.elapsed().as_millis() as u64);
            error = status.last_error;
            break;
        }
        healthy_during += read_healthy_now(healthy);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (healthy_after, fds_after) = after_attack(healthy, deadline, fds_before);
    json!({
        "mode": "ping-flood",
        "bad": Vec::<String>::new(),
        "error": error,
        "noticed_ms": noticed_ms,
        "ping_timeout_ms": PING_TIMEOUT.as_millis() as u64,
        "healthy_during": healthy_during,
        "healthy_after": healthy_after,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_kib(),
    })
}

/// Calls the `bad-reply` (or `over-answer`) function three times: the first answer is good,
/// the second meets the garbage reply (or the batch answering calls never made), the third
/// must fail the same way (the reply ring is poisoned).
fn function_attack(
    hostile: &Plugin,
    mode: &str,
    healthy: &mut SourceReader,
    deadline: Instant,
    fds_before: usize,
    rss_before: u64,
) -> serde_json::Value {
    let mut client = hostile
        .function(InstanceSpec::new(mode))
        .expect("starting the function");
    let instance = client.instance_id();
    let wait = Duration::from_secs(20);
    let first = client.call_timeout(&[ValueRef::Int(1)], wait);
    let good =
        matches!(&first, Ok(Value::Bytes(b)) if b.len() == 700 && b.iter().all(|&x| x == 0x5a));
    let second = client
        .call_with(&[ValueRef::Int(2)], wait, |v| v.as_bytes().map(<[u8]>::len))
        .map_err(|e| e.to_string());
    let third = client
        .call_timeout(&[ValueRef::Int(3)], wait)
        .map_err(|e| e.to_string());
    let again_same = second.is_err() && third.as_ref().err() == second.as_ref().err();
    let stopped = client.stop().is_ok();
    let (healthy_after, fds_after) = after_attack(healthy, deadline, fds_before);
    json!({
        "mode": mode,
        "instance": instance,
        "accepted": u64::from(good),
        "bad": if good { vec![] } else { vec![format!("{first:?}")] },
        "error": second.err(),
        "again_same": again_same,
        "stopped": stopped,
        "healthy_after": healthy_after,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_kib(),
    })
}

/// Compares an accepted tuple with the one the hostile plugin means to send.
fn check(view: &shmplug_host::transport::TupleView<'_>) -> Result<(), String> {
    let blob = view
        .get("blob")
        .and_then(|v| v.as_bytes())
        .ok_or("no blob")?
        .to_vec();
    if blob.len() != 700 || blob.iter().any(|&b| b != 0x5a) {
        return Err(format!("blob of {} bytes", blob.len()));
    }
    let s = view
        .get("s")
        .and_then(|v| v.as_str())
        .ok_or("no s")?
        .to_owned();
    if s.len() != 300 || s.chars().any(|c| c != 'q') {
        return Err(format!("s of {} bytes", s.len()));
    }
    Ok(())
}

/// Reads one healthy tuple, waiting up to the deadline; 1 if one came.
fn read_healthy(reader: &mut SourceReader, deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    match reader.recv_timeout(left) {
        Ok(Some(view)) => u64::from(view.get("a").is_some()),
        Ok(None) => 0,
        Err(e) => panic!("the healthy source failed: {e}"),
    }
}

/// Reads whatever healthy tuples are there now.
fn read_healthy_now(reader: &mut SourceReader) -> u64 {
    let mut n = 0;
    loop {
        match reader.try_recv() {
            Ok(Some(view)) => n += u64::from(view.get("a").is_some()),
            Ok(None) => return n,
            Err(e) => panic!("the healthy source failed: {e}"),
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("listing descriptors")
        .count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
