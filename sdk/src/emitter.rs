//! [`Emitter`]: how a source writes tuples straight into its ring.

use shmplug_transport::tuple::{Encode, Encoder, Offset};
use shmplug_transport::{Producer, Tuple, TupleRef, TupleSender};

use crate::context::Cancel;
use crate::error::PluginError;

/// Writes a source's tuples into the ring the host reads, serialized in place (no intermediate
/// buffer, no copy the author has to make).
///
/// When the host reads more slowly than the source emits, the ring fills and `emit` waits
/// (back-pressure): it spins briefly, then sleeps until the host frees space or the instance is
/// stopped (which ends the wait at once; a stalled source costs nothing while it waits). In a
/// [`PolledSource`](crate::PolledSource)'s `poll` it does not wait: it returns
/// [`PluginError::RingFull`], and the executor calls `poll` again once there is room.
///
/// Every `emit*` method returns [`PluginError::Cancelled`] once the instance is stopped and
/// [`PluginError::Closed`] once the host closed the ring; return those from
/// [`Source::open`](crate::Source::open) (with `?`), which then ends normally.
///
/// # Publishing
/// [`emit`](Self::emit), [`emit_owned`](Self::emit_owned) and [`emit_json`](Self::emit_json)
/// make the tuple visible to the host at once. [`emit_deferred`](Self::emit_deferred) leaves it
/// for a batched publication (when an eighth of the ring has filled, when the ring is full,
/// at [`flush`](Self::flush), or when `open` returns), which saves a cache-line transfer per
/// tuple in a burst; call `flush` before the source waits for more data.
#[derive(Debug)]
pub struct Emitter {
    sender: TupleSender,
    cancel: Cancel,
    /// The host asked for each tuple's offset ([`Emitter::emit_at`]).
    offsets: bool,
    emitted: u64,
    /// For measuring tuples larger than a record's bound (see `write`).
    encoder: Encoder,
    scratch: Vec<u8>,
    /// A [`PolledSource`](crate::PolledSource)'s emitter: a full ring is
    /// [`PluginError::RingFull`] instead of a wait.
    polled: bool,
    /// The room the last emit that found the ring full needed, bytes.
    wanted: usize,
}

impl Emitter {
    pub(crate) fn new(mut sender: TupleSender, cancel: Cancel) -> Emitter {
        // A stop ends a wait for room at once (the wait needs no time-out to notice it).
        cancel.interrupts(sender.producer().interrupter());
        Emitter {
            sender,
            cancel,
            offsets: false,
            emitted: 0,
            encoder: Encoder::new(),
            scratch: Vec::new(),
            polled: false,
            wanted: 0,
        }
    }

    /// An emitter that never waits: a full ring is [`PluginError::RingFull`].
    pub(crate) fn polled(mut self) -> Emitter {
        self.polled = true;
        self
    }

    /// The room, bytes, the last emit that returned [`PluginError::RingFull`] needed.
    pub(crate) fn wanted(&self) -> usize {
        self.wanted
    }

    /// The ring's producer, for the executor's wait for room.
    pub(crate) fn producer(&mut self) -> &mut shmplug_transport::Producer {
        self.sender.producer()
    }

    /// Emits a tuple that borrows its data (strings, bytes, lists) from the source's own
    /// buffers, and publishes it.
    ///
    /// # Errors
    /// [`PluginError::Cancelled`], [`PluginError::Closed`] (see above);
    /// [`PluginError::Transport`] for a tuple larger than the ring's largest record
    /// ([`max_tuple_len`](Self::max_tuple_len)) or nested too deep (nothing is written).
    pub fn emit(&mut self, tuple: &TupleRef<'_>) -> Result<(), PluginError> {
        self.write(tuple, false)
    }

    /// Emits an owned tuple and publishes it.
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn emit_owned(&mut self, tuple: &Tuple) -> Result<(), PluginError> {
        self.write(tuple, false)
    }

    /// Emits an eKuiper message, a JSON object, as a tuple stamped with the current time, and
    /// publishes it.
    ///
    /// # Errors
    /// [`PluginError::Message`] if `message` is not an object; otherwise as
    /// [`emit`](Self::emit).
    pub fn emit_json(&mut self, message: &serde_json::Value) -> Result<(), PluginError> {
        let tuple = Tuple::from_json_message(message, crate::now_nanos())
            .map_err(|e| PluginError::new(format!("cannot emit this JSON message: {e}")))?;
        self.write(&tuple, false)
    }

    /// Emits a [`Tuple`] or [`TupleRef`] without publishing it yet (see
    /// [Publishing](#publishing)).
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn emit_deferred<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<(), PluginError> {
        self.write(tuple, true)
    }

    /// Emits a tuple of a [`Rewindable`](crate::Rewindable) source with its `offset` (where
    /// the source stands once this tuple is out), and publishes it. The offset travels with
    /// the tuple only if the host asked for offsets (it does for a source registered with
    /// [`PluginConfig::rewindable_source`](crate::PluginConfig::rewindable_source)); otherwise
    /// this is [`emit`](Self::emit), at no extra cost.
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn emit_at<T: Encode + ?Sized>(
        &mut self,
        offset: &Offset,
        tuple: &T,
    ) -> Result<(), PluginError> {
        self.write_offset(offset)?;
        self.write(tuple, false)
    }

    /// As [`emit_at`](Self::emit_at), without publishing yet (see
    /// [Publishing](#publishing)).
    ///
    /// # Errors
    /// As [`emit`](Self::emit).
    pub fn emit_deferred_at<T: Encode + ?Sized>(
        &mut self,
        offset: &Offset,
        tuple: &T,
    ) -> Result<(), PluginError> {
        self.write_offset(offset)?;
        self.write(tuple, true)
    }

    /// True if the host asked for each tuple's offset ([`emit_at`](Self::emit_at)).
    pub fn sends_offsets(&self) -> bool {
        self.offsets
    }

    /// Publishes every deferred tuple and wakes the host if it waits for data.
    pub fn flush(&mut self) {
        self.sender.flush();
    }

    /// Tuples emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Largest archived tuple the ring can carry, in bytes.
    pub fn max_tuple_len(&self) -> usize {
        self.sender.max_tuple_len()
    }

    /// True once the instance was stopped.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Asks for each tuple's offset before it (the host's [`Start::send_offsets`]).
    ///
    /// [`Start::send_offsets`]: shmplug_transport::control::Start::send_offsets
    pub(crate) fn with_offsets(mut self, offsets: bool) -> Emitter {
        self.offsets = offsets;
        self
    }

    /// Writes `offset` for the next tuple, if the host wants offsets. The record is left for
    /// that tuple's publication.
    fn write_offset(&mut self, offset: &Offset) -> Result<(), PluginError> {
        if !self.offsets {
            return Ok(());
        }
        if self.cancel.is_cancelled() {
            return Err(PluginError::Cancelled);
        }
        if !self.sender.try_send_offset(offset)? {
            if self.polled {
                self.wanted = offset.as_bytes().len();
                return Err(PluginError::RingFull);
            }
            wait_for_space(
                self.sender.producer(),
                offset.as_bytes().len(),
                &self.cancel,
            )?;
            self.sender.send_offset(offset)?;
        }
        Ok(())
    }

    fn write<T: Encode + ?Sized>(&mut self, tuple: &T, deferred: bool) -> Result<(), PluginError> {
        if self.cancel.is_cancelled() {
            return Err(PluginError::Cancelled);
        }
        // The common case: there is room, and the tuple is encoded once, in place.
        let sent = if deferred {
            self.sender.try_send_deferred(tuple)?
        } else {
            self.sender.try_send(tuple)?
        };
        if sent {
            self.emitted += 1;
            return Ok(());
        }
        // Make sure the ring has room before writing, so that the (blocking) write below never
        // waits: only this wait can notice a stop. The bound is an upper bound of the record's
        // size; when it exceeds the largest record, the exact size is measured first (a rare,
        // slower path), which also fails a tuple that really is too large without waiting.
        let mut room = tuple.size_bound()?;
        let max = self.sender.max_tuple_len();
        if room > max {
            self.scratch.resize(max, 0);
            room = self.encoder.encode_into(tuple, &mut self.scratch)?;
        }
        if self.polled {
            // Publish what is deferred: the host makes room by reading it.
            self.sender.flush();
            self.wanted = room;
            return Err(PluginError::RingFull);
        }
        wait_for_space(self.sender.producer(), room, &self.cancel)?;
        if deferred {
            self.sender.send_deferred(tuple)?;
        } else {
            self.sender.send(tuple)?;
        }
        self.emitted += 1;
        Ok(())
    }
}

/// Waits until `producer` can take a `len`-byte record, or until `cancel` (which must
/// [`interrupt`](Cancel::interrupts) the producer) is cancelled. The claim that proves the room
/// is abandoned (which leaves the ring as it was); the caller's next write of at most `len`
/// bytes then finds the room without waiting.
pub(crate) fn wait_for_space(
    producer: &mut Producer,
    len: usize,
    cancel: &Cancel,
) -> Result<(), PluginError> {
    if producer.try_claim(len)?.is_some() {
        return Ok(());
    }
    if cancel.is_cancelled() {
        return Err(PluginError::Cancelled);
    }
    producer.claim(len)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use shmplug_transport::{EndpointConfig, Ring, TupleReceiver, ValueRef};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn endpoint() -> EndpointConfig {
        EndpointConfig::default().with_spin(Duration::from_micros(5))
    }

    /// An emitter on a small ring, and the ring's receiver.
    fn small() -> (Emitter, TupleReceiver, Cancel) {
        let ring = Ring::create(4096).unwrap();
        let cancel = Cancel::new();
        let emitter = Emitter::new(
            TupleSender::new(ring.producer(endpoint()).unwrap()),
            cancel.clone(),
        );
        (
            emitter,
            TupleReceiver::new(ring.consumer(endpoint()).unwrap()),
            cancel,
        )
    }

    fn tuple(n: i64) -> Tuple {
        Tuple::new(n).with_field("n", n)
    }

    /// Emits until the ring has no room for another tuple like `tuple(0)`.
    fn fill(emitter: &mut Emitter) {
        let bound = tuple(0).size_bound().unwrap();
        let mut n = 0;
        while emitter
            .sender
            .producer()
            .try_claim(bound)
            .unwrap()
            .is_some()
        {
            emitter.emit_owned(&tuple(n)).unwrap();
            n += 1;
        }
        assert!(n > 10, "only {n} tuples fit");
    }

    #[test]
    fn emits_wait_for_a_slow_reader() {
        let (mut emitter, mut rx, _cancel) = small();
        std::thread::scope(|s| {
            let reader = s.spawn(move || {
                (0..5000)
                    .map(|_| {
                        let view = rx.recv_timeout(WAIT).unwrap();
                        view.get("n").and_then(|n| n.as_i64()).unwrap()
                    })
                    .collect::<Vec<_>>()
            });
            for n in 0..5000 {
                if n % 2 == 0 {
                    emitter.emit_deferred(&tuple(n)).unwrap();
                } else {
                    let fields = [("n", ValueRef::Int(n))];
                    emitter.emit(&TupleRef::new(n, &fields)).unwrap();
                }
            }
            emitter.flush();
            assert_eq!(emitter.emitted(), 5000);
            assert_eq!(reader.join().unwrap(), (0..5000).collect::<Vec<_>>());
        });
    }

    #[test]
    fn a_stop_ends_an_emit_waiting_on_a_full_ring() {
        let (mut emitter, _rx, cancel) = small();
        fill(&mut emitter);
        let (go, started) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                started.recv_timeout(WAIT).unwrap();
                cancel.cancel();
            });
            go.send(()).unwrap();
            assert!(matches!(
                emitter.emit_owned(&tuple(-1)),
                Err(PluginError::Cancelled)
            ));
        });
        assert!(emitter.is_cancelled());
    }

    #[test]
    fn the_host_closing_the_ring_ends_a_waiting_emit() {
        let (mut emitter, rx, _cancel) = small();
        fill(&mut emitter);
        std::thread::scope(|s| {
            s.spawn(move || drop(rx));
            assert!(matches!(
                emitter.emit_owned(&tuple(-1)),
                Err(PluginError::Closed)
            ));
        });
    }

    #[test]
    fn too_large_and_non_object_messages_fail_without_waiting() {
        let (mut emitter, _rx, _cancel) = small();
        fill(&mut emitter);
        let big = Tuple::new(0).with_field("blob", vec![0u8; 10_000]);
        let e = emitter.emit_owned(&big).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let e = emitter.emit_json(&serde_json::json!([1, 2])).unwrap_err();
        assert!(e.to_string().contains("not an object"), "{e}");
    }
}
