//! Rewindable sources against the fake plugin: `kill -9` of the plugin at random points of a
//! stream, and the reader still receives every tuple exactly once, in order (the restarted
//! instance is rewound to the offset of the last tuple handed on); a rewind the plugin refuses
//! ends the stream with an error that says so, never with a silent gap.

mod support;

use shmplug_host::transport::tuple::Offset;
use shmplug_host::{Error, InstanceSpec, Plugin, SourceReader};
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

/// The next tuple's `n`, or the error.
fn next(reader: &mut SourceReader) -> Result<i64, Error> {
    match reader.recv_timeout(WAIT)? {
        Some(view) => Ok(view.get("n").and_then(|v| v.as_i64()).expect("an int n")),
        None => panic!("no tuple within {WAIT:?}"),
    }
}

/// The kill matrix with a rewindable source: every tuple exactly once, in order.
#[test]
fn kill_9_at_random_points_neither_loses_nor_repeats() {
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let fake = fake("rewind-matrix", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    const TUPLES: i64 = 20_000;
    const KILLS: usize = 12;
    let mut reader = plugin
        .source(InstanceSpec::new("rewinding").property("count", TUPLES))
        .unwrap();
    assert!(reader.is_rewindable());
    let mut at: Vec<i64> = (0..KILLS).map(|_| rng.i64(1..TUPLES - 1)).collect();
    at.sort_unstable();
    let mut killed = Vec::new();
    let mut expected = 0;
    loop {
        if at.first() == Some(&expected) {
            at.remove(0);
            wait_for("a running process", || {
                plugin.status().pid.is_some_and(|p| !killed.contains(&p))
            });
            killed.push(kill_9(&plugin));
        }
        match next(&mut reader) {
            Ok(n) => {
                assert_eq!(n, expected, "seed {seed}, after {} kills", killed.len());
                assert_eq!(reader.offset(), Some(Offset::from_u64(n as u64)));
                expected += 1;
            }
            Err(e) if e.is_end_of_stream() => break,
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
    assert_eq!(expected, TUPLES, "seed {seed}");
    // The last kill may come after the source ended its stream: its restart is counted
    // after the reader saw the end.
    wait_for("every kill counted as a restart", || {
        plugin.status().restarts == killed.len() as u64
    });
    // Each restart rewound to the last tuple handed on before it.
    let rewinds = read_lines(&fake.path("rewinds"));
    assert!(rewinds.len() <= killed.len(), "{rewinds:?}");
    println!("{} kills, rewinds to {rewinds:?}", killed.len());
}

/// A rewind the plugin refuses: the reader gets every tuple up to the crash, then an error
/// naming the failed rewind, not a stream that silently skips.
#[test]
fn a_failed_rewind_ends_the_stream_with_an_error() {
    let fake = fake("rewind-fails", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin
        .source(InstanceSpec::new("rewinding").property("fail_rewind", true))
        .unwrap();
    for expected in 0..100 {
        assert_eq!(next(&mut reader).unwrap(), expected);
    }
    kill_9(&plugin);
    let mut last = 99;
    let error = loop {
        match next(&mut reader) {
            Ok(n) => {
                assert_eq!(n, last + 1, "a gap");
                last = n;
            }
            Err(e) => break e,
        }
    };
    let text = error.to_string();
    assert!(matches!(error, Error::InstanceGone { .. }), "{text}");
    assert!(
        text.contains("rewind") && text.contains("truncated"),
        "{text}"
    );
    let rewinds = read_lines(&fake.path("rewinds"));
    assert_eq!(rewinds, [last.to_string()]);
}

/// A source that is not rewindable writes no offsets and its reader reports none.
#[test]
fn a_plain_source_has_no_offsets() {
    let fake = fake("rewind-plain", "ok");
    let plugin = Plugin::start(fake.spec.clone(), quick_config()).unwrap();
    let mut reader = plugin
        .source(InstanceSpec::new("counter").property("count", 10))
        .unwrap();
    assert!(!reader.is_rewindable());
    for expected in 0..10 {
        assert_eq!(next(&mut reader).unwrap(), expected);
    }
    assert_eq!(reader.offset(), None);
}
