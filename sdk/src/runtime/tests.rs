//! The runtime against a test host in the same process: the host's end of a
//! [`ControlChannel::pair`] on the test thread, [`serve`] on another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;
use shmplug_transport::control::{
    ArgShape, ControlChannel, LogLevel, Message, PROTOCOL_VERSION, Start,
};
use shmplug_transport::tuple::{FieldValue, Offset, call};
use shmplug_transport::{
    EndpointConfig, Error, Ring, Tuple, TupleReceiver, TupleRef, TupleSender, TupleView, Value,
    ValueRef, ValueView,
};

use super::{ServeError, serve};
use crate::{
    Arg, Emitter, Function, FunctionContext, PluginConfig, PluginError, Props, Rewindable, Sink,
    SinkContext, Source, SourceContext,
};

/// Every wait in these tests gives up after this long.
const WAIT: Duration = Duration::from_secs(10);

fn endpoint() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(5))
}

// ---- Test plugins ---------------------------------------------------------------------------

/// Emits `{"n": i}` for `i` in `0..count`, then returns; without `count`, emits 3 and waits
/// to be stopped. `log` makes it log an info event first.
#[derive(Default)]
struct Counter {
    count: Option<i64>,
}

impl Source for Counter {
    fn configure(&mut self, _: &str, props: &Props) -> Result<(), PluginError> {
        self.count = props.get("count").and_then(|c| c.as_i64());
        Ok(())
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        tracing::info!(rule = ctx.rule_id(), "counter opened");
        for n in 0..self.count.unwrap_or(3) {
            emitter.emit(&TupleRef::new(n, &[("n", ValueRef::Int(n))]))?;
        }
        if self.count.is_none() {
            ctx.sleep(Duration::from_secs(3600))?;
        }
        Ok(())
    }
}

/// Emits `{"n": i}` for `i` from its state's `next` (0 without one) on, `count` of them,
/// then puts `next` past them.
#[derive(Default)]
struct Resume {
    count: i64,
}

impl Source for Resume {
    fn configure(&mut self, _: &str, props: &Props) -> Result<(), PluginError> {
        self.count = props.get("count").and_then(|c| c.as_i64()).unwrap_or(1);
        Ok(())
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        let next = ctx.get_state("next").and_then(|v| v.as_i64()).unwrap_or(0);
        for n in next..next + self.count {
            emitter.emit(&TupleRef::new(n, &[("n", ValueRef::Int(n))]))?;
        }
        ctx.put_state("next", next + self.count)
    }
}

/// A rewindable source: emits `{"n": i}` with offset `i` for `i` from 0, or from one past the
/// offset it was rewound to, `count` of them. Refuses to rewind to 13.
#[derive(Default)]
struct Seq {
    next: u64,
    count: u64,
}

impl Source for Seq {
    fn configure(&mut self, _: &str, props: &Props) -> Result<(), PluginError> {
        self.count = props.get("count").and_then(|c| c.as_u64()).unwrap_or(2);
        Ok(())
    }

    fn open(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        for n in self.next..self.next + self.count {
            let fields = [("n", ValueRef::Int(n as i64))];
            let tuple = TupleRef::new(0, &fields);
            emitter.emit_at(&Offset::from_u64(n), &tuple)?;
        }
        Ok(())
    }
}

impl Rewindable for Seq {
    fn rewind(&mut self, offset: &Offset) -> Result<(), PluginError> {
        match offset.as_u64() {
            Some(13) => Err(PluginError::new("offset 13 was compacted away")),
            Some(n) => {
                self.next = n + 1;
                Ok(())
            }
            None => Err(PluginError::new("not a sequence number")),
        }
    }
}

/// Fails to configure unless `interval` is a number.
struct Picky;

impl Source for Picky {
    fn configure(&mut self, _: &str, props: &Props) -> Result<(), PluginError> {
        match props.get("interval") {
            Some(v) if v.is_number() => Ok(()),
            other => Err(PluginError::property(
                "interval",
                format!("expected milliseconds, got {other:?}"),
            )),
        }
    }

    fn open(&mut self, _: &SourceContext, _: &mut Emitter) -> Result<(), PluginError> {
        Ok(())
    }
}

/// Panics in `open`; reports its `close` on the channel.
struct Exploding {
    closed: Sender<&'static str>,
}

impl Source for Exploding {
    fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> {
        Ok(())
    }

    fn open(&mut self, _: &SourceContext, _: &mut Emitter) -> Result<(), PluginError> {
        panic!("the flux capacitor overheated")
    }

    fn close(&mut self, _: &SourceContext) -> Result<(), PluginError> {
        let _ = self.closed.send("source closed");
        Ok(())
    }
}

/// Keeps what it collects; panics on a tuple whose `n` is 13; reports its `close` and the
/// collection of a tuple with a `signal` field.
struct Keep {
    tuples: Arc<Mutex<Vec<Tuple>>>,
    events: Sender<&'static str>,
}

impl Sink for Keep {
    fn configure(&mut self, props: &Props) -> Result<(), PluginError> {
        if props.contains_key("fail") {
            return Err(PluginError::property("fail", "asked to fail"));
        }
        Ok(())
    }

    fn collect(&mut self, _: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
        if tuple.get("n").and_then(|n| n.as_i64()) == Some(13) {
            panic!("unlucky tuple");
        }
        self.tuples.lock().unwrap().push(tuple.to_owned());
        if tuple.get("signal").is_some() {
            let _ = self.events.send("collected the signal");
        }
        Ok(())
    }

    fn close(&mut self, _: &SinkContext) -> Result<(), PluginError> {
        let _ = self.events.send("sink closed");
        Ok(())
    }
}

/// Adds its two integer arguments; panics when they add up to 13.
struct Add;

impl Function for Add {
    fn validate_args(&self, args: &[Arg<'_>]) -> Result<(), PluginError> {
        match args {
            [_, _] => Ok(()),
            [.., Arg::Field("boom")] => panic!("validate_args exploded"),
            _ => Err(PluginError::new(format!(
                "add takes two arguments, got {}",
                args.len()
            ))),
        }
    }

    fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
        match args {
            [ValueView::Int(_), ValueView::Int(_)] => Ok(()),
            _ => Err(PluginError::new(format!(
                "add takes two integers, got {} argument(s)",
                args.len()
            ))),
        }
    }

    fn exec(
        &mut self,
        ctx: &FunctionContext,
        args: &[ValueView<'_>],
    ) -> Result<Value, PluginError> {
        let sum = args[0].as_i64().unwrap_or(0) + args[1].as_i64().unwrap_or(0);
        if sum == 13 {
            panic!("unlucky sum");
        }
        if sum == 0 {
            return Ok(Value::Int(ctx.function_id() as i64));
        }
        Ok(Value::Int(sum))
    }
}

/// Events the test plugins report from inside the plugin (closes).
struct Events {
    tx: Sender<&'static str>,
    rx: Receiver<&'static str>,
    kept: Arc<Mutex<Vec<Tuple>>>,
    /// Tuples the `buffered` sink has flushed.
    flushed: Arc<AtomicU64>,
}

/// A sink that buffers: counts what it collects, and adds that to `flushed` on `flush`.
struct Buffered {
    pending: u64,
    flushed: Arc<AtomicU64>,
}

impl Sink for Buffered {
    fn configure(&mut self, _: &Props) -> Result<(), PluginError> {
        Ok(())
    }

    fn collect(&mut self, _: &SinkContext, _: &TupleView<'_>) -> Result<(), PluginError> {
        self.pending += 1;
        Ok(())
    }

    fn buffers(&self) -> bool {
        true
    }

    fn flush(&mut self, _: &SinkContext) -> Result<(), PluginError> {
        self.flushed.fetch_add(self.pending, Ordering::SeqCst);
        self.pending = 0;
        Ok(())
    }
}

fn config(events: &Events) -> PluginConfig {
    let closed = Mutex::new(events.tx.clone());
    let sink_closed = Mutex::new(events.tx.clone());
    let kept = events.kept.clone();
    let flushed = events.flushed.clone();
    let config = PluginConfig::new("testplug")
        .source("counter", Counter::default)
        .source("resume", Resume::default)
        .rewindable_source("seq", Seq::default)
        .source("picky", || Picky)
        .source("exploding", move || Exploding {
            closed: closed.lock().unwrap().clone(),
        })
        .source("factory_panics", || -> Counter {
            panic!("no counters today")
        })
        .sink("keep", move || Keep {
            tuples: kept.clone(),
            events: sink_closed.lock().unwrap().clone(),
        })
        .sink("buffered", move || Buffered {
            pending: 0,
            flushed: flushed.clone(),
        })
        .function("add", || Add)
        .not_repeatable("add")
        .with_endpoint(endpoint());
    polled::add(config, events)
}

// ---- Test host ------------------------------------------------------------------------------

struct Host {
    channel: ControlChannel,
    logs: Vec<shmplug_transport::control::Log>,
    done: Receiver<Result<(), ServeError>>,
    runtime: Option<JoinHandle<()>>,
    events: Events,
}

impl Host {
    fn new() -> Host {
        let (tx, rx) = mpsc::channel();
        let events = Events {
            tx,
            rx,
            kept: Arc::default(),
            flushed: Arc::default(),
        };
        let (channel, plugin) = ControlChannel::pair().unwrap();
        channel.set_read_timeout(Some(WAIT));
        let config = config(&events);
        let (done_tx, done) = mpsc::channel();
        let runtime = std::thread::spawn(move || {
            let _ = done_tx.send(serve(plugin, config));
        });
        let mut host = Host {
            channel,
            logs: Vec::new(),
            done,
            runtime: Some(runtime),
            events,
        };
        match host.next() {
            Message::Hello(hello) => {
                assert_eq!(hello.plugin_name, "testplug");
                assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
                assert_eq!(
                    hello.sources,
                    [
                        "counter",
                        "exploding",
                        "factory_panics",
                        "flood",
                        "open_panics",
                        "picky",
                        "poll_panics",
                        "resume",
                        "seq",
                        "sluggish",
                        "ticks"
                    ]
                );
                assert_eq!(hello.rewindable, ["seq"]);
                assert_eq!(hello.sinks, ["buffered", "keep"]);
                assert_eq!(hello.functions, ["add"]);
                assert_eq!(hello.not_repeatable, ["add"]);
            }
            other => panic!("expected hello, got {other:?}"),
        }
        host
    }

    /// The next message that is not a log (logs are kept in `self.logs`).
    fn next(&mut self) -> Message {
        loop {
            let (message, rings) = self.channel.recv().expect("a message from the plugin");
            assert!(rings.is_empty());
            match message {
                Message::Log(log) => self.logs.push(log),
                other => return other,
            }
        }
    }

    /// Waits for a log whose message contains `text`.
    fn log_containing(&mut self, text: &str) -> shmplug_transport::control::Log {
        loop {
            if let Some(log) = self.logs.iter().find(|l| l.message.contains(text)) {
                return log.clone();
            }
            let (message, _) = self.channel.recv().expect("a log from the plugin");
            match message {
                Message::Log(log) => self.logs.push(log),
                other => panic!("expected a log containing {text:?}, got {other:?}"),
            }
        }
    }

    fn send(&self, message: Message, rings: &[&Ring]) {
        self.channel.send(&message, rings).unwrap();
    }

    fn start(id: u64, symbol: &str, properties: serde_json::Value) -> Start {
        Start {
            instance_id: id,
            rule_id: "rule1".into(),
            op_id: "op1".into(),
            symbol: symbol.into(),
            data_source: None,
            properties: properties.as_object().cloned().unwrap_or_default(),
            ..Start::default()
        }
    }

    /// Starts a source; returns the host's receiver for its ring, and the reply.
    fn start_source(
        &mut self,
        id: u64,
        symbol: &str,
        props: serde_json::Value,
    ) -> (TupleReceiver, Message) {
        let ring = Ring::create(1 << 16).unwrap();
        let receiver = TupleReceiver::new(ring.consumer(endpoint()).unwrap());
        self.send(
            Message::StartSource(Host::start(id, symbol, props)),
            &[&ring],
        );
        (receiver, self.next())
    }

    fn stop(&mut self, id: u64) {
        self.send(Message::Stop { instance_id: id }, &[]);
        assert_eq!(self.next(), Message::Stopped { instance_id: id });
    }

    fn event(&self) -> &'static str {
        self.events.rx.recv_timeout(WAIT).expect("a plugin event")
    }

    /// Sends `Shutdown` (or closes the channel) and waits for `serve` to return.
    fn finish(mut self, shutdown: bool) -> Result<(), ServeError> {
        if shutdown {
            self.send(Message::Shutdown, &[]);
        } else {
            drop(self.channel);
        }
        let result = self.done.recv_timeout(WAIT).expect("serve returned");
        self.runtime.take().unwrap().join().unwrap();
        result
    }
}

fn ns(receiver: &mut TupleReceiver, count: usize) -> Vec<i64> {
    (0..count)
        .map(|_| {
            let view = receiver.recv_timeout(WAIT).unwrap();
            view.get("n").and_then(|n| n.as_i64()).unwrap()
        })
        .collect()
}

// ---- Tests ----------------------------------------------------------------------------------

#[test]
fn ping_is_answered_and_shutdown_ends_serve() {
    let mut host = Host::new();
    host.send(Message::Ping { nonce: 77 }, &[]);
    assert_eq!(host.next(), Message::Pong { nonce: 77 });
    host.finish(true).unwrap();
}

#[test]
fn closing_the_channel_ends_serve() {
    let host = Host::new();
    host.finish(false).unwrap();
}

#[test]
fn a_source_writes_its_tuples_into_the_ring_then_ends_the_stream() {
    let mut host = Host::new();
    let (mut rx, reply) = host.start_source(1, "counter", json!({"count": 500}));
    assert_eq!(reply, Message::Started { instance_id: 1 });
    assert_eq!(ns(&mut rx, 500), (0..500).collect::<Vec<_>>());
    assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
    // Its log event reached the host, tagged with the instance.
    let log = host.log_containing("counter opened");
    assert_eq!(log.level, LogLevel::Info);
    assert_eq!(log.instance_id, Some(1));
    assert!(log.message.contains("rule=\"rule1\""), "{}", log.message);
    // The source ended by itself; stopping it is still answered.
    host.stop(1);
    host.finish(true).unwrap();
}

#[test]
fn stop_cancels_a_running_source_and_closes_its_ring() {
    let mut host = Host::new();
    let (mut rx, reply) = host.start_source(7, "counter", json!({}));
    assert_eq!(reply, Message::Started { instance_id: 7 });
    assert_eq!(ns(&mut rx, 3), [0, 1, 2]);
    host.stop(7);
    assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
    // A stopped instance's id can be used again.
    let (mut rx, reply) = host.start_source(7, "counter", json!({"count": 1}));
    assert_eq!(reply, Message::Started { instance_id: 7 });
    assert_eq!(ns(&mut rx, 1), [0]);
    host.finish(true).unwrap();
}

#[test]
fn shutdown_stops_running_instances() {
    let mut host = Host::new();
    let (mut rx, reply) = host.start_source(1, "counter", json!({}));
    assert_eq!(reply, Message::Started { instance_id: 1 });
    assert_eq!(ns(&mut rx, 3), [0, 1, 2]);
    host.finish(true).unwrap();
    assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
}

#[test]
fn a_failing_configure_is_answered_with_its_text() {
    let mut host = Host::new();
    let (_rx, reply) = host.start_source(2, "picky", json!({"interval": "soon"}));
    let Message::Failed { instance_id, error } = reply else {
        panic!("expected failed, got {reply:?}");
    };
    assert_eq!(instance_id, 2);
    assert_eq!(
        error,
        "configure failed: property `interval`: expected milliseconds, got Some(String(\"soon\"))"
    );
    // The failed instance is gone: its id is free and stopping it is harmless.
    host.stop(2);
    let (_rx, reply) = host.start_source(2, "picky", json!({"interval": 5}));
    assert_eq!(reply, Message::Started { instance_id: 2 });
    host.finish(true).unwrap();
}

#[test]
fn validate_answers_with_the_functions_verdict() {
    let mut host = Host::new();
    let fields = |names: &[&str]| -> Vec<ArgShape> {
        names
            .iter()
            .map(|n| ArgShape::Field {
                name: (*n).to_owned(),
            })
            .collect()
    };
    let mut ask = |request_id: u64, symbol: &str, args: Vec<ArgShape>| {
        host.send(
            Message::Validate {
                request_id,
                symbol: symbol.into(),
                args,
            },
            &[],
        );
        match host.next() {
            Message::Validated {
                request_id: answered,
                error,
            } => {
                assert_eq!(answered, request_id);
                error
            }
            other => panic!("expected validated, got {other:?}"),
        }
    };
    assert_eq!(ask(1, "add", fields(&["a", "b"])), None);
    assert_eq!(
        ask(2, "add", fields(&["a"])).as_deref(),
        Some("add takes two arguments, got 1")
    );
    let error = ask(3, "nope", fields(&[])).unwrap();
    assert!(error.contains("has no function `nope`"), "{error}");
    // A panic in `validate_args` is an answer too, and the plugin lives on.
    let error = ask(4, "add", fields(&["a", "b", "boom"])).unwrap();
    assert!(
        error.contains("function `add`: validate_args panicked: validate_args exploded"),
        "{error}"
    );
    assert_eq!(ask(5, "add", fields(&["x", "y"])), None);
    host.finish(true).unwrap();
}

#[test]
fn unknown_symbols_and_duplicate_ids_fail() {
    let mut host = Host::new();
    let (_rx, reply) = host.start_source(1, "nope", json!({}));
    let Message::Failed { error, .. } = reply else {
        panic!("{reply:?}")
    };
    assert!(
        error.contains("has no source `nope`")
            && error.contains("`counter`, `exploding`, `factory_panics`, `flood`"),
        "{error}"
    );
    let (_rx1, reply) = host.start_source(1, "counter", json!({}));
    assert_eq!(reply, Message::Started { instance_id: 1 });
    let (_rx2, reply) = host.start_source(1, "counter", json!({}));
    let Message::Failed { error, .. } = reply else {
        panic!("{reply:?}")
    };
    assert!(error.contains("already runs an instance 1"), "{error}");
    host.finish(true).unwrap();
}

#[test]
fn a_panicking_source_is_reported_and_the_plugin_lives_on() {
    let mut host = Host::new();
    let (mut rx, reply) = host.start_source(3, "exploding", json!({}));
    assert_eq!(reply, Message::Started { instance_id: 3 });
    let log = host.log_containing("flux capacitor");
    assert_eq!(log.level, LogLevel::Error);
    assert_eq!(log.instance_id, Some(3));
    assert!(
        log.message
            .contains("source `exploding`: open panicked: the flux capacitor overheated"),
        "{}",
        log.message
    );
    assert_eq!(host.event(), "source closed");
    assert!(rx.recv_timeout(WAIT).unwrap_err().is_closed());
    // A panicking factory fails the start.
    let (_rx, reply) = host.start_source(4, "factory_panics", json!({}));
    let Message::Failed { error, .. } = reply else {
        panic!("{reply:?}")
    };
    assert!(error.contains("create failed"), "{error}");
    assert!(error.contains("panicked: no counters today"), "{error}");
    // The plugin still answers.
    host.send(Message::Ping { nonce: 1 }, &[]);
    assert_eq!(host.next(), Message::Pong { nonce: 1 });
    host.stop(3);
    host.finish(true).unwrap();
}

#[test]
fn a_sink_collects_what_the_host_sends_and_closes_at_end_of_stream() {
    let mut host = Host::new();
    let ring = Ring::create(1 << 16).unwrap();
    let mut tx = TupleSender::new(ring.producer(endpoint()).unwrap());
    host.send(
        Message::StartSink(Host::start(5, "keep", json!({"path": "x"}))),
        &[&ring],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 5 });
    for n in 0..1000i64 {
        tx.send(&Tuple::new(n).with_field("n", n)).unwrap();
    }
    drop(tx);
    assert_eq!(host.event(), "sink closed");
    let kept = host.events.kept.lock().unwrap().clone();
    // Tuple 13 made `collect` panic; the sink went on.
    let expected: Vec<Tuple> = (0..1000i64)
        .filter(|n| *n != 13)
        .map(|n| Tuple::new(n).with_field("n", n))
        .collect();
    assert_eq!(kept, expected);
    let log = host.log_containing("unlucky tuple");
    assert_eq!(log.instance_id, Some(5));
    host.stop(5);
    host.finish(true).unwrap();
}

#[test]
fn a_buffering_sinks_tuples_are_acknowledged_only_once_flushed() {
    let mut host = Host::new();
    let ring = Ring::create(1 << 16).unwrap();
    let mut tx = TupleSender::new(ring.producer(endpoint()).unwrap());
    host.send(
        Message::StartSink(Host::start(6, "buffered", json!({}))),
        &[&ring],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 6 });
    for n in 0..3000i64 {
        tx.send(&Tuple::new(n).with_field("n", n)).unwrap();
    }
    // The runtime flushes once no tuple came for a while; only then are they acknowledged.
    let deadline = std::time::Instant::now() + WAIT;
    while !tx.producer().all_acknowledged() {
        assert!(std::time::Instant::now() < deadline, "never acknowledged");
        std::thread::yield_now();
    }
    assert_eq!(host.events.flushed.load(Ordering::SeqCst), 3000);
    host.stop(6);
    host.finish(true).unwrap();
}

#[test]
fn stopping_a_sink_closes_it() {
    let mut host = Host::new();
    let ring = Ring::create(1 << 16).unwrap();
    let mut tx = TupleSender::new(ring.producer(endpoint()).unwrap());
    host.send(
        Message::StartSink(Host::start(6, "keep", json!({}))),
        &[&ring],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 6 });
    tx.send(&Tuple::new(1).with_field("signal", true)).unwrap();
    assert_eq!(host.event(), "collected the signal");
    host.stop(6);
    assert_eq!(host.event(), "sink closed");
    assert_eq!(host.events.kept.lock().unwrap().len(), 1);
    // The sink released its end of the ring.
    assert!(
        tx.send(&Tuple::new(2)).unwrap_err().is_closed(),
        "the ring should be closed"
    );
    host.finish(true).unwrap();
}

#[test]
fn a_sink_whose_configure_fails_is_answered_with_failed() {
    let mut host = Host::new();
    let ring = Ring::create(1 << 16).unwrap();
    host.send(
        Message::StartSink(Host::start(8, "keep", json!({"fail": true}))),
        &[&ring],
    );
    let reply = host.next();
    let Message::Failed { error, .. } = reply else {
        panic!("{reply:?}")
    };
    assert!(
        error.ends_with("configure failed: property `fail`: asked to fail"),
        "{error}"
    );
    host.finish(true).unwrap();
}

#[test]
fn a_source_reads_the_state_the_host_kept_and_tells_it_of_changes() {
    let mut host = Host::new();
    let ring = Ring::create(1 << 16).unwrap();
    let mut receiver = TupleReceiver::new(ring.consumer(endpoint()).unwrap());
    let mut start = Host::start(4, "resume", json!({"count": 2}));
    start.state = json!({"next": 5}).as_object().unwrap().clone();
    host.send(Message::StartSource(start), &[&ring]);
    assert_eq!(host.next(), Message::Started { instance_id: 4 });
    let ns: Vec<i64> = (0..2)
        .map(|_| {
            receiver
                .recv_timeout(WAIT)
                .unwrap()
                .get("n")
                .unwrap()
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [5, 6]);
    assert_eq!(
        host.next(),
        Message::State {
            instance_id: 4,
            key: "next".into(),
            value: Some(json!(7)),
        }
    );
    host.finish(true).unwrap();
}

#[test]
fn a_rewindable_source_is_rewound_before_it_opens_and_sends_offsets_when_asked() {
    let mut host = Host::new();
    let rewound = |id: u64, symbol: &str, to: Option<u64>, offsets: bool| {
        let mut start = Host::start(id, symbol, json!({"count": 2}));
        start.rewind_to = to.map(|n| n.to_le_bytes().to_vec());
        start.send_offsets = offsets;
        start
    };
    // Rewound to 4, offsets asked for: 5 and 6, each with its offset.
    let ring = Ring::create(1 << 16).unwrap();
    let mut receiver = TupleReceiver::new(ring.consumer(endpoint()).unwrap());
    host.send(
        Message::StartSource(rewound(1, "seq", Some(4), true)),
        &[&ring],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 1 });
    for n in [5, 6] {
        // Wait for the tuple (its offset record comes first) without taking it.
        while !receiver.ready().unwrap() {
            receiver.consumer().peek_kind(Some(WAIT)).unwrap();
        }
        let offset = receiver.next_offset();
        let view = receiver.recv_timeout(WAIT).unwrap();
        assert_eq!(view.get("n").unwrap().as_i64(), Some(n));
        assert_eq!(offset, Some(Offset::from_u64(n as u64)));
    }
    // Offsets not asked for: the same tuples, no offset records.
    let ring = Ring::create(1 << 16).unwrap();
    let mut receiver = TupleReceiver::new(ring.consumer(endpoint()).unwrap());
    host.send(
        Message::StartSource(rewound(2, "seq", None, false)),
        &[&ring],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 2 });
    assert_eq!(ns(&mut receiver, 2), [0, 1]);
    assert!(receiver.recv_timeout(WAIT).unwrap_err().is_closed());
    assert_eq!(receiver.next_offset(), None);
    // A rewind the source refuses fails the start with its text, as does rewinding a source
    // that is not rewindable.
    let ring = Ring::create(1 << 16).unwrap();
    host.send(
        Message::StartSource(rewound(3, "seq", Some(13), true)),
        &[&ring],
    );
    match host.next() {
        Message::Failed {
            instance_id: 3,
            error,
        } => {
            assert_eq!(error, "rewind failed: offset 13 was compacted away")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    host.send(
        Message::StartSource(rewound(4, "counter", Some(1), true)),
        &[&ring],
    );
    match host.next() {
        Message::Failed {
            instance_id: 4,
            error,
        } => {
            assert!(error.contains("not rewindable"), "{error}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    host.finish(true).unwrap();
}

#[test]
fn function_calls_are_answered_in_order() {
    let mut host = Host::new();
    let requests = Ring::create(1 << 16).unwrap();
    let replies = Ring::create(1 << 16).unwrap();
    let mut calls = TupleSender::new(requests.producer(endpoint()).unwrap());
    let mut answers = TupleReceiver::new(replies.consumer(endpoint()).unwrap());
    host.send(
        Message::StartFunction(Host::start(9, "add", json!({"funcId": 42}))),
        &[&requests, &replies],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 9 });
    // Pipelined: all calls first, then all replies.
    for seq in 0..100u64 {
        let a = seq as i64;
        call::send_call(&mut calls, seq, &[ValueRef::Int(a), ValueRef::Int(100)]).unwrap();
    }
    call::send_call(&mut calls, 100, &[ValueRef::Int(1)]).unwrap();
    call::send_call(&mut calls, 101, &[ValueRef::Int(6), ValueRef::Int(7)]).unwrap();
    call::send_call(&mut calls, 102, &[ValueRef::Int(0), ValueRef::Int(0)]).unwrap();
    for seq in 0..100u64 {
        let view = answers.recv_timeout(WAIT).unwrap();
        let (got, result) = call::parse_reply(&view).unwrap();
        assert_eq!(got, seq);
        assert_eq!(result.unwrap().as_i64(), Some(seq as i64 + 100));
    }
    let mut next_error = |seq| {
        let view = answers.recv_timeout(WAIT).unwrap();
        let (got, result) = call::parse_reply(&view).unwrap();
        assert_eq!(got, seq);
        result.unwrap_err().to_owned()
    };
    assert_eq!(next_error(100), "add takes two integers, got 1 argument(s)");
    assert_eq!(
        next_error(101),
        "function `add`: exec panicked: unlucky sum"
    );
    // The function lives on after the panic; its context carries the function id.
    let view = answers.recv_timeout(WAIT).unwrap();
    let (got, result) = call::parse_reply(&view).unwrap();
    assert_eq!((got, result.unwrap().as_i64()), (102, Some(42)));
    drop(view);
    host.stop(9);
    // The function released its rings.
    assert!(answers.recv_timeout(WAIT).unwrap_err().is_closed());
    host.finish(true).unwrap();
}

#[test]
fn a_batch_of_calls_is_answered_call_by_call_in_order() {
    let mut host = Host::new();
    let requests = Ring::create(1 << 16).unwrap();
    let replies = Ring::create(1 << 16).unwrap();
    let mut calls = TupleSender::new(requests.producer(endpoint()).unwrap());
    let mut answers = TupleReceiver::new(replies.consumer(endpoint()).unwrap());
    host.send(
        Message::StartFunction(Host::start(9, "add", json!({}))),
        &[&requests, &replies],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 9 });
    // Calls 50..55 as one record: add(i, 1000) for i in 0..5, except that call 53 gets
    // (6, 7), whose sum makes `add` panic; a single call follows the batch.
    let arg = |i: usize| {
        let (call, index) = (i / 2, i % 2);
        let v = match (call, index) {
            (3, 0) => 6,
            (3, 1) => 7,
            (_, 0) => call as i64,
            _ => 1000,
        };
        FieldValue::from(ValueRef::Int(v))
    };
    let batch = call::CallBatch {
        first_seq: 50,
        calls: 5,
        arity: 2,
        arg: &arg,
    };
    calls.send(&batch).unwrap();
    call::send_call(&mut calls, 55, &[ValueRef::Int(1), ValueRef::Int(2)]).unwrap();
    for seq in 50..56u64 {
        let view = answers.recv_timeout(WAIT).unwrap();
        let (got, result) = call::parse_reply(&view).unwrap();
        assert_eq!(got, seq);
        match seq {
            53 => assert_eq!(
                result.unwrap_err(),
                "function `add`: exec panicked: unlucky sum"
            ),
            55 => assert_eq!(result.unwrap().as_i64(), Some(3)),
            _ => assert_eq!(result.unwrap().as_i64(), Some(seq as i64 - 50 + 1000)),
        }
    }
    host.stop(9);
    assert!(answers.recv_timeout(WAIT).unwrap_err().is_closed());
    host.finish(true).unwrap();
}

#[test]
fn unexpected_messages_are_refused_with_an_error() {
    let mut host = Host::new();
    host.send(Message::Started { instance_id: 1 }, &[]);
    let reply = host.next();
    let Message::Error { message } = reply else {
        panic!("{reply:?}")
    };
    assert!(message.contains("`started`"), "{message}");
    // A stop for an instance the plugin never had is answered all the same.
    host.stop(12345);
    host.finish(true).unwrap();
}

#[test]
fn a_sink_ring_with_invalid_records_is_reported() {
    let mut host = Host::new();
    let ring = Ring::create(1 << 16).unwrap();
    let mut producer = ring.producer(endpoint()).unwrap();
    host.send(
        Message::StartSink(Host::start(10, "keep", json!({}))),
        &[&ring],
    );
    assert_eq!(host.next(), Message::Started { instance_id: 10 });
    // A record that is not a tuple.
    let mut claim = producer.claim(8).unwrap();
    claim.copy_from_slice(b"garbage!");
    claim.commit();
    let log = host.log_containing("ring failed");
    assert_eq!(log.level, LogLevel::Error);
    assert!(
        log.message.contains("not a tuple record"),
        "{}",
        log.message
    );
    assert_eq!(host.event(), "sink closed");
    assert!(matches!(producer.claim(8), Err(Error::Closed)));
    host.finish(true).unwrap();
}

#[path = "polled_tests.rs"]
mod polled;
