//! [`SourceReader`]: tuples from a source instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use shmplug_transport::tuple::{Encode, Encoder, Offset};
use shmplug_transport::wait;
use shmplug_transport::{EndpointConfig, Ring, TupleReceiver, TupleView, Validation};

use super::core::{Core, Endpoints, io_error, spurious};
use super::reactor::{self, DATA_READY};
use crate::error::Result;
use crate::supervisor::slot::{Slot, Traffic};
use crate::supervisor::state::Supervision;

/// Reads the tuples a source instance produces, in place in shared memory.
///
/// Each receive returns a [`TupleView`] borrowed from the ring; the record is released when the
/// view is dropped, so drop it before the next receive. After a plugin restart the reader
/// switches to the new rings by itself (see the [module docs](crate::handles)).
///
/// # Examples
/// ```no_run
/// # fn demo(plugin: &shmplug_host::Plugin) -> shmplug_host::Result<()> {
/// use shmplug_host::InstanceSpec;
///
/// let mut reader = plugin.source(InstanceSpec::new("random"))?;
/// loop {
///     match reader.recv() {
///         Ok(tuple) => println!("{:?}", tuple.get("value")),
///         Err(e) if e.is_end_of_stream() => break,
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SourceReader {
    core: Core<TupleReceiver>,
    /// A tuple copied out of a retired ring, served before switching to the new one.
    held: Option<AlignedVec<16>>,
    /// `held` was handed out; drop it at the next receive.
    served: bool,
    /// The generation whose rings were last looked at, and whether its process writes
    /// offsets (a rewindable source).
    tracked: (u64, bool),
    /// Tuples [`recv_async`](Self::recv_async) returned since its task last yielded for
    /// [`ASYNC_BATCH`].
    async_run: usize,
}

/// The most tuples [`SourceReader::recv_async`] returns in a row before it yields to the tokio
/// scheduler once: a ring that is always ready never makes its wait sleep, so without this a
/// task reading a busy source would keep its runtime thread and starve every other task on it
/// (other instances' readers included). With it, ready instances read by tasks of one runtime
/// are served in turn, at most this many tuples each. The yield costs a reschedule per batch.
pub const ASYNC_BATCH: usize = 64;

impl Endpoints for TupleReceiver {
    const ASYNC_FDS: &'static [(usize, usize)] = &[(0, DATA_READY)];

    fn open(rings: &[Ring], config: EndpointConfig) -> shmplug_transport::Result<Self> {
        // The plugin may rewrite its records at any moment: copy each one into private memory
        // before validating and reading it.
        Ok(TupleReceiver::with_validation(
            rings[0].consumer(config)?,
            Validation::COPY_THEN_VALIDATE,
        ))
    }
}

/// A source reader's counters, since it was opened ([`SourceReader::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Tuples received (each counted once, across restarts).
    pub received: u64,
    /// Records refused as invalid or unreadable (each a [`Error::Data`](crate::Error::Data)).
    pub errors: u64,
}

enum Ready {
    /// Read the current ring.
    Direct,
    /// Serve `held`.
    Held,
}

impl SourceReader {
    pub(crate) fn new(supervision: Arc<Supervision>, slot: Arc<Slot>) -> SourceReader {
        SourceReader {
            core: Core::new(supervision, slot),
            held: None,
            served: false,
            tracked: (u64::MAX, false),
            async_run: 0,
        }
    }

    /// The instance id.
    pub fn instance_id(&self) -> u64 {
        self.core.instance_id()
    }

    /// The source symbol.
    pub fn symbol(&self) -> &str {
        self.core.symbol()
    }

    /// The name of the plugin that runs the instance.
    pub fn plugin(&self) -> &str {
        self.core.plugin()
    }

    /// Tuples received and records refused so far: two relaxed loads. The same figures are in
    /// [`Plugin::status`](crate::Plugin::status) (as `tuples_out` and `errors`).
    pub fn stats(&self) -> SourceStats {
        let traffic = &self.core.binding.slot().traffic;
        SourceStats {
            received: traffic.tuples_out.load(Ordering::Relaxed),
            errors: traffic.errors.load(Ordering::Relaxed),
        }
    }

    /// True if the source is rewindable (its plugin declared it so; see the
    /// [module docs](crate::handles)) and its current process writes each tuple's offset.
    pub fn is_rewindable(&self) -> bool {
        self.core.binding.slot().offsets().tracked
    }

    /// The offset of the last tuple this reader handed on, for a rewindable source: after a
    /// plugin restart the new instance is rewound to it before it emits. `None` for a source
    /// that is not rewindable or has handed nothing on.
    pub fn offset(&self) -> Option<Offset> {
        self.core.binding.slot().offsets().handed_on
    }

    /// Receives the next tuple, waiting as long as it takes (across plugin restarts).
    ///
    /// # Errors
    /// [`Error::EndOfStream`](crate::Error::EndOfStream) once the source closed its ring and every tuple was read;
    /// [`Error::InstanceGone`](crate::Error::InstanceGone) if the instance was stopped or cannot be restarted;
    /// [`Error::Data`](crate::Error::Data) for a corrupt ring or an invalid tuple.
    pub fn recv(&mut self) -> Result<TupleView<'_>> {
        if self.ready_now()? {
            return self.read_ready();
        }
        match self.wait_until(None)? {
            Some(ready) => self.take(ready),
            None => Err(self.core.binding.ids().data_error(spurious())),
        }
    }

    /// Receives the next tuple if one is there now; `Ok(None)` if not.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<TupleView<'_>>> {
        self.recv_within(Duration::ZERO)
    }

    /// Receives the next tuple, waiting at most `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<TupleView<'_>>> {
        self.recv_within(timeout)
    }

    /// Receives the next tuple, awaiting the ring's eventfd in the tokio reactor instead of
    /// blocking a thread. Must run inside a tokio runtime.
    ///
    /// A tuple that is there already is returned without awaiting anything, so every
    /// [`ASYNC_BATCH`]-th call first yields to the scheduler once: a task that reads a busy
    /// source in a loop lets the other tasks of its runtime thread run at least that often.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_async(&mut self) -> Result<TupleView<'_>> {
        if self.async_run >= ASYNC_BATCH {
            self.async_run = 0;
            tokio::task::yield_now().await;
        }
        self.async_run += 1;
        let ready = loop {
            self.drop_served();
            self.core.attach_async().await?;
            let Some((rx, fds)) = self.core.async_fds()? else {
                continue;
            };
            reactor::ready(rx.consumer(), &fds[0])
                .await
                .map_err(|e| io_error(&self.core.binding, e))?;
            if let Some(ready) = self.after_wait()? {
                break ready;
            }
        };
        self.take(ready)
    }

    /// Stops the instance, waiting up to the stop time-out for the plugin to confirm.
    ///
    /// # Errors
    /// [`Error::TimedOut`](crate::Error::TimedOut) if the plugin did not confirm in time.
    pub fn stop(mut self) -> Result<()> {
        self.core.binding.stop()
    }

    /// True if the current ring, still the instance's live one, has a tuple (or its end, or
    /// an error) to read now: the common case, which needs no clock and no waiting.
    fn ready_now(&mut self) -> Result<bool> {
        if self.served {
            return Ok(false);
        }
        let Some(cur) = self.core.current.as_mut() else {
            return Ok(false);
        };
        let generation = cur.generation;
        if cur.ends.consumer().is_ready().unwrap_or(true) && !self.core.binding.moved_on(generation)
        {
            return self.gate();
        }
        Ok(false)
    }

    /// True if the current ring's process writes offsets (read once per generation).
    fn tracks(&mut self, generation: u64) -> bool {
        if self.tracked.0 != generation {
            self.tracked = (generation, self.core.binding.slot().offsets().tracked);
        }
        self.tracked.1
    }

    /// Before the current ring's next tuple is read: for a rewindable source, records its
    /// offset as handed on, unless the ring was retired meanwhile (then drops the ring, whose
    /// tuples the rewound instance emits again, and returns false: wait again). True at once
    /// for any other source.
    fn gate(&mut self) -> Result<bool> {
        let Some(generation) = self.core.current.as_ref().map(|c| c.generation) else {
            return Ok(false);
        };
        if !self.tracks(generation) {
            return Ok(true);
        }
        let Some(cur) = self.core.current.as_mut() else {
            return Ok(false);
        };
        match cur.ends.ready() {
            Ok(true) => {}
            // Only an offset so far: its tuple follows.
            Ok(false) => return Ok(false),
            // The end or an error: the read reports it.
            Err(_) => return Ok(true),
        }
        let offset = cur.ends.next_offset();
        if self.core.binding.hand_on(generation, offset) {
            return Ok(true);
        }
        self.core.current = None;
        Ok(false)
    }

    /// [`try_recv`](Self::try_recv) and [`recv_timeout`](Self::recv_timeout): the clock is
    /// read only if no tuple is there now.
    fn recv_within(&mut self, timeout: Duration) -> Result<Option<TupleView<'_>>> {
        if self.ready_now()? {
            return self.read_ready().map(Some);
        }
        match self.wait_until(Some(Instant::now() + timeout))? {
            Some(ready) => self.take(ready).map(Some),
            None => Ok(None),
        }
    }

    /// Drops the held tuple once it was served.
    fn drop_served(&mut self) {
        if self.served {
            self.held = None;
            self.served = false;
        }
    }

    /// Waits until a tuple (or the end) can be taken without waiting; `None` on time-out.
    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<Option<Ready>> {
        loop {
            self.drop_served();
            if !self.core.attach(deadline)? {
                return Ok(None);
            }
            let spin = if deadline.is_some_and(|d| d <= Instant::now()) {
                Duration::ZERO
            } else {
                self.core.binding.spin()
            };
            let Some(cur) = self.core.current.as_mut() else {
                continue;
            };
            let fd = reactor::own_fd(&cur.rings[0], DATA_READY)
                .map_err(|e| self.core.binding.ids().data_error(e))?;
            if !wait::block(&mut [(cur.ends.consumer(), fd)], spin, deadline) {
                return Ok(None);
            }
            if let Some(ready) = self.after_wait()? {
                return Ok(Some(ready));
            }
        }
    }

    /// After a wait reported the current ring ready: what to take, or `None` to wait again
    /// (the ring was retired and ran out, so the next round switches to the new rings).
    fn after_wait(&mut self) -> Result<Option<Ready>> {
        let Some(cur) = self.core.current.as_ref() else {
            return Ok(None);
        };
        let generation = cur.generation;
        if !self.core.binding.moved_on(generation) {
            return Ok(self.gate()?.then_some(Ready::Direct));
        }
        if self.tracks(generation) {
            // A rewindable source's retired ring: what it still holds was never handed on,
            // and the rewound instance emits it again.
            self.core.current = None;
            return Ok(None);
        }
        // Ready on a retired ring: a leftover tuple, or its end.
        Ok(self.take_retired()?.then_some(Ready::Held))
    }

    /// Takes what [`wait_until`](Self::wait_until) found ready.
    fn take(&mut self, ready: Ready) -> Result<TupleView<'_>> {
        match ready {
            Ready::Held => {
                self.served = true;
                self.serve_held()
            }
            Ready::Direct => self.read_ready(),
        }
    }

    /// Reads the current ring, which is ready, so it has a tuple (or an end, or an error).
    fn read_ready(&mut self) -> Result<TupleView<'_>> {
        let binding = &self.core.binding;
        let traffic = &binding.slot().traffic;
        let Some(cur) = self.core.current.as_mut() else {
            Traffic::add(&traffic.errors, 1);
            return Err(binding.ids().data_error(spurious()));
        };
        match cur.ends.try_recv() {
            Ok(Some(view)) => {
                Traffic::add(&traffic.tuples_out, 1);
                Ok(view)
            }
            Ok(None) => {
                Traffic::add(&traffic.errors, 1);
                Err(binding.ids().data_error(spurious()))
            }
            Err(e) if e.is_closed() => Err(binding.ids().end_of_stream()),
            Err(e) => {
                Traffic::add(&traffic.errors, 1);
                Err(binding.ids().data_error(e))
            }
        }
    }

    /// The current ring was retired and is ready: copies its next tuple into `held` (true),
    /// or, at its end, drops it so the next round switches to the new rings (false).
    fn take_retired(&mut self) -> Result<bool> {
        let Some(cur) = self.core.current.as_mut() else {
            return Ok(false);
        };
        let copied = match cur.ends.try_recv() {
            Ok(Some(view)) => Some(copy(&view)),
            Ok(None) => return Ok(false),
            Err(e) => {
                if !e.is_closed() {
                    tracing::warn!(
                        plugin = %self.core.binding.ids().plugin,
                        instance = self.core.binding.ids().instance,
                        "dropping the rest of a retired source ring: {e}"
                    );
                }
                None
            }
        };
        match copied {
            Some(bytes) => {
                let binding = &self.core.binding;
                self.held = Some(bytes.map_err(|e| {
                    Traffic::add(&binding.slot().traffic.errors, 1);
                    binding.ids().data_error(e)
                })?);
                Ok(true)
            }
            None => {
                self.core.current = None;
                Ok(false)
            }
        }
    }

    fn serve_held(&self) -> Result<TupleView<'_>> {
        let bytes = self.held.as_deref().unwrap_or_default();
        let traffic = &self.core.binding.slot().traffic;
        let served = TupleView::from_bytes(bytes);
        Traffic::add(
            if served.is_ok() {
                &traffic.tuples_out
            } else {
                &traffic.errors
            },
            1,
        );
        served.map_err(|e| self.core.binding.ids().data_error(e))
    }
}

/// An aligned copy of the archived tuple, readable with [`TupleView::from_bytes`].
fn copy(view: &TupleView<'_>) -> shmplug_transport::Result<AlignedVec<16>> {
    let tuple = view.to_owned();
    let mut bytes = AlignedVec::<16>::new();
    bytes.resize(tuple.size_bound()?, 0);
    let len = Encoder::new().encode_into(&tuple, &mut bytes)?;
    bytes.resize(len, 0);
    Ok(bytes)
}
