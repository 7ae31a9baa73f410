//! `json_nng`: the same host ([`Plugin`] and its handles, the same measuring code as
//! [`super::shmplug`]) driving a plugin over eKuiper's portable protocol — nng's SP wire over
//! `ipc://` sockets under `/tmp`, JSON messages, one REQ/REP round trip per call — as it runs
//! an unchanged eKuiper plugin ([`shmplug_host::ekuiper`]). The plugin is this program's
//! [`peer`], written in Rust so that the figure is the protocol's cost, not Python's.
//!
//! Only `function_rtt` and `pipeline` (a source's and a sink's cost show inside the pipeline).

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value as Json, json};
use shmplug_host::ekuiper::sp::{Req, SpError, SpListener, SpStream, proto};
use shmplug_host::ekuiper::{MAX_MESSAGE, PORTABLE_CONFIG_ARG, Symbols, paths};
use shmplug_host::{Plugin, PluginSpec, Protocol, SupervisorConfig};

use super::pipeline::{self, WideJson};
use super::workload::Workload;
use super::{BenchError, Case, Launcher, Measurement, STUCK};

/// The plugin's name (its control socket is `/tmp/plugin_{NAME}.ipc`).
const NAME: &str = "shmplug_bench_nng";
pub(super) fn measure(case: Case, n: u64, launcher: &Launcher) -> Result<Measurement, BenchError> {
    let mut args = launcher.peer_args.clone();
    args.push("json-nng".into());
    args.push(PORTABLE_CONFIG_ARG.into());
    let spec = PluginSpec {
        args,
        protocol: Protocol::Ekuiper(Symbols {
            sources: vec!["wide".into()],
            sinks: vec!["check_wide".into()],
            functions: vec!["echo".into(), "add".into()],
        }),
        ..PluginSpec::new(NAME, &launcher.program)
    };
    let plugin = Plugin::start(spec, SupervisorConfig::default())?;
    let workload = Workload::new();
    let measurement = match case {
        Case::Pipeline => super::shmplug::pipeline(&plugin, n)?,
        Case::FunctionRtt => super::shmplug::function_rtt(&plugin, &workload, n)?,
        other => {
            return Err(BenchError::Protocol(format!(
                "json_nng has no figure for {other}"
            )));
        }
    };
    plugin.shutdown();
    Ok(measurement)
}

fn sp(e: SpError) -> BenchError {
    BenchError::Protocol(format!("eKuiper protocol: {e}"))
}

/// Long enough for any pause of the host between commands or calls.
const IDLE: Duration = Duration::from_secs(3600);

/// The bench plugin as an eKuiper portable plugin: dials the host's control socket, says
/// `handshake`, and serves `start`/`stop` commands for the `wide` source, the `check_wide`
/// sink and the `echo` and `add` functions, as eKuiper's SDKs do.
///
/// # Errors
/// A broken connection or an unexpected message.
pub(super) fn peer(_args: &[String]) -> Result<(), BenchError> {
    let path = paths::control(NAME).map_err(BenchError::Protocol)?;
    let stream = SpStream::connect(&path, proto::REQ, MAX_MESSAGE, STUCK).map_err(sp)?;
    let mut control = Req::new(stream);
    let mut running: Vec<(String, Running)> = Vec::new();
    let mut command = control.request(b"handshake", IDLE).map_err(sp)?.to_vec();
    loop {
        let answer = match serve_command(&command, &mut running) {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        command = match control.request(answer.as_bytes(), IDLE) {
            Ok(next) => next.to_vec(),
            // The host closed the control socket: the plugin ends, as eKuiper's SDKs do.
            Err(SpError::Closed) => return Ok(()),
            Err(e) => return Err(sp(e)),
        };
    }
}

/// A started source, sink or function.
struct Running {
    stop: Option<mpsc::Sender<()>>,
    /// Returns how many records a sink checked.
    thread: Option<JoinHandle<Result<u64, BenchError>>>,
    /// The sink's report file.
    report: Option<String>,
}

fn serve_command(body: &[u8], running: &mut Vec<(String, Running)>) -> Result<(), BenchError> {
    let bad = |what: &str| BenchError::Protocol(format!("a command {what}"));
    let command: Json = serde_json::from_slice(body).map_err(|_| bad("that is not JSON"))?;
    let arg = command["arg"]
        .as_str()
        .ok_or_else(|| bad("without its `arg`"))?;
    let control: Json = serde_json::from_str(arg).map_err(|_| bad("whose `arg` is not JSON"))?;
    let symbol = control["symbolName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let meta = &control["meta"];
    let key = format!(
        "{}_{}_{}_{symbol}",
        meta["ruleId"], meta["opId"], meta["instanceId"]
    );
    let data_path = || {
        paths::data(
            meta["ruleId"].as_str().unwrap_or_default(),
            meta["opId"].as_str().unwrap_or_default(),
            meta["instanceId"].as_u64().unwrap_or_default(),
        )
        .map_err(BenchError::Protocol)
    };
    match command["cmd"].as_str() {
        Some("stop") => {
            if let Some(at) = running.iter().position(|(k, _)| *k == key) {
                let (_, mut instance) = running.swap_remove(at);
                drop(instance.stop.take());
                let result = instance.thread.take().map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(bad("thread that panicked")))
                });
                if let (Some(report), Some(result)) = (&instance.report, result) {
                    // What the shmplug bench plugin's sink writes: "<tuples> <mismatches>".
                    let text = match result {
                        Ok(count) => format!("{count} 0"),
                        Err(e) => e.to_string(),
                    };
                    std::fs::write(Path::new(report), text)
                        .map_err(BenchError::io("writing the sink's report"))?;
                }
            }
            Ok(())
        }
        Some("start") => {
            let count = control["config"]["count"].as_u64().unwrap_or(0);
            let (stop, stopped) = mpsc::channel::<()>();
            let (instance, key) = match (control["pluginType"].as_str(), symbol.as_str()) {
                (Some("source"), "wide") => {
                    let push = SpStream::connect(&data_path()?, proto::PUSH, MAX_MESSAGE, STUCK)
                        .map_err(sp)?;
                    let thread = std::thread::spawn(move || source(push, count, &stopped));
                    (
                        Running {
                            stop: Some(stop),
                            thread: Some(thread),
                            report: None,
                        },
                        key,
                    )
                }
                (Some("sink"), "check_wide") => {
                    let report = control["config"]["report"].as_str().map(str::to_owned);
                    let listener = SpListener::bind(&data_path()?).map_err(sp)?;
                    let ack_path = paths::ack(
                        meta["ruleId"].as_str().unwrap_or_default(),
                        meta["opId"].as_str().unwrap_or_default(),
                        meta["instanceId"].as_u64().unwrap_or_default(),
                    )
                    .map_err(BenchError::Protocol)?;
                    let ack = SpStream::connect(&ack_path, proto::PUSH, MAX_MESSAGE, STUCK)
                        .map_err(sp)?;
                    let thread = std::thread::spawn(move || sink(&listener, ack));
                    (
                        Running {
                            stop: Some(stop),
                            thread: Some(thread),
                            report,
                        },
                        key,
                    )
                }
                (Some("func"), "echo" | "add") => {
                    let path = paths::function(&symbol).map_err(BenchError::Protocol)?;
                    let req = Req::new(
                        SpStream::connect(&path, proto::REQ, MAX_MESSAGE, STUCK).map_err(sp)?,
                    );
                    let add = symbol == "add";
                    let thread = std::thread::spawn(move || function(req, add));
                    // Functions are never stopped (as in eKuiper): the thread ends with the
                    // host's socket.
                    (
                        Running {
                            stop: None,
                            thread: Some(thread),
                            report: None,
                        },
                        format!("func_{symbol}"),
                    )
                }
                (kind, symbol) => {
                    return Err(BenchError::Protocol(format!(
                        "symbol {symbol} of type {kind:?} not found"
                    )));
                }
            };
            running.push((key, instance));
            Ok(())
        }
        _ => Err(bad("other than start or stop")),
    }
}

/// Pushes `count` wide tuples as eKuiper's source runtime does, then waits to be stopped.
fn source(mut push: SpStream, count: u64, stopped: &mpsc::Receiver<()>) -> Result<u64, BenchError> {
    let workload = Workload::new();
    let mut body = Vec::new();
    for i in 0..count {
        body.clear();
        serde_json::to_writer(
            &mut body,
            &json!({"message": WideJson { workload: &workload, i }, "meta": {}}),
        )
        .map_err(|e| BenchError::Protocol(e.to_string()))?;
        push.send(&[&body]).map_err(sp)?;
    }
    let _ = stopped.recv();
    Ok(count)
}

/// Checks every record the host pushes, in order, until the host closes the socket.
fn sink(listener: &SpListener, mut ack: SpStream) -> Result<u64, BenchError> {
    let workload = Workload::new();
    let mut pull = listener
        .accept(proto::PULL, MAX_MESSAGE, STUCK)
        .map_err(sp)?;
    let mut body = Vec::new();
    let mut i = 0u64;
    loop {
        match pull.recv_timeout(&mut body, IDLE) {
            Ok(()) => {}
            Err(SpError::Closed) => return Ok(i),
            Err(e) => return Err(sp(e)),
        }
        let record: Json = serde_json::from_slice(&body)
            .map_err(|e| BenchError::Protocol(format!("sink record {i}: {e}")))?;
        pipeline::check_json(&workload, &record, i)?;
        // eKuiper's Python SDK acknowledges every record; the host reads acknowledgements
        // whether or not it waits for them.
        let _ = ack.send(&[b"{}"]);
        i += 1;
    }
}

/// Answers `Exec` calls: `echo` returns its arguments, `add` the sum of two numbers.
fn function(mut req: Req, add: bool) -> Result<u64, BenchError> {
    let mut reply = b"handshake".to_vec();
    let mut calls = 0;
    loop {
        let call = match req.request(&reply, IDLE) {
            Ok(call) => call,
            Err(SpError::Closed) => return Ok(calls),
            Err(e) => return Err(sp(e)),
        };
        let call: Json = serde_json::from_slice(call)
            .map_err(|e| BenchError::Protocol(format!("a call that is not JSON: {e}")))?;
        let mut args = call["arg"].as_array().cloned().unwrap_or_default();
        args.pop(); // the function meta
        let result = if add {
            let a = args.first().and_then(Json::as_f64);
            let b = args.get(1).and_then(Json::as_f64);
            pipeline::function(a, b).map_or(Json::Null, Json::from)
        } else {
            Json::Array(args)
        };
        reply = serde_json::to_vec(&json!({"state": true, "result": result}))
            .map_err(|e| BenchError::Protocol(e.to_string()))?;
        calls += 1;
    }
}
