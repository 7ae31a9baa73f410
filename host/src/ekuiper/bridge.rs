//! The bridge: a host thread that plays a shmplug plugin on the supervisor's control channel
//! and rings, and drives the eKuiper plugin process over eKuiper's portable protocol.
//!
//! One bridge per process: it is started when the process has said `handshake` and ends when
//! the process exits (then it closes the control channel, which the supervisor takes for a
//! crash and answers with a restart), when the supervisor closes the channel, or on
//! `Shutdown` (then it ends the process with `SIGTERM`). Each instance has a thread that
//! moves its data between the instance's rings and its SP socket.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value as Json, json};
use shmplug_transport::control::{ControlChannel, ControlError, Hello, Message, Start};
use shmplug_transport::tuple::call;
use shmplug_transport::{
    EndpointConfig, Error as TransportError, Ring, Tuple, TupleReceiver, TupleSender, Validation,
};

use super::paths;
use super::sp::{Rep, SpError, SpListener, SpStream, proto};
use super::{Symbols, convert};

/// How long an instance thread waits on a socket or a ring before it checks for a stop.
const POLL: Duration = Duration::from_millis(50);
/// How long the control loop waits for a message before it checks the process.
const IDLE: Duration = Duration::from_millis(100);
/// eKuiper's `portable.sendTimeout` / `recvTimeout` default: how long the plugin has to answer
/// a command or a call, or to acknowledge a sink record.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the bridge thread starts with.
pub(crate) struct BridgeSetup {
    pub plugin: String,
    pub symbols: Symbols,
    pub channel: ControlChannel,
    pub control: Rep,
    pub control_listener: SpListener,
    pub pidfd: OwnedFd,
}

/// An instance's ring endpoints, kept open after its process died: the supervisor retires
/// the rings and closes them itself, so that the handles switch to the restarted process's
/// rings instead of seeing the end of a stream.
type Leftover = Box<dyn Send>;

/// The bridge thread, as the supervisor's process record holds it.
pub(crate) struct BridgeThread {
    handle: Option<JoinHandle<Vec<Leftover>>>,
    /// Dropped with the process record, after the supervisor retired the rings.
    leftovers: Vec<Leftover>,
}

impl std::fmt::Debug for BridgeThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeThread")
            .field("running", &self.handle.is_some())
            .field("leftovers", &self.leftovers.len())
            .finish()
    }
}

impl BridgeThread {
    /// Waits for the bridge to finish its clean-up (after its channel was shut down).
    pub(crate) fn join(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.leftovers = handle.join().unwrap_or_default();
        }
    }
}

/// Starts the bridge thread; it sends `Hello` first.
pub(crate) fn spawn(setup: BridgeSetup) -> std::io::Result<BridgeThread> {
    let name = format!("shmplug-{}-ekuiper", setup.plugin);
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || Bridge::new(setup).run())?;
    Ok(BridgeThread {
        handle: Some(handle),
        leftovers: Vec::new(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Source,
    Sink,
    Function,
}

/// eKuiper's meta of an instance: the names of its sockets.
#[derive(Clone, Debug)]
struct Meta {
    rule_id: String,
    op_id: String,
    instance_id: u64,
}

impl Meta {
    fn json(&self) -> Json {
        json!({"ruleId": self.rule_id, "opId": self.op_id, "instanceId": self.instance_id})
    }
}

struct Instance {
    kind: Kind,
    symbol: String,
    meta: Meta,
    cancel: Arc<AtomicBool>,
    /// Returns the endpoints when the plugin's side of the instance went away.
    thread: Option<JoinHandle<Option<Leftover>>>,
    /// Sockets this instance listens on (removed on drop).
    _listeners: Vec<SpListener>,
}

/// A function symbol's REP socket, shared by every instance of the symbol (as in eKuiper,
/// calls to one symbol take turns).
struct FuncChannel {
    rep: Rep,
    _listener: SpListener,
}

struct Bridge {
    plugin: String,
    symbols: Symbols,
    channel: ControlChannel,
    control: Rep,
    _control_listener: SpListener,
    pidfd: OwnedFd,
    instances: HashMap<u64, Instance>,
    functions: HashMap<String, Arc<Mutex<FuncChannel>>>,
    /// Sink data sockets the plugin listens on: removed if the plugin leaves them behind.
    plugin_sockets: Vec<PathBuf>,
    /// Endpoints of instances whose process died (see [`Leftover`]).
    leftovers: Vec<Leftover>,
}

impl Bridge {
    fn new(setup: BridgeSetup) -> Bridge {
        Bridge {
            plugin: setup.plugin,
            symbols: setup.symbols,
            channel: setup.channel,
            control: setup.control,
            _control_listener: setup.control_listener,
            pidfd: setup.pidfd,
            instances: HashMap::new(),
            functions: HashMap::new(),
            plugin_sockets: Vec::new(),
            leftovers: Vec::new(),
        }
    }

    fn run(mut self) -> Vec<Leftover> {
        let mut hello = Hello::new(self.plugin.clone());
        hello.sources = self.symbols.sources.clone();
        hello.sinks = self.symbols.sinks.clone();
        hello.functions = self.symbols.functions.clone();
        if self.channel.send(&Message::Hello(hello), &[]).is_ok() {
            self.serve();
        }
        self.teardown();
        std::mem::take(&mut self.leftovers)
    }

    fn serve(&mut self) {
        loop {
            let (message, rings) = match self.channel.recv_timeout(Some(IDLE)) {
                Ok(received) => received,
                Err(TransportError::Control(ControlError::TimedOut(_))) => {
                    self.end_finished_streams();
                    if self.process_exited() {
                        tracing::warn!(plugin = %self.plugin, "the eKuiper plugin process exited");
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            };
            let sent = match message {
                Message::StartSource(start) => self.start(Kind::Source, start, rings),
                Message::StartSink(start) => self.start(Kind::Sink, start, rings),
                Message::StartFunction(start) => self.start(Kind::Function, start, rings),
                Message::Stop { instance_id } => {
                    self.stop(instance_id);
                    self.channel.send(&Message::Stopped { instance_id }, &[])
                }
                Message::Ping { nonce } => {
                    if self.process_exited() {
                        return;
                    }
                    self.channel.send(&Message::Pong { nonce }, &[])
                }
                // eKuiper validates a function's arguments over the function's own socket,
                // which exists only once an instance runs: the check at load is not forwarded,
                // and the arguments are accepted (the calls answer for them).
                Message::Validate { request_id, .. } => self.channel.send(
                    &Message::Validated {
                        request_id,
                        error: None,
                    },
                    &[],
                ),
                Message::Shutdown => {
                    self.stop_all();
                    let _ = rustix::process::pidfd_send_signal(
                        &self.pidfd,
                        rustix::process::Signal::TERM,
                    );
                    return;
                }
                other => {
                    tracing::debug!(plugin = %self.plugin, "bridge ignores `{}`", other.type_name());
                    Ok(())
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }

    /// True once the plugin process has exited (its pidfd is readable).
    fn process_exited(&self) -> bool {
        self.exits_within(Duration::ZERO)
    }

    /// True if the plugin process has exited or exits within `timeout`.
    fn exits_within(&self, timeout: Duration) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.pidfd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(timeout).unwrap_or_default();
        matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
    }

    /// Instances whose plugin side closed its socket: if the process lives on, that was the
    /// end of the stream (the rings close); if it died, the endpoints stay open for the
    /// supervisor to retire (the handles then switch to the restarted process).
    fn end_finished_streams(&mut self) {
        let finished: Vec<u64> = self
            .instances
            .iter()
            .filter(|(_, i)| i.thread.as_ref().is_some_and(JoinHandle::is_finished))
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            let Some(instance) = self.instances.get_mut(&id) else {
                continue;
            };
            let Some(leftover) = instance.thread.take().and_then(|t| t.join().ok()).flatten()
            else {
                continue;
            };
            // A crash closes the process's sockets a moment before its pidfd reports the exit.
            if self.exits_within(Duration::from_millis(200)) {
                self.leftovers.push(leftover);
            } else {
                drop(leftover);
            }
        }
    }

    /// Sends one eKuiper control command and waits for the plugin's answer.
    fn command(&mut self, cmd: &str, control: &Json) -> Result<(), String> {
        let arg = control.to_string();
        let body = json!({"cmd": cmd, "arg": arg}).to_string();
        let answer = exchange(&mut self.control, body.as_bytes(), REPLY_TIMEOUT)
            .map_err(|e| format!("the plugin did not answer the `{cmd}` command: {e}"))?;
        if answer == b"ok" {
            Ok(())
        } else {
            Err(format!(
                "the plugin answered the `{cmd}` command with: {}",
                String::from_utf8_lossy(&answer).trim_end()
            ))
        }
    }

    fn meta(&self, start: &Start) -> Meta {
        Meta {
            rule_id: if start.rule_id.is_empty() {
                format!("shmplug{}", std::process::id())
            } else {
                start.rule_id.clone()
            },
            op_id: if start.op_id.is_empty() {
                start.symbol.clone()
            } else {
                start.op_id.clone()
            },
            instance_id: start.instance_id,
        }
    }

    fn start(
        &mut self,
        kind: Kind,
        start: Start,
        rings: Vec<Ring>,
    ) -> shmplug_transport::Result<()> {
        let instance_id = start.instance_id;
        let message = match self.open(kind, &start, rings) {
            Ok(instance) => {
                self.instances.insert(instance_id, instance);
                Message::Started { instance_id }
            }
            Err(error) => Message::Failed { instance_id, error },
        };
        self.channel.send(&message, &[])
    }

    fn open(&mut self, kind: Kind, start: &Start, rings: Vec<Ring>) -> Result<Instance, String> {
        let meta = self.meta(start);
        let cancel = Arc::new(AtomicBool::new(false));
        let config = EndpointConfig::default();
        let mut listeners = Vec::new();
        let thread_name = format!("ekuiper-{}-{}", start.symbol, start.instance_id);
        let ring = |i: usize| {
            rings
                .get(i)
                .cloned()
                .ok_or_else(|| format!("the start carries {} ring(s)", rings.len()))
        };
        let thread = match kind {
            Kind::Source => {
                let producer = ring(0)?
                    .producer(config)
                    .map_err(|e| format!("taking its ring: {e}"))?;
                let path = paths::data(&meta.rule_id, &meta.op_id, meta.instance_id)?;
                let listener = SpListener::bind(&path).map_err(|e| describe(&path, e))?;
                let mut control = json!({
                    "symbolName": start.symbol, "meta": meta.json(), "pluginType": "source",
                    "config": start.properties,
                });
                if let Some(data_source) = &start.data_source {
                    control["dataSource"] = Json::from(data_source.clone());
                }
                let pull = start_and_accept(self, &control, &listener, proto::PULL)?;
                listeners.push(listener);
                let sender = TupleSender::new(producer);
                let cancel = cancel.clone();
                let plugin = self.plugin.clone();
                std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || run_source(&plugin, pull, sender, &cancel))
            }
            Kind::Sink => {
                let consumer = ring(0)?
                    .consumer(config)
                    .map_err(|e| format!("taking its ring: {e}"))?;
                let ack_path = paths::ack(&meta.rule_id, &meta.op_id, meta.instance_id)?;
                let data_path = paths::data(&meta.rule_id, &meta.op_id, meta.instance_id)?;
                let ack_listener =
                    SpListener::bind(&ack_path).map_err(|e| describe(&ack_path, e))?;
                let control = json!({
                    "symbolName": start.symbol, "meta": meta.json(), "pluginType": "sink",
                    "config": start.properties,
                });
                let acks = start_and_accept(self, &control, &ack_listener, proto::PULL)?;
                self.plugin_sockets.push(data_path.clone());
                let push =
                    SpStream::connect(&data_path, proto::PUSH, super::MAX_MESSAGE, REPLY_TIMEOUT)
                        .map_err(|e| describe(&data_path, e))?;
                listeners.push(ack_listener);
                let require_ack = start
                    .properties
                    .get("requireAck")
                    .and_then(Json::as_bool)
                    .unwrap_or(false);
                let receiver =
                    TupleReceiver::with_validation(consumer.acknowledge(), Validation::VALIDATED);
                let cancel = cancel.clone();
                let plugin = self.plugin.clone();
                std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || run_sink(&plugin, receiver, push, acks, require_ack, &cancel))
            }
            Kind::Function => {
                let requests = ring(0)?
                    .consumer(config)
                    .map_err(|e| format!("taking its ring: {e}"))?;
                let replies = ring(1)?
                    .producer(config)
                    .map_err(|e| format!("taking its ring: {e}"))?;
                let channel = self.function_channel(&start.symbol)?;
                let func_meta = json!({
                    "ruleId": meta.rule_id, "opId": meta.op_id, "instanceId": meta.instance_id,
                    "funcId": start.properties.get("funcId").and_then(Json::as_u64).unwrap_or(0),
                })
                .to_string();
                let receiver = TupleReceiver::with_validation(requests, Validation::VALIDATED);
                let sender = TupleSender::new(replies);
                let cancel = cancel.clone();
                std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || run_function(&channel, receiver, sender, &func_meta, &cancel))
            }
        }
        .map_err(|e| format!("cannot start a bridge thread for the instance: {e}"))?;
        Ok(Instance {
            kind,
            symbol: start.symbol.clone(),
            meta,
            cancel,
            thread: Some(thread),
            _listeners: listeners,
        })
    }

    /// The symbol's REP socket, started in the plugin on first use (eKuiper starts a function
    /// once per process and never stops it).
    fn function_channel(&mut self, symbol: &str) -> Result<Arc<Mutex<FuncChannel>>, String> {
        if let Some(channel) = self.functions.get(symbol) {
            return Ok(channel.clone());
        }
        let path = paths::function(symbol)?;
        let listener = SpListener::bind(&path).map_err(|e| describe(&path, e))?;
        let control = json!({
            "symbolName": symbol, "meta": {"ruleId": "", "opId": "", "instanceId": 0},
            "pluginType": "func",
        });
        let stream = start_and_accept(self, &control, &listener, proto::REP)?;
        let channel = Arc::new(Mutex::new(FuncChannel {
            rep: Rep::new(stream),
            _listener: listener,
        }));
        self.functions.insert(symbol.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Stops an instance: tells the plugin (sources and sinks), ends its thread, removes its
    /// sockets.
    fn stop(&mut self, instance_id: u64) {
        let Some(mut instance) = self.instances.remove(&instance_id) else {
            return;
        };
        instance.cancel.store(true, Ordering::SeqCst);
        if let Some(thread) = instance.thread.take() {
            // Sinks first collect what the host committed: the stop command follows.
            if instance.kind == Kind::Sink {
                let _ = thread.join();
            } else {
                instance.thread = Some(thread);
            }
        }
        if instance.kind != Kind::Function {
            let kind = if instance.kind == Kind::Source {
                "source"
            } else {
                "sink"
            };
            let control = json!({
                "symbolName": instance.symbol, "meta": instance.meta.json(), "pluginType": kind,
            });
            if let Err(e) = self.command("stop", &control) {
                tracing::warn!(plugin = %self.plugin, instance = instance_id, "{e}");
            }
        }
        if let Some(thread) = instance.thread.take() {
            let _ = thread.join();
        }
    }

    fn stop_all(&mut self) {
        let ids: Vec<u64> = self.instances.keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }

    /// Ends every instance thread and removes every socket file, the plugin's left-overs
    /// included.
    fn teardown(&mut self) {
        for instance in self.instances.values() {
            instance.cancel.store(true, Ordering::SeqCst);
        }
        let died = self.exits_within(Duration::from_millis(200));
        for instance in self.instances.values_mut() {
            if let Some(thread) = instance.thread.take()
                && let Ok(Some(leftover)) = thread.join()
                && died
            {
                self.leftovers.push(leftover);
            }
        }
        self.instances.clear();
        for channel in self.functions.values() {
            channel
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .rep
                .stream()
                .shutdown();
        }
        self.functions.clear();
        let _ = self.channel.get_ref().shutdown(std::net::Shutdown::Both);
        // The plugin's own listening sockets, if it died before closing them.
        if self.process_exited() {
            for path in self.plugin_sockets.drain(..) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Sends a `start` command while accepting the connection the plugin makes to `listener` as it
/// handles it (nng finishes a dial only once the listener has answered the SP header, so the
/// accept cannot wait for the command's answer).
fn start_and_accept(
    bridge: &mut Bridge,
    control: &Json,
    listener: &SpListener,
    own: u16,
) -> Result<SpStream, String> {
    let answered = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let accepting = scope.spawn(|| {
            listener.accept_while(own, super::MAX_MESSAGE, REPLY_TIMEOUT, || {
                !answered.load(Ordering::SeqCst)
            })
        });
        let result = bridge.command("start", control);
        if result.is_err() {
            answered.store(true, Ordering::SeqCst);
        }
        let accepted = accepting
            .join()
            .unwrap_or_else(|_| Err(SpError::Protocol("the accepting thread panicked".into())));
        result?;
        accepted.map_err(|e| describe(listener.path(), e))
    })
}

fn describe(path: &std::path::Path, e: SpError) -> String {
    format!("ipc://{}: {e}", path.display())
}

/// One command or call over eKuiper's inverted REQ/REP: answers the plugin's newest request
/// with `body` and returns the plugin's next request, its answer. The plugin re-sends
/// `handshake` every 5 s while idle; an answer that starts with `h` means the command was
/// answered to a request the plugin had given up on, so it is sent again (as eKuiper does).
pub(crate) fn exchange(rep: &mut Rep, body: &[u8], timeout: Duration) -> Result<Vec<u8>, SpError> {
    while rep.readable(Duration::ZERO)? {
        rep.recv(Duration::ZERO)?;
    }
    if !rep.has_pending() {
        rep.recv(timeout)?;
    }
    rep.reply(body)?;
    loop {
        let answer = rep.recv(timeout)?;
        if answer.first() == Some(&b'h') {
            rep.reply(body)?;
            continue;
        }
        return Ok(answer.to_vec());
    }
}

/// Logs a recurring error about once a second.
struct Throttle(Option<std::time::Instant>);

impl Throttle {
    fn log(&mut self, log: impl FnOnce()) {
        let now = std::time::Instant::now();
        if self
            .0
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1))
        {
            self.0 = Some(now);
            log();
        }
    }
}

/// PULL from the plugin, tuples into the ring, until stopped or the plugin closes its socket
/// (the end of the stream: dropping the sender closes the ring).
///
/// Returns the sender, still open, when the plugin closed its socket (see [`Leftover`]).
fn run_source(
    plugin: &str,
    mut pull: SpStream,
    mut sender: TupleSender,
    cancel: &AtomicBool,
) -> Option<Leftover> {
    let mut buf = Vec::new();
    let mut throttle = Throttle(None);
    while !cancel.load(Ordering::SeqCst) {
        match pull.recv_timeout(&mut buf, POLL) {
            Ok(()) => {}
            Err(SpError::TimedOut(_)) => continue,
            Err(SpError::Closed) => return Some(Box::new(sender)),
            Err(e) => {
                tracing::error!(plugin, "source socket failed: {e}");
                return Some(Box::new(sender));
            }
        }
        let tuple = match convert::source_message(&buf, convert::now_nanos()) {
            Ok(tuple) => tuple,
            Err(e) => {
                throttle.log(|| tracing::warn!(plugin, "dropping a source message: {e}"));
                continue;
            }
        };
        if !send_until_cancelled(&mut sender, &tuple, cancel) {
            break;
        }
    }
    None
}

/// Sends with back-pressure; false once stopped or the ring is gone.
/// A tuple too large for the ring is dropped with a warning (the stream goes on).
fn send_until_cancelled(sender: &mut TupleSender, tuple: &Tuple, cancel: &AtomicBool) -> bool {
    loop {
        match sender.send_timeout(tuple, POLL) {
            Ok(()) => return true,
            Err(TransportError::TimedOut(_)) if !cancel.load(Ordering::SeqCst) => {}
            Err(e @ TransportError::TooLarge { .. }) => {
                tracing::warn!("dropping a source tuple: {e}");
                return true;
            }
            Err(_) => return false,
        }
    }
}

/// Ring records to the plugin as JSON, one PUSH each; with `require_ack`, each record is
/// released (acknowledged to the host) only after the plugin acknowledged it. Acknowledgements
/// are read either way, so that a plugin that always sends them is never blocked.
fn run_sink(
    plugin: &str,
    mut receiver: TupleReceiver,
    mut push: SpStream,
    mut acks: SpStream,
    require_ack: bool,
    cancel: &AtomicBool,
) -> Option<Leftover> {
    let mut body = Vec::new();
    let mut ack = Vec::new();
    let mut throttle = Throttle(None);
    let mut gone = false;
    loop {
        let stopping = cancel.load(Ordering::SeqCst);
        let received = if stopping {
            match receiver.try_recv() {
                Ok(Some(view)) => Ok(view),
                _ => break,
            }
        } else {
            receiver.recv_timeout(POLL)
        };
        let view = match received {
            Ok(view) => view,
            Err(TransportError::TimedOut(_)) => {
                drain_acks(plugin, &mut acks, &mut ack, &mut throttle);
                continue;
            }
            Err(e) if e.is_closed() => break,
            Err(e) => {
                tracing::error!(plugin, "sink ring failed: {e}");
                break;
            }
        };
        body.clear();
        if let Err(e) = serde_json::to_writer(&mut body, &view.to_json_message()) {
            tracing::error!(plugin, "encoding a sink record: {e}");
            continue;
        }
        if let Err(e) = push.send(&[&body]) {
            // Unacknowledged: a restarted process gets the record again.
            tracing::debug!(plugin, "sending to the sink failed: {e}");
            gone = true;
            break;
        }
        if require_ack {
            match acks.recv_timeout(&mut ack, REPLY_TIMEOUT) {
                Ok(()) => report_ack(plugin, &ack, &mut throttle),
                Err(e) => {
                    tracing::error!(plugin, "the sink did not acknowledge a record: {e}");
                    gone = true;
                    break;
                }
            }
        } else {
            drain_acks(plugin, &mut acks, &mut ack, &mut throttle);
        }
        drop(view);
    }
    gone.then(|| Box::new(receiver) as Leftover)
}

fn drain_acks(plugin: &str, acks: &mut SpStream, ack: &mut Vec<u8>, throttle: &mut Throttle) {
    while let Ok(()) = acks.recv_timeout(ack, Duration::ZERO) {
        report_ack(plugin, ack, throttle);
    }
}

fn report_ack(plugin: &str, ack: &[u8], throttle: &mut Throttle) {
    if let Err(e) = convert::sink_ack(ack) {
        throttle.log(|| tracing::error!(plugin, "the sink failed to collect a record: {e}"));
    }
}

/// Call records from the ring to the plugin's function socket, one round trip each, and the
/// answers back as reply records.
fn run_function(
    channel: &Mutex<FuncChannel>,
    mut receiver: TupleReceiver,
    mut sender: TupleSender,
    func_meta: &str,
    cancel: &AtomicBool,
) -> Option<Leftover> {
    let mut body = Vec::new();
    while !cancel.load(Ordering::SeqCst) {
        let view = match receiver.recv_timeout(POLL) {
            Ok(view) => view,
            Err(TransportError::TimedOut(_)) => continue,
            Err(_) => return None,
        };
        let seq = view.timestamp() as u64;
        let reply = match call::parse_call(&view) {
            Ok(parsed) => {
                body.clear();
                convert::exec_request(&mut body, parsed.args.iter(), func_meta);
                let mut channel = channel.lock().unwrap_or_else(PoisonError::into_inner);
                match exchange(&mut channel.rep, &body, REPLY_TIMEOUT) {
                    Ok(answer) => convert::exec_reply(&answer),
                    // The process is gone: the call stays unanswered, and the handle sends it
                    // again to the restarted process.
                    Err(SpError::Closed) => {
                        drop(channel);
                        drop(view);
                        return Some(Box::new((receiver, sender)));
                    }
                    Err(e) => Err(format!("the plugin did not answer the call: {e}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        drop(view);
        let sent = match reply {
            Ok(value) => call::send_reply(&mut sender, seq, Ok(value)),
            Err(text) => call::send_reply(&mut sender, seq, Err(&text)),
        };
        if sent.is_err() {
            return None;
        }
    }
    None
}
