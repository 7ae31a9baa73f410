//! [`PolledSource`]: a source that never blocks, so that thousands of its instances share the
//! runtime's few executor threads.

use std::time::{Duration, Instant};

use crate::api::{Props, Source};
use crate::context::SourceContext;
use crate::emitter::Emitter;
use crate::error::PluginError;

/// When a [`PolledSource`] wants its [`poll`](PolledSource::poll) called again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// As soon as the other instances on its executor thread had their turn: the source has
    /// more to emit now (it emitted a batch and yields).
    Now,
    /// At this instant (or a little after: the executor wakes with millisecond precision).
    At(Instant),
    /// Never: the source has nothing more to produce. The stream ends, as when a
    /// [`Source::open`] returns.
    Done,
}

impl Next {
    /// [`Next::At`] `now + delay`.
    pub fn after(delay: Duration) -> Next {
        Next::At(Instant::now() + delay)
    }
}

/// A source that does not block: instead of running its own loop in
/// [`Source::open`], it emits what is due when the runtime calls [`poll`](Self::poll) and
/// says when it wants to be called again. The runtime runs every instance of every polled
/// source on a small, fixed set of executor threads (as many as the machine has CPUs, see
/// [`PluginConfig::executor_threads`](crate::PluginConfig::executor_threads)), so ten thousand
/// instances cost ten thousand small values, not ten thousand threads; an instance waiting
/// for its next tick or for room in its ring costs nothing.
///
/// Register it with [`PluginConfig::polled_source`](crate::PluginConfig::polled_source). A
/// source that must block (it reads a socket or a device with a blocking call) stays a
/// [`Source`], which keeps a thread of its own.
///
/// # The contract
/// - No method may block or sleep: each runs on an executor thread shared with other
///   instances, which wait while it runs. Do what is due and return.
/// - [`Emitter`] methods never wait inside `poll`: when the ring is full, they return
///   [`PluginError::RingFull`] without writing the tuple. Return it (with `?`); `poll` is
///   called again once the host has made room, and should emit that tuple again then.
/// - Emit at most a bounded batch per call (say, up to 64 tuples), then return [`Next::Now`]
///   if more is due: the executor serves its ready instances round-robin, a call each.
/// - [`PluginError::Cancelled`] and [`PluginError::Closed`] end the instance normally, as
///   [`Next::Done`] does; any other error ends it with the error logged; a panic ends it and
///   the host learns the panic's text (the instance fails); the other instances go on.
///
/// # Examples
/// ```
/// use std::time::{Duration, Instant};
/// use shmplug_sdk::{Emitter, Next, PluginError, PolledSource, Props, SourceContext, TupleRef, ValueRef};
///
/// /// Emits `{"tick": n}` every 100 ms.
/// #[derive(Default)]
/// struct Ticker {
///     n: i64,
///     due: Option<Instant>,
/// }
///
/// impl PolledSource for Ticker {
///     fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> {
///         Ok(())
///     }
///
///     fn poll(&mut self, _: &SourceContext, emitter: &mut Emitter) -> Result<Next, PluginError> {
///         let due = *self.due.get_or_insert_with(Instant::now);
///         if Instant::now() < due {
///             return Ok(Next::At(due));
///         }
///         emitter.emit(&TupleRef::new(shmplug_sdk::now_nanos(), &[("tick", ValueRef::Int(self.n))]))?;
///         self.n += 1;
///         let next = due + Duration::from_millis(100);
///         self.due = Some(next);
///         Ok(Next::At(next))
///     }
/// }
///
/// let config = shmplug_sdk::PluginConfig::new("ticks").polled_source("ticker", Ticker::default);
/// assert_eq!(config.hello().sources, ["ticker"]);
/// ```
pub trait PolledSource {
    /// Reads the properties. An error fails the rule's start with its text.
    ///
    /// # Errors
    /// Any [`PluginError`]; name the property and what would be accepted.
    fn configure(&mut self, data_source: &str, props: &Props) -> Result<(), PluginError>;

    /// Called once after [`configure`](Self::configure), before the first
    /// [`poll`](Self::poll): acquire what the source needs (without blocking). An error fails
    /// the rule's start with its text.
    ///
    /// # Errors
    /// Any [`PluginError`].
    fn open(&mut self, ctx: &SourceContext) -> Result<(), PluginError> {
        let _ = ctx;
        Ok(())
    }

    /// Emits what is due with `emitter` (a bounded batch) and says when to be called again.
    /// The first call comes right after [`open`](Self::open).
    ///
    /// # Errors
    /// [`PluginError::RingFull`] (from an `emit*`): called again once the ring has room.
    /// [`PluginError::Cancelled`] and [`PluginError::Closed`]: a normal end. Anything else
    /// ends the instance with the error logged.
    fn poll(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<Next, PluginError>;

    /// Releases what the source holds. Called once, after the last `poll`.
    ///
    /// # Errors
    /// Any [`PluginError`]; it is logged against the instance.
    fn close(&mut self, ctx: &SourceContext) -> Result<(), PluginError> {
        let _ = ctx;
        Ok(())
    }
}

/// A [`PolledSource`] run as a blocking [`Source`] on a thread of its own: `open` polls in a
/// loop, sleeping until the instant each call asks for (waking at once on a stop). Its
/// emitter blocks for room as a [`Source`]'s does, so `poll` never sees
/// [`PluginError::RingFull`].
///
/// The runtime does not need it (it runs polled sources on its executor); it lets
/// [`testing::run_source`](crate::testing::run_source) and other code written for a
/// [`Source`] run a polled one.
///
/// # Examples
/// ```
/// # use shmplug_sdk::{Emitter, Next, PluginError, PolledSource, Props, SourceContext};
/// # struct Once;
/// # impl PolledSource for Once {
/// #     fn configure(&mut self, _: &str, _: &Props) -> Result<(), PluginError> { Ok(()) }
/// #     fn poll(&mut self, _: &SourceContext, e: &mut Emitter) -> Result<Next, PluginError> {
/// #         e.emit_json(&serde_json::json!({"a": 1}))?;
/// #         Ok(Next::Done)
/// #     }
/// # }
/// use std::time::Duration;
/// use shmplug_sdk::{testing, Blocking};
///
/// let tuples = testing::run_source(Blocking(Once), "", serde_json::json!({}), 10, Duration::from_secs(10))?;
/// assert_eq!(tuples.len(), 1);
/// # Ok::<(), PluginError>(())
/// ```
#[derive(Debug, Default)]
pub struct Blocking<P>(pub P);

impl<P: PolledSource> Source for Blocking<P> {
    fn configure(&mut self, data_source: &str, props: &Props) -> Result<(), PluginError> {
        self.0.configure(data_source, props)
    }

    fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
        self.0.open(ctx)?;
        loop {
            match self.0.poll(ctx, emitter)? {
                Next::Now if ctx.is_cancelled() => return Err(PluginError::Cancelled),
                Next::Now => {}
                Next::At(when) => {
                    emitter.flush();
                    ctx.sleep(when.saturating_duration_since(Instant::now()))?;
                }
                Next::Done => return Ok(()),
            }
        }
    }

    fn close(&mut self, ctx: &SourceContext) -> Result<(), PluginError> {
        self.0.close(ctx)
    }
}
