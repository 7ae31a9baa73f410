//! At-least-once sink delivery against the fake plugin: what a killed process had not
//! acknowledged is written again to the restarted one, nothing is lost, and duplicates are
//! counted; at-most-once drops it instead. Function calls in flight at a crash are retried, or
//! fail naming it for a function not safe to repeat.

mod support;

use std::collections::BTreeMap;

use shmplug_host::transport::{Tuple, Value, ValueRef};
use shmplug_host::{Delivery, Error, InstanceSpec, Plugin, SinkStats, SinkWriter};
use support::{WAIT, fake, quick_config, read_lines, wait_for};

#[test]
fn fake_plugin_entry() {
    support::fake::entry();
}

fn kill_9(plugin: &Plugin) -> u32 {
    let pid = plugin.status().pid.expect("a running process");
    let raw = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(raw, rustix::process::Signal::KILL).expect("kill -9");
    pid
}

fn send(writer: &mut SinkWriter, n: i64) {
    writer
        .send_timeout(&Tuple::new(n).with_field("n", n), WAIT)
        .unwrap();
}

/// How many times the sink wrote each `n`.
fn counts(lines: &[String]) -> BTreeMap<i64, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts.entry(line.parse().unwrap()).or_default() += 1;
    }
    counts
}

/// Sends 200 tuples to a sink that stalls after 50, kills its process once it has those 50,
/// and sends 50 more to the restarted one.
fn stall_kill_and_send_more(fake: &support::Fake, plugin: &Plugin, writer: &mut SinkWriter) {
    for n in 0..200 {
        send(writer, n);
    }
    writer.flush();
    wait_for("the sink to collect 50", || {
        read_lines(&fake.path("sink")).len() == 50
    });
    let first = kill_9(plugin);
    wait_for("the new process", || {
        plugin.status().pid.is_some_and(|p| p != first)
    });
    for n in 200..250 {
        send(writer, n);
    }
}

/// A sink that stalls after 50 tuples, killed with 150 more in its ring: at least once, the
/// 150 go to the new process, after the 50th again: the stalled process never came back for
/// the next tuple, so it had not acknowledged that one (a counted duplicate).
#[test]
fn at_least_once_replays_what_a_killed_sink_had_not_collected() {
    let fake = fake("alo", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut writer = plugin
        .sink(InstanceSpec::new("collect").property("stall_after", 50))
        .unwrap();
    assert_eq!(writer.delivery(), Delivery::AtLeastOnce);
    stall_kill_and_send_more(&fake, &plugin, &mut writer);
    let stats = writer.stats();
    writer.stop().unwrap();
    let lines = read_lines(&fake.path("sink"));
    let got: Vec<i64> = lines.iter().map(|l| l.parse().unwrap()).collect();
    let expected: Vec<i64> = (0..50).chain(49..250).collect();
    assert_eq!(got, expected);
    assert_eq!(
        stats,
        SinkStats {
            sent: 250,
            errors: 0,
            replayed: 151,
            duplicates: 1
        }
    );
    let status = plugin.status();
    assert!(status.instances.is_empty());
}

#[test]
fn at_most_once_drops_what_a_killed_sink_had_not_collected() {
    let fake = fake("amo", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut writer = plugin
        .sink(InstanceSpec::new("collect").property("stall_after", 50))
        .unwrap();
    writer.set_delivery(Delivery::AtMostOnce);
    stall_kill_and_send_more(&fake, &plugin, &mut writer);
    assert_eq!(
        writer.stats(),
        SinkStats {
            sent: 250,
            ..SinkStats::default()
        }
    );
    writer.stop().unwrap();
    let got: Vec<i64> = read_lines(&fake.path("sink"))
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let expected: Vec<i64> = (0..50).chain(200..250).collect();
    assert_eq!(got, expected);
}

/// The kill matrix: `kill -9` of the plugin at random points of a stream, many times; every
/// tuple reaches the sink at least once, and no more of them twice than the writer counted.
#[test]
fn kill_9_at_random_points_loses_nothing() {
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let fake = fake("matrix", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut writer = plugin.sink(InstanceSpec::new("collect")).unwrap();
    const TUPLES: i64 = 6000;
    const KILLS: usize = 12;
    let mut at: Vec<i64> = (0..KILLS).map(|_| rng.i64(1..TUPLES)).collect();
    at.sort_unstable();
    let mut killed = Vec::new();
    for n in 0..TUPLES {
        if at.first() == Some(&n) {
            at.remove(0);
            // Publish what was written so the process is killed with tuples in hand, and
            // wait until the process killed last time was replaced.
            writer.flush();
            wait_for("a running process", || {
                plugin.status().pid.is_some_and(|p| !killed.contains(&p))
            });
            killed.push(kill_9(&plugin));
        }
        send(&mut writer, n);
    }
    let stats = writer.stats();
    writer.stop().unwrap();
    let counts = counts(&read_lines(&fake.path("sink")));
    for n in 0..TUPLES {
        assert!(
            counts.contains_key(&n),
            "tuple {n} lost (seed {seed}, {stats:?})"
        );
    }
    let twice: u64 = counts.values().map(|c| c - 1).sum();
    assert!(
        twice <= stats.duplicates,
        "{twice} duplicates, counted {stats:?} (seed {seed})"
    );
    assert!(stats.duplicates <= killed.len() as u64, "{stats:?}");
    assert_eq!(plugin.status().restarts, killed.len() as u64);
    println!("{} kills, {stats:?}, {twice} duplicates seen", killed.len());
}

/// Function calls in flight when the process dies: `echo` runs them again on the restarted
/// process; `once`, which its plugin declared not safe to repeat, fails each of them with an
/// error naming the crash (never a silent null), and the calls not sent yet run on the new
/// process. A client can also turn retries off for a function its plugin did not mark.
#[test]
fn calls_in_flight_at_a_crash_are_retried_or_fail_naming_it() {
    for (symbol, client_retries, retried) in [
        ("echo", true, true),
        ("once", true, false),
        ("echo", false, false),
    ] {
        let fake = fake(&format!("fn-{symbol}-{client_retries}"), "ok");
        let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
        let mut client = plugin
            .function(InstanceSpec::new(symbol).property("crash_after", 50))
            .unwrap();
        client.set_retry(client_retries);
        let args: Vec<[ValueRef<'_>; 1]> = (0..300).map(|i| [ValueRef::Int(i)]).collect();
        let calls: Vec<&[ValueRef<'_>]> = args.iter().map(|a| &a[..]).collect();
        let results = client.call_batch_timeout(&calls, WAIT).unwrap();
        assert_eq!(results.len(), 300);
        let mut interrupted = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(value) => assert_eq!(value, Value::Int(i as i64), "{symbol}"),
                Err(e @ Error::CallInterrupted { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.contains("died") && text.contains("exited or crashed"),
                        "{text}"
                    );
                    interrupted.push(i);
                }
                Err(e) => panic!("{symbol}: call {i}: {e}"),
            }
        }
        if retried {
            assert!(interrupted.is_empty(), "{symbol}: {interrupted:?}");
        } else {
            // The call the process died on, and those after it already written, in a row.
            assert_eq!(interrupted.first(), Some(&50), "{symbol}");
            let last = *interrupted.last().unwrap();
            assert_eq!(interrupted, (50..=last).collect::<Vec<_>>());
        }
        assert_eq!(plugin.status().restarts, 1, "{symbol}");
    }
}
