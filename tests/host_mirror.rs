//! The mirror example plugin, installed as a package and run as a real process under the host:
//! its source's tuples reach the host, the host's tuples reach its sink's file, and its
//! function answers every call, in order and unchanged.

#![forbid(unsafe_code)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use shmplug_host::transport::{Tuple, Value, ValueRef};
use shmplug_host::{InstanceSpec, Plugin};
use support::WAIT;
use support::host::{Installed, config, install_mirror, shut_down};

const MIRROR: &str = env!("CARGO_BIN_EXE_mirror-plugin");
const COUNT: usize = 1000;

fn start() -> (Installed, Plugin) {
    let installed = install_mirror(MIRROR);
    let plugin = Plugin::start(installed.spec.clone(), config()).expect("starting mirror");
    let hello = plugin.hello().expect("a running process");
    assert_eq!(hello.plugin_name, "mirror");
    (installed, plugin)
}

#[test]
fn source_tuples_reach_the_host_until_the_end_of_the_stream() {
    let (_installed, plugin) = start();
    let mut reader = plugin
        .source(
            InstanceSpec::new("random")
                .property("interval", 0)
                .property("count", COUNT as u64)
                .property("rngSeed", 1)
                .property("pattern", json!({"a": 1, "s": "x"})),
        )
        .expect("starting the random source");
    let mut tuples: Vec<Tuple> = Vec::with_capacity(COUNT);
    loop {
        match reader.recv_timeout(WAIT) {
            Ok(Some(view)) => tuples.push(view.to_owned()),
            Ok(None) => panic!("no tuple within {WAIT:?} after {} tuples", tuples.len()),
            Err(e) if e.is_end_of_stream() => break,
            Err(e) => panic!("after {} tuples: {e}", tuples.len()),
        }
        assert!(tuples.len() <= COUNT, "more than {COUNT} tuples");
    }
    assert_eq!(tuples.len(), COUNT);
    // The source draws `a` as 1 + uniform(0 .. 100) (the default `seed`) from a generator
    // seeded with `rngSeed`: the host sees exactly that stream, in order.
    let mut rng = fastrand::Rng::with_seed(1);
    let mut last = 0;
    for (i, tuple) in tuples.iter().enumerate() {
        let expected = BTreeMap::from([
            ("a".to_owned(), Value::Int(1 + rng.i64(0..100))),
            ("s".to_owned(), Value::from("x")),
        ]);
        assert_eq!(tuple.fields, expected, "tuple {i}");
        assert!(tuple.timestamp >= last && tuple.timestamp > 0, "tuple {i}");
        last = tuple.timestamp;
    }
    // The stream stays ended.
    let again = reader
        .recv_timeout(Duration::from_millis(50))
        .map(|t| t.map(|v| v.to_owned()));
    assert!(
        matches!(&again, Err(e) if e.is_end_of_stream()),
        "{again:?}"
    );
    reader.stop().expect("stopping the ended source");
    shut_down(plugin);
}

fn sink_tuple(i: i64) -> Tuple {
    Tuple::new(1_700_000_000_000_000_000 + i)
        .with_field("n", i)
        .with_field("name", format!("t{i}"))
        .with_field("half", i as f64 + 0.5)
        .with_field("even", i % 2 == 0)
}

#[test]
fn host_tuples_reach_the_file_sink_in_order() {
    let (installed, plugin) = start();
    let path = installed.scratch("out.jsonl");
    // Lines are only written out when the sink closes: the stop must wait for that.
    let mut writer = plugin
        .sink(
            InstanceSpec::new("file")
                .property("path", path.to_str().expect("utf-8 path"))
                .property("interval", "1h"),
        )
        .expect("starting the file sink");
    for i in 0..COUNT as i64 {
        writer
            .send_timeout(&sink_tuple(i), WAIT)
            .unwrap_or_else(|e| panic!("sending tuple {i}: {e}"));
    }
    writer.stop().expect("the sink confirms its stop");
    let text = std::fs::read_to_string(&path).expect("reading the sink's file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), COUNT, "lines in {}", path.display());
    assert!(text.ends_with('\n'));
    for (i, line) in lines.iter().enumerate() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {i} {line:?}: {e}"));
        let n = i as i64;
        assert_eq!(
            parsed,
            json!({"n": n, "name": format!("t{n}"), "half": n as f64 + 0.5, "even": n % 2 == 0}),
            "line {i}"
        );
    }
    shut_down(plugin);
}

#[test]
fn echo_answers_single_and_batched_calls_with_their_arguments() {
    let (_installed, plugin) = start();
    let mut echo = plugin
        .function(InstanceSpec::new("echo"))
        .expect("starting the echo function");
    let bytes = [0u8, 1, 254, 255];
    let singles = [
        (ValueRef::Null, Value::Null),
        (ValueRef::Bool(true), Value::Bool(true)),
        (ValueRef::Int(-7), Value::Int(-7)),
        (ValueRef::Int(i64::MAX), Value::Int(i64::MAX)),
        (ValueRef::Float(2.5), Value::Float(2.5)),
        (ValueRef::String("héllo"), Value::from("héllo")),
        (ValueRef::Bytes(&bytes), Value::Bytes(bytes.to_vec())),
        (
            ValueRef::Timestamp(1_700_000_000),
            Value::Timestamp(1_700_000_000),
        ),
    ];
    for (arg, expected) in singles {
        let answer = echo
            .call_timeout(&[arg], WAIT)
            .unwrap_or_else(|e| panic!("echo({arg:?}): {e}"));
        assert_eq!(answer, expected, "echo({arg:?})");
    }
    // Two arguments: the function's validation error comes back as this call's error.
    let wrong = echo.call_timeout(&[ValueRef::Int(1), ValueRef::Int(2)], WAIT);
    let message = wrong.expect_err("echo with two arguments").to_string();
    assert!(message.contains("only supports 1 parameter"), "{message}");

    let strings: Vec<String> = (0..500).map(|i| format!("s{i}")).collect();
    let args: Vec<[ValueRef<'_>; 1]> = (0..500)
        .map(|i| {
            if i % 2 == 0 {
                [ValueRef::Int(i)]
            } else {
                [ValueRef::String(&strings[i as usize])]
            }
        })
        .collect();
    let calls: Vec<&[ValueRef<'_>]> = args.iter().map(|a| a.as_slice()).collect();
    for round in 0..3 {
        let answers = echo
            .call_batch_timeout(&calls, WAIT)
            .unwrap_or_else(|e| panic!("batch {round}: {e}"));
        assert_eq!(answers.len(), calls.len(), "batch {round}");
        for (i, (answer, arg)) in answers.into_iter().zip(&args).enumerate() {
            let answer = answer.unwrap_or_else(|e| panic!("batch {round} call {i}: {e}"));
            let expected = match arg[0] {
                ValueRef::Int(n) => Value::Int(n),
                ValueRef::String(s) => Value::from(s),
                other => unreachable!("{other:?}"),
            };
            assert_eq!(answer, expected, "batch {round} call {i}");
        }
    }
    // A single call after the batches still lines up with its answer.
    assert_eq!(
        echo.call_timeout(&[ValueRef::Int(42)], WAIT)
            .expect("echo(42)"),
        Value::Int(42)
    );
    echo.stop().expect("stopping the function");
    assert_eq!(plugin.status().restarts, 0);
    shut_down(plugin);
}

/// The kill matrix with the mirror's rewindable `counter` source: `kill -9` of the plugin at
/// random points of the stream, and the host still reads every number exactly once, in order
/// (each restarted instance is rewound to the last number handed on).
#[test]
fn the_counter_source_neither_loses_nor_repeats_across_kill_9() {
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (_installed, plugin) = start();
    const COUNT: i64 = 20_000;
    const KILLS: usize = 8;
    let mut reader = plugin
        .source(
            InstanceSpec::new("counter")
                .property("interval", 0)
                .property("count", COUNT),
        )
        .expect("starting the counter source");
    assert!(reader.is_rewindable());
    let mut at: Vec<i64> = (0..KILLS).map(|_| rng.i64(1..COUNT - 1)).collect();
    at.sort_unstable();
    let mut killed: Vec<u32> = Vec::new();
    let mut expected = 0;
    loop {
        if at.first() == Some(&expected) {
            at.remove(0);
            let deadline = std::time::Instant::now() + WAIT;
            let pid = loop {
                match plugin.status().pid {
                    Some(pid) if !killed.contains(&pid) => break pid,
                    _ if std::time::Instant::now() > deadline => panic!("no new process"),
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            let raw = rustix::process::Pid::from_raw(pid as i32).expect("pid");
            rustix::process::kill_process(raw, rustix::process::Signal::KILL).expect("kill -9");
            killed.push(pid);
        }
        match reader.recv_timeout(WAIT) {
            Ok(Some(view)) => {
                let n = view.get("n").and_then(|v| v.as_i64()).expect("an int n");
                assert_eq!(n, expected, "seed {seed}, after {} kills", killed.len());
                expected += 1;
            }
            Ok(None) => panic!("no tuple within {WAIT:?} after {expected}"),
            Err(e) if e.is_end_of_stream() => break,
            Err(e) => panic!("seed {seed}, after {expected}: {e}"),
        }
    }
    assert_eq!(expected, COUNT, "seed {seed}");
    drop(reader);
    shut_down(plugin);
}

/// A kill test of the file sink, which buffers its lines: `kill -9` of the plugin at random
/// points while the host writes, and every tuple is in the file at least once when the sink
/// stops (its tuples are acknowledged only once written out, so what a killed process still
/// had in its buffer is written again by the restarted one).
#[test]
fn the_file_sink_loses_no_buffered_line_across_kill_9() {
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (installed, plugin) = start();
    let path = installed.scratch("killed.jsonl");
    const COUNT: i64 = 20_000;
    const KILLS: usize = 6;
    // Lines are written out only when the runtime flushes the sink (or it closes).
    let mut writer = plugin
        .sink(
            InstanceSpec::new("file")
                .property("path", path.to_str().expect("utf-8 path"))
                .property("interval", "1h"),
        )
        .expect("starting the file sink");
    let mut at: Vec<i64> = (0..KILLS).map(|_| rng.i64(1..COUNT)).collect();
    at.sort_unstable();
    let mut killed: Vec<u32> = Vec::new();
    for i in 0..COUNT {
        if at.first() == Some(&i) {
            at.remove(0);
            writer.flush();
            let deadline = std::time::Instant::now() + WAIT;
            let pid = loop {
                match plugin.status().pid {
                    Some(pid) if !killed.contains(&pid) => break pid,
                    _ if std::time::Instant::now() > deadline => panic!("no new process"),
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            let raw = rustix::process::Pid::from_raw(pid as i32).expect("pid");
            rustix::process::kill_process(raw, rustix::process::Signal::KILL).expect("kill -9");
            killed.push(pid);
        }
        writer
            .send_deferred(&sink_tuple(i))
            .unwrap_or_else(|e| panic!("sending tuple {i}: {e}"));
    }
    let stats = writer.stats();
    writer.stop().expect("the sink confirms its stop");
    let text = std::fs::read_to_string(&path).expect("reading the sink's file");
    let mut seen = vec![0u32; COUNT as usize];
    let mut partial = 0;
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(parsed) => seen[parsed["n"].as_i64().expect("n") as usize] += 1,
            // A line the killed process was writing out when it died.
            Err(_) => partial += 1,
        }
    }
    let lost: Vec<usize> = (0..seen.len()).filter(|&n| seen[n] == 0).collect();
    assert!(lost.is_empty(), "seed {seed}: lost {lost:?} ({stats:?})");
    assert!(partial <= killed.len(), "{partial} partial lines");
    let twice: u64 = seen.iter().map(|&c| u64::from(c.saturating_sub(1))).sum();
    assert!(twice <= stats.duplicates, "{twice} duplicates, {stats:?}");
    println!(
        "{} kills, {stats:?}, {twice} lines twice, {partial} partial",
        killed.len()
    );
    shut_down(plugin);
}
