//! Writing a [`Tuple`] or [`TupleRef`] in the archived format by hand, in one pass: the bytes
//! rkyv writes, without its generic serializer, its scratch allocator or a size-bound pre-pass.
//!
//! rkyv lays an archive out depth first, children before parents: for a list or map it writes
//! each element's out-of-line parts in order (a string longer than eight bytes, a byte string,
//! a nested list's or map's own parts and elements), then pads to eight bytes and writes the
//! elements, each pointing back at its parts; the root comes last. Every padding byte is zero.
//! This module writes exactly that (the tests compare it with rkyv byte for byte, and the
//! validator's layout asserts hold for both), keeping each container's element positions on a
//! scratch stack reused across writes. A write that runs out of room fails with
//! [`Fail::Overflow`] and the caller retries with more; one that nests too deep fails with
//! [`Fail::TooDeep`] as the writer's depth check always did.

use std::collections::BTreeMap;

use rkyv::string::repr::{INLINE_CAPACITY, OUT_OF_LINE_CAPACITY};

use rkyv::collections::util::Entry;
use rkyv::string::ArchivedString;

use super::MAX_DEPTH;
use super::borrowed::{TupleRef, ValueRef};
use super::check::{ENTRY_SIZE, ENTRY_VALUE, ROOT_FIELDS, ROOT_META, ROOT_SIZE, VALUE_SIZE};
use super::relay::{FieldValue, TupleFields, TupleWith, move_entry_words, offset_in};
use super::value::{ArchivedValue, Tuple, Value};
use super::value_view::ValueView;

/// Why a hand-written archive failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// The buffer is too small.
    Overflow,
    /// Lists and maps nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A length or offset beyond the format's 32 bits (or a string beyond rkyv's 2^30 - 1
    /// bytes): left to rkyv, which says why.
    Unsupported,
}

/// The shape of one value, whatever its owner: an owned [`Value`] or a borrowed [`ValueRef`].
enum Shape<'a, N: Node + 'a> {
    /// The value's 16 bytes as two little-endian words.
    Scalar(u64, u64),
    Str(&'a str),
    Bytes(&'a [u8]),
    List(&'a [N]),
    Map(N::Entries<'a>),
}

/// A value that can be archived by hand.
trait Node: Sized {
    type Entries<'a>: ExactSizeIterator<Item = (&'a str, &'a Self)> + Clone
    where
        Self: 'a;
    fn shape(&self) -> Shape<'_, Self>;
}

/// An 8-byte scalar's 16 bytes: the tag, the payload at offset 8.
fn wide<'a, N: Node>(tag: u8, payload: u64) -> Shape<'a, N> {
    Shape::Scalar(u64::from(tag), payload)
}

/// An owned map's entries, as `(name, value)`.
#[derive(Clone)]
struct OwnedEntries<'a>(std::collections::btree_map::Iter<'a, String, Value>);

impl<'a> Iterator for OwnedEntries<'a> {
    type Item = (&'a str, &'a Value);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_str(), v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for OwnedEntries<'_> {}

fn owned_entries(map: &BTreeMap<String, Value>) -> OwnedEntries<'_> {
    OwnedEntries(map.iter())
}

impl Node for Value {
    type Entries<'a> = OwnedEntries<'a>;
    fn shape(&self) -> Shape<'_, Value> {
        match self {
            Value::Null => Shape::Scalar(0, 0),
            Value::Bool(b) => Shape::Scalar(1 | u64::from(*b) << 8, 0),
            Value::Int(i) => wide(2, *i as u64),
            Value::Float(f) => wide(3, f.to_bits()),
            Value::String(s) => Shape::Str(s),
            Value::Bytes(b) => Shape::Bytes(b),
            Value::List(items) => Shape::List(items),
            Value::Map(m) => Shape::Map(owned_entries(m)),
            Value::Timestamp(t) => wide(8, *t as u64),
        }
    }
}

/// A borrowed map's entries, as `(name, value)`.
#[derive(Clone)]
struct RefEntries<'a, 'v>(std::slice::Iter<'a, (&'v str, ValueRef<'v>)>);

impl<'a, 'v> Iterator for RefEntries<'a, 'v> {
    type Item = (&'a str, &'a ValueRef<'v>);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (*k, v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for RefEntries<'_, '_> {}

fn ref_entries<'a, 'v>(map: &'a [(&'v str, ValueRef<'v>)]) -> RefEntries<'a, 'v> {
    RefEntries(map.iter())
}

impl<'v> Node for ValueRef<'v> {
    type Entries<'a>
        = RefEntries<'a, 'v>
    where
        'v: 'a;
    fn shape(&self) -> Shape<'_, ValueRef<'v>> {
        match *self {
            ValueRef::Null => Shape::Scalar(0, 0),
            ValueRef::Bool(b) => Shape::Scalar(1 | u64::from(b) << 8, 0),
            ValueRef::Int(i) => wide(2, i as u64),
            ValueRef::Float(f) => wide(3, f.to_bits()),
            ValueRef::String(s) => Shape::Str(s),
            ValueRef::Bytes(b) => Shape::Bytes(b),
            ValueRef::List(items) => Shape::List(items),
            ValueRef::Map(m) => Shape::Map(ref_entries(m)),
            ValueRef::Timestamp(t) => wide(8, t as u64),
        }
    }
}

/// A received map's entries, as `(name, value)`.
#[derive(Clone)]
struct ArchivedEntries<'a>(std::slice::Iter<'a, Entry<ArchivedString, ArchivedValue>>);

impl<'a> Iterator for ArchivedEntries<'a> {
    type Item = (&'a str, &'a ArchivedValue);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|e| (e.key.as_str(), &e.value))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for ArchivedEntries<'_> {}

/// A value read from a received record is written anew from what it means, not copied: its
/// padding bytes (which no check looks at) do not travel on.
impl Node for ArchivedValue {
    type Entries<'a> = ArchivedEntries<'a>;
    fn shape(&self) -> Shape<'_, ArchivedValue> {
        match self {
            ArchivedValue::Null => Shape::Scalar(0, 0),
            ArchivedValue::Bool(b) => Shape::Scalar(1 | u64::from(*b) << 8, 0),
            ArchivedValue::Int(i) => wide(2, i.to_native() as u64),
            ArchivedValue::Float(f) => wide(3, f.to_native().to_bits()),
            ArchivedValue::String(s) => Shape::Str(s.as_str()),
            ArchivedValue::Bytes(b) => Shape::Bytes(b.as_slice()),
            ArchivedValue::List(items) => Shape::List(items.as_slice()),
            ArchivedValue::Map(m) => Shape::Map(ArchivedEntries(m.as_slice().iter())),
            ArchivedValue::Timestamp(t) => wide(8, t.to_native() as u64),
        }
    }
}

/// A field's value as the writer takes it: a borrowed value, or a received list or map (read
/// in place; a received scalar, string or byte string is borrowed as it is).
enum Field<'a> {
    Ref(ValueRef<'a>),
    List(&'a [ArchivedValue]),
    Map(&'a [Entry<ArchivedString, ArchivedValue>]),
}

impl<'a> Field<'a> {
    #[inline]
    fn of(value: FieldValue<'a>) -> Field<'a> {
        let view = match value {
            FieldValue::Ref(r) => return Field::Ref(r),
            FieldValue::View(view) => view,
        };
        Field::Ref(match view {
            ValueView::Null => ValueRef::Null,
            ValueView::Bool(b) => ValueRef::Bool(b),
            ValueView::Int(i) => ValueRef::Int(i),
            ValueView::Float(f) => ValueRef::Float(f),
            ValueView::String(s) => ValueRef::String(s),
            ValueView::Bytes(b) => ValueRef::Bytes(b),
            ValueView::Timestamp(t) => ValueRef::Timestamp(t),
            ValueView::List(items) => return Field::List(items.as_archived()),
            ValueView::Map(map) => return Field::Map(map.as_archived()),
        })
    }
}

/// The value of a record's one field ([`archive_one_field`]).
#[derive(Clone, Copy)]
pub(crate) enum OneValue<'a> {
    /// A value.
    Value(FieldValue<'a>),
    /// A list of `len` values made one at a time by `item(0 .. len)`, each at most twice.
    List {
        len: usize,
        item: &'a dyn Fn(usize) -> FieldValue<'a>,
    },
}

/// Archives a record with one field, `key`, and (if `count` is given) one meta entry,
/// `count_key`: the form of function calls and their replies
/// ([`call`](super::call)). Writes the bytes rkyv writes for the same tuple.
pub(crate) fn archive_one_field(
    timestamp: i64,
    count: Option<(&str, i64)>,
    key: &str,
    value: OneValue<'_>,
    buf: &mut [u8],
    scratch: &mut Vec<u32>,
) -> Result<usize, Fail> {
    let mut out = Out::new(buf, scratch);
    let meta = match count {
        Some((name, n)) => out.map(ref_entries(&[(name, ValueRef::Int(n))]), 0)?,
        None => out.map(ref_entries(&[]), 0)?,
    };
    // The one entry: its key's and value's parts, then the entry.
    let key_at = out.string_parts(key)?;
    let (value_at, list) = match value {
        OneValue::Value(v) => (out.field_parts(&Field::of(v), 0)?, None),
        OneValue::List { len, item } => {
            let items = out.field_list(len, item, deeper(0)?)?;
            (items.pos as u32, Some(items.len))
        }
    };
    let pos = out.align8()?;
    let at = out.pos;
    let key_word = string_word(key, key_at, at);
    let (lo, hi) = match (value, list) {
        (_, Some(len)) => tagged(6, vec_word(value_at as usize, len, at + ENTRY_VALUE + 4)),
        (OneValue::Value(v), None) => field_words(&Field::of(v), value_at, at + ENTRY_VALUE),
        (OneValue::List { .. }, None) => unreachable!("a list's length is known once written"),
    };
    let slot: &mut [u8; ENTRY_SIZE] = out.slot(at)?;
    slot[..8].copy_from_slice(&key_word.to_le_bytes());
    slot[8..16].copy_from_slice(&lo.to_le_bytes());
    slot[16..].copy_from_slice(&hi.to_le_bytes());
    out.root(timestamp, meta, Elements { pos, len: 1 })
}

/// Archives a tuple of `fields` (written in this order) and no metadata.
pub(crate) fn archive_fields(
    fields: &TupleFields<'_>,
    buf: &mut [u8],
    scratch: &mut Vec<u32>,
) -> Result<usize, Fail> {
    let mut out = Out::new(buf, scratch);
    let meta = out.map(ref_entries(&[]), 0)?;
    let entries = out.field_map(fields.fields)?;
    out.root(fields.timestamp, meta, entries)
}

/// Archives a received tuple plus (or overriding) some fields by splicing, as
/// [`SpliceEnc`](super::relay::SpliceEnc) does, byte for byte: the base record as it is, then
/// the added fields' parts, then the base's entries not overridden (moved) and the added ones,
/// then a root pointing at the base's metadata and the new entries. `Unsupported` when the
/// base's entries do not lie inside its bytes (the caller then archives field by field).
pub(crate) fn archive_splice(
    with: &TupleWith<'_>,
    buf: &mut [u8],
    scratch: &mut Vec<u32>,
) -> Result<usize, Fail> {
    let base = with.base.as_bytes();
    let fields = with.base.fields().as_archived();
    let meta = with.base.meta().as_archived();
    let meta_at = offset_in(base, meta.as_ptr().cast()).unwrap_or(0);
    let fields_at = offset_in(base, fields.as_ptr().cast())
        .filter(|at| at + fields.len() * ENTRY_SIZE <= base.len())
        .ok_or(Fail::Unsupported)?;
    let mut out = Out::new(buf, scratch);
    out.write(base)?;
    out.align16()?;
    let first = out.scratch.len();
    for (key, value) in with.fields {
        let key_at = out.string_parts(key)?;
        let value_at = out.field_parts(&Field::of(*value), 0)?;
        out.scratch.push(key_at);
        out.scratch.push(value_at);
    }
    let pos = out.align8()?;
    let mut count = 0;
    for (i, entry) in fields.iter().enumerate() {
        let key = entry.key.as_str();
        if with.fields.iter().any(|(name, _)| *name == key) {
            continue;
        }
        let from = fields_at + i * ENTRY_SIZE;
        let raw = base[from..]
            .first_chunk::<ENTRY_SIZE>()
            .ok_or(Fail::Unsupported)?;
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let at = out.pos;
        let moved =
            move_entry_words([word(0), word(1), word(2)], from, at).ok_or(Fail::Unsupported)?;
        let slot: &mut [u8; ENTRY_SIZE] = out.slot(at)?;
        for (i, w) in moved.iter().enumerate() {
            slot[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        count += 1;
    }
    for (j, (key, value)) in with.fields.iter().enumerate() {
        let at = out.pos;
        let (key_at, value_at) = (out.scratch[first + 2 * j], out.scratch[first + 2 * j + 1]);
        out.entry(at, key, key_at, &Field::of(*value), value_at)?;
        count += 1;
    }
    out.scratch.truncate(first);
    let meta = Elements {
        pos: meta_at,
        len: meta.len(),
    };
    out.root(with.base.timestamp(), meta, Elements { pos, len: count })
}

/// Archives `tuple` into the front of `buf` (which must start 16-byte aligned to be read in
/// place) and returns the length; `scratch` is reused across calls.
pub(crate) fn archive_tuple(
    tuple: &Tuple,
    buf: &mut [u8],
    scratch: &mut Vec<u32>,
) -> Result<usize, Fail> {
    let mut out = Out::new(buf, scratch);
    let meta = out.map(owned_entries(&tuple.meta), 0)?;
    let fields = out.map(owned_entries(&tuple.fields), 0)?;
    out.root(tuple.timestamp, meta, fields)
}

/// As [`archive_tuple`], for a borrowed tuple.
pub(crate) fn archive_tuple_ref(
    tuple: &TupleRef<'_>,
    buf: &mut [u8],
    scratch: &mut Vec<u32>,
) -> Result<usize, Fail> {
    let mut out = Out::new(buf, scratch);
    let meta = out.map(ref_entries(tuple.meta), 0)?;
    let fields = out.map(ref_entries(tuple.fields), 0)?;
    out.root(tuple.timestamp, meta, fields)
}

/// A container's elements once written: where they start and how many.
#[derive(Clone, Copy)]
struct Elements {
    pos: usize,
    len: usize,
}

struct Out<'b, 's> {
    buf: &'b mut [u8],
    pos: usize,
    /// Positions of the parts of the elements of the containers being written, innermost last.
    scratch: &'s mut Vec<u32>,
}

impl<'b, 's> Out<'b, 's> {
    fn new(buf: &'b mut [u8], scratch: &'s mut Vec<u32>) -> Out<'b, 's> {
        // Offsets are 32-bit: use at most the first 2 GiB.
        let len = buf.len().min(i32::MAX as usize);
        scratch.clear();
        Out {
            buf: &mut buf[..len],
            pos: 0,
            scratch,
        }
    }

    /// Appends `bytes`; returns where they start.
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<usize, Fail> {
        let at = self.pos;
        let end = at.checked_add(bytes.len()).ok_or(Fail::Overflow)?;
        self.buf
            .get_mut(at..end)
            .ok_or(Fail::Overflow)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(at)
    }

    /// The next `N` bytes, to be filled in; advances past them.
    #[inline]
    fn slot<const N: usize>(&mut self, at: usize) -> Result<&mut [u8; N], Fail> {
        let slot = self
            .buf
            .get_mut(at..)
            .and_then(<[u8]>::first_chunk_mut::<N>)
            .ok_or(Fail::Overflow)?;
        self.pos = at + N;
        Ok(slot)
    }

    /// Pads with zeros to a multiple of 8; returns the position. Writes eight zeros and keeps
    /// the padding (no variable-length copy): an alignment is always followed by at least the
    /// root's 24 bytes, so a buffer without eight bytes left would overflow anyway.
    #[inline]
    fn align8(&mut self) -> Result<usize, Fail> {
        let at = self.pos;
        *self.slot::<8>(at)? = [0; 8];
        self.pos = at + (at.wrapping_neg() & 7);
        Ok(self.pos)
    }

    /// Writes a string's out-of-line bytes, if it has any; returns where they start.
    #[inline]
    fn string_parts(&mut self, s: &str) -> Result<u32, Fail> {
        if s.len() <= INLINE_CAPACITY {
            return Ok(0);
        }
        if s.len() > OUT_OF_LINE_CAPACITY as usize {
            return Err(Fail::Unsupported);
        }
        Ok(self.write(s.as_bytes())? as u32)
    }

    /// Writes a value's out-of-line parts, `level` containers deep; returns where they start.
    fn value_parts<N: Node>(&mut self, value: &N, level: usize) -> Result<u32, Fail> {
        Ok(match value.shape() {
            Shape::Scalar(..) => 0,
            Shape::Str(s) => self.string_parts(s)?,
            Shape::Bytes(b) => self.write(b)? as u32,
            Shape::List(items) => self.list(items, deeper(level)?)?.pos as u32,
            Shape::Map(entries) => self.map(entries, deeper(level)?)?.pos as u32,
        })
    }

    /// Writes a list's parts and elements, whose values sit `level` containers deep.
    fn list<N: Node>(&mut self, items: &[N], level: usize) -> Result<Elements, Fail> {
        let base = self.scratch.len();
        for item in items {
            let at = self.value_parts(item, level)?;
            self.scratch.push(at);
        }
        let pos = self.align8()?;
        for (i, item) in items.iter().enumerate() {
            let at = self.pos;
            let (lo, hi) = value_words(item, self.scratch[base + i], at);
            let slot: &mut [u8; VALUE_SIZE] = self.slot(at)?;
            slot[..8].copy_from_slice(&lo.to_le_bytes());
            slot[8..].copy_from_slice(&hi.to_le_bytes());
        }
        self.scratch.truncate(base);
        Ok(Elements {
            pos,
            len: items.len(),
        })
    }

    /// Writes a map's parts and entries, whose values sit `level` containers deep.
    fn map<'a, N: Node + 'a>(
        &mut self,
        entries: impl ExactSizeIterator<Item = (&'a str, &'a N)> + Clone,
        level: usize,
    ) -> Result<Elements, Fail> {
        let base = self.scratch.len();
        let len = entries.len();
        for (key, value) in entries.clone() {
            let key_at = self.string_parts(key)?;
            let value_at = self.value_parts(value, level)?;
            self.scratch.push(key_at);
            self.scratch.push(value_at);
        }
        let pos = self.align8()?;
        for (i, (key, value)) in entries.enumerate() {
            let at = self.pos;
            let (key_at, value_at) = (self.scratch[base + 2 * i], self.scratch[base + 2 * i + 1]);
            let key = string_word(key, key_at, at);
            let (lo, hi) = value_words(value, value_at, at + ENTRY_VALUE);
            let slot: &mut [u8; ENTRY_SIZE] = self.slot(at)?;
            slot[..8].copy_from_slice(&key.to_le_bytes());
            slot[8..16].copy_from_slice(&lo.to_le_bytes());
            slot[16..].copy_from_slice(&hi.to_le_bytes());
        }
        self.scratch.truncate(base);
        Ok(Elements { pos, len })
    }

    /// Writes a field value's out-of-line parts, `level` containers deep.
    #[inline]
    fn field_parts(&mut self, value: &Field<'_>, level: usize) -> Result<u32, Fail> {
        Ok(match value {
            Field::Ref(v) => self.value_parts(v, level)?,
            Field::List(items) => self.list(items, deeper(level)?)?.pos as u32,
            Field::Map(entries) => {
                let entries = ArchivedEntries(entries.iter());
                self.map(entries, deeper(level)?)?.pos as u32
            }
        })
    }

    /// Writes a list of `len` field values made by `item`, whose values sit `level`
    /// containers deep: each value's parts, then the values.
    fn field_list<'a>(
        &mut self,
        len: usize,
        item: &'a dyn Fn(usize) -> FieldValue<'a>,
        level: usize,
    ) -> Result<Elements, Fail> {
        let base = self.scratch.len();
        for i in 0..len {
            let at = self.field_parts(&Field::of(item(i)), level)?;
            self.scratch.push(at);
        }
        let pos = self.align8()?;
        for i in 0..len {
            let at = self.pos;
            let (lo, hi) = field_words(&Field::of(item(i)), self.scratch[base + i], at);
            let slot: &mut [u8; VALUE_SIZE] = self.slot(at)?;
            slot[..8].copy_from_slice(&lo.to_le_bytes());
            slot[8..].copy_from_slice(&hi.to_le_bytes());
        }
        self.scratch.truncate(base);
        Ok(Elements { pos, len })
    }

    /// Writes a map of field values (in the given order), whose values sit at the top level.
    fn field_map(&mut self, fields: &[(&str, FieldValue<'_>)]) -> Result<Elements, Fail> {
        let base = self.scratch.len();
        for (key, value) in fields {
            let key_at = self.string_parts(key)?;
            let value_at = self.field_parts(&Field::of(*value), 0)?;
            self.scratch.push(key_at);
            self.scratch.push(value_at);
        }
        let pos = self.align8()?;
        for (i, (key, value)) in fields.iter().enumerate() {
            let (key_at, value_at) = (self.scratch[base + 2 * i], self.scratch[base + 2 * i + 1]);
            self.entry(self.pos, key, key_at, &Field::of(*value), value_at)?;
        }
        self.scratch.truncate(base);
        Ok(Elements {
            pos,
            len: fields.len(),
        })
    }

    /// Writes the map entry `key: value` at `at`, their parts at `key_at` and `value_at`.
    #[inline]
    fn entry(
        &mut self,
        at: usize,
        key: &str,
        key_at: u32,
        value: &Field<'_>,
        value_at: u32,
    ) -> Result<(), Fail> {
        let key = string_word(key, key_at, at);
        let (lo, hi) = field_words(value, value_at, at + ENTRY_VALUE);
        let slot: &mut [u8; ENTRY_SIZE] = self.slot(at)?;
        slot[..8].copy_from_slice(&key.to_le_bytes());
        slot[8..16].copy_from_slice(&lo.to_le_bytes());
        slot[16..].copy_from_slice(&hi.to_le_bytes());
        Ok(())
    }

    /// Pads with zeros to a multiple of 16 (where a splice puts the added fields).
    fn align16(&mut self) -> Result<usize, Fail> {
        let pad = self.pos.wrapping_neg() & 15;
        self.write(&[0; 16][..pad])?;
        Ok(self.pos)
    }

    /// Writes the root after its two maps; returns the archive's length.
    fn root(mut self, timestamp: i64, meta: Elements, fields: Elements) -> Result<usize, Fail> {
        let at = self.align8()?;
        let mut root = [0; ROOT_SIZE];
        root[..8].copy_from_slice(&timestamp.to_le_bytes());
        root[ROOT_META..ROOT_META + 8]
            .copy_from_slice(&vec_word(meta.pos, meta.len, at + ROOT_META).to_le_bytes());
        root[ROOT_FIELDS..ROOT_FIELDS + 8]
            .copy_from_slice(&vec_word(fields.pos, fields.len, at + ROOT_FIELDS).to_le_bytes());
        self.write(&root)?;
        Ok(self.pos)
    }
}

/// The 16 bytes of `value` written at `at`, whose parts start at `parts`, as two words.
///
/// Positions lie in a buffer of at most 2 GiB ([`Out::new`]), so every offset between two of
/// them fits rkyv's 32 bits; lengths too, as the parts they count were written into it (and
/// strings beyond rkyv's limit were refused when their parts were written).
#[inline]
fn value_words<N: Node>(value: &N, parts: u32, at: usize) -> (u64, u64) {
    let (tag, payload) = match value.shape() {
        Shape::Scalar(lo, hi) => return (lo, hi),
        Shape::Str(s) => (4, string_word(s, parts, at + 4)),
        Shape::Bytes(b) => (5, vec_word(parts as usize, b.len(), at + 4)),
        Shape::List(items) => (6, vec_word(parts as usize, items.len(), at + 4)),
        Shape::Map(entries) => (7, vec_word(parts as usize, entries.len(), at + 4)),
    };
    tagged(tag, payload)
}

/// A value's two words from its tag and the eight bytes of payload that sit at offset 4: the
/// payload's low half in the first word, its high half in the second.
#[inline]
fn tagged(tag: u64, payload: u64) -> (u64, u64) {
    (tag | payload << 32, payload >> 32)
}

/// As [`value_words`], for a field value.
#[inline]
fn field_words(value: &Field<'_>, parts: u32, at: usize) -> (u64, u64) {
    match value {
        Field::Ref(v) => value_words(v, parts, at),
        Field::List(items) => tagged(6, vec_word(parts as usize, items.len(), at + 4)),
        Field::Map(entries) => tagged(7, vec_word(parts as usize, entries.len(), at + 4)),
    }
}

/// The eight bytes of string `s` written at `at`, whose bytes (if out of line) start at `parts`.
#[inline]
fn string_word(s: &str, parts: u32, at: usize) -> u64 {
    if s.len() <= INLINE_CAPACITY {
        // The bytes, then 0xff up to eight (built in a register: a short copy would go
        // through memory and stall the read that follows it).
        return s.bytes().enumerate().fold(u64::MAX, |word, (i, b)| {
            word & !(0xff << (8 * i)) | u64::from(b) << (8 * i)
        });
    }
    debug_assert!(s.len() <= OUT_OF_LINE_CAPACITY as usize);
    // The length with `10` inserted as bits 6 and 7 of its low byte (rkyv's out-of-line mark).
    let len = s.len() as u32;
    let len = (len & 0x3f) | 0x80 | ((len & !0x3f) << 2);
    u64::from(len) | u64::from(offset(parts as usize, at)) << 32
}

/// The eight bytes of a vector written at `at` whose `len` elements start at `pos`.
#[inline]
fn vec_word(pos: usize, len: usize, at: usize) -> u64 {
    debug_assert!(u32::try_from(len).is_ok());
    u64::from(offset(pos, at)) | (len as u64) << 32
}

/// `target - at` as rkyv's 32-bit relative offset, as its bits.
#[inline]
fn offset(target: usize, at: usize) -> u32 {
    debug_assert!(target <= i32::MAX as usize && at <= i32::MAX as usize);
    (target as i64 - at as i64) as i32 as u32
}

fn deeper(level: usize) -> Result<usize, Fail> {
    if level >= MAX_DEPTH {
        return Err(Fail::TooDeep);
    }
    Ok(level + 1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rkyv::rancor;

    use super::*;
    use crate::tuple::encode::both_ways;
    use crate::tuple::{MapRef, TupleView};
    use crate::tuple::{TupleFields, TupleWith};

    fn nested(levels: usize) -> Value {
        let mut v = Value::from("a string past the inline eight");
        for i in 0..levels {
            v = if i % 2 == 0 {
                Value::List(vec![v, Value::Int(i as i64)])
            } else {
                Value::Map(BTreeMap::from([
                    ("m".to_owned(), v),
                    ("é".to_owned(), Value::Null),
                ]))
            };
        }
        v
    }

    fn samples() -> Vec<Tuple> {
        let every = Value::List(vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Float(f64::NAN),
            Value::from(""),
            Value::from("inline8!"),
            Value::from("nine byte"),
            Value::from("out of line, with ünïcödé"),
            Value::Bytes(vec![0xff, 0, 0x80]),
            Value::Bytes(vec![]),
            Value::List(vec![]),
            Value::Map(BTreeMap::new()),
            Value::Timestamp(-3),
        ]);
        vec![
            Tuple::default(),
            Tuple::new(5)
                .with_field("a", 1)
                .with_meta("topic", "room/1"),
            Tuple::new(-1)
                .with_field("every", every)
                .with_field("a key longer than eight", "v")
                .with_field("bytes", vec![7u8; 1000])
                .with_meta(
                    "m",
                    Value::Map(BTreeMap::from([("x".to_owned(), Value::Null)])),
                ),
            Tuple::new(0).with_field("deep", nested(MAX_DEPTH)),
        ]
    }

    /// `value` borrowed, with its lists and maps leaked (a test's few bytes).
    fn borrow(value: &Value) -> ValueRef<'static> {
        let value: &'static Value = Box::leak(Box::new(value.clone()));
        match value {
            Value::List(items) => ValueRef::List(Box::leak(
                items.iter().map(borrow).collect::<Vec<_>>().into(),
            )),
            Value::Map(m) => ValueRef::Map(borrow_map(m)),
            other => other.as_ref().expect("a scalar, string or bytes"),
        }
    }

    fn borrow_map(m: &BTreeMap<String, Value>) -> MapRef<'static> {
        Box::leak(
            m.iter()
                .map(|(k, v)| (&*Box::leak(k.clone().into_boxed_str()), borrow(v)))
                .collect::<Vec<_>>()
                .into(),
        )
    }

    fn by_rkyv(tuple: &Tuple) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(tuple)
            .expect("serializes")
            .to_vec()
    }

    #[test]
    fn splices_and_field_tuples_are_what_their_serializers_write() {
        let base = Tuple::new(77)
            .with_meta("source", "a meta value longer than eight")
            .with_field("temperature", 21i64)
            .with_field("room", "kitchen")
            .with_field("note", "a note longer than eight bytes")
            .with_field("list", Value::List(vec![Value::Int(1), Value::from("xy")]));
        let bytes = by_rkyv(&base);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let view = TupleView::from_bytes(&aligned).unwrap();
        let received = view.get("list").unwrap();
        let extras: [&[(&str, FieldValue<'_>)]; 4] = [
            &[],
            &[("echoed", FieldValue::View(ValueView::Int(21)))],
            &[
                (
                    "room",
                    FieldValue::Ref(ValueRef::String("overridden and long")),
                ),
                ("copy", FieldValue::View(received)),
                ("n", FieldValue::Ref(ValueRef::Null)),
            ],
            &[(
                "a key that is rather long",
                FieldValue::Ref(ValueRef::Bytes(&[9; 20])),
            )],
        ];
        for extra in extras {
            let with = TupleWith::new(&view, extra);
            let (hand, theirs) = both_ways(&with).unwrap();
            assert_eq!(hand, theirs, "{} added", extra.len());
            let mut copy = rkyv::util::AlignedVec::<16>::new();
            copy.extend_from_slice(&hand);
            let read = TupleView::from_bytes(&copy).unwrap();
            assert_eq!(
                read.fields().len(),
                view.fields().len() + extra.len()
                    - extra.iter().filter(|(k, _)| view.get(k).is_some()).count()
            );
            let fields = TupleFields {
                timestamp: 5,
                fields: extra,
            };
            let (hand, theirs) = both_ways(&fields).unwrap();
            assert_eq!(hand, theirs, "fields: {} added", extra.len());
        }
    }

    #[test]
    fn writes_the_bytes_rkyv_writes() {
        let mut scratch = Vec::new();
        for tuple in samples() {
            let expected = by_rkyv(&tuple);
            let mut buf = rkyv::util::AlignedVec::<16>::new();
            buf.resize(expected.len() + 64, 0xaa);
            let len = archive_tuple(&tuple, &mut buf, &mut scratch).expect("fits");
            assert_eq!(&buf[..len], &expected[..], "owned {tuple:?}");
            assert_eq!(
                TupleView::from_bytes(&buf[..len])
                    .expect("valid")
                    .to_owned(),
                tuple
            );

            let borrowed = TupleRef {
                timestamp: tuple.timestamp,
                meta: borrow_map(&tuple.meta),
                fields: borrow_map(&tuple.fields),
            };
            buf.fill(0x55);
            let len = archive_tuple_ref(&borrowed, &mut buf, &mut scratch).expect("fits");
            assert_eq!(&buf[..len], &expected[..], "borrowed {tuple:?}");
        }
    }

    #[test]
    fn a_short_buffer_overflows_at_every_length() {
        let mut scratch = Vec::new();
        for tuple in samples() {
            let needed = by_rkyv(&tuple).len();
            let mut buf = vec![0u8; needed];
            for len in 0..needed {
                assert_eq!(
                    archive_tuple(&tuple, &mut buf[..len], &mut scratch),
                    Err(Fail::Overflow),
                    "{len} of {needed} bytes"
                );
            }
            assert_eq!(archive_tuple(&tuple, &mut buf, &mut scratch), Ok(needed));
        }
    }

    #[test]
    fn refuses_values_deeper_than_the_limit() {
        let mut scratch = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let deep = Tuple::new(0).with_field("deep", nested(MAX_DEPTH + 1));
        assert_eq!(
            archive_tuple(&deep, &mut buf, &mut scratch),
            Err(Fail::TooDeep)
        );
        let deep_meta = Tuple::new(0).with_meta("deep", nested(MAX_DEPTH + 1));
        assert_eq!(
            archive_tuple(&deep_meta, &mut buf, &mut scratch),
            Err(Fail::TooDeep)
        );
    }
}
