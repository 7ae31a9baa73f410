//! The control messages: plain data, no I/O.

use serde::{Deserialize, Serialize};

use super::version::{PROTOCOL_VERSION, ProtocolVersion};

/// One control message. On the wire it is a JSON object whose `type` field is the variant's
/// name in `snake_case` ([`Message::type_name`]) and whose other fields are the variant's.
///
/// | message | direction | rings attached |
/// | --- | --- | --- |
/// | [`Hello`](Message::Hello) | plugin -> host, first | 0 |
/// | [`StartSource`](Message::StartSource) | host -> plugin | 1: the source's ring, plugin produces |
/// | [`StartSink`](Message::StartSink) | host -> plugin | 1: the sink's ring, host produces |
/// | [`StartFunction`](Message::StartFunction) | host -> plugin | 2: request ring (host produces), reply ring (plugin produces) |
/// | [`Started`](Message::Started) / [`Failed`](Message::Failed) | plugin -> host, reply to a start | 0 |
/// | [`Stop`](Message::Stop) / [`Stopped`](Message::Stopped) | host -> plugin / reply | 0 |
/// | [`Ping`](Message::Ping) / [`Pong`](Message::Pong) | either way / reply | 0 |
/// | [`Shutdown`](Message::Shutdown) | host -> plugin | 0 |
/// | [`Log`](Message::Log) | plugin -> host | 0 |
/// | [`State`](Message::State) | plugin -> host | 0 |
/// | [`Validate`](Message::Validate) / [`Validated`](Message::Validated) | host -> plugin / reply (1.2) | 0 |
/// | [`Error`](Message::Error) | either way | 0 |
/// | [`Doorbell`](Message::Doorbell) | host -> plugin, before the starts that use it (1.4) | 0; the doorbell's memfd and eventfd |
///
/// Unknown fields are ignored when decoding, so a minor protocol version may add optional
/// fields; a new message type shows up as
/// [`ControlError::UnknownMessage`](super::ControlError::UnknownMessage).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The plugin introduces itself; the host refuses an incompatible protocol version.
    Hello(Hello),
    /// Start a source instance; the ring carries tuples from the plugin to the host.
    StartSource(Start),
    /// Start a sink instance; the ring carries tuples from the host to the plugin.
    StartSink(Start),
    /// Start a function instance; the first ring carries calls from the host to the plugin, the
    /// second carries results back.
    StartFunction(Start),
    /// The instance was configured and opened.
    Started {
        /// The instance from the start message.
        instance_id: u64,
    },
    /// The instance could not be configured or opened; starting its rule fails with `error`.
    Failed {
        /// The instance from the start message.
        instance_id: u64,
        /// What went wrong, in words a person can act on.
        error: String,
    },
    /// Stop an instance and close its rings.
    Stop {
        /// The instance to stop.
        instance_id: u64,
    },
    /// The instance has stopped and released its rings.
    Stopped {
        /// The instance that stopped.
        instance_id: u64,
    },
    /// Are you alive? The peer answers with a [`Pong`](Message::Pong) carrying the same nonce.
    Ping {
        /// Echoed in the answer, to match it with this ping.
        nonce: u64,
    },
    /// The answer to a [`Ping`](Message::Ping).
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Stop every instance and exit.
    Shutdown,
    /// A log event from the plugin, for the host's log.
    Log(Log),
    /// Something went wrong that is not tied to one start; the text says what to do.
    Error {
        /// What went wrong, in words a person can act on.
        message: String,
    },
    /// An instance put (or, with no value, deleted) an entry of its state (eKuiper's
    /// `PutState` / `DeleteState`). The host keeps the state and hands it back in
    /// [`Start::state`] when it starts the instance again after a plugin restart, up to
    /// [`MAX_STATE_BYTES`] per instance.
    State {
        /// The instance whose state it is.
        instance_id: u64,
        /// The entry's key.
        key: String,
        /// The new value; `None` deletes the entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
    },
    /// Check a function's argument list before anything starts (eKuiper validates a rule's
    /// function calls when it parses the rule): the plugin answers with
    /// [`Validated`](Message::Validated). Since protocol 1.2; a host does not send it to an
    /// older plugin.
    Validate {
        /// Echoed in the answer, to match it with this request.
        request_id: u64,
        /// The function symbol.
        symbol: String,
        /// The arguments as the host knows them before any tuple flows.
        args: Vec<ArgShape>,
    },
    /// The answer to [`Validate`](Message::Validate).
    Validated {
        /// The request's id.
        request_id: u64,
        /// Why the function refuses the argument list, in words a person can act on; `None`
        /// if it accepts it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The doorbell (see [`crate::doorbell`]) through which the host wakes the plugin's side
    /// of the rings whose start names a slot of it ([`Start::doorbell_slots`]): it carries the
    /// doorbell's memfd and eventfd, so that thousands of instances cost the plugin no
    /// descriptor each. Since protocol 1.4; a host does not send it to an older plugin.
    Doorbell,
}

/// One argument of a function call as the host knows it when a pipeline is loaded, before any
/// tuple flows: on the wire `{"kind": "field", "name": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArgShape {
    /// The value of a tuple's field (or of an earlier function's answer) of this name, known
    /// only per tuple.
    Field {
        /// The field's name.
        name: String,
    },
}

/// Most bytes an instance's state may hold (keys and values as JSON): the host refuses an
/// entry that would make it larger, and a plugin's SDK refuses it first.
pub const MAX_STATE_BYTES: usize = 256 * 1024;

impl Message {
    /// Every message type's wire name, in declaration order.
    pub const TYPES: &'static [&'static str] = &[
        "hello",
        "start_source",
        "start_sink",
        "start_function",
        "started",
        "failed",
        "stop",
        "stopped",
        "ping",
        "pong",
        "shutdown",
        "log",
        "error",
        "state",
        "validate",
        "validated",
        "doorbell",
    ];

    /// The message's wire name (its `type` field), one of [`Message::TYPES`].
    pub fn type_name(&self) -> &'static str {
        let index = match self {
            Message::Hello(_) => 0,
            Message::StartSource(_) => 1,
            Message::StartSink(_) => 2,
            Message::StartFunction(_) => 3,
            Message::Started { .. } => 4,
            Message::Failed { .. } => 5,
            Message::Stop { .. } => 6,
            Message::Stopped { .. } => 7,
            Message::Ping { .. } => 8,
            Message::Pong { .. } => 9,
            Message::Shutdown => 10,
            Message::Log(_) => 11,
            Message::Error { .. } => 12,
            Message::State { .. } => 13,
            Message::Validate { .. } => 14,
            Message::Validated { .. } => 15,
            Message::Doorbell => 16,
        };
        Message::TYPES[index]
    }

    /// How many rings travel with this message: 1 for a source or a sink, 2 for a function
    /// (request ring first, then reply ring), 0 for everything else. Each ring is three
    /// descriptors.
    pub fn ring_count(&self) -> usize {
        match self {
            Message::StartSource(_) | Message::StartSink(_) => 1,
            Message::StartFunction(_) => 2,
            _ => 0,
        }
    }

    /// How many descriptors travel with this message: three per ring (memfd, data eventfd,
    /// space eventfd), one fewer for each ring whose plugin side wakes through a doorbell slot
    /// ([`Start::doorbell_slots`]); two with a [`Doorbell`](Message::Doorbell).
    pub fn descriptor_count(&self) -> usize {
        match self {
            Message::StartSource(start)
            | Message::StartSink(start)
            | Message::StartFunction(start) => {
                (self.ring_count() * 3).saturating_sub(start.doorbell_slots.len())
            }
            Message::Doorbell => 2,
            _ => 0,
        }
    }

    /// Which wake-up of ring `index` the plugin waits on: the consumer's (`Data`) on rings
    /// the host produces, the producer's (`Space`) on rings the plugin produces. `None` for a
    /// message without that ring.
    pub fn plugin_wakeup(&self, index: usize) -> Option<crate::ring::Wakeup> {
        use crate::ring::Wakeup;
        match (self, index) {
            (Message::StartSource(_), 0) => Some(Wakeup::Space),
            (Message::StartSink(_), 0) => Some(Wakeup::Data),
            (Message::StartFunction(_), 0) => Some(Wakeup::Data),
            (Message::StartFunction(_), 1) => Some(Wakeup::Space),
            _ => None,
        }
    }
}

/// The plugin's first message: who it is and what it offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The control protocol version the plugin speaks; its major version must equal the host's.
    pub protocol_version: ProtocolVersion,
    /// The plugin's name, as in its `{name}.json`.
    pub plugin_name: String,
    /// Source symbols the plugin provides.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Sink symbols the plugin provides.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Function symbols the plugin provides.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Functions that are not safe to run twice for one call: a call in flight when the
    /// process dies fails instead of running again on the restarted process. Every other
    /// function is retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_repeatable: Vec<String>,
    /// The plugin reads batches of calls (many calls in one record, see
    /// [`tuple::call`](crate::tuple::call)); a host sends them only to a plugin that says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub call_batches: bool,
    /// Aggregate functions (eKuiper's `IsAggregate`): each call takes a whole window, every
    /// argument a list of the window's values. Since protocol 1.2; absent means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregates: Vec<String>,
    /// Sources that are rewindable (eKuiper's `Rewindable`): asked to
    /// ([`Start::send_offsets`]), they write the [`Offset`](crate::tuple::Offset) of each
    /// tuple before it, and a restarted instance is first rewound to the offset of the last
    /// tuple the host handed on ([`Start::rewind_to`]). Since protocol 1.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewindable: Vec<String>,
}

impl Hello {
    /// A hello for `plugin_name` speaking this build's [`PROTOCOL_VERSION`], offering no
    /// symbols yet.
    pub fn new(plugin_name: impl Into<String>) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            plugin_name: plugin_name.into(),
            sources: Vec::new(),
            sinks: Vec::new(),
            functions: Vec::new(),
            not_repeatable: Vec::new(),
            call_batches: false,
            aggregates: Vec::new(),
            rewindable: Vec::new(),
        }
    }
}

/// What the host asks the plugin to start: the body of [`Message::StartSource`],
/// [`Message::StartSink`] and [`Message::StartFunction`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The host's name for this instance, unique among the plugin's running instances; later
    /// messages about it ([`Message::Stop`], [`Message::Started`], ...) carry it.
    pub instance_id: u64,
    /// The rule the instance belongs to.
    pub rule_id: String,
    /// The operator in the rule.
    pub op_id: String,
    /// The source, sink or function symbol to instantiate.
    pub symbol: String,
    /// The stream's data source (a source's topic, for example), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<String>,
    /// Configuration properties: a source's stream and configuration-key properties, a sink's
    /// action properties.
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// The instance's state as the host kept it from [`Message::State`]s of an earlier run of
    /// the instance (empty at the first start).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub state: serde_json::Map<String, serde_json::Value>,
    /// For a source its plugin declared rewindable ([`Hello::rewindable`]): write each
    /// tuple's offset before it. Off for any other instance, and from a host older than
    /// protocol 1.2, so a rewindable source costs nothing where no one reads its offsets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send_offsets: bool,
    /// For a rewindable source started again after a plugin restart: the offset of the last
    /// tuple the host handed on (at most [`MAX_OFFSET_LEN`](crate::tuple::MAX_OFFSET_LEN)
    /// bytes). The plugin rewinds the new instance to it before it emits anything; a rewind
    /// that fails fails the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewind_to: Option<Vec<u8>>,
    /// For a function instance: the host reads batches of replies
    /// ([`ReplyBatch`](crate::tuple::call::ReplyBatch)), so the plugin may answer consecutive
    /// calls with one record. Off from a host older than protocol 1.3 (which reads one reply
    /// per record).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reply_batches: bool,
    /// Empty, or one slot per ring: the plugin's side of ring `i` is woken through slot
    /// `doorbell_slots[i]` of the [`Message::Doorbell`] sent before, not an eventfd of its own
    /// (that ring then travels with two descriptors, not three). Since protocol 1.4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doorbell_slots: Vec<u32>,
}

/// The size [`MAX_STATE_BYTES`] counts for `state`: each key's and value's JSON length.
pub fn state_size(state: &serde_json::Map<String, serde_json::Value>) -> usize {
    state
        .iter()
        .map(|(k, v)| k.len() + serde_json::to_vec(v).map_or(usize::MAX / 2, |b| b.len()))
        .fold(0, usize::saturating_add)
}

/// A log event forwarded from the plugin to the host: the body of [`Message::Log`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// Severity.
    pub level: LogLevel,
    /// Where in the plugin it comes from (a module path, as the `log` and `tracing` crates use).
    pub target: String,
    /// The formatted message.
    pub message: String,
    /// The instance it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<u64>,
}

/// Severity of a [`Log`] event; on the wire `"error"`, `"warn"`, `"info"`, `"debug"` or
/// `"trace"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation worth recording.
    Info,
    /// Detail for debugging.
    Debug,
    /// Even more detail.
    Trace,
}
