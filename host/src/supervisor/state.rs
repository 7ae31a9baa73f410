//! State shared by a plugin's API, its monitor thread and its control reader thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shmplug_transport::control::{
    ArgShape, ControlChannel, Hello, MAX_STATE_BYTES, Message, Start, state_size,
};
use shmplug_transport::{Doorbell, Ring, Wakeup};

use super::slot::{Ids, Slot, SlotState};
use super::{InstanceSpec, Phase, PluginSpec, SupervisorConfig, log};
use crate::error::{Error, Result, SymbolKind};

/// What the monitor thread reacts to.
pub(crate) enum Event {
    /// The control channel of process `generation` ended.
    Disconnected { generation: u64, reason: String },
    /// Process `generation` answered a ping.
    Pong { generation: u64, nonce: u64 },
    /// Swap in a new executable.
    Update(PluginSpec, SyncSender<Result<()>>),
    /// Kill and restart the process now.
    Restart(String),
    /// Stop everything; answer when done.
    Shutdown(SyncSender<()>),
}

/// The process the API talks to.
#[derive(Debug)]
pub(crate) struct Link {
    pub generation: u64,
    pub pid: u32,
    pub channel: Arc<ControlChannel>,
    pub hello: Hello,
    /// Wakes the plugin's side of this process's rings (sent to plugins of protocol 1.4 and
    /// later): one descriptor for all its instances instead of one each.
    pub doorbell: Option<Doorbell>,
}

/// A running (or starting) instance, remembered so that it can be replayed.
#[derive(Debug)]
pub(crate) struct Instance {
    pub kind: SymbolKind,
    pub start: Start,
    pub slot: Arc<Slot>,
    /// The rings sent to process `generation`.
    pub rings: Vec<Ring>,
    /// Their data region, bytes.
    pub capacity: usize,
    pub generation: u64,
    pub sent_at: Instant,
    /// `Started` arrived for these rings.
    pub live: bool,
    /// A state entry was refused for size (said once per instance).
    pub state_refused: bool,
}

impl Instance {
    /// Before a source's replay to `link`: a rewindable source is asked for offsets again and
    /// rewound to the offset of the last tuple handed on (see [`Offsets`](super::slot::Offsets)).
    fn rewind(&mut self, link: &Link) {
        let rewindable = link.hello.rewindable.contains(&self.start.symbol);
        let mut offsets = self.slot.offsets();
        if offsets.tracked && !rewindable {
            tracing::warn!(
                instance = self.start.instance_id,
                "source `{}` is no longer rewindable after the plugin's update: it starts anew",
                self.start.symbol
            );
        }
        offsets.tracked = rewindable;
        self.start.send_offsets = rewindable;
        self.start.rewind_to = offsets
            .handed_on
            .filter(|_| rewindable)
            .map(|offset| offset.as_bytes().to_vec());
    }

    /// Sends the start with `rings` (new ones, for `link`'s process), then drops the rings'
    /// memfds: the plugin has them, and new rings are made for the next process.
    fn send(&mut self, rings: Vec<Ring>, link: &Link) -> shmplug_transport::Result<()> {
        self.start.doorbell_slots = rings.iter().filter_map(Ring::doorbell_slot).collect();
        let refs: Vec<&Ring> = rings.iter().collect();
        let sent = link.channel.send(&self.message(), &refs);
        self.rings = rings.into_iter().map(Ring::without_memory_fd).collect();
        sent
    }

    fn message(&self) -> Message {
        let start = self.start.clone();
        match self.kind {
            SymbolKind::Source => Message::StartSource(start),
            SymbolKind::Sink => Message::StartSink(start),
            SymbolKind::Function => Message::StartFunction(start),
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub spec: PluginSpec,
    pub phase: Phase,
    pub link: Option<Arc<Link>>,
    pub instances: BTreeMap<u64, Instance>,
    pub next_instance: u64,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub stop_waiters: HashMap<u64, SyncSender<()>>,
    /// The last `Validate` request id sent.
    pub next_request: u64,
    /// Who waits for the answer to each `Validate` request, and to which process it went. A
    /// waiter dropped (the process went) ends the wait.
    pub validate_waiters: HashMap<u64, (u64, SyncSender<Option<String>>)>,
}

#[derive(Debug)]
pub(crate) struct Supervision {
    pub name: String,
    pub config: SupervisorConfig,
    pub state: Mutex<State>,
    pub changed: Condvar,
    pub events: Mutex<Sender<Event>>,
}

impl Supervision {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn send_event(&self, event: Event) {
        let sender = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = sender.send(event);
    }

    fn ids(&self, kind: SymbolKind, symbol: &str, instance: u64) -> Ids {
        Ids {
            plugin: self.name.clone(),
            kind,
            symbol: symbol.to_owned(),
            instance,
        }
    }

    /// Starts an instance on the current process and waits until it runs.
    pub(crate) fn start_instance(&self, kind: SymbolKind, spec: InstanceSpec) -> Result<Arc<Slot>> {
        let timeout = self.config.start_timeout;
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        let link = loop {
            match (&state.phase, &state.link) {
                (Phase::Running, Some(link)) => break link.clone(),
                (Phase::Failed | Phase::Stopped, _) => {
                    return Err(Error::Unavailable {
                        plugin: self.name.clone(),
                        reason: state
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "it was shut down".into()),
                    });
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable {
                    plugin: self.name.clone(),
                    reason: format!(
                        "still restarting after {timeout:?} (last error: {})",
                        state.last_error.as_deref().unwrap_or("none")
                    ),
                });
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        let offered = match kind {
            SymbolKind::Source => &link.hello.sources,
            SymbolKind::Sink => &link.hello.sinks,
            SymbolKind::Function => &link.hello.functions,
        };
        if !offered.contains(&spec.symbol) {
            return Err(Error::UnknownSymbol {
                plugin: self.name.clone(),
                kind,
                symbol: spec.symbol,
                offered: offered.clone(),
            });
        }
        state.next_instance += 1;
        let id = state.next_instance;
        let ids = self.ids(kind, &spec.symbol, id);
        let capacity = spec.ring_capacity.unwrap_or(self.config.ring_capacity);
        let rings = create_rings(kind, capacity, link.doorbell.as_ref())
            .map_err(|source| super::limits::ring_error(&self.name, source))?;
        let slot = Arc::new(Slot::new(ids.clone()));
        let send_offsets =
            kind == SymbolKind::Source && link.hello.rewindable.contains(&spec.symbol);
        slot.offsets().tracked = send_offsets;
        let instance = Instance {
            kind,
            start: Start {
                instance_id: id,
                rule_id: spec.rule_id,
                op_id: spec.op_id,
                symbol: spec.symbol,
                data_source: spec.data_source,
                properties: spec.properties,
                state: Default::default(),
                send_offsets,
                rewind_to: None,
                // The function client reads batches of replies (from any plugin: a plugin
                // older than 1.3 ignores the field and answers one record per call).
                reply_batches: kind == SymbolKind::Function,
                doorbell_slots: Vec::new(),
            },
            slot: slot.clone(),
            rings: Vec::new(),
            capacity,
            generation: link.generation,
            sent_at: Instant::now(),
            live: false,
            state_refused: false,
        };
        let mut instance = instance;
        if let Err(e) = instance.send(rings, &link) {
            // The reader thread reports the broken channel; the replay after the restart
            // starts this instance again.
            tracing::debug!(plugin = %self.name, "sending start failed: {e}");
        }
        state.instances.insert(id, instance);
        drop(state);

        let mut seen = 0;
        loop {
            let (version, slot_state) = slot.snapshot();
            match slot_state {
                SlotState::Live { .. } => return Ok(slot),
                SlotState::Gone(reason) => {
                    self.forget(id);
                    return Err(Error::StartFailed {
                        plugin: self.name.clone(),
                        kind,
                        symbol: ids.symbol,
                        instance: id,
                        reason,
                    });
                }
                SlotState::Starting | SlotState::Switching => {}
            }
            if version == seen && !slot.wait_change(version, Some(deadline)) {
                self.stop_instance(id, None);
                return Err(ids.timed_out("start", timeout));
            }
            seen = version;
        }
    }

    /// Asks the current process whether function `symbol` accepts `args`, and waits up to the
    /// start time-out for the answer. A process older than protocol 1.2 cannot be asked: its
    /// functions are taken to accept any argument list.
    pub(crate) fn validate(&self, symbol: &str, args: Vec<ArgShape>) -> Result<()> {
        let timeout = self.config.start_timeout;
        let mut state = self.lock();
        let Some(link) = state.link.clone() else {
            return Err(Error::Unavailable {
                plugin: self.name.clone(),
                reason: state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "it has no running process".into()),
            });
        };
        if !link.hello.functions.iter().any(|f| f == symbol) {
            return Err(Error::UnknownSymbol {
                plugin: self.name.clone(),
                kind: SymbolKind::Function,
                symbol: symbol.to_owned(),
                offered: link.hello.functions.clone(),
            });
        }
        let version = link.hello.protocol_version;
        if (version.major, version.minor) < (1, 2) {
            tracing::debug!(
                plugin = %self.name,
                "protocol {version} predates validation; function `{symbol}`'s arguments are not checked at load"
            );
            return Ok(());
        }
        state.next_request += 1;
        let request_id = state.next_request;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        state
            .validate_waiters
            .insert(request_id, (link.generation, tx));
        drop(state);
        let message = Message::Validate {
            request_id,
            symbol: symbol.to_owned(),
            args,
        };
        if let Err(e) = link.channel.send(&message, &[]) {
            self.lock().validate_waiters.remove(&request_id);
            return Err(Error::Unavailable {
                plugin: self.name.clone(),
                reason: format!("asking it to check function `{symbol}`'s arguments failed: {e}"),
            });
        }
        let answer = rx.recv_timeout(timeout);
        self.lock().validate_waiters.remove(&request_id);
        match answer {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(Error::ArgsRefused {
                plugin: self.name.clone(),
                symbol: symbol.to_owned(),
                message,
            }),
            Err(RecvTimeoutError::Timeout) => Err(Error::TimedOut {
                op: "checking the arguments",
                plugin: self.name.clone(),
                kind: SymbolKind::Function,
                symbol: symbol.to_owned(),
                instance: 0,
                timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Unavailable {
                plugin: self.name.clone(),
                reason: format!(
                    "its process went before it answered whether function `{symbol}` accepts \
                     its arguments"
                ),
            }),
        }
    }

    /// Removes instance `id` from the books without telling the plugin.
    fn forget(&self, id: u64) {
        self.lock().instances.remove(&id);
    }

    /// Stops instance `id`: forgets it, marks its slot gone, sends `Stop`, and with `wait`
    /// waits that long for `Stopped`. Returns false if the wait timed out.
    pub(crate) fn stop_instance(&self, id: u64, wait: Option<Duration>) -> bool {
        let mut state = self.lock();
        let Some(instance) = state.instances.remove(&id) else {
            return true;
        };
        instance.slot.set(SlotState::Gone("it was stopped".into()));
        let Some(link) = state.link.clone() else {
            return true;
        };
        let waiter = wait.map(|_| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            state.stop_waiters.insert(id, tx);
            rx
        });
        drop(state);
        let _ = link.channel.send(&Message::Stop { instance_id: id }, &[]);
        match (waiter, wait) {
            (Some(rx), Some(timeout)) => {
                let stopped = rx.recv_timeout(timeout).is_ok();
                self.lock().stop_waiters.remove(&id);
                stopped
            }
            _ => true,
        }
    }

    /// Sends the start of every remembered instance to `link`, with new rings.
    pub(crate) fn replay(&self, state: &mut State, link: &Link) {
        for instance in state.instances.values_mut() {
            let rings = match create_rings(instance.kind, instance.capacity, link.doorbell.as_ref())
            {
                Ok(rings) => rings,
                Err(e) => {
                    let e = super::limits::ring_error(&self.name, e);
                    instance
                        .slot
                        .set(SlotState::Gone(format!("cannot create its rings: {e}")));
                    continue;
                }
            };
            if instance.kind == SymbolKind::Source {
                instance.rewind(link);
            }
            instance.generation = link.generation;
            instance.sent_at = Instant::now();
            instance.live = false;
            if let Err(e) = instance.send(rings, link) {
                tracing::debug!(plugin = %self.name, "replaying a start failed: {e}");
                break;
            }
        }
        state
            .instances
            .retain(|_, i| !matches!(i.slot.snapshot().1, SlotState::Gone(_)));
    }

    /// Marks every instance as switching and returns the rings they used, to be closed once
    /// the old process is gone.
    pub(crate) fn retire_all(&self, state: &mut State) -> Vec<(SymbolKind, Vec<Ring>)> {
        // The old process will not answer them.
        state.validate_waiters.clear();
        state
            .instances
            .values_mut()
            .map(|instance| {
                instance.slot.set(SlotState::Switching);
                instance.live = false;
                (instance.kind, std::mem::take(&mut instance.rings))
            })
            .collect()
    }

    /// Fails every instance with `reason` and returns their rings.
    pub(crate) fn fail_all(&self, state: &mut State, reason: &str) -> Vec<(SymbolKind, Vec<Ring>)> {
        state.validate_waiters.clear();
        let instances = std::mem::take(&mut state.instances);
        instances
            .into_values()
            .map(|instance| {
                instance.slot.set(SlotState::Gone(reason.to_owned()));
                (instance.kind, instance.rings)
            })
            .collect()
    }

    /// Fails instances whose start went unanswered for longer than the start time-out.
    pub(crate) fn expire_starts(&self) {
        let mut state = self.lock();
        let limit = self.config.start_timeout;
        let expired: Vec<u64> = state
            .instances
            .iter()
            .filter(|(_, i)| !i.live && i.sent_at.elapsed() > limit)
            .map(|(id, _)| *id)
            .collect();
        let link = state.link.clone();
        for id in expired {
            if let Some(instance) = state.instances.remove(&id) {
                instance.slot.set(SlotState::Gone(format!(
                    "the plugin did not answer its start within {limit:?}"
                )));
                if let Some(link) = &link {
                    let _ = link.channel.send(&Message::Stop { instance_id: id }, &[]);
                }
            }
        }
    }

    /// Applies a [`Message::State`] to the state kept for `instance`, which its next start
    /// carries: the plugin's own process keeps working from its copy, the host's is for after
    /// a restart. An entry that would make the state larger than [`MAX_STATE_BYTES`] is
    /// refused (said once per instance), so a plugin cannot make the host hold more.
    fn keep_state(&self, instance: &mut Instance, key: String, value: Option<serde_json::Value>) {
        let kept = &mut instance.start.state;
        let Some(value) = value else {
            kept.remove(&key);
            return;
        };
        let old = kept.insert(key.clone(), value);
        if state_size(kept) <= MAX_STATE_BYTES {
            return;
        }
        match old {
            Some(old) => kept.insert(key.clone(), old),
            None => kept.remove(&key),
        };
        if !instance.state_refused {
            instance.state_refused = true;
            tracing::warn!(
                plugin = %self.name,
                instance = instance.start.instance_id,
                "state entry `{key}` refused: the instance's state would exceed {MAX_STATE_BYTES} \
                 bytes (said once per instance)"
            );
        }
    }

    /// Handles one message from process `generation`'s control channel. `Err` says why the
    /// channel can no longer be used (the plugin does not read what the host sends it).
    pub(crate) fn on_message(
        &self,
        generation: u64,
        channel: &ControlChannel,
        message: Message,
    ) -> Result<(), String> {
        match message {
            Message::Started { instance_id } => {
                let mut state = self.lock();
                if let Some(instance) = state.instances.get_mut(&instance_id)
                    && instance.generation == generation
                    && !instance.live
                {
                    instance.live = true;
                    instance.slot.set(SlotState::Live {
                        generation,
                        rings: instance.rings.clone(),
                    });
                }
            }
            Message::Failed { instance_id, error } => {
                let mut state = self.lock();
                if state
                    .instances
                    .get(&instance_id)
                    .is_some_and(|i| i.generation == generation)
                    && let Some(instance) = state.instances.remove(&instance_id)
                {
                    instance.slot.set(SlotState::Gone(error));
                }
            }
            Message::Stopped { instance_id } => {
                if let Some(waiter) = self.lock().stop_waiters.remove(&instance_id) {
                    let _ = waiter.try_send(());
                }
            }
            Message::Validated { request_id, error } => {
                let mut state = self.lock();
                if state
                    .validate_waiters
                    .get(&request_id)
                    .is_some_and(|(to, _)| *to == generation)
                    && let Some((_, waiter)) = state.validate_waiters.remove(&request_id)
                {
                    let _ = waiter.try_send(error);
                }
            }
            Message::Pong { nonce } => self.send_event(Event::Pong { generation, nonce }),
            Message::Ping { nonce } => {
                // The send fails after the socket's send time-out if the plugin does not read
                // (a ping flood that never takes its pongs): that plugin is wedged.
                if let Err(e) = channel.send(&Message::Pong { nonce }, &[]) {
                    return Err(send_failure("a pong", &e, self.config.ping_timeout));
                }
            }
            Message::Log(entry) => log::forward(&self.name, &entry),
            Message::State {
                instance_id,
                key,
                value,
            } => {
                let mut state = self.lock();
                if let Some(instance) = state.instances.get_mut(&instance_id)
                    && instance.generation == generation
                {
                    self.keep_state(instance, key, value);
                }
            }
            Message::Error { message } => {
                tracing::warn!(target: "shmplug::plugin", plugin = %self.name, "plugin reports: {message}");
            }
            other => {
                tracing::warn!(
                    plugin = %self.name,
                    "ignoring unexpected control message `{}` from the plugin",
                    other.type_name()
                );
            }
        };
        Ok(())
    }
}

/// Why a plugin is given up on after sending it `what` failed with `error`: a send that timed
/// out (the socket's send time-out is the ping time-out) means it does not read its control
/// socket.
pub(crate) fn send_failure(
    what: &str,
    error: &shmplug_transport::Error,
    limit: Duration,
) -> String {
    match error {
        shmplug_transport::Error::Io { source, .. }
            if source.kind() == std::io::ErrorKind::WouldBlock =>
        {
            format!(
                "it does not read its control socket: sending it {what} waited longer than \
                 {limit:?}"
            )
        }
        _ => format!("sending it {what} failed: {error}"),
    }
}

/// Reads process `generation`'s control channel until it ends, then tells the monitor.
pub(crate) fn read_control(
    shared: Arc<Supervision>,
    generation: u64,
    channel: Arc<ControlChannel>,
) {
    // A plugin that floods bad frames gets one warning, then one per interval with a count.
    let mut last_warning: Option<Instant> = None;
    let mut unreported = 0u64;
    let reason = loop {
        match channel.recv_timeout(None) {
            Ok((message, _rings)) => {
                if let Err(reason) = shared.on_message(generation, &channel, message) {
                    break reason;
                }
            }
            Err(shmplug_transport::Error::Control(e)) if !e.is_fatal() => {
                let now = Instant::now();
                if last_warning
                    .is_some_and(|at| now.duration_since(at) < BAD_MESSAGE_WARNING_INTERVAL)
                {
                    unreported += 1;
                    continue;
                }
                let more = match unreported {
                    0 => String::new(),
                    n => format!(" ({n} more bad messages since the last warning)"),
                };
                tracing::warn!(plugin = %shared.name, "bad control message from the plugin: {e}{more}; dropped (its descriptors closed)");
                last_warning = Some(now);
                unreported = 0;
            }
            Err(shmplug_transport::Error::Control(
                shmplug_transport::control::ControlError::Closed,
            )) => break "it closed its control socket (exited or crashed)".to_owned(),
            Err(e) => break format!("its control channel failed: {e}"),
        }
    };
    if unreported > 0 {
        tracing::warn!(plugin = %shared.name, "{unreported} more bad control messages from the plugin were dropped since the last warning");
    }
    shared.send_event(Event::Disconnected { generation, reason });
}

/// Least time between two warnings about bad control messages from one plugin process.
const BAD_MESSAGE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// New rings for an instance of `kind`: one for a source or a sink, request and reply rings
/// for a function.
/// With a `doorbell`, the plugin's side of each ring wakes through a slot of it (all rings of
/// the instance, or none if it has too few free slots).
pub(crate) fn create_rings(
    kind: SymbolKind,
    capacity: usize,
    doorbell: Option<&Doorbell>,
) -> shmplug_transport::Result<Vec<Ring>> {
    // The side the plugin waits on: the consumer's on rings the host produces.
    let plugin_waits: &[Wakeup] = match kind {
        SymbolKind::Source => &[Wakeup::Space],
        SymbolKind::Sink => &[Wakeup::Data],
        SymbolKind::Function => &[Wakeup::Data, Wakeup::Space],
    };
    if let Some(doorbell) = doorbell {
        let rings = plugin_waits
            .iter()
            .map(|&which| Ring::create_with_doorbell(capacity, doorbell, which))
            .collect::<shmplug_transport::Result<Vec<Ring>>>()?;
        if rings.iter().all(|ring| ring.doorbell_slot().is_some()) {
            return Ok(rings);
        }
    }
    plugin_waits
        .iter()
        .map(|_| Ring::create(capacity))
        .collect()
}

/// Closes, from the host side, the ends of `rings` that the plugin held, so that a handle
/// waiting on them wakes up and sees them closed. Call only once the plugin no longer uses
/// them (it exited, or stopped the instance).
pub(crate) fn close_plugin_ends(kind: SymbolKind, rings: &[Ring]) {
    for (index, ring) in rings.iter().enumerate() {
        let plugin_produces = match kind {
            SymbolKind::Source => true,
            SymbolKind::Sink => false,
            // Request ring: the host produces; reply ring: the plugin produces.
            SymbolKind::Function => index == 1,
        };
        if plugin_produces {
            ring.close_producer_end();
        } else {
            ring.close_consumer_end();
        }
        // Also wake an event-loop waiter that is between its readiness check and its sleep.
        for fd in [ring.data_ready_fd(), ring.space_ready_fd()]
            .into_iter()
            .flatten()
        {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }
}
