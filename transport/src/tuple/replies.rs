//! Batches of replies: many successful answers to consecutive calls as one reply record.
//!
//! A function answers a batch of calls one call at a time, and each answer may borrow the
//! function itself, so it must be written before the next call runs. [`ReplyBatch`] takes each
//! answer as it comes (it copies the answer's bytes into a buffer of its own) and writes them
//! all as one record when the batch is full or no call is waiting:
//!
//! | record | `timestamp` | `meta` | `fields` |
//! | --- | --- | --- | --- |
//! | batch of replies | the first call's sequence number | empty | `results`: the values, in call order |
//!
//! The record is an ordinary tuple record, byte for byte what rkyv writes for the tuple
//! `{timestamp: first, fields: {results: [..]}}` (a test compares them), so the receiver
//! validates it as any other record. A failed call, and an answer that is a list or a map,
//! still go as a reply record of their own ([`send_reply_deferred`](super::send_reply_deferred)),
//! after the batch before them.

use super::check::{ENTRY_SIZE, ROOT_FIELDS, ROOT_META, ROOT_SIZE, TAG_LIST, VALUE_SIZE};
use super::{FieldValue, RECORD_KIND, TupleSender, ValueRef, ValueView};
use crate::error::{Error, Result};

/// The key of a batch's values.
pub(crate) const RESULTS: &str = "results";

/// Successful answers to consecutive calls, kept until they are written as one record.
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::call::{Replies, ReplyBatch, parse_replies};
/// use shmplug_transport::tuple::{FieldValue, TupleView, ValueRef};
///
/// let mut batch = ReplyBatch::new();
/// assert!(batch.push(7, FieldValue::Ref(ValueRef::Int(1))));
/// assert!(batch.push(8, FieldValue::Ref(ValueRef::String("a string longer than eight"))));
/// let mut buf = rkyv::util::AlignedVec::<16>::new();
/// buf.resize(batch.record_len(), 0);
/// batch.write_into(&mut buf);
/// let view = TupleView::from_bytes(&buf)?;
/// let Replies::Batch { first_seq, results } = parse_replies(&view)? else { unreachable!() };
/// assert_eq!(first_seq, 7);
/// assert_eq!(results.get(1).and_then(|v| v.as_str()), Some("a string longer than eight"));
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct ReplyBatch {
    /// The sequence number of the first answer.
    first_seq: u64,
    /// The bytes the answers point to (strings longer than eight bytes, byte strings), in
    /// answer order: the start of the record.
    data: Vec<u8>,
    /// One per answer.
    items: Vec<Item>,
}

/// An answer, as its 16-byte archived value will be written once the batch's layout is known.
#[derive(Clone, Copy, Debug)]
enum Item {
    /// A value with nothing out of line: written as it is.
    Inline([u8; VALUE_SIZE]),
    /// A string stored out of line at `data[pos..pos + len]`.
    String { pos: u32, len: u32 },
    /// A byte string at `data[pos..pos + len]`.
    Bytes { pos: u32, len: u32 },
}

/// Tags of the archived value's variants (checked against rkyv's output by the tests).
const TAG_NULL: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_STRING: u8 = 4;
const TAG_BYTES: u8 = 5;
const TAG_TIMESTAMP: u8 = 8;
/// Where a payload sits in an archived value: a bool right after the tag, a 64-bit number at
/// 8, a string or a vector at 4.
const BOOL_AT: usize = 1;
const NUMBER_AT: usize = 8;
const POINTER_AT: usize = 4;
/// Longest string kept inside its own eight bytes.
const INLINE: usize = 8;
/// Longest string rkyv can store out of line.
const MAX_STRING: usize = (1 << 30) - 1;

impl ReplyBatch {
    /// An empty batch.
    pub fn new() -> ReplyBatch {
        ReplyBatch::default()
    }

    /// Number of answers in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if the batch holds no answer.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The sequence number of the first answer (meaningless while the batch is empty).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Adds `value` as the answer to call `seq`, which must follow the last answer added (the
    /// first answer of an empty batch may have any number). Returns false, adding nothing,
    /// when the batch cannot carry the answer: a list or a map, a string too long for rkyv, or
    /// a `seq` out of order. Write such an answer as a reply record of its own, after
    /// writing the batch.
    pub fn push(&mut self, seq: u64, value: FieldValue<'_>) -> bool {
        if !self.items.is_empty() && seq != self.first_seq.wrapping_add(self.items.len() as u64) {
            return false;
        }
        let item = match value {
            FieldValue::Ref(value) => match value {
                ValueRef::Null => scalar(TAG_NULL, |_| {}),
                ValueRef::Bool(b) => scalar(TAG_BOOL, |v| v[BOOL_AT] = u8::from(b)),
                ValueRef::Int(i) => number(TAG_INT, i.to_le_bytes()),
                ValueRef::Float(f) => number(TAG_FLOAT, f.to_bits().to_le_bytes()),
                ValueRef::Timestamp(t) => number(TAG_TIMESTAMP, t.to_le_bytes()),
                ValueRef::String(s) => self.string(s),
                ValueRef::Bytes(b) => self.bytes(b),
                ValueRef::List(_) | ValueRef::Map(_) => None,
            },
            FieldValue::View(value) => match value {
                ValueView::Null => scalar(TAG_NULL, |_| {}),
                ValueView::Bool(b) => scalar(TAG_BOOL, |v| v[BOOL_AT] = u8::from(b)),
                ValueView::Int(i) => number(TAG_INT, i.to_le_bytes()),
                ValueView::Float(f) => number(TAG_FLOAT, f.to_bits().to_le_bytes()),
                ValueView::Timestamp(t) => number(TAG_TIMESTAMP, t.to_le_bytes()),
                ValueView::String(s) => self.string(s),
                ValueView::Bytes(b) => self.bytes(b),
                ValueView::List(_) | ValueView::Map(_) => None,
            },
        };
        let Some(item) = item else {
            return false;
        };
        if self.items.is_empty() {
            self.first_seq = seq;
        }
        self.items.push(item);
        true
    }

    fn string(&mut self, s: &str) -> Option<Item> {
        if s.len() <= INLINE {
            let mut v = [0u8; VALUE_SIZE];
            v[0] = TAG_STRING;
            let inline = &mut v[POINTER_AT..POINTER_AT + INLINE];
            inline.fill(0xff);
            inline[..s.len()].copy_from_slice(s.as_bytes());
            return Some(Item::Inline(v));
        }
        if s.len() > MAX_STRING {
            return None;
        }
        let (pos, len) = self.keep(s.as_bytes())?;
        Some(Item::String { pos, len })
    }

    fn bytes(&mut self, b: &[u8]) -> Option<Item> {
        let (pos, len) = self.keep(b)?;
        Some(Item::Bytes { pos, len })
    }

    /// Copies `bytes` to the end of the batch's data.
    fn keep(&mut self, bytes: &[u8]) -> Option<(u32, u32)> {
        let pos = u32::try_from(self.data.len()).ok()?;
        let len = u32::try_from(bytes.len()).ok()?;
        pos.checked_add(len)?;
        self.data.extend_from_slice(bytes);
        Some((pos, len))
    }

    /// The length of the record [`write_into`](Self::write_into) writes now.
    pub fn record_len(&self) -> usize {
        self.layout().root + ROOT_SIZE
    }

    /// Where the parts of the record lie: the values after the data, the one field entry after
    /// the values, the root at the end (each 8-byte aligned, as rkyv aligns them).
    fn layout(&self) -> Layout {
        let values = self.data.len().next_multiple_of(8);
        let entry = values + self.items.len() * VALUE_SIZE;
        Layout {
            values,
            entry,
            root: entry + ENTRY_SIZE,
        }
    }

    /// Writes the batch as one record into `out` (at least [`record_len`](Self::record_len)
    /// bytes, starting 8-byte aligned) and returns the record's length. Leaves the batch as it
    /// is.
    ///
    /// # Panics
    /// If `out` is shorter than [`record_len`](Self::record_len).
    pub fn write_into(&self, out: &mut [u8]) -> usize {
        let Layout {
            values,
            entry,
            root,
        } = self.layout();
        let len = root + ROOT_SIZE;
        let out = &mut out[..len];
        out[..self.data.len()].copy_from_slice(&self.data);
        out[self.data.len()..values].fill(0);
        for (i, item) in self.items.iter().enumerate() {
            let at = values + i * VALUE_SIZE;
            let v = &mut out[at..at + VALUE_SIZE];
            match *item {
                Item::Inline(bytes) => v.copy_from_slice(&bytes),
                Item::String { pos, len } => {
                    v.fill(0);
                    v[0] = TAG_STRING;
                    // rkyv's out-of-line length: `10` in the top bits of the low byte, the
                    // length's low six bits under them, the rest shifted up by two.
                    let encoded = (len & 0x3f) | 0x80 | ((len & !0x3f) << 2);
                    put_u32(v, POINTER_AT, encoded);
                    put_i32(v, POINTER_AT + 4, relative(at + POINTER_AT, pos as usize));
                }
                Item::Bytes { pos, len } => {
                    v.fill(0);
                    v[0] = TAG_BYTES;
                    put_i32(v, POINTER_AT, relative(at + POINTER_AT, pos as usize));
                    put_u32(v, POINTER_AT + 4, len);
                }
            }
        }
        // The one field: `results`, a list of the values.
        let e = &mut out[entry..entry + ENTRY_SIZE];
        e.fill(0);
        e[..INLINE].fill(0xff);
        e[..RESULTS.len()].copy_from_slice(RESULTS.as_bytes());
        e[INLINE] = TAG_LIST;
        let list = INLINE + POINTER_AT;
        put_i32(e, list, relative(entry + list, values));
        put_u32(e, list + 4, self.items.len() as u32);
        // The root: the first sequence number, no meta (an empty vector where rkyv puts it,
        // at the record's start), the one field.
        let r = &mut out[root..len];
        r[..8].copy_from_slice(&(self.first_seq as i64).to_le_bytes());
        put_i32(r, ROOT_META, relative(root + ROOT_META, 0));
        put_u32(r, ROOT_META + 4, 0);
        put_i32(r, ROOT_FIELDS, relative(root + ROOT_FIELDS, entry));
        put_u32(r, ROOT_FIELDS + 4, 1);
        len
    }

    /// Writes the batch as one record without waiting, for publication with the next
    /// [`TupleSender::flush`] (or sooner, if the ring's batch is due), and empties it.
    /// `Ok(false)`: the ring has no room for it now, and nothing changed. An empty batch
    /// writes nothing.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the record can never fit the ring (the batch is kept: write
    /// fewer answers per batch), [`Error::Closed`] once the receiver is gone,
    /// [`Error::Corrupt`] if the ring is.
    pub fn try_write(&mut self, sender: &mut TupleSender) -> Result<bool> {
        if self.items.is_empty() {
            return Ok(true);
        }
        let len = self.record_len();
        if len > sender.max_tuple_len() {
            return Err(Error::TooLarge {
                size: len,
                max: sender.max_tuple_len(),
            });
        }
        let Some(mut claim) = sender.producer().try_claim(len)? else {
            return Ok(false);
        };
        self.write_into(&mut claim[..]);
        claim.set_kind(RECORD_KIND);
        claim.commit_deferred();
        self.clear();
        Ok(true)
    }

    /// Drops every answer.
    pub fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
    }
}

struct Layout {
    values: usize,
    entry: usize,
    root: usize,
}

fn scalar(tag: u8, set: impl FnOnce(&mut [u8; VALUE_SIZE])) -> Option<Item> {
    let mut v = [0u8; VALUE_SIZE];
    v[0] = tag;
    set(&mut v);
    Some(Item::Inline(v))
}

fn number(tag: u8, bytes: [u8; 8]) -> Option<Item> {
    scalar(tag, |v| v[NUMBER_AT..].copy_from_slice(&bytes))
}

/// The offset from `from` to `to` as rkyv's 32-bit relative pointer. A record is at most a
/// ring's largest record (far below 2 GiB), so it always fits.
fn relative(from: usize, to: usize) -> i32 {
    (to as i64 - from as i64) as i32
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_i32(out: &mut [u8], at: usize, v: i32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use rkyv::util::AlignedVec;

    use super::super::call::{Replies, parse_replies};
    use super::super::{Encoder, Tuple, TupleView, Value};
    use super::*;

    fn written(batch: &ReplyBatch) -> AlignedVec<16> {
        let mut buf = AlignedVec::<16>::new();
        buf.resize(batch.record_len(), 0);
        let len = batch.write_into(&mut buf);
        assert_eq!(len, buf.len());
        buf
    }

    fn rkyv_bytes(first: u64, values: &[Value]) -> Vec<u8> {
        let tuple = Tuple::new(first as i64).with_field(RESULTS, Value::List(values.to_vec()));
        let mut buf = AlignedVec::<16>::new();
        buf.resize(1 << 16, 0);
        let len = Encoder::new().encode_into(&tuple, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    fn samples() -> Vec<Value> {
        vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(-3),
            Value::Float(2.5),
            Value::Timestamp(1_700_000_000_000_000_000),
            Value::from(""),
            Value::from("eight ch"),
            Value::from("nine char"),
            Value::from("ünïcödé and a longer string than sixty-four bytes, to cross a line"),
            Value::Bytes(vec![]),
            Value::Bytes(vec![1, 2, 3]),
            Value::from("x"),
        ]
    }

    #[test]
    fn writes_what_rkyv_writes() {
        let values = samples();
        for n in [1, 2, values.len()] {
            let mut batch = ReplyBatch::new();
            for (i, v) in values[..n].iter().enumerate() {
                let r = v.as_ref().unwrap();
                assert!(batch.push(40 + i as u64, FieldValue::Ref(r)), "{v:?}");
            }
            assert_eq!(
                &written(&batch)[..],
                &rkyv_bytes(40, &values[..n])[..],
                "{n}"
            );
        }
    }

    #[test]
    fn views_write_as_refs_do() {
        let values = samples();
        let source = rkyv_bytes(1, &values);
        let view = TupleView::from_bytes(&source).unwrap();
        let list = view.get(RESULTS).unwrap().as_list().unwrap();
        let mut batch = ReplyBatch::new();
        for (i, v) in list.iter().enumerate() {
            assert!(batch.push(9 + i as u64, FieldValue::View(v)));
        }
        assert_eq!(&written(&batch)[..], &rkyv_bytes(9, &values)[..]);
    }

    #[test]
    fn reads_back_and_refuses_what_it_cannot_carry() {
        let mut batch = ReplyBatch::new();
        assert!(batch.push(5, FieldValue::Ref(ValueRef::Int(1))));
        // Out of order.
        assert!(!batch.push(7, FieldValue::Ref(ValueRef::Int(2))));
        // Nested values go on their own.
        assert!(!batch.push(6, FieldValue::Ref(ValueRef::List(&[]))));
        assert!(batch.push(6, FieldValue::Ref(ValueRef::String("a somewhat long one"))));
        assert_eq!(batch.len(), 2);
        let buf = written(&batch);
        let view = TupleView::from_bytes(&buf).unwrap();
        match parse_replies(&view).unwrap() {
            Replies::Batch { first_seq, results } => {
                assert_eq!(first_seq, 5);
                assert_eq!(results.get(0).and_then(|v| v.as_i64()), Some(1));
                assert_eq!(
                    results.get(1).and_then(|v| v.as_str()),
                    Some("a somewhat long one")
                );
                assert_eq!(results.len(), 2);
            }
            Replies::One(..) => panic!("a batch read as one reply"),
        }
        batch.clear();
        assert!(batch.is_empty());
        // A cleared batch starts at any number.
        assert!(batch.push(100, FieldValue::Ref(ValueRef::Null)));
        assert_eq!(batch.first_seq(), 100);
    }

    #[test]
    fn goes_through_a_ring_as_a_tuple_record() {
        let ring = crate::Ring::create(1 << 16).unwrap();
        let config = crate::EndpointConfig::default();
        let mut sender = TupleSender::new(ring.producer(config).unwrap());
        let mut receiver = super::super::TupleReceiver::new(ring.consumer(config).unwrap());
        let mut batch = ReplyBatch::new();
        for seq in 3..6 {
            assert!(batch.push(seq, FieldValue::Ref(ValueRef::Int(seq as i64 * 10))));
        }
        assert!(batch.try_write(&mut sender).unwrap());
        assert!(batch.is_empty());
        // An empty batch writes nothing.
        assert!(batch.try_write(&mut sender).unwrap());
        sender.flush();
        let view = receiver
            .try_recv()
            .unwrap()
            .expect("the batch was published");
        let Replies::Batch { first_seq, results } = parse_replies(&view).unwrap() else {
            panic!("not a batch");
        };
        assert_eq!(first_seq, 3);
        let got: Vec<_> = results.iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got, [30, 40, 50]);
        drop(view);
        assert!(receiver.try_recv().unwrap().is_none());
    }

    #[test]
    fn the_reference_check_accepts_it() {
        let values = samples();
        let mut batch = ReplyBatch::new();
        for (i, v) in values.iter().enumerate() {
            assert!(batch.push(i as u64, FieldValue::Ref(v.as_ref().unwrap())));
        }
        let buf = written(&batch);
        super::super::check_reference::validate(&buf).unwrap();
    }
}
