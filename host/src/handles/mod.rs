//! Data handles: what the engine reads from and writes to, one per plugin instance.
//!
//! - [`SourceReader`]: tuples from a source, as zero-copy [`TupleView`](shmplug_transport::TupleView)s.
//! - [`SinkWriter`]: tuples to a sink, with back-pressure.
//! - [`FunctionClient`]: calls to a function, one at a time or pipelined in batches.
//!
//! Each has blocking, non-blocking and time-out forms, and an `async` form for tokio that
//! awaits the ring's eventfd through [`AsyncFd`](tokio::io::unix::AsyncFd), so a few runtime
//! threads can serve hundreds of instances. An async reader yields to the scheduler after at
//! most [`ASYNC_BATCH`] tuples in a row, so the tasks reading ready instances take turns with a
//! bounded batch each.
//!
//! # Restarts
//! A handle does not own its rings for good: it reads them from the instance's slot, which the
//! supervisor refills after a restart or an update. When the plugin dies, the supervisor closes
//! the old rings from the host side; a handle that sees its ring closed while the slot has
//! moved on switches to the new rings (waiting for them if the restart is still going on) and
//! carries on, so the engine never re-opens anything. A source reader first delivers every
//! tuple the old process committed. A function client re-sends calls that had no answer yet,
//! so a call that was in flight during a crash may run twice (at-least-once).
//!
//! Dropping a handle stops its instance in the plugin.

mod core;
mod function;
mod reactor;
mod sink;
mod source;

use std::sync::Arc;
use std::time::Instant;

use shmplug_transport::Ring;
use shmplug_transport::tuple::Offset;

use crate::error::Result;
use crate::supervisor::slot::{Ids, Slot, SlotState};
use crate::supervisor::state::Supervision;

pub use function::{Calls, FunctionClient, FunctionStats};
pub use sink::{Delivery, SinkStats, SinkWriter};
pub use source::{ASYNC_BATCH, SourceReader, SourceStats};

/// A handle's tie to its instance: the slot to take rings from, and the supervisor to tell
/// when the handle is dropped.
#[derive(Debug)]
pub(crate) struct Binding {
    shared: Arc<Supervision>,
    slot: Arc<Slot>,
    /// The slot version this handle last looked at.
    seen: u64,
    /// Stop the instance on drop (off once stopped explicitly).
    stop_on_drop: bool,
}

impl Binding {
    pub(crate) fn new(shared: Arc<Supervision>, slot: Arc<Slot>) -> Binding {
        Binding {
            shared,
            slot,
            seen: u64::MAX,
            stop_on_drop: true,
        }
    }

    pub(crate) fn ids(&self) -> &Ids {
        &self.slot.ids
    }

    pub(crate) fn spin(&self) -> std::time::Duration {
        self.shared.config.handle_spin
    }

    pub(crate) fn stop_timeout(&self) -> std::time::Duration {
        self.shared.config.stop_timeout
    }

    pub(crate) fn slot(&self) -> &Slot {
        &self.slot
    }

    /// True if the plugin's running process declared this function not safe to run twice for
    /// one call.
    pub(crate) fn not_repeatable(&self) -> bool {
        let state = self.shared.lock();
        state
            .link
            .as_ref()
            .is_some_and(|l| l.hello.not_repeatable.contains(&self.ids().symbol))
    }

    /// True if the plugin's running process reads batches of calls.
    pub(crate) fn call_batches(&self) -> bool {
        let state = self.shared.lock();
        state.link.as_ref().is_some_and(|l| l.hello.call_batches)
    }

    /// The plugin's last failure, in words (why its process was restarted).
    pub(crate) fn last_failure(&self) -> String {
        let state = self.shared.lock();
        state
            .last_error
            .clone()
            .unwrap_or_else(|| "it was restarted".into())
    }

    /// True when the slot no longer runs on generation `generation`.
    pub(crate) fn moved_on(&mut self, generation: u64) -> bool {
        self.slot.moved_on(generation, &mut self.seen)
    }

    /// For a rewindable source: records `offset` as handed on unless the slot moved on from
    /// `generation` (false: do not hand the tuple on).
    pub(crate) fn hand_on(&mut self, generation: u64, offset: Option<Offset>) -> bool {
        self.slot.hand_on(generation, &mut self.seen, offset)
    }

    /// Waits until the slot has live rings (returning their generation and the rings), the
    /// instance is gone (an error), or `deadline` passes (`None`).
    pub(crate) fn attach(&mut self, deadline: Option<Instant>) -> Result<Option<(u64, Vec<Ring>)>> {
        loop {
            let (version, state) = self.slot.snapshot();
            match state {
                SlotState::Live { generation, rings } => {
                    self.seen = version;
                    return Ok(Some((generation, rings)));
                }
                SlotState::Gone(reason) => return Err(self.ids().gone(reason)),
                SlotState::Starting | SlotState::Switching => {}
            }
            if !self.slot.wait_change(version, deadline) {
                return Ok(None);
            }
        }
    }

    /// As [`attach`](Self::attach), awaiting instead of blocking, without a deadline.
    pub(crate) async fn attach_async(&mut self) -> Result<(u64, Vec<Ring>)> {
        loop {
            let (version, state) = self.slot.snapshot();
            match state {
                SlotState::Live { generation, rings } => {
                    self.seen = version;
                    return Ok((generation, rings));
                }
                SlotState::Gone(reason) => return Err(self.ids().gone(reason)),
                SlotState::Starting | SlotState::Switching => {}
            }
            self.slot.changed(version).await;
        }
    }

    /// Stops the instance and waits up to the stop time-out for the plugin to confirm.
    pub(crate) fn stop(&mut self) -> Result<()> {
        self.stop_on_drop = false;
        let timeout = self.shared.config.stop_timeout;
        if self
            .shared
            .stop_instance(self.ids().instance, Some(timeout))
        {
            Ok(())
        } else {
            Err(self.ids().timed_out("stop", timeout))
        }
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        if self.stop_on_drop {
            self.shared.stop_instance(self.ids().instance, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmplug_transport::Tuple;
    use shmplug_transport::tuple::ValueRef;

    fn assert_send<T: Send>(_: &T) {}

    /// Handles and their futures can move between a multi-threaded runtime's workers.
    #[allow(dead_code, clippy::diverging_sub_expression, unreachable_code)]
    fn handles_and_futures_are_send(
        reader: &mut SourceReader,
        writer: &mut SinkWriter,
        client: &mut FunctionClient,
    ) {
        assert_send(reader);
        assert_send(writer);
        assert_send(client);
        assert_send(&reader.recv_async());
        let tuple = Tuple::new(0);
        assert_send(&writer.send_async(&tuple));
        let args = [ValueRef::Int(1)];
        assert_send(&client.call_async(&args));
    }
}
