//! Writing tuples: a cheap upper bound of the archived size (which also enforces the depth
//! limit), and serialization straight into a ring record.

use std::mem::size_of;
use std::time::Duration;

use rkyv::api::low::to_bytes_in_with_alloc;
use rkyv::collections::util::Entry;
use rkyv::rancor;
use rkyv::ser::Positional;
use rkyv::ser::allocator::Arena;
use rkyv::ser::writer::Buffer;
use rkyv::string::ArchivedString;
use rkyv::util::AlignedVec;

use crate::error::{Error, Result};
use crate::ring::{Claim, Producer};

use super::archive::{self, Fail};
use super::borrowed::{MapRef, TupleRef, ValueRef};
use super::relay::{FieldValue, SpliceEnc, TupleFields, TupleWith, WithEnc};
use super::value::{ArchivedTuple, ArchivedValue, Tuple, Value};
use super::value_view::{MapView, ValueView};
use super::view::TupleView;
use super::{MAX_DEPTH, RECORD_KIND};

/// Bytes of one value inside a list.
const VALUE: usize = size_of::<ArchivedValue>();
/// Bytes of one map entry (key and value).
const ENTRY: usize = size_of::<Entry<ArchivedString, ArchivedValue>>();
/// Bytes of the root.
const ROOT: usize = size_of::<ArchivedTuple>();
/// Padding rkyv may insert before one aligned block: the archived types here align to at most
/// 8 bytes, so 7 would do; 15 leaves room.
pub(crate) const PAD: usize = 15;

pub(crate) mod sealed {
    use rkyv::rancor;
    use rkyv::ser::allocator::ArenaHandle;
    use rkyv::ser::writer::Buffer;

    use crate::tuple::archive::Fail;

    /// Keeps [`super::Encode`] implemented only by the tuple types of this module.
    pub trait Sealed {
        fn serialize_into<'b>(
            &self,
            buf: Buffer<'b>,
            arena: ArenaHandle<'_>,
        ) -> Result<Buffer<'b>, rancor::Error>;

        /// True if [`archive_into`](Self::archive_into) archives this type.
        const BY_HAND: bool = false;

        /// Archives the tuple by hand ([`crate::tuple::archive`]) into the front of `buf`, if
        /// this type can be: `None` if not.
        fn archive_into(
            &self,
            buf: &mut [u8],
            scratch: &mut Vec<u32>,
        ) -> Option<Result<usize, Fail>> {
            let _ = (buf, scratch);
            None
        }
    }
}

/// `record` archived by hand and by its rkyv serializer, each into a fresh buffer of its size
/// bound: `None` for a type not written by hand, or when the hand writer leaves it to rkyv
/// (`Unsupported`). For the tests and fuzz targets that hold the two to the same bytes.
#[cfg(any(test, fuzzing))]
pub(crate) fn both_ways<T: Encode + ?Sized>(record: &T) -> Option<(Vec<u8>, Vec<u8>)> {
    let bound = record.size_bound().ok()?;
    let mut hand = AlignedVec::<16>::new();
    hand.resize(bound, 0);
    let len = match record.archive_into(&mut hand, &mut Vec::new())? {
        Ok(len) => len,
        Err(Fail::Unsupported) => return None,
        Err(e) => panic!("the hand writer failed within the size bound: {e:?}"),
    };
    let mut theirs = AlignedVec::<16>::new();
    theirs.resize(bound, 0);
    let written = record
        .serialize_into(Buffer::from(&mut *theirs), Arena::new().acquire())
        .expect("rkyv writes within the size bound");
    let theirs_len = written.pos();
    Some((hand[..len].to_vec(), theirs[..theirs_len].to_vec()))
}

/// A tuple that can be written to a ring (sealed): [`Tuple`], [`TupleRef`], a received
/// [`TupleView`] (relayed: its bytes are copied), a [`TupleWith`] (a view plus fields) or a
/// function [`CallRecord`](super::call::CallRecord).
pub trait Encode: sealed::Sealed {
    /// An upper bound of the archived size in bytes, computed without serializing (one pass over
    /// the tuple's maps and lists).
    ///
    /// # Errors
    /// [`Error::InvalidTuple`] if lists and maps nest deeper than [`MAX_DEPTH`].
    fn size_bound(&self) -> Result<usize>;
}

impl sealed::Sealed for Tuple {
    fn serialize_into<'b>(
        &self,
        buf: Buffer<'b>,
        arena: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<Buffer<'b>, rancor::Error> {
        to_bytes_in_with_alloc(self, buf, arena)
    }

    const BY_HAND: bool = true;

    fn archive_into(&self, buf: &mut [u8], scratch: &mut Vec<u32>) -> Option<Result<usize, Fail>> {
        Some(archive::archive_tuple(self, buf, scratch))
    }
}

impl Encode for Tuple {
    fn size_bound(&self) -> Result<usize> {
        let entries = |m: &std::collections::BTreeMap<String, Value>| {
            map_bound(
                m.len(),
                m.iter().map(|(k, v)| (k.as_str(), v)),
                owned_bound,
                0,
            )
        };
        Ok((ROOT + PAD)
            .saturating_add(entries(&self.meta)?)
            .saturating_add(entries(&self.fields)?))
    }
}

impl sealed::Sealed for TupleRef<'_> {
    fn serialize_into<'b>(
        &self,
        buf: Buffer<'b>,
        arena: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<Buffer<'b>, rancor::Error> {
        to_bytes_in_with_alloc(self, buf, arena)
    }

    const BY_HAND: bool = true;

    fn archive_into(&self, buf: &mut [u8], scratch: &mut Vec<u32>) -> Option<Result<usize, Fail>> {
        Some(archive::archive_tuple_ref(self, buf, scratch))
    }
}

impl Encode for TupleRef<'_> {
    fn size_bound(&self) -> Result<usize> {
        let entries =
            |m: MapRef<'_>| map_bound(m.len(), m.iter().map(|(k, v)| (*k, v)), ref_bound, 0);
        Ok((ROOT + PAD)
            .saturating_add(entries(self.meta)?)
            .saturating_add(entries(self.fields)?))
    }
}

impl sealed::Sealed for TupleView<'_> {
    fn serialize_into<'b>(
        &self,
        mut buf: Buffer<'b>,
        _: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<Buffer<'b>, rancor::Error> {
        rkyv::ser::Writer::<rancor::Error>::write(&mut buf, self.as_bytes())?;
        Ok(buf)
    }
}

/// Relays the view: its archived bytes are copied as they are (the archive reads the same at
/// any address aligned to 16 bytes).
impl Encode for TupleView<'_> {
    fn size_bound(&self) -> Result<usize> {
        Ok(self.as_bytes().len())
    }
}

impl sealed::Sealed for TupleWith<'_> {
    fn serialize_into<'b>(
        &self,
        buf: Buffer<'b>,
        arena: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<Buffer<'b>, rancor::Error> {
        if SpliceEnc::applies(self) {
            to_bytes_in_with_alloc(&SpliceEnc { with: *self }, buf, arena)
        } else {
            to_bytes_in_with_alloc(&WithEnc::from(*self), buf, arena)
        }
    }

    const BY_HAND: bool = true;

    fn archive_into(&self, buf: &mut [u8], scratch: &mut Vec<u32>) -> Option<Result<usize, Fail>> {
        SpliceEnc::applies(self).then(|| archive::archive_splice(self, buf, scratch))
    }
}

impl sealed::Sealed for TupleFields<'_> {
    fn serialize_into<'b>(
        &self,
        buf: Buffer<'b>,
        arena: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<Buffer<'b>, rancor::Error> {
        to_bytes_in_with_alloc(&WithEnc::from(*self), buf, arena)
    }

    const BY_HAND: bool = true;

    fn archive_into(&self, buf: &mut [u8], scratch: &mut Vec<u32>) -> Option<Result<usize, Fail>> {
        Some(archive::archive_fields(self, buf, scratch))
    }
}

impl Encode for TupleFields<'_> {
    fn size_bound(&self) -> Result<usize> {
        let mut total = (ROOT + PAD + PAD).saturating_add(ENTRY.saturating_mul(self.fields.len()));
        for (key, value) in self.fields {
            total = total
                .saturating_add(key.len())
                .saturating_add(field_bound(value, 0)?);
        }
        Ok(total)
    }
}

impl Encode for TupleWith<'_> {
    fn size_bound(&self) -> Result<usize> {
        if SpliceEnc::applies(self) {
            // The base's bytes, the new entries and root, and the added fields.
            let entries = self.base.fields().len() + self.fields.len();
            let mut total = (self.base.as_bytes().len() + ROOT + 3 * PAD)
                .saturating_add(ENTRY.saturating_mul(entries));
            for (key, value) in self.fields {
                total = total
                    .saturating_add(key.len() + PAD)
                    .saturating_add(field_bound(value, 0)?);
            }
            return Ok(total);
        }
        let fields = self.base.fields();
        let mut total = (ROOT + PAD)
            .saturating_add(view_map_bound(self.base.meta(), 0)?)
            .saturating_add(view_map_bound(fields, 0)?)
            .saturating_add(ENTRY.saturating_mul(self.fields.len()));
        for (key, value) in self.fields {
            total = total
                .saturating_add(key.len())
                .saturating_add(field_bound(value, 0)?);
        }
        Ok(total)
    }
}

/// Out-of-line bytes of a [`FieldValue`].
pub(crate) fn field_bound(v: &FieldValue<'_>, level: usize) -> Result<usize> {
    match v {
        FieldValue::Ref(v) => ref_bound(v, level),
        FieldValue::View(v) => view_bound(v, level),
    }
}

/// Out-of-line bytes of a map read from a view.
fn view_map_bound(m: MapView<'_>, level: usize) -> Result<usize> {
    let mut total = PAD.saturating_add(ENTRY.saturating_mul(m.len()));
    for (key, v) in m.iter() {
        total = total
            .saturating_add(key.len())
            .saturating_add(view_bound(&v, level)?);
    }
    Ok(total)
}

/// Out-of-line bytes of a value read from a view.
fn view_bound(v: &ValueView<'_>, level: usize) -> Result<usize> {
    Ok(match v {
        ValueView::String(s) => s.len(),
        ValueView::Bytes(b) => b.len(),
        ValueView::List(items) => {
            let level = deeper(level)?;
            let mut total = PAD.saturating_add(VALUE.saturating_mul(items.len()));
            for item in items.iter() {
                total = total.saturating_add(view_bound(&item, level)?);
            }
            total
        }
        ValueView::Map(m) => view_map_bound(*m, deeper(level)?)?,
        ValueView::Null
        | ValueView::Bool(_)
        | ValueView::Int(_)
        | ValueView::Float(_)
        | ValueView::Timestamp(_) => 0,
    })
}

/// Out-of-line bytes of a list of `len` values made by `item`, `level` containers deep (for
/// call records).
pub(crate) fn fields_list_bound<'a>(
    len: usize,
    item: impl Fn(usize) -> FieldValue<'a>,
    level: usize,
) -> Result<usize> {
    let level = deeper(level)?;
    let mut total = PAD.saturating_add(VALUE.saturating_mul(len));
    for i in 0..len {
        total = total.saturating_add(field_bound(&item(i), level)?);
    }
    Ok(total)
}

/// Bytes of a root with one field named `key` (`PAD` for each of its maps).
pub(crate) const fn one_field_root(key: &str) -> usize {
    ROOT + PAD + PAD + PAD + ENTRY + key.len()
}

/// Out-of-line bytes of a map whose values sit `level` containers deep.
fn map_bound<'v, V: 'v>(
    len: usize,
    entries: impl Iterator<Item = (&'v str, &'v V)>,
    value: fn(&V, usize) -> Result<usize>,
    level: usize,
) -> Result<usize> {
    let mut total = PAD.saturating_add(ENTRY.saturating_mul(len));
    for (key, v) in entries {
        // Keys of up to 8 bytes are stored inline; counting every key is simpler and safe.
        total = total
            .saturating_add(key.len())
            .saturating_add(value(v, level)?);
    }
    Ok(total)
}

/// Out-of-line bytes of a list whose values sit `level` containers deep.
fn list_bound<'v, V: 'v>(
    len: usize,
    items: impl Iterator<Item = &'v V>,
    value: fn(&V, usize) -> Result<usize>,
    level: usize,
) -> Result<usize> {
    let mut total = PAD.saturating_add(VALUE.saturating_mul(len));
    for v in items {
        total = total.saturating_add(value(v, level)?);
    }
    Ok(total)
}

/// Checks that a container at `level` may hold values one level deeper.
pub(crate) fn deeper(level: usize) -> Result<usize> {
    if level >= MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(level + 1)
}

fn too_deep() -> Error {
    Error::InvalidTuple(format!(
        "lists and maps nest deeper than {MAX_DEPTH} levels; flatten the value"
    ))
}

/// Out-of-line bytes of an owned value (its inline 16 bytes are counted by its container).
fn owned_bound(v: &Value, level: usize) -> Result<usize> {
    Ok(match v {
        Value::String(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::List(items) => list_bound(items.len(), items.iter(), owned_bound, deeper(level)?)?,
        Value::Map(m) => map_bound(
            m.len(),
            m.iter().map(|(k, v)| (k.as_str(), v)),
            owned_bound,
            deeper(level)?,
        )?,
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Timestamp(_) => 0,
    })
}

/// Out-of-line bytes of a borrowed value.
fn ref_bound(v: &ValueRef<'_>, level: usize) -> Result<usize> {
    Ok(match v {
        ValueRef::String(s) => s.len(),
        ValueRef::Bytes(b) => b.len(),
        ValueRef::List(items) => list_bound(items.len(), items.iter(), ref_bound, deeper(level)?)?,
        ValueRef::Map(m) => map_bound(
            m.len(),
            m.iter().map(|(k, v)| (*k, v)),
            ref_bound,
            deeper(level)?,
        )?,
        ValueRef::Null
        | ValueRef::Bool(_)
        | ValueRef::Int(_)
        | ValueRef::Float(_)
        | ValueRef::Timestamp(_) => 0,
    })
}

/// How a write waits for space in the ring.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    Block,
    Try,
    Timeout(Duration),
}

/// Serializes tuples straight into ring records, reusing its scratch space (rkyv's arena), so
/// that writing allocates nothing in steady state.
///
/// [`TupleSender`](super::TupleSender) pairs one with a [`Producer`]; use an `Encoder` directly
/// to write tuples between other records of a ring, or into a buffer of your own.
///
/// # How a write works
/// A [`Tuple`] or [`TupleRef`] is written in one pass: if the ring has room for an estimate
/// now (the last tuple's size plus an eighth, at least 256 bytes, at most the ring's
/// [`max_record_len`](Producer::max_record_len)), the encoder claims it, writes the archive into
/// the claim and commits only the bytes written, tagged with [`RECORD_KIND`]. If there was no
/// room or the estimate was too small, it abandons the claim and takes the general path, which
/// every other tuple type takes: compute
/// [`Encode::size_bound`], claim that much, serialize with rkyv. A tuple whose bound exceeds the
/// largest record is first serialized into a temporary buffer to learn its exact size: it fails
/// with [`Error::TooLarge`] (claiming nothing) or is copied into a record of that size. A failed
/// write abandons its claim, so the consumer never sees part of a tuple.
#[derive(Default)]
pub struct Encoder {
    arena: Arena,
    /// The one-pass writer's stack of element positions.
    scratch: Vec<u32>,
    /// The size of the last tuple written in one pass.
    last_len: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("arena_capacity", &self.arena.capacity())
            .finish()
    }
}

impl Encoder {
    /// An encoder with empty scratch space (it grows to the largest tuple's needs).
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Serializes `tuple` into the front of `buf` and returns the archived length. To be read in
    /// place, `buf` must start at an address aligned to 16 bytes (as ring payloads do).
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `buf` is too small (`size` is then the exact archived size);
    /// [`Error::InvalidTuple`] if the tuple nests deeper than [`MAX_DEPTH`].
    pub fn encode_into<T: Encode + ?Sized>(&mut self, tuple: &T, buf: &mut [u8]) -> Result<usize> {
        match tuple.archive_into(buf, &mut self.scratch) {
            Some(Ok(len)) => return Ok(len),
            Some(Err(Fail::TooDeep)) => return Err(too_deep()),
            Some(Err(Fail::Overflow | Fail::Unsupported)) | None => {}
        }
        tuple.size_bound()?;
        match tuple.serialize_into(Buffer::from(&mut *buf), self.arena.acquire()) {
            Ok(written) => Ok(written.pos()),
            Err(_) => Err(Error::TooLarge {
                size: self.exact_size(tuple)?.len(),
                max: buf.len(),
            }),
        }
    }

    /// Writes `tuple` as one record, waiting (spinning, then parking) while the ring is full,
    /// and publishes it. Returns the record's payload length.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the tuple can never fit the ring, [`Error::InvalidTuple`] if it
    /// nests too deep, and the errors of [`Producer::claim`].
    pub fn write<T: Encode + ?Sized>(
        &mut self,
        producer: &mut Producer,
        tuple: &T,
    ) -> Result<usize> {
        self.write_with(producer, tuple, Wait::Block, false)
            .map(|n| n.unwrap_or(0))
    }

    /// As [`write`](Self::write) without waiting: `Ok(None)` means the ring is full for now and
    /// nothing was written.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn try_write<T: Encode + ?Sized>(
        &mut self,
        producer: &mut Producer,
        tuple: &T,
    ) -> Result<Option<usize>> {
        self.write_with(producer, tuple, Wait::Try, false)
    }

    /// As [`write`](Self::write), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`write`](Self::write), and [`Error::TimedOut`].
    pub fn write_timeout<T: Encode + ?Sized>(
        &mut self,
        producer: &mut Producer,
        tuple: &T,
        timeout: Duration,
    ) -> Result<usize> {
        self.write_with(producer, tuple, Wait::Timeout(timeout), false)
            .map(|n| n.unwrap_or(0))
    }

    /// As [`write`](Self::write), but publishes the record later, in a batch
    /// ([`Claim::commit_len_deferred`]); call [`Producer::flush`] when the batch is done.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_deferred<T: Encode + ?Sized>(
        &mut self,
        producer: &mut Producer,
        tuple: &T,
    ) -> Result<usize> {
        self.write_with(producer, tuple, Wait::Block, true)
            .map(|n| n.unwrap_or(0))
    }

    /// The one write path; `Ok(None)` (ring full) only with [`Wait::Try`].
    pub(crate) fn write_with<T: Encode + ?Sized>(
        &mut self,
        producer: &mut Producer,
        tuple: &T,
        wait: Wait,
        deferred: bool,
    ) -> Result<Option<usize>> {
        let max = producer.max_record_len();
        // The one pass claims its estimate only if the ring has room for it now: a write never
        // waits for more room than the general path would (a bound of this tuple).
        if T::BY_HAND {
            let estimate = (self.last_len + self.last_len / 8)
                .clamp(256, max.max(256))
                .min(max);
            if let Some(mut first) = producer.try_claim(estimate)? {
                match tuple.archive_into(&mut first, &mut self.scratch) {
                    Some(Ok(len)) => {
                        self.last_len = len;
                        finish(first, len, deferred);
                        return Ok(Some(len));
                    }
                    Some(Err(Fail::TooDeep)) => return Err(too_deep()),
                    // Too small an estimate: abandon the claim (uncommitted, it publishes
                    // nothing and the next claim reuses its space), take the general path.
                    Some(Err(Fail::Overflow)) => {
                        self.last_len = self.last_len.max(estimate * 2);
                    }
                    Some(Err(Fail::Unsupported)) | None => {}
                }
            }
        }
        let bound = tuple.size_bound()?;
        if bound <= max {
            let Some(mut claim) = claim(producer, bound, wait)? else {
                return Ok(None);
            };
            if let Ok(written) =
                tuple.serialize_into(Buffer::from(&mut *claim), self.arena.acquire())
            {
                let len = written.pos();
                finish(claim, len, deferred);
                return Ok(Some(len));
            }
            // The bound was too small (it should never be): drop the claim unpublished and
            // fall back to measuring.
        }
        let exact = self.exact_size(tuple)?;
        if exact.len() > max {
            return Err(Error::TooLarge {
                size: exact.len(),
                max,
            });
        }
        let Some(mut claim) = claim(producer, exact.len(), wait)? else {
            return Ok(None);
        };
        claim[..exact.len()].copy_from_slice(&exact);
        finish(claim, exact.len(), deferred);
        Ok(Some(exact.len()))
    }

    /// Serializes into a temporary buffer to learn the exact archived bytes (the slow path for
    /// tuples larger than a record or a caller's buffer).
    fn exact_size<T: Encode + ?Sized>(&mut self, tuple: &T) -> Result<AlignedVec<16>> {
        let mut out = AlignedVec::<16>::new();
        let mut len = tuple.size_bound()?.max(64);
        let mut attempts = 0;
        loop {
            out.clear();
            out.resize(len, 0);
            match tuple.serialize_into(Buffer::from(&mut *out), self.arena.acquire()) {
                Ok(written) => {
                    let n = written.pos();
                    out.resize(n, 0);
                    return Ok(out);
                }
                // The bound is an upper bound, so the first attempt succeeds; retry larger only
                // in case it is not, and give up rather than loop on another kind of error.
                Err(e) if attempts >= 2 => {
                    return Err(Error::InvalidTuple(format!(
                        "serializing the tuple failed: {e}"
                    )));
                }
                Err(_) => {}
            }
            attempts += 1;
            len = len.saturating_mul(2);
        }
    }
}

fn claim(producer: &mut Producer, len: usize, wait: Wait) -> Result<Option<Claim<'_>>> {
    match wait {
        Wait::Block => producer.claim(len).map(Some),
        Wait::Try => producer.try_claim(len),
        Wait::Timeout(t) => producer.claim_timeout(len, t).map(Some),
    }
}

fn finish(mut claim: Claim<'_>, len: usize, deferred: bool) {
    claim.set_kind(RECORD_KIND);
    if deferred {
        claim.commit_len_deferred(len);
    } else {
        claim.commit_len(len);
    }
}
