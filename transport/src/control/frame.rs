//! Frames: a fixed 12-byte header followed by a JSON body. No I/O.

use serde_json::Value;

use super::error::{ControlError, shorten};
use super::message::Message;
use super::version::{PROTOCOL_VERSION, ProtocolVersion};
use crate::error::Result;

/// The first four bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"SHPC";

/// The header layout version, bytes 4..8 of every frame. Distinct from the
/// [`PROTOCOL_VERSION`], which covers the messages.
pub const FRAME_VERSION: u32 = 1;

/// Length of the frame header: magic (4 bytes), header version (`u32`, little endian), body
/// length (`u32`, little endian).
pub const HEADER_LEN: usize = 12;

/// Largest frame, header included: 1 MiB. Control messages are small; bulk data goes through
/// rings.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Largest body a frame may announce.
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// Encodes `message` as one frame: header, then the JSON body.
///
/// # Errors
/// [`ControlError::TooLarge`] if the body would exceed [`MAX_BODY_LEN`].
pub fn encode_frame(message: &Message) -> Result<Vec<u8>> {
    let mut frame = vec![0; HEADER_LEN];
    serde_json::to_writer(&mut frame, message).map_err(|e| ControlError::Malformed {
        type_name: Some(message.type_name()),
        detail: e.to_string(),
    })?;
    let body_len = frame.len() - HEADER_LEN;
    if body_len > MAX_BODY_LEN {
        return Err(ControlError::TooLarge {
            len: body_len as u64,
            max: MAX_BODY_LEN,
        }
        .into());
    }
    frame[..4].copy_from_slice(&FRAME_MAGIC);
    frame[4..8].copy_from_slice(&FRAME_VERSION.to_le_bytes());
    // The check above keeps the length below 2^20, so it fits a u32.
    frame[8..12].copy_from_slice(&(body_len as u32).to_le_bytes());
    Ok(frame)
}

/// Decodes the frame at the start of `bytes`, returning the message and the number of bytes
/// the frame occupied (header plus body). Bytes after the frame are not looked at.
///
/// The frame carries no descriptors: checking that a message's rings arrived is
/// [`ControlChannel::recv`](super::ControlChannel::recv)'s job.
///
/// # Errors
/// [`ControlError::Truncated`] if `bytes` ends inside the frame (a stream reader reads more
/// and tries again); as [`decode_header`] for the header; as [`decode_body`] for the body.
///
/// # Examples
/// ```
/// use shmplug_transport::control::{Message, decode_frame, encode_frame};
///
/// let frame = encode_frame(&Message::Ping { nonce: 7 })?;
/// assert_eq!(decode_frame(&frame)?, (Message::Ping { nonce: 7 }, frame.len()));
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
pub fn decode_frame(bytes: &[u8]) -> Result<(Message, usize)> {
    let body_len = decode_header(bytes)?;
    let end = HEADER_LEN + body_len;
    let Some(body) = bytes.get(HEADER_LEN..end) else {
        return Err(ControlError::Truncated {
            expected: end,
            received: bytes.len(),
        }
        .into());
    };
    Ok((decode_body(body)?, end))
}

/// Checks the frame header at the start of `bytes` and returns the body length it announces.
///
/// # Errors
/// In this order: [`ControlError::Truncated`] if fewer than [`HEADER_LEN`] bytes are given,
/// [`ControlError::BadMagic`], [`ControlError::FrameVersion`], [`ControlError::TooLarge`] for
/// a body longer than [`MAX_BODY_LEN`].
pub fn decode_header(bytes: &[u8]) -> Result<usize> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(ControlError::Truncated {
            expected: HEADER_LEN,
            received: bytes.len(),
        }
        .into());
    };
    let [m0, m1, m2, m3, v0, v1, v2, v3, l0, l1, l2, l3] = *header;
    let magic = [m0, m1, m2, m3];
    if magic != FRAME_MAGIC {
        return Err(ControlError::BadMagic { found: magic }.into());
    }
    let version = u32::from_le_bytes([v0, v1, v2, v3]);
    if version != FRAME_VERSION {
        return Err(ControlError::FrameVersion {
            found: version,
            supported: FRAME_VERSION,
        }
        .into());
    }
    let body_len = u32::from_le_bytes([l0, l1, l2, l3]);
    match usize::try_from(body_len) {
        Ok(len) if len <= MAX_BODY_LEN => Ok(len),
        _ => Err(ControlError::TooLarge {
            len: body_len.into(),
            max: MAX_BODY_LEN,
        }
        .into()),
    }
}

/// Decodes a frame's JSON body.
///
/// A [`Hello`](super::Hello)'s protocol version is checked before the rest of the body, so a
/// plugin built for another major version gets a [`ControlError::VersionMismatch`] naming
/// both versions, not a complaint about fields that changed between them.
///
/// # Errors
/// [`ControlError::Malformed`] if the body is not a JSON object with a string `type` field or
/// its fields do not fit that type, [`ControlError::UnknownMessage`] for a type not in
/// [`Message::TYPES`], [`ControlError::VersionMismatch`] for a `Hello` whose major version
/// differs from [`PROTOCOL_VERSION`]'s.
pub fn decode_body(body: &[u8]) -> Result<Message> {
    let malformed = |type_name, detail: String| ControlError::Malformed { type_name, detail };
    // serde_json limits nesting to 128 levels, so a hostile body cannot exhaust the stack.
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(None, e.to_string()))?;
    let Value::Object(fields) = &value else {
        return Err(malformed(
            None,
            format!("the body is {}, not a JSON object", kind(&value)),
        )
        .into());
    };
    let type_name = match fields.get("type") {
        Some(Value::String(name)) => name,
        Some(other) => {
            let detail = format!("the `type` field is {}, not a string", kind(other));
            return Err(malformed(None, detail).into());
        }
        None => return Err(malformed(None, "the body has no `type` field".into()).into()),
    };
    let Some(&type_name) = Message::TYPES.iter().find(|known| **known == type_name) else {
        return Err(ControlError::UnknownMessage {
            type_name: shorten(type_name),
        }
        .into());
    };
    if type_name == "hello" {
        check_hello_version(fields)?;
    }
    serde_json::from_value(value).map_err(|e| malformed(Some(type_name), e.to_string()).into())
}

fn check_hello_version(fields: &serde_json::Map<String, Value>) -> Result<(), ControlError> {
    let malformed = |detail| ControlError::Malformed {
        type_name: Some("hello"),
        detail,
    };
    let theirs: ProtocolVersion = match fields.get("protocol_version") {
        Some(Value::String(text)) => text.parse().map_err(|e| malformed(format!("{e}")))?,
        Some(other) => {
            return Err(malformed(format!(
                "`protocol_version` is {}, not a string",
                kind(other)
            )));
        }
        None => return Err(malformed("missing field `protocol_version`".into())),
    };
    if PROTOCOL_VERSION.is_compatible_with(theirs) {
        return Ok(());
    }
    let plugin = match fields.get("plugin_name") {
        Some(Value::String(name)) => shorten(name),
        _ => "?".into(),
    };
    Err(ControlError::VersionMismatch {
        plugin,
        ours: PROTOCOL_VERSION,
        theirs,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
