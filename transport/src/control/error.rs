//! What can go wrong on the control channel.

use std::time::Duration;

use super::frame::FRAME_MAGIC;
use super::version::ProtocolVersion;

/// A control message could not be framed, sent, received or decoded.
///
/// Reaches callers as [`Error::Control`](crate::Error::Control). Errors that leave the byte
/// stream at a frame boundary ([`UnknownMessage`](Self::UnknownMessage),
/// [`Malformed`](Self::Malformed), [`VersionMismatch`](Self::VersionMismatch),
/// [`DescriptorCount`](Self::DescriptorCount), [`TimedOut`](Self::TimedOut)) leave the
/// [`ControlChannel`](super::ControlChannel) usable; the others break it for good (see
/// [`ControlError::is_fatal`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The peer closed the channel between two frames: the normal end of a conversation.
    #[error("the peer closed the control channel")]
    Closed,
    /// No complete frame arrived within the read time-out. Part of a frame that did arrive is
    /// kept, so the next receive continues where this one stopped.
    #[error("no control message arrived within {0:?}; the peer may be busy or wedged")]
    TimedOut(Duration),
    /// The bytes end inside a frame: the peer closed the channel mid-frame, or a buffer handed
    /// to [`decode_frame`](super::decode_frame) holds only part of one.
    #[error(
        "control frame truncated: {received} of {expected} bytes present; the peer closed the \
         channel or wrote a partial frame"
    )]
    Truncated {
        /// Bytes the frame needs (so far as the header says).
        expected: usize,
        /// Bytes that were there.
        received: usize,
    },
    /// The frame does not start with [`FRAME_MAGIC`].
    #[error(
        "control frame starts with \"{}\" instead of \"{}\": the peer does not speak shmplug's \
         control protocol, or the stream lost its framing", escape(found), escape(&FRAME_MAGIC)
    )]
    BadMagic {
        /// The first four bytes of the frame.
        found: [u8; 4],
    },
    /// The frame header has a layout version this build cannot read.
    #[error(
        "control frame header version {found}, but this build reads version {supported}; build \
         the plugin and the host against matching shmplug releases"
    )]
    FrameVersion {
        /// The version in the header.
        found: u32,
        /// The version this build reads ([`FRAME_VERSION`](super::FRAME_VERSION)).
        supported: u32,
    },
    /// The frame's body is longer than [`MAX_BODY_LEN`](super::MAX_BODY_LEN).
    #[error(
        "control message of {len} bytes exceeds the {max}-byte limit; keep properties small and \
         move bulk data through a ring"
    )]
    TooLarge {
        /// The body length, as encoded or as announced by the header.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The body names a message type this build does not know, probably one added by a newer
    /// minor protocol version. The frame was consumed; a receiver may ignore it.
    #[error(
        "unknown control message type `{type_name}`; the peer speaks a newer protocol, ignore \
         the message or upgrade this side"
    )]
    UnknownMessage {
        /// The `type` field of the body (shortened if long).
        type_name: String,
    },
    /// The body is not valid JSON, not an object, has no string `type`, or its fields do not
    /// fit the message type.
    #[error("malformed control message{}: {detail}", for_type(*.type_name))]
    Malformed {
        /// The message type, once known.
        type_name: Option<&'static str>,
        /// What is wrong, from the JSON parser or the field check.
        detail: String,
    },
    /// A [`Hello`](super::Hello) with a protocol version whose major version differs from ours.
    #[error(
        "plugin `{plugin}` speaks control protocol {theirs} but this side speaks {ours}; the \
         major versions must match, so rebuild the plugin against a shmplug release with \
         protocol {}.x (or upgrade the host)", ours.major
    )]
    VersionMismatch {
        /// The plugin's name from the `Hello`, or `?` if it had none.
        plugin: String,
        /// The version this build speaks ([`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)).
        ours: ProtocolVersion,
        /// The version the peer announced.
        theirs: ProtocolVersion,
    },
    /// A received message came with a different number of descriptors than its rings need
    /// (three per ring). The descriptors that did arrive have been closed.
    #[error(
        "control message `{message}` carries {} ring(s), i.e. {expected} descriptors, but {received} \
         arrived; the received descriptors were closed", expected / 3
    )]
    DescriptorCount {
        /// The message type.
        message: &'static str,
        /// Descriptors the message needs.
        expected: usize,
        /// Descriptors that arrived.
        received: usize,
    },
    /// [`ControlChannel::send`](super::ControlChannel::send) was given a different number of
    /// rings than the message carries (a bug in the caller; nothing was sent).
    #[error("control message `{message}` is sent with {expected} ring(s), but {given} were given")]
    RingCount {
        /// The message type.
        message: &'static str,
        /// Rings the message carries ([`Message::ring_count`](super::Message::ring_count)).
        expected: usize,
        /// Rings passed to `send`.
        given: usize,
    },
    /// An earlier error lost the stream's framing; nothing more can be read from this channel.
    #[error(
        "control channel unusable after an earlier error ({cause}); close it and restart the \
         plugin"
    )]
    Broken {
        /// The earlier error's message.
        cause: String,
    },
}

impl ControlError {
    /// True when the channel cannot be used after this error: the framing is lost or the
    /// peer is gone. False for errors after which the next frame can still be read.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ControlError::TimedOut(_)
                | ControlError::UnknownMessage { .. }
                | ControlError::Malformed { .. }
                | ControlError::VersionMismatch { .. }
                | ControlError::DescriptorCount { .. }
                | ControlError::RingCount { .. }
        )
    }
}

fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn for_type(type_name: Option<&'static str>) -> String {
    type_name.map(|t| format!(" `{t}`")).unwrap_or_default()
}

/// Longest piece of peer-supplied text quoted in an error.
const QUOTE_MAX_CHARS: usize = 64;

/// `text`, cut to [`QUOTE_MAX_CHARS`] characters (with `...` appended when cut), so that a
/// hostile or broken peer cannot make error messages huge.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_long_text_on_a_char_boundary() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(100);
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), QUOTE_MAX_CHARS + 3);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn messages_name_the_problem_and_the_fix() {
        let e = ControlError::VersionMismatch {
            plugin: "mirror".into(),
            ours: ProtocolVersion::new(1, 0),
            theirs: ProtocolVersion::new(2, 3),
        };
        let text = e.to_string();
        assert!(
            text.contains("mirror") && text.contains("2.3") && text.contains("1.0"),
            "{text}"
        );
        assert!(text.contains("1.x"), "{text}");
        let e = ControlError::DescriptorCount {
            message: "start_function",
            expected: 6,
            received: 3,
        };
        assert!(
            e.to_string()
                .contains("2 ring(s), i.e. 6 descriptors, but 3 arrived"),
            "{e}"
        );
        let e = ControlError::Malformed {
            type_name: Some("ping"),
            detail: "missing field `nonce`".into(),
        };
        assert_eq!(
            e.to_string(),
            "malformed control message `ping`: missing field `nonce`"
        );
        let e = ControlError::BadMagic {
            found: *b"GE\x00\n",
        };
        assert!(
            e.to_string()
                .starts_with(r#"control frame starts with "GE\x00\n" instead of "SHPC""#),
            "{e}"
        );
        assert!(e.is_fatal());
        assert!(
            !ControlError::UnknownMessage {
                type_name: "x".into()
            }
            .is_fatal()
        );
    }
}
