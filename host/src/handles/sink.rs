//! [`SinkWriter`]: tuples to a sink instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shmplug_transport::tuple::Encode;
use shmplug_transport::wait::{self, Room};
use shmplug_transport::{EndpointConfig, Ring, TupleSender};

use super::core::{Core, Endpoints, io_error};
use super::reactor::{self, SPACE_READY};
use crate::error::Result;
use crate::supervisor::slot::Slot;
use crate::supervisor::state::Supervision;

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
    core: Core<TupleSender>,
    /// The write in progress publishes later ([`SinkWriter::send_deferred`]).
    deferred: bool,
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
        loop {
            self.core.attach_async().await?;
            let len = match self.attempt(tuple)? {
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

    /// Stops the instance, waiting up to the stop time-out for the plugin to confirm.
    ///
    /// # Errors
    /// [`Error::TimedOut`](crate::Error::TimedOut) if the plugin did not confirm in time.
    pub fn stop(mut self) -> Result<()> {
        self.core.current = None;
        self.core.binding.stop()
    }

    fn send_until<T: Encode + ?Sized>(
        &mut self,
        tuple: &T,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        loop {
            if !self.core.attach(deadline)? {
                return Ok(false);
            }
            let len = match self.attempt(tuple)? {
                Attempt::Sent => return Ok(true),
                Attempt::Switch => continue,
                Attempt::Full(len) => len,
            };
            let spin = if deadline.is_some_and(|d| d <= Instant::now()) {
                Duration::ZERO
            } else {
                self.core.binding.spin()
            };
            let Some(cur) = self.core.current.as_mut() else {
                continue;
            };
            let fd = cur.rings[0].fds()[SPACE_READY];
            let room = &mut Room(cur.ends.producer(), len);
            if !wait::block(&mut [(room, fd)], spin, deadline) {
                return Ok(false);
            }
        }
    }

    /// Tries once to write `tuple` to the current ring.
    fn attempt<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<Attempt> {
        let Some(cur) = self.core.current.as_mut() else {
            return Ok(Attempt::Switch);
        };
        let generation = cur.generation;
        if self.core.binding.moved_on(generation) {
            self.core.current = None;
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
                    self.core.current = None;
                    Ok(Attempt::Switch)
                } else {
                    Err(self.core.binding.ids().end_of_stream())
                }
            }
            Err(e) => Err(self.core.binding.ids().data_error(e)),
        }
    }
}
