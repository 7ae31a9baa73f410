//! Writing what was received without materialising it: a [`TupleView`] relayed by copying its
//! bytes, a tuple written as "this view plus (or overriding) these fields" ([`TupleWith`]), and
//! [`FieldValue`], a value to write that is either borrowed ([`ValueRef`]) or read in place from
//! a received tuple ([`ValueView`]).
//!
//! A [`TupleWith`] is spliced: the received record's bytes are copied as they are, followed by
//! the added fields and a new list of field entries and root ([`SpliceEnc`]); so relaying a
//! tuple with an answer costs about a `memcpy` of it, whatever its width. The record reads
//! exactly as the tuple with those fields (same timestamp, metadata, fields and order) but
//! carries the received tuple's old entries and root unreferenced: each splice adds 24 bytes per
//! field plus a root, and a tuple relayed through several functions grows by that much at each.
//! Values read from a view and written elsewhere are archived again by a private mirror of
//! [`ValueView`] whose archived type *is* [`ArchivedValue`] (as [`ValueRef`] does for borrowed
//! values), so those bytes are exactly what the owned tuple would have produced.

use std::mem::{align_of, offset_of, size_of};

use rkyv::collections::util::{Entry, EntryAdapter};
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, AsString, AsVec, SerializeWith};
use rkyv::{Archive, Place, Serialize};

use super::borrowed::{ArchivedMap, ValueRef};
use super::check;
use super::value::{ArchivedTuple, ArchivedValue};
use super::value_view::{ListView, MapView, ValueView};
use super::view::TupleView;

/// A value to write: borrowed from the writer, or read in place from a received tuple. Archives
/// to the same bytes as the owned [`Value`](super::Value) it stands for.
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::{FieldValue, ValueRef, ValueView};
///
/// let written = FieldValue::from(ValueRef::Int(3));
/// let relayed = FieldValue::from(ValueView::String("kitchen"));
/// # let _ = (written, relayed);
/// ```
#[derive(Clone, Copy, Debug)]
pub enum FieldValue<'a> {
    /// A borrowed value.
    Ref(ValueRef<'a>),
    /// A value read from a received tuple.
    View(ValueView<'a>),
}

impl<'a> From<ValueRef<'a>> for FieldValue<'a> {
    fn from(v: ValueRef<'a>) -> FieldValue<'a> {
        FieldValue::Ref(v)
    }
}

impl<'a> From<ValueView<'a>> for FieldValue<'a> {
    fn from(v: ValueView<'a>) -> FieldValue<'a> {
        FieldValue::View(v)
    }
}

/// A received tuple plus (or overriding) some fields: written with the view's timestamp, its
/// metadata, its fields except those named in `fields`, then `fields`, without building an
/// owned [`Tuple`](super::Tuple).
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::{Encoder, FieldValue, Tuple, TupleView, TupleWith, ValueRef};
///
/// let mut buf = rkyv::util::AlignedVec::<16>::new();
/// buf.resize(512, 0);
/// let mut encoder = Encoder::new();
/// let len = encoder.encode_into(&Tuple::new(1).with_field("x", 1i64), &mut buf)?;
/// let received = TupleView::from_bytes(&buf[..len])?;
///
/// let extra = [("y", FieldValue::from(ValueRef::Int(2)))];
/// let mut out = rkyv::util::AlignedVec::<16>::new();
/// out.resize(512, 0);
/// let len = encoder.encode_into(&TupleWith::new(&received, &extra), &mut out)?;
/// let written = TupleView::from_bytes(&out[..len])?;
/// assert_eq!(written.to_owned(), Tuple::new(1).with_field("x", 1i64).with_field("y", 2i64));
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TupleWith<'a> {
    /// The received tuple.
    pub base: &'a TupleView<'a>,
    /// Fields added after the view's, replacing any of the view's of the same name.
    pub fields: &'a [(&'a str, FieldValue<'a>)],
}

impl<'a> TupleWith<'a> {
    /// `base` plus (or overriding) `fields`.
    pub fn new(base: &'a TupleView<'a>, fields: &'a [(&'a str, FieldValue<'a>)]) -> TupleWith<'a> {
        TupleWith { base, fields }
    }
}

/// A tuple whose fields are borrowed or viewed values ([`FieldValue`]), with no metadata:
/// what a caller writes to keep values read from several records (a function's answers, say).
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::{Encoder, FieldValue, TupleBatch, TupleFields, ValueRef};
///
/// let mut batch = TupleBatch::new();
/// let fields = [("answer", FieldValue::from(ValueRef::Int(42)))];
/// batch.push_encoded(&mut Encoder::new(), &TupleFields { timestamp: 0, fields: &fields })?;
/// assert_eq!(batch.get(0).and_then(|t| t.get("answer")?.as_i64()), Some(42));
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TupleFields<'a> {
    /// The event time: nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// The fields, written in this order.
    pub fields: &'a [(&'a str, FieldValue<'a>)],
}

/// A string key, archived as [`ArchivedString`].
#[derive(Clone, Copy)]
pub(crate) struct KeyEnc<'a>(pub(crate) &'a str);

impl Archive for KeyEnc<'_> {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(self.0, resolver, out);
    }
}

impl<S> Serialize<S> for KeyEnc<'_>
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(self.0, serializer)
    }
}

/// A [`ValueView`] archived again as [`ArchivedValue`] (private mirror; the variants must match
/// [`Value`](super::Value)'s).
#[derive(Archive, Serialize, Clone, Copy)]
#[rkyv(as = ArchivedValue)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
pub(crate) enum ViewEnc<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(#[rkyv(with = AsString)] &'a str),
    Bytes(#[rkyv(with = AsVec)] &'a [u8]),
    List(#[rkyv(with = ListItems, omit_bounds)] ListView<'a>),
    Map(#[rkyv(with = MapItems, omit_bounds)] MapView<'a>),
    Timestamp(i64),
}

impl<'a> From<ValueView<'a>> for ViewEnc<'a> {
    fn from(v: ValueView<'a>) -> ViewEnc<'a> {
        match v {
            ValueView::Null => ViewEnc::Null,
            ValueView::Bool(b) => ViewEnc::Bool(b),
            ValueView::Int(i) => ViewEnc::Int(i),
            ValueView::Float(f) => ViewEnc::Float(f),
            ValueView::String(s) => ViewEnc::String(s),
            ValueView::Bytes(b) => ViewEnc::Bytes(b),
            ValueView::List(l) => ViewEnc::List(l),
            ValueView::Map(m) => ViewEnc::Map(m),
            ValueView::Timestamp(t) => ViewEnc::Timestamp(t),
        }
    }
}

/// rkyv wrapper: a [`ListView`] archived as the owned list.
pub(crate) struct ListItems;

impl<'a> ArchiveWith<ListView<'a>> for ListItems {
    type Archived = ArchivedVec<ArchivedValue>;
    type Resolver = VecResolver;

    fn resolve_with(field: &ListView<'a>, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<'a, S> SerializeWith<ListView<'a>, S> for ListItems
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &ListView<'a>, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_iter::<ViewEnc<'a>, _, _>(
            field.iter().map(ViewEnc::from),
            serializer,
        )
    }
}

/// rkyv wrapper: a [`MapView`] archived as the owned map (its entries, in order).
pub(crate) struct MapItems;

impl<'a> ArchiveWith<MapView<'a>> for MapItems {
    type Archived = ArchivedMap;
    type Resolver = VecResolver;

    fn resolve_with(field: &MapView<'a>, resolver: VecResolver, out: Place<ArchivedMap>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<'a, S> SerializeWith<MapView<'a>, S> for MapItems
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &MapView<'a>, serializer: &mut S) -> Result<VecResolver, S::Error> {
        let entries = field
            .iter()
            .map(|(key, value)| EntryAdapter::new(KeyEnc(key), ViewEnc::from(value)));
        ArchivedVec::serialize_from_iter::<
            EntryAdapter<KeyEnc<'a>, ViewEnc<'a>, KeyEnc<'a>, ViewEnc<'a>>,
            _,
            _,
        >(entries, serializer)
    }
}

/// The resolver of a [`FieldValue`].
pub struct FieldValueResolver<'a>(Resolver<'a>);

enum Resolver<'a> {
    Ref(<ValueRef<'a> as Archive>::Resolver),
    View(<ViewEnc<'a> as Archive>::Resolver),
}

impl<'a> Archive for FieldValue<'a> {
    type Archived = ArchivedValue;
    type Resolver = FieldValueResolver<'a>;

    fn resolve(&self, resolver: FieldValueResolver<'a>, out: Place<ArchivedValue>) {
        match (self, resolver.0) {
            (FieldValue::Ref(v), Resolver::Ref(r)) => v.resolve(r, out),
            (FieldValue::View(v), Resolver::View(r)) => ViewEnc::from(*v).resolve(r, out),
            // `serialize` made the resolver from this same value.
            _ => unreachable!("a FieldValue resolved with another value's resolver"),
        }
    }
}

impl<'a, S> Serialize<S> for FieldValue<'a>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<FieldValueResolver<'a>, S::Error> {
        Ok(FieldValueResolver(match self {
            FieldValue::Ref(v) => Resolver::Ref(v.serialize(serializer)?),
            FieldValue::View(v) => Resolver::View(ViewEnc::from(*v).serialize(serializer)?),
        }))
    }
}

/// The root of a [`TupleWith`] or [`TupleFields`] record: `base` (if any) plus `fields`.
pub(crate) struct WithEnc<'a> {
    pub(crate) timestamp: i64,
    pub(crate) base: Option<&'a TupleView<'a>>,
    pub(crate) fields: &'a [(&'a str, FieldValue<'a>)],
}

impl<'a> From<TupleWith<'a>> for WithEnc<'a> {
    fn from(with: TupleWith<'a>) -> WithEnc<'a> {
        WithEnc {
            timestamp: with.base.timestamp(),
            base: Some(with.base),
            fields: with.fields,
        }
    }
}

impl<'a> From<TupleFields<'a>> for WithEnc<'a> {
    fn from(t: TupleFields<'a>) -> WithEnc<'a> {
        WithEnc {
            timestamp: t.timestamp,
            base: None,
            fields: t.fields,
        }
    }
}

/// The resolver of a [`WithEnc`].
pub(crate) struct WithResolver {
    meta: VecResolver,
    fields: VecResolver,
}

impl WithEnc<'_> {
    /// Number of fields written: the view's not overridden, plus the added ones.
    fn field_count(&self) -> usize {
        let kept = self.base.map_or(0, |base| {
            base.fields()
                .iter()
                .filter(|(k, _)| !self.overridden(k))
                .count()
        });
        kept + self.fields.len()
    }

    fn overridden(&self, key: &str) -> bool {
        self.fields.iter().any(|(name, _)| *name == key)
    }

    fn base_fields(&self) -> &[rkyv::collections::util::Entry<ArchivedString, ArchivedValue>] {
        self.base.map_or(&[], |base| base.fields().as_archived())
    }
}

impl Archive for WithEnc<'_> {
    type Archived = ArchivedTuple;
    type Resolver = WithResolver;

    fn resolve(&self, resolver: WithResolver, out: Place<ArchivedTuple>) {
        rkyv::munge::munge!(let ArchivedTuple { timestamp, meta, fields } = out);
        self.timestamp.resolve((), timestamp);
        let meta_len = self.base.map_or(0, |base| base.meta().len());
        ArchivedVec::resolve_from_len(meta_len, resolver.meta, meta);
        ArchivedVec::resolve_from_len(self.field_count(), resolver.fields, fields);
    }
}

/// The entries of a [`TupleWith`]'s fields: the view's not overridden, then the added ones.
#[derive(Clone)]
struct WithFields<'w, 'a> {
    with: &'w WithEnc<'a>,
    /// Next index into the view's fields, then (past them) into the added ones.
    next: usize,
    left: usize,
}

type FieldEntry<'a> = EntryAdapter<KeyEnc<'a>, FieldValue<'a>, KeyEnc<'a>, FieldValue<'a>>;

impl<'w, 'a: 'w> Iterator for WithFields<'w, 'a> {
    type Item = FieldEntry<'w>;

    fn next(&mut self) -> Option<FieldEntry<'w>> {
        let base = self.with.base_fields();
        while self.next < base.len() {
            let entry = &base[self.next];
            self.next += 1;
            let key = entry.key.as_str();
            if !self.with.overridden(key) {
                self.left -= 1;
                return Some(EntryAdapter::new(
                    KeyEnc(key),
                    FieldValue::View(ValueView::new(&entry.value)),
                ));
            }
        }
        let (key, value) = self.with.fields.get(self.next - base.len())?;
        self.next += 1;
        self.left -= 1;
        Some(EntryAdapter::new(KeyEnc(key), *value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for WithFields<'_, '_> {}

impl<S> Serialize<S> for WithEnc<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<WithResolver, S::Error> {
        let meta = match self.base {
            Some(base) => MapItems::serialize_with(&base.meta(), serializer)?,
            None => MapItems::serialize_with(&MapView::EMPTY, serializer)?,
        };
        let iter = WithFields {
            with: self,
            next: 0,
            left: self.field_count(),
        };
        let fields = ArchivedVec::serialize_from_iter::<FieldEntry<'_>, _, _>(iter, serializer)?;
        Ok(WithResolver { meta, fields })
    }
}

/// A [`TupleWith`] written by splicing (see [`SpliceEnc`]) when it adds at most this many fields;
/// more are archived field by field ([`WithEnc`]).
pub(crate) const SPLICE_MAX_EXTRA: usize = 16;

/// Size of a map entry (key, then value).
const ENTRY_SIZE: usize = size_of::<Entry<ArchivedString, ArchivedValue>>();
/// Offset of an entry's value.
const ENTRY_VALUE: usize = offset_of!(Entry<ArchivedString, ArchivedValue>, value);
/// Offset of an entry's key.
const ENTRY_KEY: usize = offset_of!(Entry<ArchivedString, ArchivedValue>, key);
/// Offset of a string, byte string, list or map inside an [`ArchivedValue`]: after the one-byte
/// tag, aligned to 4.
const PAYLOAD_IN_VALUE: usize = align_of::<ArchivedVec<ArchivedValue>>();
/// Offset of an out-of-line string's 32-bit relative pointer inside the string (after its length).
const STRING_OFFSET: usize = 4;
/// Tags of the variants that point elsewhere (declaration order of `Value`; checked by tests).
const TAG_STRING: u8 = 4;
const TAG_BYTES: u8 = 5;
const _: () = assert!(ENTRY_SIZE == 24 && ENTRY_KEY == 0 && ENTRY_VALUE == 8);
const _: () = assert!(PAYLOAD_IN_VALUE == 4 && align_of::<ArchivedString>() == 4);
const _: () = assert!(size_of::<ArchivedString>() == 8 && size_of::<ArchivedValue>() == 16);

/// Moves an archived entry (24 bytes, copied out of an archive) from position `from` to `to` in
/// the same record: each 32-bit relative pointer in it (an out-of-line key or string, a byte
/// string, a list or a map) is shifted so it still reaches the same bytes. `None` if a pointer
/// would not fit 32 bits (records that large are refused before).
pub(crate) fn move_entry(entry: &mut [u8; ENTRY_SIZE], from: usize, to: usize) -> Option<()> {
    let word = |i: usize| u64::from_le_bytes(entry[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let moved = move_entry_words([word(0), word(1), word(2)], from, to)?;
    for (i, w) in moved.iter().enumerate() {
        entry[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    Some(())
}

/// [`move_entry`] on the entry's three little-endian words, in registers (byte-wise copies
/// through memory stall the loads that follow them).
#[inline]
pub(crate) fn move_entry_words(entry: [u64; 3], from: usize, to: usize) -> Option<[u64; 3]> {
    const _: () = assert!(ENTRY_KEY == 0 && ENTRY_VALUE == 8 && PAYLOAD_IN_VALUE == 4);
    const _: () = assert!(STRING_OFFSET == 4);
    let delta = i64::try_from(from).ok()? - i64::try_from(to).ok()?;
    // The 32-bit pointer at bit `shift` of `word`, moved.
    let shift = |word: u64, shift: u32| -> Option<u64> {
        let rel = (word >> shift) as u32 as i32;
        let moved = i32::try_from(i64::from(rel) + delta).ok()? as u32;
        Some(word & !(0xffff_ffff_u64 << shift) | u64::from(moved) << shift)
    };
    // rkyv marks an out-of-line string by `10` in the top bits of its first byte, which no
    // inline (UTF-8) string starts with.
    let out_of_line = |first: u64| first as u8 & 0xc0 == 0x80;
    let [mut key, mut value, mut rest] = entry;
    // The key: its offset sits after its length, in the high half of the first word.
    if out_of_line(key) {
        key = shift(key, 32)?;
    }
    // The value: its tag is the low byte of the second word, its payload starts in the high
    // half (a string's offset, after its length, in the low half of the third word).
    match value as u8 {
        TAG_STRING if out_of_line(value >> 32) => rest = shift(rest, 0)?,
        TAG_BYTES | check::TAG_LIST | check::TAG_MAP => value = shift(value, 32)?,
        _ => {}
    }
    Some([key, value, rest])
}

/// Where `part` (a slice inside `whole`) starts, counted from the start of `whole`.
pub(crate) fn offset_in(whole: &[u8], part: *const u8) -> Option<usize> {
    let off = (part as usize).checked_sub(whole.as_ptr() as usize)?;
    (off <= whole.len()).then_some(off)
}

thread_local! {
    /// Scratch space where a splice archives its added fields (reused: no allocation per tuple
    /// once it has grown to the largest).
    static SPLICE_SCRATCH: std::cell::RefCell<(rkyv::util::AlignedVec<16>, rkyv::ser::allocator::Arena)> =
        std::cell::RefCell::new((rkyv::util::AlignedVec::new(), rkyv::ser::allocator::Arena::new()));
}

/// A [`TupleWith`] written by splicing, so the received tuple is not archived again field by
/// field: the record is the base record's bytes as they are, then the added fields' out-of-line
/// bytes, then a new list of field entries (the base's entries not overridden, each copied and
/// its relative pointers shifted by how far it moved, then the added ones), then a new root that
/// points at the base's metadata and the new entries. The base's own entries and root stay in
/// the record, unreferenced. The record reads exactly as the [`WithEnc`] one does (same
/// timestamp, metadata and fields in the same order) and passes the same validation; only the
/// bytes differ. Copies, one pass over the base's entries and archives only the added fields:
/// a relay costs about a `memcpy` of the record.
///
/// Only for a `base` whose entries lie inside its bytes (every validated or trusted view).
pub(crate) struct SpliceEnc<'a> {
    pub(crate) with: TupleWith<'a>,
}

impl SpliceEnc<'_> {
    /// Whether `with` can be spliced: few enough added fields, and positions that fit the
    /// format's 32-bit relative pointers with room to spare.
    pub(crate) fn applies(with: &TupleWith<'_>) -> bool {
        with.fields.len() <= SPLICE_MAX_EXTRA
            && with.base.as_bytes().len() < (i32::MAX as usize) / 4
    }
}

/// The resolver of a [`SpliceEnc`]: positions of the metadata and of the new field entries.
pub(crate) struct SpliceResolver {
    meta: (usize, usize),
    fields: (usize, usize),
}

impl Archive for SpliceEnc<'_> {
    type Archived = ArchivedTuple;
    type Resolver = SpliceResolver;

    fn resolve(&self, resolver: SpliceResolver, out: Place<ArchivedTuple>) {
        rkyv::munge::munge!(let ArchivedTuple { timestamp, meta, fields } = out);
        self.with.base.timestamp().resolve((), timestamp);
        let (meta_pos, meta_len) = resolver.meta;
        ArchivedVec::resolve_from_len(meta_len, VecResolver::from_pos(meta_pos), meta);
        let (fields_pos, fields_len) = resolver.fields;
        ArchivedVec::resolve_from_len(fields_len, VecResolver::from_pos(fields_pos), fields);
    }
}

impl<S> Serialize<S> for SpliceEnc<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<SpliceResolver, S::Error> {
        use rkyv::ser::WriterExt as _;
        let fail = |what: &str| S::Error::new(SpliceError(what.to_owned()));
        let with = &self.with;
        let base = with.base.as_bytes();
        let start = serializer.pos();
        if !start.is_multiple_of(16) || !SpliceEnc::applies(with) {
            return Err(fail(
                "a splice starts at a 16-byte boundary with few added fields",
            ));
        }
        let fields = with.base.fields().as_archived();
        let meta = with.base.meta().as_archived();
        let meta_at = offset_in(base, meta.as_ptr().cast()).unwrap_or(0);
        let fields_at = offset_in(base, fields.as_ptr().cast())
            .filter(|at| at + fields.len() * ENTRY_SIZE <= base.len())
            .ok_or_else(|| fail("the base's entries lie outside its bytes"))?;
        serializer.write(base)?;
        serializer.align(16)?;
        // The added fields, archived where they will land relative to a 16-byte boundary: their
        // out-of-line bytes, then their entries (at `added`), as one archived list would be.
        SPLICE_SCRATCH.with_borrow_mut(|(scratch, arena)| {
            let bound = with.fields.iter().try_fold(
                super::encode::PAD * 2 + ENTRY_SIZE * with.fields.len(),
                |total, (key, value)| {
                    let value = super::encode::field_bound(value, 0).ok()?;
                    Some(total + key.len() + value + super::encode::PAD)
                },
            );
            let bound = bound.ok_or_else(|| fail("an added field nests too deep"))?;
            // Grown, never cleared: the serializer writes every byte it then reports as used.
            if scratch.len() < bound {
                scratch.resize(bound, 0);
            }
            let mut inner = rkyv::ser::Serializer::new(
                rkyv::ser::writer::Buffer::from(&mut scratch[..bound]),
                arena.acquire(),
                (),
            );
            let added = with
                .fields
                .iter()
                .map(|(key, value)| EntryAdapter::new(KeyEnc(key), *value));
            ArchivedVec::serialize_from_iter::<FieldEntry<'_>, _, _>(
                added,
                rkyv::rancor::Strategy::<_, S::Error>::wrap(&mut inner),
            )?;
            let end = rkyv::ser::Positional::pos(&inner.writer);
            let entries = end - ENTRY_SIZE * with.fields.len();
            let added_at = serializer.pos();
            serializer.write(&scratch[..entries])?;
            let fields_pos = serializer.pos();
            let mut count = 0;
            for (i, entry) in fields.iter().enumerate() {
                if with
                    .fields
                    .iter()
                    .any(|(name, _)| *name == entry.key.as_str())
                {
                    continue;
                }
                let from = start + fields_at + i * ENTRY_SIZE;
                let mut raw: [u8; ENTRY_SIZE] = base[from - start..from - start + ENTRY_SIZE]
                    .try_into()
                    .map_err(|_| fail("an entry of the base"))?;
                move_entry(&mut raw, from, serializer.pos())
                    .ok_or_else(|| fail("an entry moves beyond 32-bit offsets"))?;
                serializer.write(&raw)?;
                count += 1;
            }
            for j in 0..with.fields.len() {
                let at = entries + j * ENTRY_SIZE;
                let mut raw: [u8; ENTRY_SIZE] = scratch[at..at + ENTRY_SIZE]
                    .try_into()
                    .map_err(|_| fail("an added entry"))?;
                move_entry(&mut raw, added_at + at, serializer.pos())
                    .ok_or_else(|| fail("an entry moves beyond 32-bit offsets"))?;
                serializer.write(&raw)?;
                count += 1;
            }
            Ok(SpliceResolver {
                meta: (start + meta_at, meta.len()),
                fields: (fields_pos, count),
            })
        })
    }
}

/// Why a splice could not be written (the caller then archives field by field).
#[derive(Debug)]
struct SpliceError(String);

impl std::fmt::Display for SpliceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "splicing a relayed tuple: {}", self.0)
    }
}

impl std::error::Error for SpliceError {}

/// An [`ExactSizeIterator`] of `len` items made by `item(index)`; cloneable, as rkyv's
/// `serialize_from_iter` walks it twice.
#[derive(Clone)]
pub(crate) struct Indexed<F> {
    pub(crate) next: usize,
    pub(crate) len: usize,
    pub(crate) item: F,
}

impl<T, F: Fn(usize) -> T> Iterator for Indexed<F> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next >= self.len {
            return None;
        }
        self.next += 1;
        Some((self.item)(self.next - 1))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl<T, F: Fn(usize) -> T> ExactSizeIterator for Indexed<F> {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::call::{self, CallRecord};
    use super::super::{Encoder, Tuple, TupleBatch, TupleRef, Value};
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    use super::super::tests::channel;

    fn encode(e: &impl super::super::Encode) -> Vec<u8> {
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.resize(4096, 0);
        let len = Encoder::new().encode_into(e, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    fn sample() -> Tuple {
        let list = Value::List(vec![Value::Int(1), Value::from("a long string value")]);
        Tuple::new(42)
            .with_meta("topic", "room/1")
            .with_field("a", 1i64)
            .with_field("device_identifier", "sensor-7")
            .with_field("raw", vec![1u8, 2, 3])
            .with_field("list", list)
            .with_field("z", 2.5)
    }

    #[test]
    fn a_view_is_relayed_by_its_bytes() {
        let (mut tx, mut rx) = channel();
        let (mut tx2, mut rx2) = channel();
        tx.send(&sample()).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        tx2.send(&view).unwrap();
        let bytes = view.as_bytes().to_vec();
        drop(view);
        let relayed = rx2.recv_timeout(WAIT).unwrap();
        assert_eq!(relayed.as_bytes(), &bytes[..]);
        assert_eq!(relayed.to_owned(), sample());
    }

    #[test]
    fn a_view_plus_fields_is_the_tuple_with_them() {
        let (mut tx, mut rx) = channel();
        let (mut tx2, mut rx2) = channel();
        tx.send(&sample()).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        let list = view.get("list").unwrap();
        let extra = [
            ("a", FieldValue::from(ValueRef::String("replaced"))),
            ("copied", FieldValue::from(list)),
            ("n", FieldValue::from(ValueRef::Int(-1))),
        ];
        let with = TupleWith::new(&view, &extra);
        tx2.send(&with).unwrap();
        let got = rx2.recv_timeout(WAIT).unwrap().to_owned();
        let expected = sample()
            .with_field("a", "replaced")
            .with_field("copied", list.to_owned())
            .with_field("n", -1i64);
        assert_eq!(got, expected);

        // The same bytes as a borrowed tuple with those entries, in that order.
        let raw = [1u8, 2, 3];
        let items = [ValueRef::Int(1), ValueRef::String("a long string value")];
        let fields = [
            ("device_identifier", ValueRef::String("sensor-7")),
            ("list", ValueRef::List(&items)),
            ("raw", ValueRef::Bytes(&raw)),
            ("z", ValueRef::Float(2.5)),
            ("a", ValueRef::String("replaced")),
            ("copied", ValueRef::List(&items)),
            ("n", ValueRef::Int(-1)),
        ];
        let meta = [("topic", ValueRef::String("room/1"))];
        let by_ref = TupleRef {
            timestamp: 42,
            meta: &meta,
            fields: &fields,
        };
        // Reads as a borrowed tuple with those entries, in that order (the bytes differ: the
        // view's are spliced, not archived again).
        let spliced = aligned(&encode(&with));
        let read = TupleView::from_bytes(&spliced).unwrap();
        let expected = aligned(&encode(&by_ref));
        assert_same(&read, &TupleView::from_bytes(&expected).unwrap());
    }

    fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<16> {
        let mut out = rkyv::util::AlignedVec::<16>::new();
        out.extend_from_slice(bytes);
        out
    }

    /// Same timestamp, metadata and fields, in the same order.
    fn assert_same(a: &TupleView<'_>, b: &TupleView<'_>) {
        assert_eq!(a.timestamp(), b.timestamp());
        let entries = |m: MapView<'_>| -> Vec<(String, Value)> {
            m.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        assert_eq!(entries(a.meta()), entries(b.meta()));
        assert_eq!(entries(a.fields()), entries(b.fields()));
    }

    /// A base with every kind of value, short (inline) and long (out-of-line) keys and strings.
    fn rich(meta: bool) -> Tuple {
        let mut inner = std::collections::BTreeMap::new();
        inner.insert("k".to_owned(), Value::from("short"));
        inner.insert(
            "a longer key than eight".to_owned(),
            Value::Bytes(vec![9; 40]),
        );
        let mut t = Tuple::new(-7)
            .with_field("n", Value::Null)
            .with_field("b", true)
            .with_field("i", -3i64)
            .with_field("f", 0.5)
            .with_field("short", "abc")
            .with_field("a long field name", "a string longer than eight bytes")
            .with_field("bytes", vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .with_field("empty", "")
            .with_field(
                "list",
                Value::List(vec![Value::from("x".repeat(20)), Value::Int(1)]),
            )
            .with_field("map", Value::Map(inner))
            .with_field("ts", Value::Timestamp(1_700_000_000_000_000_000));
        if meta {
            t = t
                .with_meta("topic", "a/long/topic/name")
                .with_meta("q", 1i64);
        }
        t
    }

    #[test]
    fn a_splice_reads_as_the_fields_archived_again() {
        for meta in [false, true] {
            let base_bytes = encode(&rich(meta));
            let base_bytes = aligned(&base_bytes);
            let base = TupleView::from_bytes(&base_bytes).unwrap();
            let long_list = base.get("list").unwrap();
            let pool: Vec<(String, FieldValue<'_>)> = (0..SPLICE_MAX_EXTRA + 2)
                .map(|j| {
                    let value = match j % 5 {
                        0 => FieldValue::from(ValueRef::String("a long added string value")),
                        1 => FieldValue::from(long_list),
                        2 => FieldValue::from(ValueRef::Int(j as i64)),
                        3 => FieldValue::from(ValueRef::Bytes(&[7; 33])),
                        _ => FieldValue::from(ValueRef::String("tiny")),
                    };
                    // Some override the base's fields, some are new (short and long names).
                    let name = match j {
                        1 => "short".to_owned(),
                        3 => "a long field name".to_owned(),
                        6 => "map".to_owned(),
                        _ if j % 2 == 0 => format!("added field number {j}"),
                        _ => format!("x{j}"),
                    };
                    (name, value)
                })
                .collect();
            for n in 0..pool.len() {
                let extra: Vec<(&str, FieldValue<'_>)> =
                    pool[..n].iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let with = TupleWith::new(&base, &extra);
                assert_eq!(SpliceEnc::applies(&with), n <= SPLICE_MAX_EXTRA);
                let spliced = aligned(&encode(&with));
                // Validated by bytecheck like any received record.
                let read = TupleView::from_bytes(&spliced).unwrap();
                let mut buf = rkyv::util::AlignedVec::<16>::new();
                buf.resize(8192, 0);
                let len = rkyv::api::low::to_bytes_in_with_alloc::<_, _, rkyv::rancor::Error>(
                    &WithEnc::from(with),
                    rkyv::ser::writer::Buffer::from(&mut buf[..]),
                    rkyv::ser::allocator::Arena::new().acquire(),
                )
                .map(|b| rkyv::ser::Positional::pos(&b))
                .unwrap();
                let archived = aligned(&buf[..len]);
                assert_same(&read, &TupleView::from_bytes(&archived).unwrap());
                // The bound holds.
                assert!(
                    spliced.len() <= super::super::Encode::size_bound(&with).unwrap(),
                    "{n} added"
                );
            }
        }
    }

    #[test]
    fn a_spliced_tuple_is_relayed_and_spliced_again() {
        let (mut tx, mut rx) = channel();
        let (mut tx2, mut rx2) = channel();
        let (mut tx3, mut rx3) = channel();
        tx.send(&rich(true)).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        let extra = [(
            "first",
            FieldValue::from(ValueRef::String("one long value here")),
        )];
        tx2.send(&TupleWith::new(&view, &extra)).unwrap();
        let once = rx2.recv_timeout(WAIT).unwrap();
        let extra = [
            ("first", FieldValue::from(ValueRef::Int(2))),
            ("second", FieldValue::from(ValueRef::Float(2.5))),
        ];
        tx3.send(&TupleWith::new(&once, &extra)).unwrap();
        let twice = rx3.recv_timeout(WAIT).unwrap().to_owned();
        assert_eq!(
            twice,
            rich(true)
                .with_field("first", 2i64)
                .with_field("second", 2.5)
        );
    }

    #[test]
    fn call_records_and_replies_match_the_borrowed_forms() {
        let (mut tx, mut rx) = channel();
        tx.send(&sample()).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        let names = ["device_identifier", "missing", "list"];
        let arg = |i: usize| FieldValue::from(view.get(names[i]).unwrap_or(ValueView::Null));
        let record = CallRecord {
            seq: 5,
            len: names.len(),
            arg: &arg,
        };
        let items = [ValueRef::Int(1), ValueRef::String("a long string value")];
        let args = [
            ValueRef::String("sensor-7"),
            ValueRef::Null,
            ValueRef::List(&items),
        ];
        let fields = [("args", ValueRef::List(&args))];
        assert_eq!(encode(&record), encode(&TupleRef::new(5, &fields)));

        let (mut tx2, mut rx2) = channel();
        let list = view.get("list").unwrap();
        call::send_reply_ref(&mut tx2, 9, Ok(FieldValue::from(list))).unwrap();
        call::send_reply_ref(&mut tx2, 10, Err("no")).unwrap();
        let reply = rx2.recv_timeout(WAIT).unwrap();
        let (seq, value) = call::parse_reply(&reply).unwrap();
        assert_eq!((seq, value.unwrap().to_owned()), (9, list.to_owned()));
        drop(reply);
        let reply = rx2.recv_timeout(WAIT).unwrap();
        assert_eq!(call::parse_reply(&reply).unwrap().1.unwrap_err(), "no");
    }

    #[test]
    fn a_batch_keeps_tuples_past_their_records() {
        let (mut tx, mut rx) = channel();
        let mut batch = TupleBatch::new();
        for round in 0..3 {
            batch.clear();
            for i in 0..5i64 {
                tx.send(&sample().with_field("i", i + round)).unwrap();
                let view = rx.recv_timeout(WAIT).unwrap();
                batch.push(&view).unwrap();
            }
            assert_eq!(batch.len(), 5);
            for (i, t) in batch.iter().enumerate() {
                assert_eq!(t.to_owned(), sample().with_field("i", i as i64 + round));
            }
        }
        // A private view is copied as it is.
        let bytes = encode(&sample());
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let view = TupleView::from_bytes(&aligned).unwrap();
        batch.push(&view).unwrap();
        assert_eq!(batch.get(5).unwrap().to_owned(), sample());
        assert!(batch.get(6).is_none());
    }
}
