//! Typed channels over a ring: [`TupleSender`] and [`TupleReceiver`].

use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;

use crate::error::{Error, Result};
use crate::ring::{Consumer, Producer, Record};

use super::encode::{Encode, Encoder, Wait};
use super::offset::{OFFSET_KIND, Offset};
use super::view::{TupleView, Validation};

/// Sends tuples into a ring: a [`Producer`] plus an [`Encoder`]. Each tuple becomes one record of
/// kind [`RECORD_KIND`](super::RECORD_KIND), serialized in place. Works across processes like
/// the ring itself; dropping the sender closes the ring for writing.
#[derive(Debug)]
pub struct TupleSender {
    producer: Producer,
    encoder: Encoder,
}

impl TupleSender {
    /// Sends through `producer`.
    pub fn new(producer: Producer) -> TupleSender {
        TupleSender {
            producer,
            encoder: Encoder::new(),
        }
    }

    /// Sends a [`Tuple`](super::Tuple) or [`TupleRef`](super::TupleRef), waiting while the ring
    /// is full, and publishes it at once.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the tuple can never fit one record of this ring (nothing is
    /// written), [`Error::InvalidTuple`] if it nests deeper than
    /// [`MAX_DEPTH`](super::MAX_DEPTH), [`Error::Closed`] once the receiver is gone,
    /// [`Error::Corrupt`] if the ring is.
    pub fn send<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<()> {
        self.encoder
            .write_with(&mut self.producer, tuple, Wait::Block, false)
            .map(drop)
    }

    /// Sends without waiting: `Ok(false)` means the ring is full for now and nothing was
    /// written.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn try_send<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<bool> {
        Ok(self
            .encoder
            .write_with(&mut self.producer, tuple, Wait::Try, false)?
            .is_some())
    }

    /// As [`send`](Self::send), giving up after `timeout` (nothing is written then).
    ///
    /// # Errors
    /// As [`send`](Self::send), and [`Error::TimedOut`].
    pub fn send_timeout<T: Encode + ?Sized>(&mut self, tuple: &T, timeout: Duration) -> Result<()> {
        self.encoder
            .write_with(&mut self.producer, tuple, Wait::Timeout(timeout), false)
            .map(drop)
    }

    /// As [`send`](Self::send), but leaves the record for a batched publication (see
    /// [`Claim::commit_deferred`](crate::Claim::commit_deferred)); call [`flush`](Self::flush)
    /// after the last tuple of a burst.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_deferred<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<()> {
        self.encoder
            .write_with(&mut self.producer, tuple, Wait::Block, true)
            .map(drop)
    }

    /// As [`send_deferred`](Self::send_deferred) without waiting: `Ok(false)` means the ring
    /// is full for now and nothing was written.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn try_send_deferred<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<bool> {
        Ok(self
            .encoder
            .write_with(&mut self.producer, tuple, Wait::Try, true)?
            .is_some())
    }

    /// Publishes every deferred record and wakes the receiver if it sleeps.
    pub fn flush(&mut self) {
        self.producer.flush();
    }

    /// Writes `offset` for the next tuple sent ([`TupleReceiver::next_offset`]), without
    /// waiting: `Ok(false)` means the ring is full for now and nothing was written. The record
    /// is published with that tuple (or earlier, should the ring's batch be due), so write the
    /// tuple right after it. A receiver that sees several offsets before a tuple keeps the
    /// last.
    ///
    /// # Errors
    /// [`Error::Closed`] once the receiver is gone, [`Error::Corrupt`] if the ring is.
    pub fn try_send_offset(&mut self, offset: &Offset) -> Result<bool> {
        let bytes = offset.as_bytes();
        let Some(mut claim) = self.producer.try_claim(bytes.len())? else {
            return Ok(false);
        };
        claim.set_kind(OFFSET_KIND);
        claim[..bytes.len()].copy_from_slice(bytes);
        claim.commit_deferred();
        Ok(true)
    }

    /// As [`try_send_offset`](Self::try_send_offset), waiting while the ring is full.
    ///
    /// # Errors
    /// As [`try_send_offset`](Self::try_send_offset).
    pub fn send_offset(&mut self, offset: &Offset) -> Result<()> {
        let bytes = offset.as_bytes();
        let mut claim = self.producer.claim(bytes.len())?;
        claim.set_kind(OFFSET_KIND);
        claim[..bytes.len()].copy_from_slice(bytes);
        claim.commit_deferred();
        Ok(())
    }

    /// Largest archived tuple one record can carry.
    pub fn max_tuple_len(&self) -> usize {
        self.producer.max_record_len()
    }

    /// The ring's producer, for event-loop waiting ([`Producer::prepare_park`]) or to write
    /// other records.
    pub fn producer(&mut self) -> &mut Producer {
        &mut self.producer
    }

    /// Gives the producer back.
    pub fn into_producer(self) -> Producer {
        self.producer
    }
}

/// Receives tuples from a ring: a [`Consumer`] that checks each record as its [`Validation`]
/// mode says and hands out [`TupleView`]s. Works across processes like the ring itself.
///
/// Every record in the ring must be a tuple record ([`RECORD_KIND`](super::RECORD_KIND)). A
/// record that is not, or that fails validation, yields [`Error::InvalidTuple`] and poisons the
/// receiver: every later call returns the same error, its consumer reports itself ready (so a
/// caller waiting for readiness comes back for the error instead of waiting), and the ring is
/// closed for the producer at once, as a ring that sees corrupt shared state does.
#[derive(Debug)]
pub struct TupleReceiver {
    consumer: Consumer,
    validation: Validation,
    /// The copy of the current record in [`Validation::COPY_THEN_VALIDATE`] mode.
    copy: AlignedVec<16>,
    poison: Option<String>,
    /// The offset for the next tuple ([`TupleReceiver::next_offset`]).
    pending: Option<Offset>,
}

impl TupleReceiver {
    /// Receives from `consumer`, copying every record into a private buffer and validating the
    /// copy ([`Validation::COPY_THEN_VALIDATE`], the default: safe against any producer).
    pub fn new(consumer: Consumer) -> TupleReceiver {
        TupleReceiver::with_validation(consumer, Validation::default())
    }

    /// Receives from `consumer`, checking records as `validation` says.
    pub fn with_validation(consumer: Consumer, validation: Validation) -> TupleReceiver {
        TupleReceiver {
            consumer,
            validation,
            copy: AlignedVec::new(),
            poison: None,
            pending: None,
        }
    }

    /// This receiver's validation mode.
    pub fn validation(&self) -> Validation {
        self.validation
    }

    /// Receives the next tuple, waiting (spinning, then parking) until one is sent. The record
    /// stays in the ring until the view is dropped. Offset records before it are taken on the
    /// way ([`next_offset`](Self::next_offset)).
    ///
    /// # Errors
    /// [`Error::Closed`] once the sender closed and every tuple was received;
    /// [`Error::InvalidTuple`] for a record that is not a valid tuple (the receiver is then
    /// poisoned); [`Error::Corrupt`] if the ring is.
    pub fn recv(&mut self) -> Result<TupleView<'_>> {
        self.take_poison()?;
        while self.consumer.peek_kind(None)? == OFFSET_KIND {
            self.take_offset()?;
        }
        self.accept_next()
    }

    /// Receives the next tuple without waiting: `Ok(None)` means none is there yet.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<TupleView<'_>>> {
        if !self.ready()? {
            return Ok(None);
        }
        self.accept_next().map(Some)
    }

    /// As [`recv`](Self::recv), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`Error::TimedOut`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<TupleView<'_>> {
        self.take_poison()?;
        // The clock is read only if the receiver has to wait.
        let mut deadline = None;
        loop {
            let kind = match self.consumer.try_peek_kind()? {
                Some(kind) => kind,
                None => {
                    let at = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    let left = at.saturating_duration_since(Instant::now());
                    self.consumer.peek_kind(Some(left))?
                }
            };
            if kind != OFFSET_KIND {
                break;
            }
            self.take_offset()?;
        }
        self.accept_next()
    }

    /// True if a tuple record (or the end of the stream, or an error) is next, so that
    /// [`try_recv`](Self::try_recv) returns it now. Takes the offset records before it
    /// ([`next_offset`](Self::next_offset)); reads no tuple.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn ready(&mut self) -> Result<bool> {
        self.take_poison()?;
        loop {
            match self.consumer.try_peek_kind()? {
                None => return Ok(false),
                Some(OFFSET_KIND) => self.take_offset()?,
                Some(_) => return Ok(true),
            }
        }
    }

    /// The [`Offset`] the sender wrote for the next tuple (the last of the offset records
    /// taken since the previous tuple), once [`ready`](Self::ready) returned true; `None` if
    /// it wrote none. Receiving that tuple clears it.
    pub fn next_offset(&self) -> Option<Offset> {
        self.pending
    }

    /// Takes the offset record that is next: it applies to the next tuple.
    fn take_offset(&mut self) -> Result<()> {
        let Some(record) = self.consumer.try_read()? else {
            return Ok(());
        };
        match Offset::from_record(record.payload_len(), |dst| record.copy_to(dst)) {
            Ok(offset) => {
                self.pending = Some(offset);
                Ok(())
            }
            Err(reason) => {
                drop(record.reject("tuple", reason.clone()));
                self.poison = Some(reason.clone());
                Err(Error::InvalidTuple(reason))
            }
        }
    }

    /// Reads the next record, which [`ready`](Self::ready) or a peek found, as a tuple.
    fn accept_next(&mut self) -> Result<TupleView<'_>> {
        let TupleReceiver {
            consumer,
            validation,
            copy,
            poison,
            pending,
        } = self;
        *pending = None;
        match consumer.try_read()? {
            Some(record) => accept(record, *validation, copy, poison),
            None => Err(Error::Corrupt {
                what: "readiness",
                detail: "a record was peeked but then missing".into(),
            }),
        }
    }

    /// The error that poisoned this receiver, if a record failed its checks: every later
    /// receive returns it too.
    pub fn poisoned(&self) -> Option<Error> {
        self.poison.clone().map(Error::InvalidTuple)
    }

    /// Refuses the ring from now on, for `reason`: a record passed its checks but broke the
    /// protocol above them (a reply to a call never made, say). Every later receive fails with
    /// it, and the ring is closed for the producer, as for a record that failed its checks.
    pub fn poison(&mut self, reason: String) {
        self.poison.get_or_insert(reason);
        self.consumer.close();
    }

    /// The ring's consumer, for event-loop waiting ([`Consumer::prepare_park`]).
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// Gives the consumer back.
    pub fn into_consumer(self) -> Consumer {
        self.consumer
    }

    /// Fails if poisoned, closing the ring for the producer.
    fn take_poison(&mut self) -> Result<()> {
        match &self.poison {
            Some(reason) => {
                self.consumer.close();
                Err(Error::InvalidTuple(reason.clone()))
            }
            None => Ok(()),
        }
    }
}

/// Records up to this size are touched line by line before they are validated.
const TOUCH_MAX: usize = 4096;

/// Loads one byte of every cache line of `bytes`, front to back. The loads do not depend on
/// each other, so the lines the other process just wrote travel to this core together; the
/// validation that follows walks the archive from its root, at the end, back to the fields
/// and strings, and would otherwise wait for each line in turn.
fn touch(bytes: &[u8]) {
    let sum = bytes.iter().step_by(64).fold(0u8, |acc, b| acc ^ b);
    std::hint::black_box(sum);
}

fn accept<'a>(
    record: Record<'a>,
    validation: Validation,
    copy: &'a mut AlignedVec<16>,
    poison: &mut Option<String>,
) -> Result<TupleView<'a>> {
    // A copied record is read once, by the copy; touching it in place first would only read
    // the producer's memory twice (and through a reference, which a copied record never gets).
    if validation != Validation::COPY_THEN_VALIDATE && record.payload_len() <= TOUCH_MAX {
        touch(&record);
    }
    TupleView::from_record(record, validation, copy).map_err(|reason| {
        *poison = Some(reason.clone());
        Error::InvalidTuple(reason)
    })
}
