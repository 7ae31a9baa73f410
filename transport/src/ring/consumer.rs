//! The consuming end of a ring.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{KIND_PADDING, MAX_POSITION, RECORD_ALIGN, RecordHeader, record_span};
use crate::sync::{Ordering, fence};

use super::shared::RingMemory;
use crate::wait::{self, EndpointConfig, SpinBudget, WaitStep, Waiter};

/// The consuming end of a ring: reads records in place. Dropping it closes the ring for the
/// producer.
#[derive(Debug)]
pub struct Consumer {
    shared: Arc<RingMemory>,
    /// Position after the last released record. In `published ..= cached_write`.
    read: u64,
    /// Last read position stored to shared memory (at most [`Consumer::done`]).
    published: u64,
    /// Last write position loaded from shared memory. In `read ..= read + capacity`.
    cached_write: u64,
    config: EndpointConfig,
    /// The next wait's spin.
    spin: SpinBudget,
    batch: u64,
    poison: Option<(&'static str, String)>,
    closed: bool,
    /// Store the taken and acknowledged positions ([`Consumer::acknowledge`]).
    acks: bool,
    /// Acknowledge only on [`Consumer::acknowledge_read`] ([`Consumer::acknowledge_held`]).
    hold: bool,
    /// The acknowledged position last stored.
    acked: u64,
}

impl Consumer {
    pub(crate) fn new(shared: Arc<RingMemory>, config: EndpointConfig) -> Result<Consumer> {
        let control = shared.control();
        // ORDERING: Acquire pairs with the producer's Release store of its write position (and
        // a previous consumer's of the read position).
        let read = control.read_pos.0.load(Ordering::Acquire);
        let write = control.write_pos.0.load(Ordering::Acquire);
        let batch = config.batch_for(shared.capacity);
        let mut consumer = Consumer {
            read,
            published: read,
            cached_write: read,
            spin: SpinBudget::new(&config),
            config,
            batch,
            poison: None,
            closed: false,
            acks: false,
            hold: false,
            acked: read,
            shared,
        };
        if write > MAX_POSITION
            || !read.is_multiple_of(RECORD_ALIGN)
            || write < read
            || write - read > consumer.shared.capacity
        {
            return Err(consumer.corrupt("positions", format!("read {read}, write {write}")));
        }
        Ok(consumer)
    }

    /// Acknowledges each record once its reader is done with it, for a producer that replays
    /// what this consumer never finished if it dies ([`Producer::unacknowledged`]). The reader
    /// is done with a record when it has released it and comes back for the next one (so a
    /// record copied out and released at once, as [`TupleReceiver`](crate::TupleReceiver)
    /// does when it validates a copy, counts as done only then), or drops the consumer. One
    /// store when a record is handed out and one when it is acknowledged, on a span the
    /// producer reads only after the consumer died. Returns the consumer, for chaining.
    ///
    /// [`Producer::unacknowledged`]: crate::Producer::unacknowledged
    #[must_use]
    pub fn acknowledge(mut self) -> Consumer {
        self.acks = true;
        let acks = &self.shared.control().acks.0;
        // ORDERING: Release pairs with the producer's Acquire load in `unacknowledged`; nothing
        // below the read position is ours to finish.
        acks.taken.store(self.read, Ordering::Release);
        acks.acked.store(self.read, Ordering::Release);
        acks.enabled.store(1, Ordering::Release);
        self
    }

    /// As [`acknowledge`](Self::acknowledge), but records are acknowledged only when the
    /// reader says so with [`acknowledge_read`](Self::acknowledge_read): for a reader that
    /// keeps what it read in a buffer of its own and is done with it only once it has written
    /// the buffer out. Until then the records keep their space in the ring, so acknowledge
    /// before the ring fills ([`unacknowledged_len`](Self::unacknowledged_len)), or the
    /// producer waits.
    #[must_use]
    pub fn acknowledge_held(self) -> Consumer {
        let mut consumer = self.acknowledge();
        consumer.hold = true;
        consumer
    }

    /// Acknowledges every record released so far, for a consumer made with
    /// [`acknowledge_held`](Self::acknowledge_held) (any other acknowledges by itself).
    pub fn acknowledge_read(&mut self) {
        if self.acks && self.acked != self.read {
            self.acked = self.read;
            // ORDERING: Release pairs with the producer's Acquire load in `unacknowledged`:
            // whatever the reader did with the records happens before the producer sees them
            // done.
            self.shared
                .control()
                .acks
                .0
                .acked
                .store(self.read, Ordering::Release);
            self.publish_if_due();
        }
    }

    /// Bytes of the ring that released records still hold because they are not acknowledged
    /// yet ([`acknowledge_held`](Self::acknowledge_held)).
    pub fn unacknowledged_len(&self) -> usize {
        (self.read - self.done()) as usize
    }

    /// The ring's data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }

    /// Reads the next record without waiting. `Ok(None)` means nothing is there yet.
    ///
    /// # Errors
    /// [`Error::Closed`] once the producer has closed and every committed record was read;
    /// [`Error::Corrupt`] if the producer wrote an invalid position or record header.
    pub fn try_read(&mut self) -> Result<Option<Record<'_>>> {
        Ok(self.next()?.map(|(start, h)| self.record(start, h)))
    }

    /// True if [`try_read`](Self::try_read) would return a record now. Consumes nothing and
    /// sets no waiting flag, so it can gate a read without holding a borrow.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read): [`Error::Closed`] at the end of the stream.
    pub fn is_ready(&mut self) -> Result<bool> {
        Ok(self.next()?.is_some())
    }

    /// Reads the next record, waiting (spinning, then parking) until one is committed.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read).
    pub fn read(&mut self) -> Result<Record<'_>> {
        self.read_inner(None)
    }

    /// As [`read`](Self::read), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read), and [`Error::TimedOut`].
    pub fn read_timeout(&mut self, timeout: Duration) -> Result<Record<'_>> {
        self.read_inner(Some(timeout))
    }

    /// The kind of the next record ([`Record::kind`]) without reading it: `Ok(None)` if none
    /// is there yet. Lets a reader decide how to take a record before it borrows the consumer.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read).
    pub fn try_peek_kind(&mut self) -> Result<Option<u32>> {
        Ok(self.next()?.map(|(_, h)| h.kind))
    }

    /// As [`try_peek_kind`](Self::try_peek_kind), waiting up to `timeout` (forever if `None`)
    /// for a record.
    ///
    /// # Errors
    /// As [`read_timeout`](Self::read_timeout).
    pub fn peek_kind(&mut self, timeout: Option<Duration>) -> Result<u32> {
        Ok(self.wait_next(timeout)?.1.kind)
    }

    fn read_inner(&mut self, timeout: Option<Duration>) -> Result<Record<'_>> {
        let (start, h) = self.wait_next(timeout)?;
        Ok(self.record(start, h))
    }

    /// Waits up to `timeout` for the next record and returns where it starts and its header.
    fn wait_next(&mut self, timeout: Option<Duration>) -> Result<(u64, RecordHeader)> {
        // The common case needs no clock: a record is there.
        if let Some(next) = self.next()? {
            return Ok(next);
        }
        let mut waiter = Waiter::new(self.spin.get(), timeout);
        loop {
            if let Some(next) = self.next()? {
                self.spin.waited(waiter.elapsed());
                return Ok(next);
            }
            match waiter.step() {
                WaitStep::Spin => continue,
                WaitStep::TimedOut(t) => {
                    self.spin.waited(waiter.elapsed());
                    return Err(Error::TimedOut(t));
                }
                WaitStep::Park => {}
            }
            // A clone so the flag can be held across `&mut self` calls; parking is the slow path.
            let shared = self.shared.clone();
            let flag = &shared.control().signals.0.consumer_waiting;
            let value = self.config.flag();
            let deadline = waiter.deadline();
            if let Some(next) =
                wait::park(&shared, flag, value, shared.data_ready(), deadline, || {
                    self.next()
                })?
            {
                self.spin.waited(waiter.elapsed());
                return Ok(next);
            }
        }
    }

    /// Stores the acknowledged position if it moved: the reader has finished every record it
    /// released, since it asks for the next one (or drops the consumer).
    #[inline]
    fn acknowledge_released(&mut self) {
        if !self.hold {
            self.acknowledge_read();
        }
    }

    /// Position up to which the producer may reuse the space: every released record, or, for
    /// a consumer that acknowledges, every acknowledged one (an unacknowledged record stays in
    /// the ring, for the producer to read back if this consumer dies).
    #[inline]
    fn done(&self) -> u64 {
        if self.acks { self.acked } else { self.read }
    }

    /// Finds the next data record, skipping padding, checking every header.
    fn next(&mut self) -> Result<Option<(u64, RecordHeader)>> {
        self.acknowledge_released();
        if let Some((what, detail)) = &self.poison {
            return Err(Error::Corrupt {
                what,
                detail: detail.clone(),
            });
        }
        if self.closed {
            return Err(Error::Closed);
        }
        loop {
            if self.read == self.cached_write {
                self.refresh_write()?;
                if self.read == self.cached_write {
                    // ORDERING: Acquire pairs with the producer's Release store of its closed
                    // flag, made after its final write position; reload that position.
                    let closed = self
                        .shared
                        .control()
                        .signals
                        .0
                        .producer_closed
                        .load(Ordering::Acquire);
                    if closed == 0 {
                        return Ok(None);
                    }
                    self.refresh_write()?;
                    if self.read == self.cached_write {
                        return Err(Error::Closed);
                    }
                }
            }
            let offset = self.shared.offset(self.read);
            let header = self.shared.header_at(offset);
            let span = record_span(u64::from(header.len));
            if header.kind == 0 {
                return Err(self.corrupt("record kind", format!("0 at position {}", self.read)));
            }
            if offset + span > self.shared.capacity {
                return Err(self.corrupt(
                    "record length",
                    format!(
                        "{} bytes at offset {offset} crosses the end of the {}-byte region",
                        header.len, self.shared.capacity
                    ),
                ));
            }
            if self.read + span > self.cached_write {
                return Err(self.corrupt(
                    "record length",
                    format!(
                        "{} bytes at position {} runs past the write position {}",
                        header.len, self.read, self.cached_write
                    ),
                ));
            }
            if header.kind == KIND_PADDING {
                self.read += span;
                continue;
            }
            if u64::from(header.len) > self.shared.max_payload {
                return Err(self.corrupt(
                    "record length",
                    format!(
                        "{} bytes exceeds the largest record {}",
                        header.len, self.shared.max_payload
                    ),
                ));
            }
            return Ok(Some((self.read, header)));
        }
    }

    /// Publishes our position if the producer needs it, then loads and checks the producer's.
    fn refresh_write(&mut self) -> Result<()> {
        if self.done() != self.published {
            self.publish();
        }
        // ORDERING: Acquire pairs with the producer's Release store in `flush`: the records
        // below the position are complete before we read them.
        let write = self.shared.control().write_pos.0.load(Ordering::Acquire);
        if write < self.cached_write
            || write > MAX_POSITION
            || !write.is_multiple_of(RECORD_ALIGN)
            || write - self.read > self.shared.capacity
        {
            return Err(self.corrupt(
                "write position",
                format!(
                    "{write}, previously {}, read position {}, capacity {}",
                    self.cached_write, self.read, self.shared.capacity
                ),
            ));
        }
        self.cached_write = write;
        Ok(())
    }

    /// Stores our read position and wakes the producer if it waits for space.
    fn publish(&mut self) {
        let control = self.shared.control();
        // ORDERING: Release pairs with the producer's Acquire load in `refresh_read`: our reads
        // of the released records happen before it overwrites them.
        let done = self.done();
        control.read_pos.0.store(done, Ordering::Release);
        self.published = done;
        // ORDERING: pairs with the producer's fence after it sets `producer_waiting`.
        fence(Ordering::SeqCst);
        let signals = &control.signals.0;
        if signals.producer_waiting.load(Ordering::Relaxed) != 0 {
            wait::wake(
                &self.shared,
                &signals.producer_waiting,
                self.shared.space_ready(),
            );
        }
    }

    fn record(&mut self, start: u64, header: RecordHeader) -> Record<'_> {
        self.shared.granules.read(
            self.shared.offset(start),
            record_span(u64::from(header.len)),
        );
        if self.acks {
            let taken = start + record_span(u64::from(header.len));
            // ORDERING: Release pairs with the producer's Acquire load in `unacknowledged`
            // (it only counts this record as possibly half done).
            self.shared
                .control()
                .acks
                .0
                .taken
                .store(taken, Ordering::Release);
        }
        Record {
            consumer: self,
            start,
            len: u64::from(header.len),
            kind: header.kind,
        }
    }

    /// Publishes the position the producer may reuse up to once a batch of it is done (and
    /// wakes the producer if it waits for space). A producer that waits is not woken for less:
    /// woken for one record's room it would write that record, find the ring full again and
    /// park again, a wake-up (tens of microseconds) per record. It is woken a batch at a time,
    /// or when this side catches up with it (`refresh_write`) or closes.
    #[inline]
    fn publish_if_due(&mut self) {
        if self.done() - self.published >= self.batch {
            self.publish();
        }
    }

    fn release(&mut self, start: u64, len: u64) {
        let span = record_span(len);
        self.shared.granules.read(self.shared.offset(start), span);
        self.read = start + span;
        self.publish_if_due();
    }

    /// An [`Interrupter`](super::Interrupter) that ends this consumer's waits for records.
    pub fn interrupter(&self) -> super::Interrupter {
        super::Interrupter::new(self.shared.clone(), super::shared::Side::Consumer)
    }

    /// Hands every released record's space back to the producer now, instead of at the next
    /// batch boundary or when the ring runs empty.
    pub fn flush(&mut self) {
        if self.done() != self.published {
            self.publish();
        }
    }

    /// Closes the ring for reading: the producer's next claim fails with [`Error::Closed`];
    /// records not yet read are dropped. Idempotent; also done on drop.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let signals = &self.shared.control().signals.0;
        // ORDERING: Release pairs with the producer's Acquire load of `consumer_closed`.
        signals.consumer_closed.store(1, Ordering::Release);
        // ORDERING: a producer about to sleep for space either sees the flag or is woken.
        fence(Ordering::SeqCst);
        wait::wake(
            &self.shared,
            &signals.producer_waiting,
            self.shared.space_ready(),
        );
    }

    /// The spin budget of this endpoint's waits (for [`wait::block`]).
    pub(crate) fn spin_budget(&mut self) -> &mut SpinBudget {
        &mut self.spin
    }

    /// Prepares to await data with an event loop instead of blocking a thread.
    ///
    /// Sets the waiting flag so the producer will signal the data eventfd
    /// ([`Ring::fds`](crate::Ring::fds)`[1]`), then checks once more. Returns `true` if a record
    /// (or end of stream, or an error) is ready: do not sleep, call
    /// [`try_read`](Self::try_read). Returns `false` when it is safe to await readability of the
    /// eventfd; afterwards call [`finish_park`](Self::finish_park) and try again.
    pub fn prepare_park(&mut self) -> bool {
        wait::prepare_park(self, Consumer::waiting_flag, |c| {
            !matches!(c.next(), Ok(None))
        })
    }

    /// Ends an event-loop wait begun with [`prepare_park`](Self::prepare_park): clears the
    /// waiting flag and empties the eventfd.
    pub fn finish_park(&mut self) {
        wait::finish_park(self.waiting_flag(), self.shared.data_ready());
    }

    /// This side's waiting flag in the segment.
    fn waiting_flag(&self) -> &crate::sync::AtomicU32 {
        &self.shared.control().signals.0.consumer_waiting
    }

    fn corrupt(&mut self, what: &'static str, detail: String) -> Error {
        self.poison = Some((what, detail.clone()));
        // Tell the producer we are gone so it does not wait for us forever.
        self.close();
        Error::Corrupt { what, detail }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.acknowledge_released();
        if !self.closed {
            self.flush();
        }
        self.close();
        self.shared.release_consumer();
    }
}

/// One record, read in place from shared memory. Dropping it releases its space to the producer.
#[derive(Debug)]
pub struct Record<'a> {
    consumer: &'a mut Consumer,
    start: u64,
    len: u64,
    kind: u32,
}

impl Record<'_> {
    /// The record's kind, as set by [`crate::Claim::set_kind`] (1 by default).
    pub fn kind(&self) -> u32 {
        self.kind
    }
}

impl Record<'_> {
    /// Copies the payload into `dst`, which must be exactly
    /// [`payload_len`](Self::payload_len) bytes long, without making a reference to the shared
    /// bytes: use this, not the in-place view (`Deref`), for a record whose producer may still
    /// write it (an untrusted peer). What
    /// lands in `dst` is private, but may be a mix of what the producer wrote at different
    /// moments: validate it before trusting it.
    ///
    /// # Panics
    /// If `dst.len()` differs from the payload's length.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len() as u64,
            self.len,
            "copy_to needs a buffer of the record's length"
        );
        let offset = self.consumer.shared.offset(self.start) + RECORD_ALIGN;
        self.consumer.shared.copy_out(offset, dst);
    }

    /// The payload's length in bytes, from the header checked when the record was read (never
    /// re-read from shared memory).
    pub fn payload_len(&self) -> usize {
        self.len as usize
    }

    /// Rejects this record: the consumer is poisoned (every later read fails with
    /// [`Error::Corrupt`] carrying `what` and `detail`) and the ring is closed for the
    /// producer, which sees [`Error::Closed`] at its next claim.
    pub fn reject(self, what: &'static str, detail: String) -> Error {
        self.consumer.corrupt(what, detail)
    }
}

impl Deref for Record<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let offset = self.consumer.shared.offset(self.start) + RECORD_ALIGN;
        // SAFETY: `next` checked that the whole record lies inside the data region and below
        // the published write position; the producer does not write it again until we publish
        // a read position past it, which happens only after this record is dropped.
        unsafe { self.consumer.shared.slice(offset, self.len) }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.consumer.release(self.start, self.len);
    }
}
