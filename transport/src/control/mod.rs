//! The control protocol: framed, versioned, size-limited messages between a host and a plugin
//! over one Unix stream socket, carrying ring descriptors with `SCM_RIGHTS`.
//!
//! - [`Message`] and its bodies ([`Hello`], [`Start`], [`Log`]) are plain data with no I/O.
//! - [`encode_frame`] and [`decode_frame`] turn a message into a frame and back, over byte
//!   buffers only; [`decode_frame`] is what the `control_frame` fuzz target exercises.
//! - [`ControlChannel`] sends and receives frames on a socket, with the rings a message
//!   carries ([`Message::ring_count`]).
//!
//! # Conversation
//! The plugin opens with [`Message::Hello`]; the host checks its [`ProtocolVersion`] (the
//! major versions must match, see [`PROTOCOL_VERSION`]) and, if it refuses, answers with
//! [`Message::Error`] carrying the [`ControlError::VersionMismatch`] text before closing. The
//! host then starts instances (`StartSource`, `StartSink`, `StartFunction`, each with its
//! rings), and the plugin answers each with [`Message::Started`] or [`Message::Failed`], so
//! that a configure or open error fails the rule's start loudly. [`Message::Ping`] /
//! [`Message::Pong`] check liveness, [`Message::Stop`] / [`Message::Stopped`] end an instance,
//! [`Message::Shutdown`] ends the plugin, and [`Message::Log`] forwards the plugin's logs.
//!
//! # Frames
//! ```text
//! offset  0: magic "SHPC"          (FRAME_MAGIC)
//! offset  4: header version, u32 LE (FRAME_VERSION)
//! offset  8: body length, u32 LE    (at most MAX_BODY_LEN; the frame at most MAX_FRAME_LEN)
//! offset 12: body: one JSON object, {"type": "<snake_case message name>", ...fields}
//! ```
//! A ring's three descriptors (memfd, data eventfd, space eventfd) travel as `SCM_RIGHTS`
//! with the frame's first byte, rings in the order the message documents; the receiver
//! collects descriptors from every read of the frame and checks their number against the
//! decoded message.
//!
//! Why this encoding: the fixed header lets a reader learn the body length, and reject a
//! stranger (bad magic), an incompatible framing (header version) or an oversized frame,
//! before it allocates or parses anything. The body is JSON because control messages are rare
//! (a handful per rule start), so their encoding costs nothing that matters; JSON can be read
//! in `strace` output or a socket dump when debugging; unknown fields are ignored, which lets
//! a minor protocol version add optional fields; and the properties a rule passes to a plugin
//! are JSON already (eKuiper's control channel is JSON too). Tuples never use it: they travel
//! through rings in the rkyv format.
//!
//! # Trust
//! Every frame comes from another process and is checked before use: the header first, then
//! the body's size, JSON syntax (serde_json limits nesting), `type` and fields, then the
//! descriptor count, then each ring ([`Ring::from_fds`](crate::Ring::from_fds)). Every
//! failure is a distinct [`ControlError`], never a panic.

/// Environment variable through which the host tells a plugin it started which inherited
/// descriptor is the plugin's end of the control socket (a decimal descriptor number).
pub const CONTROL_FD_ENV: &str = "SHMPLUG_CONTROL_FD";

/// Environment variable through which the host tells an installed plugin its own directory
/// (where its manifest, executable and any files of its package are), since its working
/// directory may be another one (`shmplug run` starts plugins in the pipeline file's
/// directory, so that relative paths in properties resolve there).
pub const PLUGIN_DIR_ENV: &str = "SHMPLUG_PLUGIN_DIR";

/// Environment variable naming a Unix socket path the host listens on, for a plugin started by
/// hand (under a debugger, say): the plugin connects to it instead of using an inherited
/// descriptor.
pub const CONTROL_SOCKET_ENV: &str = "SHMPLUG_CONTROL_SOCKET";

mod channel;
mod error;
mod frame;
mod message;
mod version;

pub use channel::ControlChannel;
pub use error::ControlError;
pub use frame::{
    FRAME_MAGIC, FRAME_VERSION, HEADER_LEN, MAX_BODY_LEN, MAX_FRAME_LEN, decode_body, decode_frame,
    decode_header, encode_frame,
};
pub use message::{ArgShape, Hello, Log, LogLevel, MAX_STATE_BYTES, Message, Start, state_size};
pub use version::{InvalidProtocolVersion, PROTOCOL_VERSION, ProtocolVersion};

#[cfg(test)]
mod tests;
