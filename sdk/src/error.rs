//! [`PluginError`]: what a plugin method returns when it fails.

/// An error from a plugin method, or from the SDK on the plugin's behalf.
///
/// Its text reaches the host (and so the person starting a rule): a failed `configure` or
/// `open` becomes the start's `Failed` reply, a failed function call becomes that call's error
/// reply, and anything later is logged against the instance. Write it so that a person can act
/// on it: name the property, the value and what would be accepted.
///
/// Two variants are not failures: [`Cancelled`](Self::Cancelled) and
/// [`Closed`](Self::Closed) say that the instance is being stopped, and a source's
/// [`open`](crate::Source::open) that returns them (typically through `?` on
/// [`Emitter::emit`](crate::Emitter::emit) or [`StreamContext::sleep`](crate::StreamContext::sleep))
/// ends normally ([`is_stop`](Self::is_stop)).
///
/// # Examples
/// ```
/// use shmplug_sdk::PluginError;
///
/// let e = PluginError::property("interval", "expected milliseconds or a duration like \"1s\", got \"soon\"");
/// assert_eq!(
///     e.to_string(),
///     "property `interval`: expected milliseconds or a duration like \"1s\", got \"soon\""
/// );
/// assert!(!e.is_stop());
/// assert!(PluginError::Cancelled.is_stop());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// A configuration property is missing or cannot be used.
    #[error("property `{name}`: {reason}")]
    Property {
        /// The property's name.
        name: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// Any other failure, in words a person can act on.
    #[error("{0}")]
    Message(String),
    /// The instance's context was cancelled (the host stopped it) while the operation waited.
    #[error("the instance was stopped")]
    Cancelled,
    /// The host closed the instance's ring: it reads (or writes) no more tuples.
    #[error("the host closed the instance's ring")]
    Closed,
    /// The ring is full: a [`PolledSource`](crate::PolledSource)'s emit found no room and
    /// wrote nothing. Return it from [`poll`](crate::PolledSource::poll) (with `?`): the
    /// runtime calls `poll` again once the host has made room. (A [`Source`](crate::Source)'s
    /// emits wait for room instead and never return it.)
    #[error("the ring is full (return this from poll: it is called again once there is room)")]
    RingFull,
    /// A plugin method panicked; the SDK caught the panic.
    #[error("{method} panicked: {message}")]
    Panicked {
        /// The method, e.g. `"source `random`: open"`.
        method: String,
        /// The panic's message.
        message: String,
    },
    /// An I/O error the plugin did not describe further.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A transport error: a tuple too large for the ring, an invalid tuple, a corrupt ring.
    #[error(transparent)]
    Transport(shmplug_transport::Error),
}

impl PluginError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> PluginError {
        PluginError::Message(message.into())
    }

    /// A problem with the property `name`: `reason` says what is wrong and what would do.
    pub fn property(name: impl Into<String>, reason: impl Into<String>) -> PluginError {
        PluginError::Property {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// A required property `name` is absent: `what` says what it should hold.
    ///
    /// ```
    /// use shmplug_sdk::PluginError;
    ///
    /// let e = PluginError::missing("path", "the CSV file to read");
    /// assert_eq!(e.to_string(), "property `path`: is required: the CSV file to read");
    /// ```
    pub fn missing(name: impl Into<String>, what: impl std::fmt::Display) -> PluginError {
        PluginError::property(name, format!("is required: {what}"))
    }

    /// True for [`Cancelled`](Self::Cancelled) and [`Closed`](Self::Closed): the instance is
    /// being stopped, which is not a failure.
    pub fn is_stop(&self) -> bool {
        matches!(self, PluginError::Cancelled | PluginError::Closed)
    }
}

impl From<shmplug_transport::Error> for PluginError {
    fn from(e: shmplug_transport::Error) -> PluginError {
        if e.is_closed() {
            PluginError::Closed
        } else if matches!(e, shmplug_transport::Error::Interrupted) {
            // Only a stop interrupts the runtime's waits.
            PluginError::Cancelled
        } else {
            PluginError::Transport(e)
        }
    }
}

impl From<String> for PluginError {
    fn from(message: String) -> PluginError {
        PluginError::Message(message)
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> PluginError {
        PluginError::Message(message.to_owned())
    }
}

impl From<serde_json::Error> for PluginError {
    fn from(e: serde_json::Error) -> PluginError {
        PluginError::Message(format!("JSON: {e}"))
    }
}

/// Runs a plugin method, turning a panic into [`PluginError::Panicked`] named after `method`.
pub(crate) fn catch<T>(
    method: impl FnOnce() -> String,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(PluginError::Panicked {
            method: method(),
            message: panic_message(payload.as_ref()),
        }),
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_closed_is_a_stop() {
        assert!(PluginError::from(shmplug_transport::Error::Closed).is_stop());
        let e = PluginError::from(shmplug_transport::Error::TooLarge { size: 9, max: 4 });
        assert!(!e.is_stop());
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn catch_turns_panics_into_errors() {
        let e = catch(
            || "sink `file`: collect".into(),
            || -> Result<(), _> { panic!("disk on fire: {}", 42) },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "sink `file`: collect panicked: disk on fire: 42"
        );
        assert_eq!(catch(String::new, || Ok(7)).unwrap(), 7);
    }
}
