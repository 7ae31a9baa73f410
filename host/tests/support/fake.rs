//! A fake plugin: the test binary re-executes itself with `FAKE_MODE` set and runs this
//! instead of a test. It speaks the control protocol with the transport's `ControlChannel`
//! directly (no SDK), so each test can make it misbehave in one precise way.
//!
//! Environment: `FAKE_MODE` (`ok`, `silent`, `silent-forks`, `exit`, `old-version`, `wrong-name`,
//! `protocol-1.1`: speaks 1.1 and ignores `Validate`), `FAKE_NAME`
//! (the name in its hello), `FAKE_STATE` (a directory for marker files: `pids` gets one line per
//! process started; `refused` gets the host's error text).
//!
//! Symbols: source `counter` (properties `count`, `interval_ms`, `crash_after`, `wedge_after`:
//! tuples `{n: 0, 1, ...}`, with a pause of `interval_ms` after each if set; crash or wedge
//! only once, guarded by a marker file; `put_state: KEY` puts a state entry `KEY` =
//! `{"pid": PID}` at the start, and a start with state appends it to `FAKE_STATE/kept_state`),
//! sink `collect` (appends each tuple's `n` to `FAKE_STATE/sink`; with property
//! `truncate = true` it empties that file when it starts, as a sink that overwrites its output
//! does; a tuple with an integer field `total` is written as `N TOTAL`; `stall_after` makes the first process stop taking tuples after that many), functions
//! `echo` (first argument back), `fail` (an error), `once` (as `echo`, declared not safe to
//! repeat; both take `crash_after`: the first process exits at that call; both refuse, when
//! validated, an empty argument list), the aggregate function `sum` (the
//! sum of the integers in its first argument's list), source `broken` (always answers
//! `Failed`), and the rewindable source `rewinding` (see [`rewinding`]).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use shmplug_host::transport::control::{
    CONTROL_FD_ENV, ControlChannel, Hello, Log, LogLevel, Message, ProtocolVersion, Start,
};
use shmplug_host::transport::tuple::Offset;
use shmplug_host::transport::tuple::call::{parse_call, send_reply};
use shmplug_host::transport::{EndpointConfig, Ring, Tuple, TupleReceiver, TupleSender, Value};

pub const MODE_ENV: &str = "FAKE_MODE";
pub const NAME_ENV: &str = "FAKE_NAME";
pub const STATE_ENV: &str = "FAKE_STATE";

/// Longest a fake process lives, whatever happens (so a bug cannot leave one behind).
const LIFETIME: Duration = Duration::from_secs(60);

/// Pids of every fake process started so far with state directory `state`.
pub fn pids_in(state: &std::path::Path) -> Vec<i32> {
    super::read_lines(&state.join("pids"))
        .iter()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// Runs the fake plugin and exits the process if this is a fake-plugin child; returns
/// otherwise.
pub fn entry() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    // Die with the host, as the SDK does.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    std::thread::spawn(|| {
        std::thread::sleep(LIFETIME);
        std::process::exit(9);
    });
    let state = PathBuf::from(std::env::var(STATE_ENV).expect("FAKE_STATE"));
    append(&state.join("pids"), &std::process::id().to_string());
    let name = std::env::var(NAME_ENV).unwrap_or_else(|_| "fake".into());
    println!("fake plugin {name} starting in mode {mode}");
    eprintln!("fake plugin stderr line");
    let code = run(&mode, &name, &state);
    std::process::exit(code);
}

fn run(mode: &str, name: &str, state: &std::path::Path) -> i32 {
    match mode {
        "silent" => {
            std::thread::sleep(LIFETIME);
            return 0;
        }
        "exit" => return 3,
        "silent-forks" => {
            // A plugin with a process of its own, which never says hello.
            if let Ok(child) = std::process::Command::new("sleep").arg("600").spawn() {
                append(&state.join("grandchildren"), &child.id().to_string());
            }
            std::thread::sleep(LIFETIME);
            return 0;
        }
        _ => {}
    }
    let channel = Arc::new(ControlChannel::new(inherited_socket()).expect("control channel"));
    let mut hello = Hello::new(if mode == "wrong-name" {
        "impostor"
    } else {
        name
    });
    if mode == "old-version" {
        hello.protocol_version = ProtocolVersion::new(99, 0);
    }
    // A plugin of protocol 1.1, which predates `Validate`: it never answers one.
    let answers_validate = mode != "protocol-1.1";
    if !answers_validate {
        hello.protocol_version = ProtocolVersion::new(1, 1);
    }
    hello.sources = vec!["counter".into(), "broken".into(), "rewinding".into()];
    hello.rewindable = vec!["rewinding".into()];
    hello.sinks = vec!["collect".into()];
    hello.functions = vec!["echo".into(), "fail".into(), "once".into(), "sum".into()];
    hello.not_repeatable = vec!["once".into()];
    hello.aggregates = vec!["sum".into()];
    channel.send(&Message::Hello(hello), &[]).expect("hello");
    if mode == "old-version" || mode == "wrong-name" {
        if let Ok((Message::Error { message }, _)) = channel.recv_timeout(Some(LIFETIME)) {
            append(&state.join("refused"), &message);
        }
        return 0;
    }
    let version = std::env::var("FAKE_VERSION").unwrap_or_default();
    let mut instances: HashMap<u64, Instance> = HashMap::new();
    loop {
        let (message, rings) = match channel.recv() {
            Ok(received) => received,
            Err(_) => return 0,
        };
        match message {
            Message::Ping { nonce } => {
                let _ = channel.send(&Message::Pong { nonce }, &[]);
            }
            Message::StartSource(start) if start.symbol == "broken" => {
                let error = "cannot open `broken`: the device is unplugged".to_owned();
                let _ = channel.send(
                    &Message::Failed {
                        instance_id: start.instance_id,
                        error,
                    },
                    &[],
                );
            }
            Message::StartSource(start) if start.symbol == "rewinding" => {
                let id = start.instance_id;
                match rewinding(start, rings, state) {
                    Ok(instance) => {
                        instances.insert(id, instance);
                        let _ = channel.send(&Message::Started { instance_id: id }, &[]);
                    }
                    Err(error) => {
                        let _ = channel.send(
                            &Message::Failed {
                                instance_id: id,
                                error,
                            },
                            &[],
                        );
                    }
                }
            }
            Message::StartSource(start) => {
                let wedge = marker_once(state, &start, "wedge_after");
                let id = start.instance_id;
                if !start.state.is_empty() {
                    let kept = serde_json::Value::Object(start.state.clone());
                    append(&state.join("kept_state"), &kept.to_string());
                }
                let put = start.properties.get("put_state").and_then(|k| k.as_str());
                if let Some(key) = put {
                    let _ = channel.send(
                        &Message::State {
                            instance_id: id,
                            key: key.to_owned(),
                            value: Some(serde_json::json!({"pid": std::process::id()})),
                        },
                        &[],
                    );
                }
                instances.insert(id, source(start, rings, state, &version));
                let _ = channel.send(&Message::Started { instance_id: id }, &[]);
                let _ = channel.send(
                    &Message::Log(Log {
                        level: LogLevel::Info,
                        target: "fake::source".into(),
                        message: format!("source {id} started"),
                        instance_id: Some(id),
                    }),
                    &[],
                );
                if let Some(after) = wedge {
                    // Stop answering anything: a wedged control loop.
                    std::thread::sleep(Duration::from_millis(after));
                    std::thread::sleep(LIFETIME);
                }
            }
            Message::StartSink(start) => {
                let id = start.instance_id;
                if start.properties.get("truncate") == Some(&serde_json::Value::Bool(true)) {
                    let _ = std::fs::write(state.join("sink"), "");
                }
                let stall = marker_once(state, &start, "stall_after");
                instances.insert(id, sink(rings, state, stall));
                let _ = channel.send(&Message::Started { instance_id: id }, &[]);
            }
            Message::StartFunction(start) => {
                let id = start.instance_id;
                let crash = marker_once(state, &start, "crash_after");
                instances.insert(id, function(start, rings, crash));
                let _ = channel.send(&Message::Started { instance_id: id }, &[]);
            }
            Message::Validate {
                request_id,
                symbol,
                args,
            } if answers_validate => {
                // `echo` and `once` take at least one argument; `fail` takes any.
                let error = (symbol != "fail" && args.is_empty())
                    .then(|| format!("{symbol} takes at least 1 argument, got 0"));
                let _ = channel.send(&Message::Validated { request_id, error }, &[]);
            }
            Message::Stop { instance_id } => {
                if let Some(instance) = instances.remove(&instance_id) {
                    instance.stop();
                }
                let _ = channel.send(&Message::Stopped { instance_id }, &[]);
            }
            Message::Shutdown => {
                for (_, instance) in instances.drain() {
                    instance.stop();
                }
                return 0;
            }
            _ => {}
        }
    }
}

/// The control socket the host passed: the descriptor number is in `SHMPLUG_CONTROL_FD`.
fn inherited_socket() -> UnixStream {
    let fd: i32 = std::env::var(CONTROL_FD_ENV)
        .expect("SHMPLUG_CONTROL_FD")
        .parse()
        .expect("a descriptor number");
    shmplug_host::transport::fdpass::adopt_inherited_socket(fd).expect("inherited control socket")
}

struct Instance {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Instance {
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn spawn(body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Instance {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    Instance {
        stop,
        thread: Some(std::thread::spawn(move || body(flag))),
    }
}

fn int_property(start: &Start, key: &str) -> Option<u64> {
    start.properties.get(key).and_then(|v| v.as_u64())
}

/// Returns the property's value if it is set and the marker for it does not exist yet
/// (creating the marker): a misbehaviour that happens in the first process only.
fn marker_once(state: &std::path::Path, start: &Start, key: &str) -> Option<u64> {
    let value = int_property(start, key)?;
    let marker = state.join(format!("{key}.done"));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .ok()
        .map(|_| value)
}

fn config() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

fn source(start: Start, rings: Vec<Ring>, state: &std::path::Path, version: &str) -> Instance {
    let count = int_property(&start, "count");
    let interval = int_property(&start, "interval_ms").map(Duration::from_millis);
    let crash = marker_once(state, &start, "crash_after");
    let version = version.to_owned();
    let mut tx = TupleSender::new(rings[0].producer(config()).expect("producer"));
    spawn(move |stop| {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) && count.is_none_or(|c| n < c) {
            if crash == Some(n) {
                std::process::exit(101);
            }
            let tuple = Tuple::new(n as i64)
                .with_field("n", n as i64)
                .with_field("version", version.as_str());
            match tx.send_timeout(&tuple, Duration::from_millis(50)) {
                Ok(()) => {
                    n += 1;
                    if let Some(interval) = interval {
                        std::thread::sleep(interval);
                    }
                }
                Err(e) if e.is_closed() => return,
                Err(_) => {}
            }
        }
    })
}

/// The rewindable source `rewinding`: tuples `{n}` from 0, or from one past the offset it is
/// rewound to, each after its offset (`n`) when the host asks for offsets; appends each
/// rewind's offset to `FAKE_STATE/rewinds`. With `fail_rewind = true` a rewind fails.
fn rewinding(start: Start, rings: Vec<Ring>, state: &std::path::Path) -> Result<Instance, String> {
    let count = int_property(&start, "count");
    let mut n = 0u64;
    if let Some(bytes) = &start.rewind_to {
        let offset = Offset::new(bytes)
            .and_then(|o| o.as_u64())
            .ok_or_else(|| format!("an offset of {} bytes is not a counter", bytes.len()))?;
        append(&state.join("rewinds"), &offset.to_string());
        if start.properties.get("fail_rewind") == Some(&serde_json::Value::Bool(true)) {
            return Err(format!(
                "cannot rewind to {offset}: the log before {} was truncated",
                offset + 10
            ));
        }
        n = offset + 1;
    }
    let offsets = start.send_offsets;
    let mut tx = TupleSender::new(rings[0].producer(config()).expect("producer"));
    Ok(spawn(move |stop| {
        while !stop.load(Ordering::SeqCst) && count.is_none_or(|c| n < c) {
            if offsets {
                match tx.try_send_offset(&Offset::from_u64(n)) {
                    Ok(true) => {}
                    Ok(false) => {
                        std::thread::sleep(Duration::from_micros(100));
                        continue;
                    }
                    Err(_) => return,
                }
            }
            let tuple = Tuple::new(n as i64).with_field("n", n as i64);
            loop {
                match tx.send_timeout(&tuple, Duration::from_millis(50)) {
                    Ok(()) => break,
                    Err(e) if e.is_closed() => return,
                    Err(_) if stop.load(Ordering::SeqCst) => return,
                    Err(_) => {}
                }
            }
            n += 1;
        }
    }))
}

fn sink(rings: Vec<Ring>, state: &std::path::Path, stall: Option<u64>) -> Instance {
    let path = state.join("sink");
    // Acknowledges each tuple once its line is written, as the SDK's sinks do.
    let consumer = rings[0].consumer(config()).expect("consumer");
    let mut rx = TupleReceiver::new(consumer.acknowledge());
    spawn(move |stop| {
        let mut collected = 0u64;
        while !stop.load(Ordering::SeqCst) {
            if stall == Some(collected) {
                // Stuck: take nothing more (until killed or stopped).
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(view) => {
                    collected += 1;
                    let n = view.get("n").and_then(|v| v.as_i64()).unwrap_or(-1);
                    match view.get("total").and_then(|v| v.as_i64()) {
                        Some(total) => append(&path, &format!("{n} {total}")),
                        None => append(&path, &n.to_string()),
                    }
                }
                Err(e) if e.is_closed() => return,
                Err(_) => {}
            }
        }
        // Stopped: finish what the host already committed, as a real sink does.
        while let Ok(Some(view)) = rx.try_recv() {
            let n = view.get("n").and_then(|v| v.as_i64()).unwrap_or(-1);
            append(&path, &n.to_string());
        }
    })
}

fn function(start: Start, rings: Vec<Ring>, crash: Option<u64>) -> Instance {
    let mut rx = TupleReceiver::new(rings[0].consumer(config()).expect("consumer"));
    let mut tx = TupleSender::new(rings[1].producer(config()).expect("producer"));
    spawn(move |stop| {
        let mut calls = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let reply = match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(view) => {
                    if crash == Some(calls) {
                        std::process::exit(101);
                    }
                    calls += 1;
                    let call = parse_call(&view).expect("a call record");
                    let result = match start.symbol.as_str() {
                        "fail" => Err("echo refuses"),
                        "sum" => Ok(match call.args.get(0).and_then(|v| v.as_list()) {
                            Some(list) => Value::Int(list.iter().filter_map(|v| v.as_i64()).sum()),
                            None => Value::Null,
                        }),
                        _ => Ok(call.args.get(0).map_or(Value::Null, |v| v.to_owned())),
                    };
                    (call.seq, result)
                }
                Err(e) if e.is_closed() => return,
                Err(_) => continue,
            };
            let (seq, result) = reply;
            if send_reply(&mut tx, seq, result).is_err() {
                return;
            }
        }
    })
}

fn append(path: &std::path::Path, line: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("state file");
    // One write: a process killed mid-line must not leave half a line for the next to extend.
    file.write_all(format!("{line}\n").as_bytes())
        .expect("write state file");
}
