//! The slot an instance's data handle reads its rings from, which the supervisor swaps when it
//! restarts or updates the plugin process.
//!
//! # Protocol
//! The supervisor changes the state under the mutex and bumps `version` (SeqCst) before it
//! closes the old rings from the host side. A handle that sees its ring closed therefore sees
//! the new version when it looks afterwards, and can tell "the plugin ended the stream" (slot
//! still live on the handle's rings) from "the supervisor retired these rings" (slot moved on).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use shmplug_transport::Ring;
use shmplug_transport::tuple::Offset;

use super::starve::Watch;
use crate::error::{Error, SymbolKind};

/// Names an instance in errors.
#[derive(Clone, Debug)]
pub(crate) struct Ids {
    pub plugin: String,
    pub kind: SymbolKind,
    pub symbol: String,
    pub instance: u64,
}

impl Ids {
    pub(crate) fn data_error(&self, source: shmplug_transport::Error) -> Error {
        Error::Data {
            plugin: self.plugin.clone(),
            kind: self.kind,
            symbol: self.symbol.clone(),
            instance: self.instance,
            source,
        }
    }

    pub(crate) fn gone(&self, reason: String) -> Error {
        Error::InstanceGone {
            plugin: self.plugin.clone(),
            kind: self.kind,
            symbol: self.symbol.clone(),
            instance: self.instance,
            reason,
        }
    }

    pub(crate) fn timed_out(&self, op: &'static str, timeout: std::time::Duration) -> Error {
        Error::TimedOut {
            op,
            plugin: self.plugin.clone(),
            kind: self.kind,
            symbol: self.symbol.clone(),
            instance: self.instance,
            timeout,
        }
    }

    pub(crate) fn end_of_stream(&self) -> Error {
        Error::EndOfStream {
            plugin: self.plugin.clone(),
            kind: self.kind,
            symbol: self.symbol.clone(),
            instance: self.instance,
        }
    }
}

/// Where an instance stands.
#[derive(Clone, Debug)]
pub(crate) enum SlotState {
    /// The start was sent; no answer yet.
    Starting,
    /// Running on these rings, in process generation `generation`.
    Live { generation: u64, rings: Vec<Ring> },
    /// The process is being restarted or replaced; new rings will follow.
    Switching,
    /// Stopped, failed, or the plugin was shut down: the reason.
    Gone(String),
}

/// What a sink's at-least-once delivery did, across restarts: kept in the slot so that
/// [`Plugin::status`](crate::Plugin::status) reports it as well as the handle.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// Records written again to a restarted instance because the dead one had not
    /// acknowledged them.
    pub replayed: AtomicU64,
    /// Of those, how many the dead instance may have collected already (duplicates).
    pub duplicates: AtomicU64,
}

/// What moved through an instance, counted by its handle and read by anyone (the handle's
/// `stats()`, [`Plugin::status`](crate::Plugin::status)), from the plugin instance's side.
///
/// Only the instance's one handle writes, through `&mut self`, so [`Traffic::add`] is a
/// relaxed load and store: no locked instruction on the data path.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Tuples into the instance: written to a sink, calls sent to a function.
    pub tuples_in: AtomicU64,
    /// Tuples out of it: received from a source, answers a function gave.
    pub tuples_out: AtomicU64,
    /// Calls the function failed or a crash interrupted, and records refused as invalid.
    pub errors: AtomicU64,
}

impl Traffic {
    /// Adds `n` to `counter`, one of this traffic's, from its one writer.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // ORDERING: relaxed; a reader wants a recent figure and nothing is published through
        // it. Load and store (not an atomic add): there is one writer.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}

/// A rewindable source's offsets: whether the current process writes them, and the offset of
/// the last tuple the host handed on, which a restarted instance is rewound to.
///
/// A reader hands a tuple on only after it recorded the tuple's offset here under the lock and
/// saw the slot still on its rings; the supervisor retires the rings (bumping the version)
/// before it takes the offset for the replay under the lock. So the replayed instance starts
/// right after the last tuple handed on: nothing lost, nothing repeated.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    /// The process the slot runs on was asked for offsets (`Start::send_offsets`).
    pub tracked: bool,
    /// The offset of the last tuple handed on.
    pub handed_on: Option<Offset>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Slot {
    pub ids: Ids,
    pub delivered: Delivered,
    pub traffic: Traffic,
    offsets: Mutex<Offsets>,
    /// The monitor's starvation watch ([`super::starve`]).
    watch: Mutex<Watch>,
    version: AtomicU64,
    state: Mutex<SlotState>,
    cond: Condvar,
    notify: tokio::sync::Notify,
}

impl Slot {
    pub(crate) fn new(ids: Ids) -> Slot {
        Slot {
            ids,
            delivered: Delivered::default(),
            traffic: Traffic::default(),
            offsets: Mutex::new(Offsets::default()),
            watch: Mutex::new(Watch::default()),
            version: AtomicU64::new(0),
            state: Mutex::new(SlotState::Starting),
            cond: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// Changes the state and wakes every waiter.
    pub(crate) fn set(&self, state: SlotState) {
        let mut guard = self.lock();
        if matches!(*guard, SlotState::Gone(_)) {
            // Gone is final: a late Started or a replay must not revive a stopped instance.
            return;
        }
        *guard = state;
        // ORDERING: SeqCst, and before the caller closes any retired ring (see module docs).
        self.version.fetch_add(1, Ordering::SeqCst);
        drop(guard);
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    /// The current version; changes on every [`set`](Self::set).
    pub(crate) fn version(&self) -> u64 {
        // ORDERING: pairs with the SeqCst bump in `set`.
        self.version.load(Ordering::SeqCst)
    }

    /// The state and the version it belongs to.
    pub(crate) fn snapshot(&self) -> (u64, SlotState) {
        let guard = self.lock();
        (self.version(), guard.clone())
    }

    /// True when the slot no longer runs on generation `generation` (checked cheaply when `seen` is
    /// still the version). Updates `seen` when the slot is unchanged for the caller.
    pub(crate) fn moved_on(&self, generation: u64, seen: &mut u64) -> bool {
        if self.version() == *seen {
            return false;
        }
        let (version, state) = self.snapshot();
        match state {
            SlotState::Live { generation: g, .. } if g == generation => {
                *seen = version;
                false
            }
            _ => true,
        }
    }

    /// Blocks until the version differs from `seen` or `deadline` passes; true if it changed.
    pub(crate) fn wait_change(&self, seen: u64, deadline: Option<Instant>) -> bool {
        let mut guard = self.lock();
        loop {
            if self.version() != seen {
                return true;
            }
            match deadline {
                None => {
                    guard = self
                        .cond
                        .wait(guard)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return false;
                    }
                    guard = self
                        .cond
                        .wait_timeout(guard, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// Waits until the version differs from `seen`.
    pub(crate) async fn changed(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.version() != seen {
                return;
            }
            notified.await;
        }
    }

    /// The rewindable source's offsets.
    pub(crate) fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `offset` as handed on, unless the slot no longer runs on generation
    /// `generation` (then false: the tuple must not be handed on, the replayed instance
    /// emits it again). See [`Offsets`].
    pub(crate) fn hand_on(&self, generation: u64, seen: &mut u64, offset: Option<Offset>) -> bool {
        let mut offsets = self.offsets();
        if self.moved_on(generation, seen) {
            return false;
        }
        if offset.is_some() {
            offsets.handed_on = offset;
        }
        true
    }

    /// The monitor's starvation watch.
    pub(crate) fn watch(&self) -> MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
