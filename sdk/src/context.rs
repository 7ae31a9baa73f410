//! What a plugin method knows about the instance it serves: [`StreamContext`] (sources and
//! sinks) and [`FunctionContext`] (functions).

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shmplug_transport::Interrupter;
use shmplug_transport::control::{ControlChannel, MAX_STATE_BYTES, Message, state_size};

use crate::api::Props;
use crate::error::PluginError;

/// The context of a source or sink instance, after eKuiper's `StreamContext`: which rule,
/// operator and instance it serves, whether it has been stopped, and the `tracing` span its
/// log events belong to.
///
/// Cheap to clone (one reference count); clones share the cancellation.
///
/// # Logging
/// The runtime enters [`span`](Self::span) on the instance's thread before it calls any plugin
/// method, so `tracing` events in plugin code (`tracing::info!(...)`) reach the host's log
/// tagged with the plugin, symbol and instance. On threads the plugin spawns itself, enter the
/// span first (`let _guard = ctx.span().enter();`).
#[derive(Clone)]
pub struct StreamContext {
    inner: Arc<Inner>,
}

/// The context of a source instance.
pub type SourceContext = StreamContext;

/// The context of a sink instance.
pub type SinkContext = StreamContext;

struct Inner {
    plugin: String,
    symbol: String,
    rule_id: String,
    op_id: String,
    instance_id: u64,
    cancel: Cancel,
    span: tracing::Span,
    state: StateStore,
}

impl StreamContext {
    /// A context for `symbol` of `plugin`, for `rule_id` / `op_id` / `instance_id`; its span
    /// is made here, in the calling thread's `tracing` dispatcher.
    pub(crate) fn new(meta: Meta, cancel: Cancel) -> StreamContext {
        StreamContext::with_state(meta, cancel, StateStore::default())
    }

    /// As [`new`](Self::new), with the instance's state.
    pub(crate) fn with_state(meta: Meta, cancel: Cancel, state: StateStore) -> StreamContext {
        // ERROR level so that the span exists whatever level filter is in force: events inside
        // it are filtered by their own level, and need the span to be tagged with the instance.
        let span = tracing::error_span!(
            "instance",
            plugin = %meta.plugin,
            symbol = %meta.symbol,
            rule = %meta.rule_id,
            op = %meta.op_id,
            instance_id = meta.instance_id,
        );
        StreamContext {
            inner: Arc::new(Inner {
                plugin: meta.plugin,
                symbol: meta.symbol,
                rule_id: meta.rule_id,
                op_id: meta.op_id,
                instance_id: meta.instance_id,
                cancel,
                span,
                state,
            }),
        }
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &str {
        &self.inner.plugin
    }

    /// The source or sink symbol this instance was made from.
    pub fn symbol(&self) -> &str {
        &self.inner.symbol
    }

    /// The rule the instance belongs to.
    pub fn rule_id(&self) -> &str {
        &self.inner.rule_id
    }

    /// The operator in the rule.
    pub fn op_id(&self) -> &str {
        &self.inner.op_id
    }

    /// The host's id for this instance, unique among the plugin's running instances.
    pub fn instance_id(&self) -> u64 {
        self.inner.instance_id
    }

    /// True once the host has asked the instance to stop: a source's
    /// [`open`](crate::Source::open) should then return. One atomic load; cheap enough to
    /// check per tuple.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Waits for `duration`, returning early if the instance is stopped. Use it instead of
    /// `std::thread::sleep` between emits, so that a stop takes effect at once.
    ///
    /// # Errors
    /// [`PluginError::Cancelled`] if the instance was stopped before or during the wait; in a
    /// source's `open`, return it (with `?`): the runtime treats it as a normal end.
    pub fn sleep(&self, duration: Duration) -> Result<(), PluginError> {
        if self.inner.cancel.wait(duration) {
            Err(PluginError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The value of the state entry `key` (eKuiper's `GetState`), if there is one.
    ///
    /// An instance's state outlives its plugin process: the host keeps what
    /// [`put_state`](Self::put_state) writes and hands it back when it starts the instance
    /// again after a restart, so a counter or a last-seen offset picks up where it was. (Not
    /// across runs of `shmplug run` or an engine's restarts: the host keeps it in memory.)
    ///
    /// # Examples
    /// ```
    /// # fn example(ctx: &shmplug_sdk::SourceContext) -> Result<(), shmplug_sdk::PluginError> {
    /// // Resume after the last line emitted before a crash.
    /// let mut line = ctx.get_state("line").and_then(|v| v.as_u64()).unwrap_or(0);
    /// line += 1;
    /// ctx.put_state("line", line)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_state(&self, key: &str) -> Option<serde_json::Value> {
        self.inner.state.get(key)
    }

    /// Sets the state entry `key` to `value` (eKuiper's `PutState`), here and in the host's
    /// copy; see [`get_state`](Self::get_state). One control message to the host per call:
    /// fine per window or per second, too much per tuple.
    ///
    /// # Errors
    /// [`PluginError::Message`] if the state would exceed [`MAX_STATE_BYTES`] (256 KiB of keys
    /// and values as JSON); the entry is left as it was.
    pub fn put_state(
        &self,
        key: &str,
        value: impl Into<serde_json::Value>,
    ) -> Result<(), PluginError> {
        self.inner
            .state
            .put(self.inner.instance_id, key, Some(value.into()))
    }

    /// Removes the state entry `key` (eKuiper's `DeleteState`), here and in the host's copy.
    ///
    /// # Errors
    /// None today; a `Result` so that a store with limits can refuse.
    pub fn delete_state(&self, key: &str) -> Result<(), PluginError> {
        self.inner.state.put(self.inner.instance_id, key, None)
    }

    /// The `tracing` span of this instance (see [Logging](#logging)).
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    pub(crate) fn cancel(&self) -> &Cancel {
        &self.inner.cancel
    }
}

impl fmt::Debug for StreamContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamContext")
            .field("plugin", &self.inner.plugin)
            .field("symbol", &self.inner.symbol)
            .field("rule_id", &self.inner.rule_id)
            .field("op_id", &self.inner.op_id)
            .field("instance_id", &self.inner.instance_id)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The context of a function instance, after eKuiper's `FunctionContext`: a
/// [`StreamContext`] (through `Deref`) plus the function id.
#[derive(Clone, Debug)]
pub struct FunctionContext {
    stream: StreamContext,
    function_id: u64,
}

impl FunctionContext {
    pub(crate) fn new(stream: StreamContext, function_id: u64) -> FunctionContext {
        FunctionContext {
            stream,
            function_id,
        }
    }

    /// eKuiper's function id: which call site in the rule this instance serves. Taken from the
    /// start message's `funcId` property (`shmplug run` sends the call's position in the
    /// pipeline file, 0, 1, ...); 0 when the host sent none.
    pub fn function_id(&self) -> u64 {
        self.function_id
    }

    /// The stream context.
    pub fn stream(&self) -> &StreamContext {
        &self.stream
    }
}

impl Deref for FunctionContext {
    type Target = StreamContext;

    fn deref(&self) -> &StreamContext {
        &self.stream
    }
}

/// An instance's state: the plugin's copy, and the control channel that tells the host each
/// change (none in the test harness).
#[derive(Default)]
pub(crate) struct StateStore {
    entries: Mutex<Props>,
    host: Option<Arc<ControlChannel>>,
}

impl StateStore {
    /// A store holding `entries` (what the host kept), telling `host` of changes.
    pub fn new(entries: Props, host: Option<Arc<ControlChannel>>) -> StateStore {
        StateStore {
            entries: Mutex::new(entries),
            host,
        }
    }

    fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.lock().get(key).cloned()
    }

    fn put(
        &self,
        instance_id: u64,
        key: &str,
        value: Option<serde_json::Value>,
    ) -> Result<(), PluginError> {
        {
            let mut entries = self.lock();
            match &value {
                None => {
                    entries.remove(key);
                }
                Some(value) => {
                    let old = entries.insert(key.to_owned(), value.clone());
                    if state_size(&entries) > MAX_STATE_BYTES {
                        match old {
                            Some(old) => entries.insert(key.to_owned(), old),
                            None => entries.remove(key),
                        };
                        return Err(PluginError::new(format!(
                            "state entry `{key}` refused: the instance's state would exceed \
                             {MAX_STATE_BYTES} bytes of keys and values as JSON; keep less in it"
                        )));
                    }
                }
            }
        }
        if let Some(host) = &self.host {
            let message = Message::State {
                instance_id,
                key: key.to_owned(),
                value,
            };
            // A host that is gone ends the plugin anyway; the local copy stays usable.
            if let Err(e) = host.send(&message, &[]) {
                tracing::debug!("cannot tell the host of state entry `{key}`: {e}");
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Props> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who an instance is: what [`StreamContext::new`] needs besides the cancellation.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meta {
    pub plugin: String,
    pub symbol: String,
    pub rule_id: String,
    pub op_id: String,
    pub instance_id: u64,
}

/// A cancellation flag that sleepers can wait on. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    /// The ring endpoints whose waits a cancellation ends (see [`Cancel::interrupts`]).
    lock: Mutex<Vec<Interrupter>>,
    wake: Condvar,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn is_cancelled(&self) -> bool {
        // ORDERING: pairs with the Release store in `cancel`; nothing else is published with
        // the flag, but a stopped instance should see it promptly and in order.
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Sets the flag, wakes every [`wait`](Self::wait)er and ends every wait of the ring
    /// endpoints given to [`interrupts`](Self::interrupts).
    pub fn cancel(&self) {
        // ORDERING: pairs with the Acquire load in `is_cancelled`.
        self.inner.cancelled.store(true, Ordering::Release);
        // Taking the lock orders the store before any waiter's check-then-wait.
        let endpoints = std::mem::take(
            &mut *self
                .inner
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.inner.wake.notify_all();
        for endpoint in endpoints {
            endpoint.interrupt();
        }
    }

    /// Cancelling ends `endpoint`'s waits (at once if already cancelled): a thread blocked on
    /// a ring then needs no time-out to notice a stop, and an idle instance costs nothing.
    pub fn interrupts(&self, endpoint: Interrupter) {
        let mut endpoints = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_cancelled() {
            drop(endpoints);
            endpoint.interrupt();
        } else {
            endpoints.push(endpoint);
        }
    }

    /// Waits up to `timeout` for the flag; true if it is set.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return false;
            }
            guard = self
                .inner
                .wake
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_read_put_deleted_and_bounded() {
        let kept = serde_json::json!({"count": 3}).as_object().unwrap().clone();
        let ctx =
            StreamContext::with_state(Meta::default(), Cancel::new(), StateStore::new(kept, None));
        assert_eq!(ctx.get_state("count"), Some(3.into()));
        ctx.put_state("count", 4).unwrap();
        assert_eq!(ctx.get_state("count"), Some(4.into()));
        ctx.delete_state("count").unwrap();
        assert_eq!(ctx.get_state("count"), None);
        let big = "x".repeat(MAX_STATE_BYTES);
        let e = ctx.put_state("big", big.as_str()).unwrap_err().to_string();
        assert!(e.contains("state entry `big` refused"), "{e}");
        assert_eq!(ctx.get_state("big"), None);
    }

    #[test]
    fn sleep_returns_early_when_cancelled() {
        let ctx = StreamContext::new(Meta::default(), Cancel::new());
        assert!(ctx.sleep(Duration::from_millis(1)).is_ok());
        let other = ctx.clone();
        let started = Instant::now();
        let waiter = std::thread::spawn(move || other.sleep(Duration::from_secs(30)));
        ctx.cancel().cancel();
        assert!(matches!(
            waiter.join().unwrap(),
            Err(PluginError::Cancelled)
        ));
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(ctx.is_cancelled());
        assert!(ctx.sleep(Duration::from_secs(30)).is_err());
    }
}
