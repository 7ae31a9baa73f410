//! [`SinkWriter`]: tuples to a sink instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use shmplug_transport::tuple::{Encode, TupleBatch};
use shmplug_transport::wait::{self, Room};
use shmplug_transport::{EndpointConfig, Ring, TupleSender, TupleView};

use super::core::{Core, Endpoints, io_error};
use super::reactor::{self, SPACE_READY};
use crate::error::{Error, Result};
use crate::supervisor::slot::{Slot, Traffic};
use crate::supervisor::state::Supervision;

/// Writes tuples to a sink instance, serialized straight into shared memory.
///
/// A full ring is back-pressure: [`send`](Self::send) waits, [`try_send`](Self::try_send)
/// returns `false`, [`send_timeout`](Self::send_timeout) gives up after its time-out. After a
/// plugin restart the writer switches to the new ring by itself.
///
/// # Delivery
/// By default a writer delivers at least once ([`Delivery::AtLeastOnce`]): a tuple counts as
/// delivered when the plugin's `collect` returned (for a sink that buffers, when its next flush
/// returned), which the plugin acknowledges with one store per tuple in the ring's header. Until then the tuple stays in the ring, so the writer keeps
/// nothing of its own; after a restart it reads back what the dead process had not
/// acknowledged and writes it to the new process first, in order. The tuple the dead process
/// was collecting when it died may thus be collected twice: [`stats`](Self::stats) counts the
/// tuples written again and how many of them may be duplicates. [`Delivery::AtMostOnce`] drops
/// them instead.
///
/// # Examples
/// ```no_run
/// # fn demo(plugin: &shmplug_host::Plugin) -> shmplug_host::Result<()> {
/// use shmplug_host::InstanceSpec;
/// use shmplug_host::transport::Tuple;
///
/// let mut sink = plugin.sink(InstanceSpec::new("file").property("path", "/tmp/out.txt"))?;
/// sink.send(&Tuple::new(0).with_field("value", 42i64))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SinkWriter {
    core: Core<TupleSender>,
    /// The write in progress publishes later ([`SinkWriter::send_deferred`]).
    deferred: bool,
    delivery: Delivery,
    /// Tuples read back from a dead process's ring, written to the new one before anything
    /// else; `pending[next..]` are still to be written.
    pending: TupleBatch,
    next: usize,
    /// An aligned copy of a read-back record, to validate it.
    scratch: AlignedVec<16>,
    /// Rings retired so far.
    retired: u64,
    /// Tuples written with [`send_deferred`](SinkWriter::send_deferred) since the last flush:
    /// added to the slot's count at the flush, one store per batch.
    unflushed: u64,
}

/// What a sink writer does with the tuples a plugin had not finished when it died.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Write them again to the restarted process (the default): nothing is lost, and the
    /// tuple being collected at the crash may be collected twice.
    #[default]
    AtLeastOnce,
    /// Drop them: nothing is collected twice, and what the dead process had not collected is
    /// lost.
    AtMostOnce,
}

/// A sink writer's counters, since it was opened ([`SinkWriter::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Tuples written (each counted once; those written again after a restart are
    /// `replayed`).
    pub sent: u64,
    /// Writes refused with [`Error::Data`](crate::Error::Data) (a tuple too large for the ring,
    /// a corrupt ring).
    pub errors: u64,
    /// Tuples written again to a restarted process because the dead one had not acknowledged
    /// them.
    pub replayed: u64,
    /// Of those, how many the dead process may have collected already: duplicates.
    pub duplicates: u64,
}

impl Endpoints for TupleSender {
    const ASYNC_FDS: &'static [(usize, usize)] = &[(0, SPACE_READY)];

    fn open(rings: &[Ring], config: EndpointConfig) -> shmplug_transport::Result<Self> {
        Ok(TupleSender::new(rings[0].producer(config)?))
    }
}

/// What one attempt to write found.
enum Attempt {
    Sent,
    /// The ring is full: wait for this much room.
    Full(usize),
    /// The rings changed: attach again.
    Switch,
}

impl SinkWriter {
    pub(crate) fn new(supervision: Arc<Supervision>, slot: Arc<Slot>) -> SinkWriter {
        SinkWriter {
            core: Core::new(supervision, slot),
            deferred: false,
            delivery: Delivery::default(),
            pending: TupleBatch::new(),
            next: 0,
            scratch: AlignedVec::new(),
            retired: 0,
            unflushed: 0,
        }
    }

    /// Chooses what happens to the tuples a dead process had not collected (see
    /// [Delivery](SinkWriter#delivery)); at least once unless set.
    pub fn set_delivery(&mut self, delivery: Delivery) {
        self.delivery = delivery;
    }

    /// The delivery chosen with [`set_delivery`](Self::set_delivery).
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// Tuples written, refused, written again after restarts, and possible duplicates among
    /// them: four relaxed loads. The same figures are in
    /// [`Plugin::status`](crate::Plugin::status) (`tuples_in` once flushed, `errors`,
    /// `replayed`, `duplicates`).
    pub fn stats(&self) -> SinkStats {
        let slot = self.core.binding.slot();
        let delivered = &slot.delivered;
        SinkStats {
            sent: slot.traffic.tuples_in.load(Ordering::Relaxed) + self.unflushed,
            errors: slot.traffic.errors.load(Ordering::Relaxed),
            replayed: delivered.replayed.load(Ordering::Relaxed),
            duplicates: delivered.duplicates.load(Ordering::Relaxed),
        }
    }

    /// The instance id.
    pub fn instance_id(&self) -> u64 {
        self.core.instance_id()
    }

    /// The sink symbol.
    pub fn symbol(&self) -> &str {
        self.core.symbol()
    }

    /// The name of the plugin that runs the instance.
    pub fn plugin(&self) -> &str {
        self.core.plugin()
    }

    /// Sends a [`Tuple`](shmplug_transport::Tuple) or [`TupleRef`](shmplug_transport::TupleRef),
    /// waiting while the ring is full (and across plugin restarts).
    ///
    /// # Errors
    /// [`Error::EndOfStream`](crate::Error::EndOfStream) if the plugin closed the sink's ring;
    /// [`Error::InstanceGone`](crate::Error::InstanceGone) if the instance was stopped or cannot
    /// be restarted; [`Error::Data`](crate::Error::Data) for a tuple too large for the ring or a
    /// corrupt ring.
    pub fn send<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<()> {
        self.send_until(tuple, None).map(drop)
    }

    /// As [`send`](Self::send), but publishes the tuple later, with others: when a batch of
    /// bytes has accumulated, when the writer has to wait for room, or on
    /// [`flush`](Self::flush). Call `flush` after the last tuple of a burst. Saves the plugin a
    /// wake-up and a cache-line transfer per tuple.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_deferred<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<()> {
        self.deferred = true;
        let sent = self.send_until(tuple, None).map(drop);
        self.deferred = false;
        sent
    }

    /// Publishes every tuple written with [`send_deferred`](Self::send_deferred).
    pub fn flush(&mut self) {
        if let Some(cur) = self.core.current.as_mut() {
            cur.ends.flush();
        }
        if self.unflushed > 0 {
            Traffic::add(&self.core.binding.slot().traffic.tuples_in, self.unflushed);
            self.unflushed = 0;
        }
    }

    /// Sends if there is room now; `Ok(false)` (nothing written) if the ring is full.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn try_send<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<bool> {
        self.send_until(tuple, Some(Instant::now()))
    }

    /// Sends, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`send`](Self::send), and [`Error::TimedOut`](crate::Error::TimedOut) (nothing
    /// written).
    pub fn send_timeout<T: Encode + ?Sized>(&mut self, tuple: &T, timeout: Duration) -> Result<()> {
        if self.send_until(tuple, Some(Instant::now() + timeout))? {
            Ok(())
        } else {
            Err(self.core.binding.ids().timed_out("send", timeout))
        }
    }

    /// Sends, awaiting room in the tokio reactor instead of blocking a thread. Must run inside a
    /// tokio runtime.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_async<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<()> {
        let sent = self.write_async(tuple).await;
        self.count(sent.as_ref().map(|()| true));
        sent
    }

    async fn write_async<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<()> {
        loop {
            self.core.attach_async().await?;
            let len = match self.attempt_pending()? {
                Some(Attempt::Sent) => continue,
                Some(other) => other,
                None => self.attempt(tuple)?,
            };
            let len = match len {
                Attempt::Sent => return Ok(()),
                Attempt::Switch => continue,
                Attempt::Full(len) => len,
            };
            let Some((tx, fds)) = self.core.async_fds()? else {
                continue;
            };
            reactor::ready(&mut Room(tx.producer(), len), &fds[0])
                .await
                .map_err(|e| io_error(&self.core.binding, e))?;
        }
    }

    /// Stops the instance, waiting up to the stop time-out for the plugin to confirm. At
    /// least once, it first waits (up to the stop time-out too) until the plugin has
    /// acknowledged every tuple written, writing them again to a new process if it died
    /// meanwhile.
    ///
    /// # Errors
    /// [`Error::TimedOut`](crate::Error::TimedOut) if the plugin did not confirm in time.
    pub fn stop(mut self) -> Result<()> {
        // Tuples the plugin has not acknowledged go to the restarted process first, if it
        // restarted since the last write.
        let deadline = Instant::now() + self.core.binding.stop_timeout();
        match self.settle_acknowledged(deadline) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "sink `{}`: the plugin had not acknowledged every tuple by the stop time-out",
                self.core.symbol()
            ),
            Err(e) => tracing::warn!("{e}"),
        }
        self.flush();
        self.core.current = None;
        self.core.binding.stop()
    }

    fn send_until<T: Encode + ?Sized>(
        &mut self,
        tuple: &T,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let sent = self.write_until(tuple, deadline);
        self.count(sent.as_ref().copied());
        sent
    }

    /// Counts what a send did (`Ok(true)`: written) for [`stats`](Self::stats).
    fn count(&mut self, sent: std::result::Result<bool, &Error>) {
        let traffic = &self.core.binding.slot().traffic;
        match sent {
            Ok(true) if self.deferred => self.unflushed += 1,
            Ok(true) => Traffic::add(&traffic.tuples_in, 1),
            Ok(false) => {}
            Err(Error::Data { .. }) => Traffic::add(&traffic.errors, 1),
            Err(_) => {}
        }
    }

    fn write_until<T: Encode + ?Sized>(
        &mut self,
        tuple: &T,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        loop {
            if !self.core.attach(deadline)? {
                return Ok(false);
            }
            let attempt = match self.attempt_pending()? {
                Some(Attempt::Sent) => continue,
                Some(other) => other,
                None => self.attempt(tuple)?,
            };
            let len = match attempt {
                Attempt::Sent => return Ok(true),
                Attempt::Switch => continue,
                Attempt::Full(len) => len,
            };
            if !self.wait_room(len, deadline)? {
                return Ok(false);
            }
        }
    }

    /// Before a stop, delivering at least once: waits until the plugin has acknowledged every
    /// tuple written, replaying them to a new process if it died meanwhile (a stop sent to a
    /// dead process would drop them); false if `deadline` passed first. Polls every
    /// millisecond: it runs once, at the end of a stream.
    fn settle_acknowledged(&mut self, deadline: Instant) -> Result<bool> {
        self.flush();
        loop {
            if !self.settle(deadline)? {
                return Ok(false);
            }
            self.flush();
            let acknowledged = match self.core.current.as_mut() {
                Some(cur) => cur.ends.producer().all_acknowledged(),
                None => false,
            };
            if acknowledged || self.delivery == Delivery::AtMostOnce {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Switches to the instance's new ring if its process was replaced since the last write,
    /// and writes what was pending, waiting for room until `deadline`; false if it passed.
    fn settle(&mut self, deadline: Instant) -> Result<bool> {
        if let Some(cur) = self.core.current.as_ref()
            && self.core.binding.moved_on(cur.generation)
        {
            self.retire();
        }
        loop {
            if !self.core.attach(Some(deadline))? {
                return Ok(false);
            }
            let len = match self.attempt_pending()? {
                None => return Ok(true),
                Some(Attempt::Sent | Attempt::Switch) => continue,
                Some(Attempt::Full(len)) => len,
            };
            if !self.wait_room(len, Some(deadline))? {
                return Ok(false);
            }
        }
    }

    /// Writes the next tuple pending from a dead process's ring: `None` if nothing is pending
    /// (the common case: one comparison), `Some(Sent)` after each tuple written, or why it
    /// could not.
    fn attempt_pending(&mut self) -> Result<Option<Attempt>> {
        if self.next >= self.pending.len() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        let next = self.next;
        let retired = self.retired;
        let attempt = match pending.get(next) {
            Some(tuple) => self.attempt(&tuple),
            None => Ok(Attempt::Sent),
        };
        if self.retired != retired {
            // The process was replaced again: `retire` kept what the dead ring held, and what
            // was still pending goes after it.
            for tuple in pending.iter().skip(next) {
                if let Err(e) = self.pending.push(&tuple) {
                    tracing::error!("{e}");
                }
            }
            return attempt.map(Some);
        }
        self.pending = pending;
        if matches!(attempt, Ok(Attempt::Sent)) {
            self.next += 1;
            if self.next == self.pending.len() {
                self.pending.clear();
                self.next = 0;
            }
        }
        attempt.map(Some)
    }

    /// Waits for room for `len` bytes on the current ring until `deadline`; false if it
    /// passed.
    fn wait_room(&mut self, len: usize, deadline: Option<Instant>) -> Result<bool> {
        let spin = if deadline.is_some_and(|d| d <= Instant::now()) {
            Duration::ZERO
        } else {
            self.core.binding.spin()
        };
        let Some(cur) = self.core.current.as_mut() else {
            return Ok(true);
        };
        let fd = reactor::own_fd(&cur.rings[0], SPACE_READY)
            .map_err(|e| self.core.binding.ids().data_error(e))?;
        let room = &mut Room(cur.ends.producer(), len);
        Ok(wait::block(&mut [(room, fd)], spin, deadline))
    }

    /// The current ring is retired: keeps what its process had not acknowledged (at least
    /// once) and lets go of it.
    fn retire(&mut self) {
        let Some(mut cur) = self.core.current.take() else {
            return;
        };
        self.retired += 1;
        if self.delivery == Delivery::AtMostOnce {
            return;
        }
        let ids = self.core.binding.ids();
        let mut kept = TupleBatch::new();
        let mut invalid = 0u64;
        let scratch = &mut self.scratch;
        let read = cur.ends.producer().unacknowledged(|_, bytes| {
            scratch.clear();
            scratch.extend_from_slice(bytes);
            match TupleView::from_bytes(scratch).and_then(|view| kept.push(&view)) {
                Ok(()) => {}
                Err(_) => invalid += 1,
            }
        });
        let unfinished = match read {
            Ok(unfinished) => Some(unfinished),
            Err(e) => {
                tracing::error!(
                    plugin = %ids.plugin, instance = ids.instance,
                    "sink `{}`: some tuples the plugin had not acknowledged are lost: {e}",
                    ids.symbol
                );
                None
            }
        };
        if invalid > 0 {
            tracing::error!(
                plugin = %ids.plugin, instance = ids.instance,
                "sink `{}`: {invalid} tuple(s) the plugin had not acknowledged were overwritten \
                 in shared memory and are lost",
                ids.symbol
            );
        }
        let replayed = kept.len() as u64;
        self.pending = kept;
        self.next = 0;
        if replayed > 0 {
            let duplicates = unfinished.map_or(0, |u| u.possibly_done().min(replayed));
            let delivered = &self.core.binding.slot().delivered;
            delivered.replayed.fetch_add(replayed, Ordering::Relaxed);
            delivered
                .duplicates
                .fetch_add(duplicates, Ordering::Relaxed);
            tracing::info!(
                plugin = %ids.plugin, instance = ids.instance,
                "sink `{}`: writing {replayed} unacknowledged tuple(s) to the restarted process \
                 ({duplicates} possibly collected already)",
                ids.symbol
            );
        }
    }

    /// Tries once to write `tuple` to the current ring.
    fn attempt<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<Attempt> {
        let Some(cur) = self.core.current.as_mut() else {
            return Ok(Attempt::Switch);
        };
        let generation = cur.generation;
        if self.core.binding.moved_on(generation) {
            self.retire();
            return Ok(Attempt::Switch);
        }
        let sent = if self.deferred {
            cur.ends.try_send_deferred(tuple)
        } else {
            cur.ends.try_send(tuple)
        };
        match sent {
            Ok(true) => Ok(Attempt::Sent),
            Ok(false) => {
                let bound = tuple
                    .size_bound()
                    .map_err(|e| self.core.binding.ids().data_error(e))?;
                Ok(Attempt::Full(bound.min(cur.ends.max_tuple_len())))
            }
            Err(e) if e.is_closed() => {
                if self.core.binding.moved_on(generation) {
                    self.retire();
                    Ok(Attempt::Switch)
                } else {
                    Err(self.core.binding.ids().end_of_stream())
                }
            }
            Err(e) => Err(self.core.binding.ids().data_error(e)),
        }
    }
}
