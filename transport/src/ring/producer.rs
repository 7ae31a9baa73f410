//! The producing end of a ring.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{
    KIND_PADDING, LARGE_PAYLOAD, MAX_POSITION, RECORD_ALIGN, RecordHeader, record_span,
};
use crate::sync::{Ordering, fence};

use super::shared::RingMemory;
use crate::wait::{self, EndpointConfig, SpinBudget, WaitStep, Waiter};

/// Where a claimed record goes: padding from `from` up to `start`, then the record.
#[derive(Clone, Copy, Debug)]
struct Placement {
    start: u64,
    len: u64,
}

/// What [`Producer::unacknowledged`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unfinished {
    /// Records read back.
    pub records: u64,
    /// How many of them the consumer had taken (it may have done their work, or part of it):
    /// the first one, or more for a consumer that holds its acknowledgements
    /// ([`Consumer::acknowledge_held`](crate::Consumer::acknowledge_held)).
    pub taken: u64,
    /// The consumer acknowledged records; if not, any of them may have been done.
    pub acknowledged: bool,
}

impl Unfinished {
    /// How many of the records read back the consumer may have finished already: those it
    /// had taken, or all of them if it did not acknowledge.
    pub fn possibly_done(&self) -> u64 {
        if !self.acknowledged {
            self.records
        } else {
            self.taken.min(self.records)
        }
    }
}

/// The producing end of a ring: claims space, lets the caller write a record in place, and
/// publishes it on commit. Dropping it closes the ring for writing (after publishing every
/// committed record).
#[derive(Debug)]
pub struct Producer {
    shared: Arc<RingMemory>,
    /// Position after the last committed record. In `published ..= cached_read + capacity`.
    write: u64,
    /// Last write position stored to shared memory.
    published: u64,
    /// Last read position loaded from shared memory (never above `write`).
    cached_read: u64,
    config: EndpointConfig,
    /// The next wait's spin.
    spin: SpinBudget,
    batch: u64,
    poison: Option<(&'static str, String)>,
    closed: bool,
}

impl Producer {
    pub(crate) fn new(shared: Arc<RingMemory>, config: EndpointConfig) -> Result<Producer> {
        let control = shared.control();
        // ORDERING: Acquire pairs with the previous owners' Release stores (a producer handed
        // over from another process, or the consumer's read position).
        let write = control.write_pos.0.load(Ordering::Acquire);
        let read = control.read_pos.0.load(Ordering::Acquire);
        let batch = config.batch_for(shared.capacity);
        let mut producer = Producer {
            write,
            published: write,
            cached_read: read,
            spin: SpinBudget::new(&config),
            config,
            batch,
            poison: None,
            closed: false,
            shared,
        };
        if write > MAX_POSITION
            || !write.is_multiple_of(RECORD_ALIGN)
            || read > write
            || write - read > producer.shared.capacity
        {
            return Err(producer.corrupt("positions", format!("read {read}, write {write}")));
        }
        Ok(producer)
    }

    /// The local write position (committed, perhaps not yet published).
    #[cfg(test)]
    pub(crate) fn write_pos_for_tests(&self) -> u64 {
        self.write
    }

    /// Largest payload one record may carry.
    pub fn max_record_len(&self) -> usize {
        self.shared.max_payload as usize
    }

    /// True if a [`try_claim`](Self::try_claim) of `len` bytes would succeed now. Claims
    /// nothing and sets no waiting flag, so it can gate a write without holding a borrow.
    ///
    /// # Errors
    /// As [`try_claim`](Self::try_claim).
    pub fn has_room(&mut self, len: usize) -> Result<bool> {
        Ok(self.place(len)?.is_some())
    }

    /// Claims space for a `len`-byte record without waiting. `Ok(None)` means the ring is full
    /// for now.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `len` exceeds [`max_record_len`](Self::max_record_len) (the ring
    /// could never hold it), [`Error::Closed`] if the consumer closed, [`Error::Corrupt`] if the
    /// consumer's read position is invalid.
    pub fn try_claim(&mut self, len: usize) -> Result<Option<Claim<'_>>> {
        Ok(self.place(len)?.map(|p| self.claim_at(p)))
    }

    /// Claims space for a `len`-byte record, waiting (spinning, then parking) while the ring is
    /// full.
    ///
    /// # Errors
    /// As [`try_claim`](Self::try_claim).
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>> {
        self.claim_inner(len, None)
    }

    /// As [`claim`](Self::claim), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`try_claim`](Self::try_claim), and [`Error::TimedOut`].
    pub fn claim_timeout(&mut self, len: usize, timeout: Duration) -> Result<Claim<'_>> {
        self.claim_inner(len, Some(timeout))
    }

    fn claim_inner(&mut self, len: usize, timeout: Option<Duration>) -> Result<Claim<'_>> {
        // The common case needs no clock: there is room.
        if let Some(p) = self.place(len)? {
            return Ok(self.claim_at(p));
        }
        let mut waiter = Waiter::new(self.spin.get(), timeout);
        loop {
            if let Some(p) = self.place(len)? {
                self.spin.waited(waiter.elapsed());
                return Ok(self.claim_at(p));
            }
            // The consumer may be waiting for records we have not published yet.
            self.flush();
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
            let flag = &shared.control().signals.0.producer_waiting;
            let value = self.config.flag();
            let deadline = waiter.deadline();
            if let Some(p) =
                wait::park(&shared, flag, value, shared.space_ready(), deadline, || {
                    self.place(len)
                })?
            {
                self.spin.waited(waiter.elapsed());
                return Ok(self.claim_at(p));
            }
        }
    }

    /// Finds room for a `len`-byte record, reloading the consumer's position if needed.
    fn place(&mut self, len: usize) -> Result<Option<Placement>> {
        if let Some((what, detail)) = &self.poison {
            return Err(Error::Corrupt {
                what,
                detail: detail.clone(),
            });
        }
        if self.closed {
            return Err(Error::Closed);
        }
        let len = len as u64;
        if len > self.shared.max_payload {
            return Err(Error::TooLarge {
                size: len as usize,
                max: self.shared.max_payload as usize,
            });
        }
        if self.consumer_closed() {
            return Err(Error::Closed);
        }
        let capacity = self.shared.capacity;
        let span = record_span(len);
        // Skip to the end of the region if the record would cross it, and to a 64-byte
        // payload boundary for large records (the header is 16 bytes, so the record starts at
        // 48 mod 64). At most two padding records.
        let mut start = self.write;
        loop {
            let offset = self.shared.offset(start);
            let align = if len >= LARGE_PAYLOAD {
                48u64.wrapping_sub(offset) & 63
            } else {
                0
            };
            if offset + align + span <= capacity {
                start += align;
                break;
            }
            start += capacity - offset;
        }
        let end = start + span;
        if end - self.cached_read > capacity {
            self.refresh_read()?;
            if end - self.cached_read > capacity {
                return Ok(None);
            }
        }
        Ok(Some(Placement { start, len }))
    }

    /// Loads the consumer's read position and checks it.
    fn refresh_read(&mut self) -> Result<()> {
        // ORDERING: Acquire pairs with the consumer's Release store of its read position: its
        // reads of the records before that position happen before we overwrite them.
        let read = self.shared.control().read_pos.0.load(Ordering::Acquire);
        if read < self.cached_read || read > self.published || !read.is_multiple_of(RECORD_ALIGN) {
            return Err(self.corrupt(
                "read position",
                format!(
                    "{read}, previously {}, published write position {}",
                    self.cached_read, self.published
                ),
            ));
        }
        self.cached_read = read;
        Ok(())
    }

    /// Writes the padding in front of `p` and hands out the record's payload.
    fn claim_at(&mut self, p: Placement) -> Claim<'_> {
        let mut pos = self.write;
        while pos < p.start {
            let offset = self.shared.offset(pos);
            let pad = (p.start - pos).min(self.shared.capacity - offset);
            let header = RecordHeader {
                len: (pad - RECORD_ALIGN) as u32,
                kind: KIND_PADDING,
            };
            self.shared.write_at(offset, &header.to_bytes());
            pos += pad;
        }
        // The payload is written through a slice; tell loom the whole record is being written.
        self.shared
            .granules
            .write(self.shared.offset(p.start), record_span(p.len));
        Claim {
            producer: self,
            start: p.start,
            len: p.len,
            kind: 1,
        }
    }

    /// Reads back, in order, the committed records the consumer has not acknowledged (see
    /// [`Consumer::acknowledge`](crate::Consumer::acknowledge)), so that they can be written to
    /// a new ring after the consumer died: each record's kind and a private copy of its payload
    /// go to `each`. For a consumer that does not acknowledge, every record past its published
    /// read position counts as unacknowledged (it may have finished some of them). Changes
    /// nothing in the ring.
    ///
    /// The consumer could write the ring's memory, so what `each` gets is untrusted: the walk
    /// checks every header against this side's private bounds, and the caller validates the
    /// payloads.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a record header was overwritten (the records before it were handed
    /// to `each`).
    pub fn unacknowledged(&self, mut each: impl FnMut(u32, &[u8])) -> Result<Unfinished> {
        let control = self.shared.control();
        // ORDERING: Acquire pairs with the consumer's Release stores: the work it did before
        // acknowledging (or releasing) a record happens before we skip that record.
        let read = control.read_pos.0.load(Ordering::Acquire);
        let acked = control.acks.0.acked.load(Ordering::Acquire);
        let taken = control.acks.0.taken.load(Ordering::Acquire);
        let enabled = control.acks.0.enabled.load(Ordering::Acquire) != 0;
        let valid = |pos: u64| {
            pos >= self.cached_read && pos <= self.write && pos.is_multiple_of(RECORD_ALIGN)
        };
        let mut pos = self.cached_read;
        if valid(read) {
            pos = read;
        }
        if enabled && valid(acked) && acked > pos {
            pos = acked;
        }
        let mut unfinished = Unfinished {
            records: 0,
            taken: 0,
            acknowledged: enabled,
        };
        let capacity = self.shared.capacity;
        let mut payload = Vec::new();
        while pos < self.write {
            let offset = self.shared.offset(pos);
            let mut raw = [0u8; RECORD_ALIGN as usize];
            self.shared.copy_out(offset, &mut raw);
            let header = RecordHeader::from_bytes(raw);
            let span = record_span(u64::from(header.len));
            let padding = header.kind == KIND_PADDING;
            if header.kind == 0
                || offset + span > capacity
                || pos + span > self.write
                || (!padding && u64::from(header.len) > self.shared.max_payload)
            {
                return Err(Error::Corrupt {
                    what: "unacknowledged record",
                    detail: format!(
                        "the header at position {pos} was overwritten (kind {}, length {}); {}                          record(s) before it were read back",
                        header.kind, header.len, unfinished.records
                    ),
                });
            }
            if !padding {
                if enabled && taken <= self.write && pos < taken {
                    unfinished.taken += 1;
                }
                payload.resize(header.len as usize, 0);
                self.shared.copy_out(offset + RECORD_ALIGN, &mut payload);
                each(header.kind, &payload);
                unfinished.records += 1;
            }
            pos += span;
        }
        Ok(unfinished)
    }

    /// True once the consumer has acknowledged (or, if it does not acknowledge, released)
    /// every committed record: [`unacknowledged`](Self::unacknowledged) would read back
    /// nothing.
    pub fn all_acknowledged(&self) -> bool {
        let control = self.shared.control();
        // ORDERING: as in `unacknowledged`.
        let done = if control.acks.0.enabled.load(Ordering::Acquire) != 0 {
            control.acks.0.acked.load(Ordering::Acquire)
        } else {
            control.read_pos.0.load(Ordering::Acquire)
        };
        done == self.write
    }

    /// An [`Interrupter`](super::Interrupter) that ends this producer's waits for room.
    pub fn interrupter(&self) -> super::Interrupter {
        super::Interrupter::new(self.shared.clone(), super::shared::Side::Producer)
    }

    /// Publishes every committed record (including deferred ones) and wakes the consumer if it
    /// sleeps.
    pub fn flush(&mut self) {
        if self.published == self.write {
            return;
        }
        let control = self.shared.control();
        // ORDERING: Release pairs with the consumer's Acquire load of the write position, so
        // the records' bytes are visible before the position that covers them.
        control.write_pos.0.store(self.write, Ordering::Release);
        self.published = self.write;
        // ORDERING: pairs with the consumer's fence after it sets `consumer_waiting`.
        fence(Ordering::SeqCst);
        let signals = &control.signals.0;
        if signals.consumer_waiting.load(Ordering::Relaxed) != 0 {
            wait::wake(
                &self.shared,
                &signals.consumer_waiting,
                self.shared.data_ready(),
            );
        }
    }

    /// Closes the ring for writing: publishes every committed record, then marks the ring
    /// closed. The consumer reads what was committed, then sees [`Error::Closed`]. Idempotent;
    /// also done on drop.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.flush();
        self.closed = true;
        let signals = &self.shared.control().signals.0;
        // ORDERING: Release pairs with the consumer's Acquire load of `producer_closed`, which
        // it follows with a reload of the (final) write position.
        signals.producer_closed.store(1, Ordering::Release);
        // ORDERING: same handshake as `flush`: a consumer about to sleep sees the flag.
        fence(Ordering::SeqCst);
        wait::wake(
            &self.shared,
            &signals.consumer_waiting,
            self.shared.data_ready(),
        );
    }

    /// True once the consumer has closed its end (or this end was closed).
    pub fn is_closed(&self) -> bool {
        self.closed || self.consumer_closed()
    }

    /// True once the consumer has closed its end.
    #[inline]
    fn consumer_closed(&self) -> bool {
        // ORDERING: Acquire pairs with the consumer's Release store of its closed flag.
        let closed = &self.shared.control().signals.0.consumer_closed;
        closed.load(Ordering::Acquire) != 0
    }

    /// The spin budget of this endpoint's waits (for [`wait::block`]).
    pub(crate) fn spin_budget(&mut self) -> &mut SpinBudget {
        &mut self.spin
    }

    /// Prepares to await space with an event loop instead of blocking a thread.
    ///
    /// Sets the waiting flag so the consumer will signal the space eventfd
    /// ([`Ring::fds`](crate::Ring::fds)`[2]`), then checks once more. Returns `true` if
    /// `len` bytes can be claimed now (or an error is pending): do not sleep, call
    /// [`try_claim`](Self::try_claim). Returns `false` when it is safe to await readability of
    /// the eventfd; afterwards call [`finish_park`](Self::finish_park).
    pub fn prepare_park(&mut self, len: usize) -> bool {
        self.flush();
        wait::prepare_park(self, Producer::waiting_flag, |c| {
            !matches!(c.place(len), Ok(None))
        })
    }

    /// Ends an event-loop wait begun with [`prepare_park`](Self::prepare_park): clears the
    /// waiting flag and empties the eventfd.
    pub fn finish_park(&mut self) {
        wait::finish_park(self.waiting_flag(), self.shared.space_ready());
    }

    /// This side's waiting flag in the segment.
    fn waiting_flag(&self) -> &crate::sync::AtomicU32 {
        &self.shared.control().signals.0.producer_waiting
    }

    fn corrupt(&mut self, what: &'static str, detail: String) -> Error {
        self.poison = Some((what, detail.clone()));
        // Tell the consumer we are gone: it drains what was published and stops.
        self.close();
        Error::Corrupt { what, detail }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.close();
        self.shared.release_producer();
    }
}

/// Space claimed in the ring for one record. Write the payload through `DerefMut`, then
/// [`commit`](Self::commit). Dropping a claim without committing abandons it: the consumer never
/// sees any of it.
#[derive(Debug)]
pub struct Claim<'a> {
    producer: &'a mut Producer,
    start: u64,
    len: u64,
    kind: u32,
}

impl<'a> Claim<'a> {
    /// Sets the record's kind, a tag the consumer sees with [`crate::Record::kind`]. Kinds are
    /// `1 ..= u32::MAX - 1`; the default is 1.
    ///
    /// # Panics
    /// If `kind` is 0 or `u32::MAX` (reserved).
    pub fn set_kind(&mut self, kind: u32) {
        assert!(
            kind != 0 && kind != KIND_PADDING,
            "record kind {kind} is reserved"
        );
        self.kind = kind;
    }

    /// Commits the whole claimed length and publishes it immediately.
    pub fn commit(self) {
        let len = self.len as usize;
        self.commit_len(len);
    }

    /// Commits the first `len` bytes (a claim may be larger than what was finally written,
    /// for example when serializing into it) and publishes them immediately.
    ///
    /// # Panics
    /// If `len` is larger than the claimed length.
    pub fn commit_len(self, len: usize) {
        let producer = self.finish(len);
        producer.flush();
    }

    /// Commits the whole claimed length but publishes it only when a batch of
    /// [`EndpointConfig::publish_bytes`] has accumulated, on [`Producer::flush`], when the
    /// producer has to wait, or on close. Saves a cache-line transfer per record when many
    /// records are written back to back.
    pub fn commit_deferred(self) {
        let len = self.len as usize;
        self.commit_len_deferred(len);
    }

    /// [`commit_len`](Self::commit_len) with deferred publication (see
    /// [`commit_deferred`](Self::commit_deferred)).
    ///
    /// # Panics
    /// If `len` is larger than the claimed length.
    pub fn commit_len_deferred(self, len: usize) {
        let producer = self.finish(len);
        if producer.write - producer.published >= producer.batch {
            producer.flush();
        }
    }

    /// Length of the claimed payload.
    pub fn capacity(&self) -> usize {
        self.len as usize
    }

    fn finish(self, len: usize) -> &'a mut Producer {
        assert!(
            len as u64 <= self.len,
            "committing {len} bytes of a {}-byte claim",
            self.len
        );
        let producer = self.producer;
        let header = RecordHeader {
            len: len as u32,
            kind: self.kind,
        };
        producer
            .shared
            .write_at(producer.shared.offset(self.start), &header.to_bytes());
        producer.write = self.start + record_span(len as u64);
        producer
    }
}

impl Deref for Claim<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let offset = self.producer.shared.offset(self.start) + RECORD_ALIGN;
        // SAFETY: `place` put the whole record inside the data region, and the span from the
        // old write position to its end is free (the consumer released it and the write
        // position was never published past it), so this claim is its only user.
        unsafe { self.producer.shared.slice(offset, self.len) }
    }
}

impl DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let offset = self.producer.shared.offset(self.start) + RECORD_ALIGN;
        // SAFETY: as in `deref`; `&mut self` makes this the only slice handed out.
        unsafe { self.producer.shared.slice_mut(offset, self.len) }
    }
}
