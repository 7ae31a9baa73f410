//! [`SourceReader`]: tuples from a source instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use shmplug_transport::tuple::{Encode, Encoder};
use shmplug_transport::{
    EndpointConfig, Park as ParkMode, Ring, TupleReceiver, TupleView, Validation,
};
use tokio::io::unix::AsyncFd;

use super::Binding;
use super::wait::{self, DATA_READY, RingFd};
use crate::error::{Error, Result};
use crate::supervisor::slot::Slot;
use crate::supervisor::state::Shared;

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
    binding: Binding,
    current: Option<Current>,
    /// A tuple copied out of a retired ring, served before switching to the new one.
    held: Option<AlignedVec<16>>,
    /// `held` was handed out; drop it at the next receive.
    served: bool,
}

#[derive(Debug)]
struct Current {
    generation: u64,
    ring: Ring,
    rx: TupleReceiver,
    fd: Option<AsyncFd<RingFd>>,
}

enum Ready {
    /// Read the current ring.
    Direct,
    /// Serve `held`.
    Held,
}

impl SourceReader {
    pub(crate) fn new(shared: Arc<Shared>, slot: Arc<Slot>) -> SourceReader {
        let mut handle = SourceReader {
            binding: Binding::new(shared, slot),
            current: None,
            held: None,
            served: false,
        };
        // Take the rings now, so that tuples committed before a restart are not skipped.
        if let Ok(Some((generation, rings))) =
            handle.binding.attach(Some(std::time::Instant::now()))
        {
            handle.current = handle.open(generation, &rings[0]).ok();
        }
        handle
    }

    /// The instance id.
    pub fn instance_id(&self) -> u64 {
        self.binding.ids().instance
    }

    /// The source symbol.
    pub fn symbol(&self) -> &str {
        &self.binding.ids().symbol
    }

    /// Receives the next tuple, waiting as long as it takes (across plugin restarts).
    ///
    /// # Errors
    /// [`Error::EndOfStream`] once the source closed its ring and every tuple was read;
    /// [`Error::InstanceGone`] if the instance was stopped or cannot be restarted;
    /// [`Error::Data`] for a corrupt ring or an invalid tuple.
    pub fn recv(&mut self) -> Result<TupleView<'_>> {
        if self.ready_now() {
            return self.read_ready();
        }
        match self.wait_until(None)? {
            Some(ready) => self.take(ready),
            None => Err(self.binding.ids().data_error(spurious())),
        }
    }

    /// Receives the next tuple if one is there now; `Ok(None)` if not.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<TupleView<'_>>> {
        if self.ready_now() {
            return self.read_ready().map(Some);
        }
        self.recv_until(Some(Instant::now()))
    }

    /// Receives the next tuple, waiting at most `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<TupleView<'_>>> {
        if self.ready_now() {
            return self.read_ready().map(Some);
        }
        self.recv_until(Some(Instant::now() + timeout))
    }

    /// Receives the next tuple, awaiting the ring's eventfd in the tokio reactor instead of
    /// blocking a thread. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_async(&mut self) -> Result<TupleView<'_>> {
        let ready = loop {
            if self.served {
                self.held = None;
                self.served = false;
            }
            if self.current.is_none() {
                let (generation, rings) = self.binding.attach_async().await?;
                self.current = Some(self.open(generation, &rings[0])?);
            }
            let Some(cur) = self.current.as_mut() else {
                continue;
            };
            let generation = cur.generation;
            if cur.fd.is_none() {
                let fd = wait::async_fd(&cur.ring, DATA_READY)
                    .map_err(|e| io_error(&self.binding, e))?;
                cur.fd = Some(fd);
            }
            let Some(fd) = cur.fd.as_ref() else {
                continue;
            };
            wait::ready(cur.rx.consumer(), fd)
                .await
                .map_err(|e| io_error(&self.binding, e))?;
            if self.binding.moved_on(generation) {
                // Ready on a retired ring: a leftover tuple, or its end.
                if self.take_retired()? {
                    break Ready::Held;
                }
                continue;
            }
            break Ready::Direct;
        };
        self.take(ready)
    }

    /// Stops the instance, waiting up to the stop time-out for the plugin to confirm.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if the plugin did not confirm in time.
    pub fn stop(mut self) -> Result<()> {
        self.binding.stop()
    }

    /// True if the current ring, still the instance's live one, has a tuple (or its end, or
    /// an error) to read now: the common case, which needs no clock and no waiting.
    fn ready_now(&mut self) -> bool {
        if self.served {
            return false;
        }
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        let generation = cur.generation;
        cur.rx.consumer().is_ready().unwrap_or(true) && !self.binding.moved_on(generation)
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<TupleView<'_>>> {
        match self.wait_until(deadline)? {
            Some(ready) => self.take(ready).map(Some),
            None => Ok(None),
        }
    }

    /// Waits until a tuple (or the end) can be taken without waiting; `None` on time-out.
    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<Option<Ready>> {
        loop {
            if self.served {
                self.held = None;
                self.served = false;
            }
            if self.current.is_none() {
                let Some((generation, rings)) = self.binding.attach(deadline)? else {
                    return Ok(None);
                };
                self.current = Some(self.open(generation, &rings[0])?);
            }
            let spin = if deadline.is_some_and(|d| d <= Instant::now()) {
                Duration::ZERO
            } else {
                self.binding.spin()
            };
            let Some(cur) = self.current.as_mut() else {
                continue;
            };
            let generation = cur.generation;
            let fd = cur.ring.fds()[DATA_READY];
            if !wait::block(&mut [(cur.rx.consumer(), fd)], spin, deadline) {
                return Ok(None);
            }
            if self.binding.moved_on(generation) {
                if self.take_retired()? {
                    return Ok(Some(Ready::Held));
                }
                continue;
            }
            return Ok(Some(Ready::Direct));
        }
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
        let Some(cur) = self.current.as_mut() else {
            return Err(self.binding.ids().data_error(spurious()));
        };
        match cur.rx.try_recv() {
            Ok(Some(view)) => Ok(view),
            Ok(None) => Err(self.binding.ids().data_error(spurious())),
            Err(e) if e.is_closed() => Err(self.binding.ids().end_of_stream()),
            Err(e) => Err(self.binding.ids().data_error(e)),
        }
    }

    /// The current ring was retired and is ready: copies its next tuple into `held` (true),
    /// or, at its end, drops it so the next round switches to the new rings (false).
    fn take_retired(&mut self) -> Result<bool> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(false);
        };
        let copied = match cur.rx.try_recv() {
            Ok(Some(view)) => Some(copy(&view)),
            Ok(None) => return Ok(false),
            Err(e) => {
                if !e.is_closed() {
                    tracing::warn!(
                        plugin = %self.binding.ids().plugin,
                        instance = self.binding.ids().instance,
                        "dropping the rest of a retired source ring: {e}"
                    );
                }
                None
            }
        };
        match copied {
            Some(bytes) => {
                self.held = Some(bytes.map_err(|e| self.binding.ids().data_error(e))?);
                Ok(true)
            }
            None => {
                self.current = None;
                Ok(false)
            }
        }
    }

    fn serve_held(&self) -> Result<TupleView<'_>> {
        let bytes = self.held.as_deref().unwrap_or_default();
        TupleView::from_bytes(bytes).map_err(|e| self.binding.ids().data_error(e))
    }

    fn open(&self, generation: u64, ring: &Ring) -> Result<Current> {
        let config = EndpointConfig::default()
            .with_spin(self.binding.spin())
            .with_park(ParkMode::EventFd);
        let consumer = ring
            .consumer(config)
            .map_err(|e| self.binding.ids().data_error(e))?;
        Ok(Current {
            generation,
            ring: ring.clone(),
            // The plugin may rewrite its records at any moment: copy each one into private memory
            // before validating and reading it.
            rx: TupleReceiver::with_validation(consumer, Validation::COPY_THEN_VALIDATE),
            fd: None,
        })
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

/// A ring that reported ready but held nothing: cannot happen with a correct peer.
pub(crate) fn spurious() -> shmplug_transport::Error {
    shmplug_transport::Error::Corrupt {
        what: "readiness",
        detail: "the ring reported a record ready but had none".into(),
    }
}

pub(crate) fn io_error(binding: &Binding, e: std::io::Error) -> Error {
    binding.ids().data_error(shmplug_transport::Error::Io {
        context: "waiting on a ring's eventfd",
        source: e,
    })
}
