//! [`SinkWriter`]: tuples to a sink instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shmplug_transport::tuple::Encode;
use shmplug_transport::{EndpointConfig, Park as ParkMode, Ring, TupleSender};
use tokio::io::unix::AsyncFd;

use super::Binding;
use super::source::io_error;
use super::wait::{self, RingFd, Room, SPACE_READY};
use crate::error::Result;
use crate::supervisor::slot::Slot;
use crate::supervisor::state::Shared;

/// Writes tuples to a sink instance, serialized straight into shared memory.
///
/// A full ring is back-pressure: [`send`](Self::send) waits, [`try_send`](Self::try_send)
/// returns `false`, [`send_timeout`](Self::send_timeout) gives up after its time-out. After a
/// plugin restart the writer switches to the new ring by itself; tuples the old process had not
/// consumed yet are lost with it.
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
    binding: Binding,
    current: Option<Current>,
    /// The write in progress publishes later ([`SinkWriter::send_deferred`]).
    deferred: bool,
}

#[derive(Debug)]
struct Current {
    generation: u64,
    ring: Ring,
    tx: TupleSender,
    fd: Option<AsyncFd<RingFd>>,
}

/// What one attempt to write found.
enum Step {
    Sent,
    /// The ring is full: wait for this much room.
    Full(usize),
    /// The rings changed: attach again.
    Switch,
}

impl SinkWriter {
    pub(crate) fn new(shared: Arc<Shared>, slot: Arc<Slot>) -> SinkWriter {
        let mut handle = SinkWriter {
            binding: Binding::new(shared, slot),
            current: None,
            deferred: false,
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

    /// The sink symbol.
    pub fn symbol(&self) -> &str {
        &self.binding.ids().symbol
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
        if let Some(cur) = self.current.as_mut() {
            cur.tx.flush();
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
            Err(self.binding.ids().timed_out("send", timeout))
        }
    }

    /// Sends, awaiting room in the tokio reactor instead of blocking a thread. Must run inside a
    /// tokio runtime.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_async<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<()> {
        loop {
            if self.current.is_none() {
                let (generation, rings) = self.binding.attach_async().await?;
                self.current = Some(self.open(generation, &rings[0])?);
            }
            let len = match self.step(tuple)? {
                Step::Sent => return Ok(()),
                Step::Switch => continue,
                Step::Full(len) => len,
            };
            let Some(cur) = self.current.as_mut() else {
                continue;
            };
            if cur.fd.is_none() {
                cur.fd = Some(
                    wait::async_fd(&cur.ring, SPACE_READY)
                        .map_err(|e| io_error(&self.binding, e))?,
                );
            }
            let Some(fd) = cur.fd.as_ref() else {
                continue;
            };
            wait::ready(&mut Room(cur.tx.producer(), len), fd)
                .await
                .map_err(|e| io_error(&self.binding, e))?;
        }
    }

    /// Stops the instance, waiting up to the stop time-out for the plugin to confirm.
    ///
    /// # Errors
    /// [`Error::TimedOut`](crate::Error::TimedOut) if the plugin did not confirm in time.
    pub fn stop(mut self) -> Result<()> {
        self.current = None;
        self.binding.stop()
    }

    fn send_until<T: Encode + ?Sized>(
        &mut self,
        tuple: &T,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        loop {
            if self.current.is_none() {
                let Some((generation, rings)) = self.binding.attach(deadline)? else {
                    return Ok(false);
                };
                self.current = Some(self.open(generation, &rings[0])?);
            }
            let len = match self.step(tuple)? {
                Step::Sent => return Ok(true),
                Step::Switch => continue,
                Step::Full(len) => len,
            };
            let spin = if deadline.is_some_and(|d| d <= Instant::now()) {
                Duration::ZERO
            } else {
                self.binding.spin()
            };
            let Some(cur) = self.current.as_mut() else {
                continue;
            };
            let fd = cur.ring.fds()[SPACE_READY];
            if !wait::block(
                &mut [(&mut Room(cur.tx.producer(), len), fd)],
                spin,
                deadline,
            ) {
                return Ok(false);
            }
        }
    }

    /// Tries once to write `tuple` to the current ring.
    fn step<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<Step> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(Step::Switch);
        };
        let generation = cur.generation;
        if self.binding.moved_on(generation) {
            self.current = None;
            return Ok(Step::Switch);
        }
        let sent = if self.deferred {
            cur.tx.try_send_deferred(tuple)
        } else {
            cur.tx.try_send(tuple)
        };
        match sent {
            Ok(true) => Ok(Step::Sent),
            Ok(false) => {
                let bound = tuple
                    .size_bound()
                    .map_err(|e| self.binding.ids().data_error(e))?;
                Ok(Step::Full(bound.min(cur.tx.max_tuple_len())))
            }
            Err(e) if e.is_closed() => {
                if self.binding.moved_on(generation) {
                    self.current = None;
                    Ok(Step::Switch)
                } else {
                    Err(self.binding.ids().end_of_stream())
                }
            }
            Err(e) => Err(self.binding.ids().data_error(e)),
        }
    }

    fn open(&self, generation: u64, ring: &Ring) -> Result<Current> {
        let config = EndpointConfig::default()
            .with_spin(self.binding.spin())
            .with_park(ParkMode::EventFd);
        let producer = ring
            .producer(config)
            .map_err(|e| self.binding.ids().data_error(e))?;
        Ok(Current {
            generation,
            ring: ring.clone(),
            tx: TupleSender::new(producer),
            fd: None,
        })
    }
}
