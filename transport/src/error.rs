//! The transport's error type.

use std::time::Duration;

/// Everything that can go wrong in the transport.
///
/// Hot-path operations return the first four variants; the rest come from setting up or opening
/// a segment. [`Error::Corrupt`] means the other process wrote shared state that breaks the ring's
/// invariants: the endpoint that saw it is poisoned and returns the same error from then on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record does not fit the ring, whatever the other side does.
    #[error(
        "a record of {size} bytes is larger than this ring's largest record ({max} bytes); \
         create the ring with a larger capacity or split the record"
    )]
    TooLarge {
        /// Requested payload size in bytes.
        size: usize,
        /// Largest payload this ring accepts ([`crate::Ring::max_record_len`]).
        max: usize,
    },
    /// The other side closed the ring. A consumer sees this only after it has read every record
    /// that was committed before the close (end of stream).
    #[error("the other side closed the ring")]
    Closed,
    /// A blocking operation's time-out passed before it could complete.
    #[error("timed out after {0:?} waiting on the ring")]
    TimedOut(Duration),
    /// The endpoint's waits were ended by its [`Interrupter`](crate::ring::Interrupter) (the
    /// owner is stopping it).
    #[error("the wait on the ring was interrupted (the endpoint is being stopped)")]
    Interrupted,
    /// The other process broke the ring's invariants; this endpoint is poisoned.
    #[error(
        "ring corrupt: {what} ({detail}); the peer wrote invalid shared state, the ring is poisoned"
    )]
    Corrupt {
        /// Which invariant broke, e.g. `"write position"`.
        what: &'static str,
        /// The offending values.
        detail: String,
    },
    /// A received segment is not one this version of shmplug can use.
    #[error("shared-memory segment rejected: {0}")]
    BadSegment(String),
    /// A descriptor inherited as the control socket cannot be used: not a descriptor number,
    /// not open, not a socket, or already taken over.
    #[error("cannot use the inherited control socket: {0}")]
    BadInheritedSocket(String),
    /// This process already holds that endpoint of the ring.
    #[error(
        "the {0} end of this ring is already taken (rings are single-producer, single-consumer)"
    )]
    AlreadyTaken(&'static str),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A control-channel message could not be framed, sent, received or decoded; the
    /// [`ControlError`](crate::control::ControlError) says which and what to do about it.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// A tuple record failed validation (the peer wrote bytes that are not a valid archived
    /// tuple, or that nest deeper than [`crate::tuple::MAX_DEPTH`]), or a tuple to be written
    /// breaks the format's limits. A [`crate::tuple::TupleReceiver`] that saw an invalid record
    /// is poisoned.
    #[error("invalid tuple: {0}")]
    InvalidTuple(String),
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    pub(crate) fn errno(context: &'static str) -> impl FnOnce(rustix::io::Errno) -> Error {
        move |e| Error::Io {
            context,
            source: e.into(),
        }
    }

    /// True for [`Error::Closed`]: the stream ended normally.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }
}

/// Result alias for the transport.
pub type Result<T, E = Error> = std::result::Result<T, E>;
