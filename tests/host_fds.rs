//! A plugin's start/stop cycle leaks no descriptors into the host: after a plugin ran a source,
//! a sink and a function and was shut down, the host process holds the same descriptors as
//! before.
//!
//! This test binary holds this one test only, so no other test opens or closes descriptors
//! while it counts.

#![forbid(unsafe_code)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use shmplug_host::transport::{Tuple, Value, ValueRef};
use shmplug_host::{InstanceSpec, Plugin};
use support::WAIT;
use support::host::{Installed, config, install_mirror, open_fds, shut_down};

const MIRROR: &str = env!("CARGO_BIN_EXE_mirror-plugin");

/// Starts the plugin, uses each of its symbols, stops everything and shuts it down.
fn cycle(installed: &Installed, round: usize) {
    let plugin = Plugin::start(installed.spec.clone(), config()).expect("starting mirror");
    let mut source = plugin
        .source(
            InstanceSpec::new("random")
                .property("interval", 0)
                .property("count", 10)
                .property("pattern", json!({"a": 1})),
        )
        .expect("starting the source");
    let mut read = 0;
    loop {
        match source.recv_timeout(WAIT) {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("no tuple within {WAIT:?}"),
            Err(e) if e.is_end_of_stream() => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(read, 10);
    let path = installed.scratch(&format!("out-{round}.jsonl"));
    let mut sink = plugin
        .sink(InstanceSpec::new("file").property("path", path.to_str().expect("utf-8")))
        .expect("starting the sink");
    for i in 0..10i64 {
        sink.send_timeout(&Tuple::new(i).with_field("n", i), WAIT)
            .expect("sending");
    }
    let mut echo = plugin
        .function(InstanceSpec::new("echo"))
        .expect("starting the function");
    assert_eq!(
        echo.call_timeout(&[ValueRef::Int(3)], WAIT).expect("echo"),
        Value::Int(3)
    );
    source.stop().expect("stopping the source");
    sink.stop().expect("stopping the sink");
    echo.stop().expect("stopping the function");
    assert_eq!(
        std::fs::read_to_string(&path)
            .expect("sink file")
            .lines()
            .count(),
        10
    );
    shut_down(plugin);
}

#[test]
fn a_start_stop_cycle_leaks_no_descriptors() {
    let installed = install_mirror(MIRROR);
    // A first cycle sets up whatever the process keeps for good (lazily opened files, thread
    // pools); the cycles after it must leave the descriptor table as they found it.
    cycle(&installed, 0);
    let before = open_fds();
    for round in 1..=3 {
        cycle(&installed, round);
    }
    // The threads that forward the plugin's stdout and stderr close their pipes when they see
    // end of file, shortly after the process was reaped: give them a bounded moment.
    let deadline = Instant::now() + WAIT;
    let mut after = open_fds();
    while after.len() != before.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        after = open_fds();
    }
    assert_eq!(
        after.len(),
        before.len(),
        "descriptors before: {before:#?}\nafter: {after:#?}"
    );
}
