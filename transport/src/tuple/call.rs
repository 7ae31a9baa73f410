//! Function calls as tuples: the records on a function instance's request and reply rings.
//!
//! The host writes one call record per call on the request ring; the plugin answers each, in
//! order, with one reply record on the reply ring. Both are ordinary tuple records, so they are
//! written in place and read through validated [`TupleView`]s:
//!
//! | record | `timestamp` | `meta` | `fields` |
//! | --- | --- | --- | --- |
//! | call | the call's sequence number | empty | `args`: a list of the arguments |
//! | reply, success | the call's sequence number | empty | `result`: the value returned |
//! | reply, failure | the call's sequence number | `error`: the message | empty |
//!
//! Sequence numbers let the caller pipeline calls and check that each reply answers the call
//! it expects.
//!
//! A caller whose plugin said it reads them ([`Hello::call_batches`](crate::control::Hello))
//! may write many calls of one arity as one **batch** record: `timestamp` is the first call's
//! sequence number, `meta` holds `calls` (how many, at least one), and `args` holds every
//! call's arguments one after the other (`calls * arity` values). The calls are numbered on
//! from the first. One record instead of one per call saves its claim, header, root and check
//! on both sides.
//!
//! Replies come the same way when the caller said it reads them
//! ([`Start::reply_batches`](crate::control::Start)): consecutive successful answers as one
//! **batch of replies** ([`ReplyBatch`]: `timestamp` is the first call's sequence number,
//! `results` holds one value per call), with failures and list or map answers in reply
//! records of their own between batches. [`parse_replies`] reads either.

use rkyv::collections::util::EntryAdapter;
use rkyv::rancor::{self, Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, AsString, AsVec, SerializeWith};
use rkyv::{Archive, Place, Serialize};

use super::archive::{Fail, OneValue, archive_one_field};
use super::encode::{Encode, field_bound, fields_list_bound, one_field_root, sealed};
use super::relay::{Indexed, KeyEnc, MapItems};
use super::replies::RESULTS;
pub use super::replies::ReplyBatch;
use super::value::{ArchivedTuple, ArchivedValue};
use super::{FieldValue, MapView, TupleRef, TupleSender, TupleView, Value, ValueRef, ValueView};
use crate::error::{Error, Result};

/// Writes a call record with sequence number `seq` and `args`.
///
/// # Errors
/// As [`TupleSender::send`].
pub fn send_call(sender: &mut TupleSender, seq: u64, args: &[ValueRef<'_>]) -> Result<()> {
    let fields = [("args", ValueRef::List(args))];
    sender.send(&TupleRef {
        timestamp: seq as i64,
        meta: &[],
        fields: &fields,
    })
}

/// Writes a reply record answering call `seq` with `result`.
///
/// Scalars, strings and bytes are written straight from `result`; a list or map result is
/// moved into an owned [`Tuple`](super::Tuple) first.
///
/// # Errors
/// As [`TupleSender::send`].
pub fn send_reply(sender: &mut TupleSender, seq: u64, result: Result<Value, &str>) -> Result<()> {
    let timestamp = seq as i64;
    let value = match result {
        Err(message) => {
            let meta = [("error", ValueRef::String(message))];
            return sender.send(&TupleRef {
                timestamp,
                meta: &meta,
                fields: &[],
            });
        }
        Ok(value) => value,
    };
    let Some(scalar) = value.as_ref() else {
        return sender.send(&super::Tuple::new(timestamp).with_field("result", value));
    };
    let fields = [("result", scalar)];
    sender.send(&TupleRef {
        timestamp,
        meta: &[],
        fields: &fields,
    })
}

/// A call record whose arguments are made one at a time by `arg(0 .. len)`: borrowed values,
/// or values read in place from received tuples, so a caller relays a tuple's fields as a
/// call's arguments without copying them out. Writes the same bytes as [`send_call`].
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::call::{CallRecord, parse_call};
/// use shmplug_transport::tuple::{Encoder, FieldValue, TupleView, ValueRef};
///
/// let arg = |i: usize| FieldValue::from(ValueRef::Int(i as i64));
/// let record = CallRecord { seq: 9, len: 2, arg: &arg };
/// let mut buf = rkyv::util::AlignedVec::<16>::new();
/// buf.resize(256, 0);
/// let len = Encoder::new().encode_into(&record, &mut buf)?;
/// let view = TupleView::from_bytes(&buf[..len])?;
/// assert_eq!(parse_call(&view)?.args.len(), 2);
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct CallRecord<'a> {
    /// The call's sequence number.
    pub seq: u64,
    /// Number of arguments.
    pub len: usize,
    /// Argument `i`, for `i` in `0 .. len`.
    pub arg: &'a dyn Fn(usize) -> FieldValue<'a>,
}

impl std::fmt::Debug for CallRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecord")
            .field("seq", &self.seq)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<'a> CallRecord<'a> {
    fn record(&self) -> OneField<'a> {
        OneField {
            timestamp: self.seq as i64,
            count: None,
            key: "args",
            value: Payload::Args(*self),
        }
    }
}

impl sealed::Sealed for CallRecord<'_> {
    fn serialize_into<'b>(
        &self,
        buf: rkyv::ser::writer::Buffer<'b>,
        arena: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<rkyv::ser::writer::Buffer<'b>, rancor::Error> {
        self.record().serialize_into(buf, arena)
    }

    const BY_HAND: bool = true;

    fn archive_into(&self, buf: &mut [u8], scratch: &mut Vec<u32>) -> Option<Result<usize, Fail>> {
        self.record().archive_into(buf, scratch)
    }
}

impl Encode for CallRecord<'_> {
    fn size_bound(&self) -> Result<usize> {
        Ok(one_field_root("args").saturating_add(fields_list_bound(self.len, self.arg, 0)?))
    }
}

/// A batch record of `calls` calls of `arity` arguments each, numbered from `first_seq`:
/// argument `j` of call `i` is `arg(i * arity + j)`. Writes what [`parse_call`] reads as
/// [`CallView::calls`].
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::call::{CallBatch, parse_call};
/// use shmplug_transport::tuple::{Encoder, FieldValue, TupleView, ValueRef};
///
/// // Three calls of two arguments: (0, 1), (2, 3), (4, 5).
/// let arg = |i: usize| FieldValue::from(ValueRef::Int(i as i64));
/// let batch = CallBatch { first_seq: 7, calls: 3, arity: 2, arg: &arg };
/// let mut buf = rkyv::util::AlignedVec::<16>::new();
/// buf.resize(512, 0);
/// let len = Encoder::new().encode_into(&batch, &mut buf)?;
/// let view = TupleView::from_bytes(&buf[..len])?;
/// let call = parse_call(&view)?;
/// let calls: Vec<_> = call.calls().map(|(seq, args)| (seq, args.len())).collect();
/// assert_eq!(calls, [(7, 2), (8, 2), (9, 2)]);
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct CallBatch<'a> {
    /// The first call's sequence number; the others follow it.
    pub first_seq: u64,
    /// Number of calls, at least one.
    pub calls: usize,
    /// Arguments per call.
    pub arity: usize,
    /// Argument `i` of the flattened list, for `i` in `0 .. calls * arity`.
    pub arg: &'a dyn Fn(usize) -> FieldValue<'a>,
}

impl std::fmt::Debug for CallBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallBatch")
            .field("first_seq", &self.first_seq)
            .field("calls", &self.calls)
            .field("arity", &self.arity)
            .finish_non_exhaustive()
    }
}

impl<'a> CallBatch<'a> {
    fn record(&self) -> OneField<'a> {
        OneField {
            timestamp: self.first_seq as i64,
            count: Some(self.calls as i64),
            key: "args",
            value: Payload::Args(CallRecord {
                seq: self.first_seq,
                len: self.calls.saturating_mul(self.arity),
                arg: self.arg,
            }),
        }
    }
}

impl sealed::Sealed for CallBatch<'_> {
    fn serialize_into<'b>(
        &self,
        buf: rkyv::ser::writer::Buffer<'b>,
        arena: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<rkyv::ser::writer::Buffer<'b>, rancor::Error> {
        self.record().serialize_into(buf, arena)
    }

    const BY_HAND: bool = true;

    fn archive_into(&self, buf: &mut [u8], scratch: &mut Vec<u32>) -> Option<Result<usize, Fail>> {
        self.record().archive_into(buf, scratch)
    }
}

impl Encode for CallBatch<'_> {
    fn size_bound(&self) -> Result<usize> {
        self.record().size_bound()
    }
}

/// The meta key of a batch record's number of calls.
const CALLS: &str = "calls";

/// A record of one field: a call (`args`) or a successful reply (`result`); a batch of calls
/// also has a `calls` count in its meta.
struct OneField<'a> {
    timestamp: i64,
    count: Option<i64>,
    key: &'a str,
    value: Payload<'a>,
}

#[derive(Clone, Copy)]
enum Payload<'a> {
    /// The arguments of a call, as a list.
    Args(CallRecord<'a>),
    /// A reply's value.
    Value(FieldValue<'a>),
}

impl sealed::Sealed for OneField<'_> {
    fn serialize_into<'b>(
        &self,
        buf: rkyv::ser::writer::Buffer<'b>,
        arena: rkyv::ser::allocator::ArenaHandle<'_>,
    ) -> Result<rkyv::ser::writer::Buffer<'b>, rancor::Error> {
        rkyv::api::low::to_bytes_in_with_alloc(self, buf, arena)
    }

    const BY_HAND: bool = true;

    fn archive_into(&self, buf: &mut [u8], scratch: &mut Vec<u32>) -> Option<Result<usize, Fail>> {
        let value = match self.value {
            Payload::Value(v) => OneValue::Value(v),
            Payload::Args(call) => OneValue::List {
                len: call.len,
                item: call.arg,
            },
        };
        let count = self.count.map(|n| (CALLS, n));
        Some(archive_one_field(
            self.timestamp,
            count,
            self.key,
            value,
            buf,
            scratch,
        ))
    }
}

impl Encode for OneField<'_> {
    fn size_bound(&self) -> Result<usize> {
        // The `calls` entry: an entry with an inline key and a scalar value.
        let meta = if self.count.is_some() {
            one_field_root(CALLS)
        } else {
            0
        };
        let root = one_field_root(self.key).saturating_add(meta);
        Ok(match self.value {
            Payload::Args(call) => root.saturating_add(fields_list_bound(call.len, call.arg, 0)?),
            Payload::Value(value) => root.saturating_add(field_bound(&value, 0)?),
        })
    }
}

/// The arguments of a [`CallRecord`], archived as a list.
#[derive(Clone, Copy)]
struct Args<'a>(CallRecord<'a>);

/// A value that is only ever a list of arguments (a private mirror of
/// [`Value`]'s variants, for rkyv's `as`).
#[derive(Archive, Serialize)]
#[rkyv(as = ArchivedValue)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[allow(dead_code)] // only `List` is made
enum ArgsValue<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(#[rkyv(with = AsString)] &'a str),
    Bytes(#[rkyv(with = AsVec)] &'a [u8]),
    List(#[rkyv(with = ArgItems, omit_bounds)] Args<'a>),
    Map(#[rkyv(with = MapItems, omit_bounds)] MapView<'a>),
    Timestamp(i64),
}

struct ArgItems;

impl<'a> ArchiveWith<Args<'a>> for ArgItems {
    type Archived = ArchivedVec<ArchivedValue>;
    type Resolver = VecResolver;

    fn resolve_with(field: &Args<'a>, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(field.0.len, resolver, out);
    }
}

impl<'a, S> SerializeWith<Args<'a>, S> for ArgItems
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &Args<'a>, serializer: &mut S) -> Result<VecResolver, S::Error> {
        let items = Indexed {
            next: 0,
            len: field.0.len,
            item: field.0.arg,
        };
        ArchivedVec::serialize_from_iter::<FieldValue<'a>, _, _>(items, serializer)
    }
}

enum PayloadResolver<'a> {
    Args(<ArgsValue<'a> as Archive>::Resolver),
    Value(<FieldValue<'a> as Archive>::Resolver),
}

impl<'a> Archive for Payload<'a> {
    type Archived = ArchivedValue;
    type Resolver = PayloadResolver<'a>;

    fn resolve(&self, resolver: PayloadResolver<'a>, out: Place<ArchivedValue>) {
        match (self, resolver) {
            (Payload::Args(call), PayloadResolver::Args(r)) => {
                ArgsValue::List(Args(*call)).resolve(r, out);
            }
            (Payload::Value(v), PayloadResolver::Value(r)) => v.resolve(r, out),
            // `serialize` made the resolver from this same payload.
            _ => unreachable!("a payload resolved with another payload's resolver"),
        }
    }
}

impl<'a, S> Serialize<S> for Payload<'a>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<PayloadResolver<'a>, S::Error> {
        Ok(match self {
            Payload::Args(call) => {
                PayloadResolver::Args(ArgsValue::List(Args(*call)).serialize(serializer)?)
            }
            Payload::Value(v) => PayloadResolver::Value(v.serialize(serializer)?),
        })
    }
}

struct OneFieldResolver {
    meta: VecResolver,
    fields: VecResolver,
}

type PayloadEntry<'a> = EntryAdapter<KeyEnc<'a>, Payload<'a>, KeyEnc<'a>, Payload<'a>>;

impl Archive for OneField<'_> {
    type Archived = ArchivedTuple;
    type Resolver = OneFieldResolver;

    fn resolve(&self, resolver: OneFieldResolver, out: Place<ArchivedTuple>) {
        rkyv::munge::munge!(let ArchivedTuple { timestamp, meta, fields } = out);
        self.timestamp.resolve((), timestamp);
        ArchivedVec::resolve_from_len(usize::from(self.count.is_some()), resolver.meta, meta);
        ArchivedVec::resolve_from_len(1, resolver.fields, fields);
    }
}

impl<S> Serialize<S> for OneField<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<OneFieldResolver, S::Error> {
        let count = self.count;
        let calls = Indexed {
            next: 0,
            len: usize::from(count.is_some()),
            item: move |_| {
                let n = FieldValue::from(ValueRef::Int(count.unwrap_or_default()));
                EntryAdapter::new(KeyEnc(CALLS), Payload::Value(n))
            },
        };
        let meta = ArchivedVec::serialize_from_iter::<PayloadEntry<'_>, _, _>(calls, serializer)?;
        let (key, value) = (self.key, self.value);
        let entry = Indexed {
            next: 0,
            len: 1,
            item: move |_| EntryAdapter::new(KeyEnc(key), value),
        };
        let fields = ArchivedVec::serialize_from_iter::<PayloadEntry<'_>, _, _>(entry, serializer)?;
        Ok(OneFieldResolver { meta, fields })
    }
}

/// Writes a reply record answering call `seq` with a borrowed or viewed `result` (read in
/// place from the call's arguments, say), or an error message: nothing is copied out or
/// allocated.
///
/// # Errors
/// As [`TupleSender::send`].
pub fn send_reply_ref(
    sender: &mut TupleSender,
    seq: u64,
    result: Result<FieldValue<'_>, &str>,
) -> Result<()> {
    write_reply(sender, seq, result, false)
}

/// As [`send_reply_ref`], but publishes the reply later, with others
/// ([`TupleSender::send_deferred`]); call [`TupleSender::flush`] before waiting for the next
/// call.
///
/// # Errors
/// As [`TupleSender::send`].
pub fn send_reply_deferred(
    sender: &mut TupleSender,
    seq: u64,
    result: Result<FieldValue<'_>, &str>,
) -> Result<()> {
    write_reply(sender, seq, result, true)
}

fn write_reply(
    sender: &mut TupleSender,
    seq: u64,
    result: Result<FieldValue<'_>, &str>,
    deferred: bool,
) -> Result<()> {
    let timestamp = seq as i64;
    let meta;
    let error;
    let record: &dyn Fn(&mut TupleSender) -> Result<()> = match result {
        Err(message) => {
            meta = [("error", ValueRef::String(message))];
            error = TupleRef {
                timestamp,
                meta: &meta,
                fields: &[],
            };
            &|s: &mut TupleSender| {
                if deferred {
                    s.send_deferred(&error)
                } else {
                    s.send(&error)
                }
            }
        }
        Ok(value) => {
            let one = OneField {
                timestamp,
                count: None,
                key: "result",
                value: Payload::Value(value),
            };
            return if deferred {
                sender.send_deferred(&one)
            } else {
                sender.send(&one)
            };
        }
    };
    record(sender)
}

/// The parts of a call record, or of a batch of calls.
#[derive(Debug)]
pub struct CallView<'v> {
    /// The (first) call's sequence number.
    pub seq: u64,
    /// The arguments (of every call of a batch, one call after the other).
    pub args: super::ListView<'v>,
    /// Calls in the record: 1, or a batch's count.
    pub count: usize,
}

impl<'v> CallView<'v> {
    /// Each call's sequence number and arguments, in order.
    pub fn calls(&self) -> impl Iterator<Item = (u64, super::ListView<'v>)> + '_ {
        let arity = self.args.len() / self.count;
        (0..self.count).map(move |i| {
            let args = self.args.slice(i * arity..(i + 1) * arity);
            (self.seq.wrapping_add(i as u64), args)
        })
    }
}

/// Reads a call record or a batch of calls.
///
/// # Errors
/// [`Error::InvalidTuple`] if the record is not a call (no `args` list), or a batch whose
/// count is not positive or does not divide its arguments.
pub fn parse_call<'v>(view: &'v TupleView<'_>) -> Result<CallView<'v>> {
    let args = view
        .get("args")
        .and_then(|v| v.as_list())
        .ok_or_else(|| Error::InvalidTuple("a function call record has no `args` list".into()))?;
    let count = match view.meta().get(CALLS) {
        None => 1,
        Some(n) => match n.as_i64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n > 0 && args.len() % n == 0 => n,
            _ => {
                return Err(Error::InvalidTuple(format!(
                    "a batch of calls counts {n:?} calls for {} arguments; the count must be \
                     positive and divide them",
                    args.len()
                )));
            }
        },
    };
    Ok(CallView {
        seq: view.timestamp() as u64,
        args,
        count,
    })
}

/// What one record on a reply ring says: one reply, or a batch of successful ones
/// ([`ReplyBatch`]).
#[derive(Debug)]
pub enum Replies<'v> {
    /// A reply record: the call's sequence number, and its result or error message.
    One(u64, Result<ValueView<'v>, &'v str>),
    /// A batch record: the results of calls `first_seq`, `first_seq + 1`, ..., in order.
    Batch {
        /// The sequence number of the first result's call.
        first_seq: u64,
        /// The results, one per call.
        results: super::ListView<'v>,
    },
}

/// Reads a reply record or a batch of replies.
///
/// # Errors
/// [`Error::InvalidTuple`] if the record is none of them.
pub fn parse_replies<'v>(view: &'v TupleView<'_>) -> Result<Replies<'v>> {
    if let Some(results) = view.get(RESULTS) {
        let results = results.as_list().ok_or_else(|| {
            Error::InvalidTuple(format!(
                "a batch of replies holds a {} where its `results` list belongs",
                results.type_name()
            ))
        })?;
        return Ok(Replies::Batch {
            first_seq: view.timestamp() as u64,
            results,
        });
    }
    let (seq, result) = parse_reply(view)?;
    Ok(Replies::One(seq, result))
}

/// Reads a reply record: its sequence number and the result or the error message.
///
/// # Errors
/// [`Error::InvalidTuple`] if the record is neither a result nor an error.
pub fn parse_reply<'v>(view: &'v TupleView<'_>) -> Result<(u64, Result<ValueView<'v>, &'v str>)> {
    let seq = view.timestamp() as u64;
    if let Some(result) = view.get("result") {
        return Ok((seq, Ok(result)));
    }
    let meta: MapView<'v> = view.meta();
    match meta.get("error").and_then(|e| e.as_str()) {
        Some(message) => Ok((seq, Err(message))),
        None => Err(Error::InvalidTuple(
            "a function reply record has neither `result` nor an `error`".into(),
        )),
    }
}

/// A reply of `value` written by hand and by rkyv (see [`both_ways`](super::encode::both_ways)).
#[cfg(fuzzing)]
pub(crate) fn reply_both_ways(value: FieldValue<'_>) -> Option<(Vec<u8>, Vec<u8>)> {
    super::encode::both_ways(&OneField {
        timestamp: 1,
        count: None,
        key: "result",
        value: Payload::Value(value),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tuple::encode::both_ways;
    use crate::tuple::{Encoder, Tuple};

    const WAIT: Duration = Duration::from_secs(10);

    use super::super::tests::channel;

    #[test]
    fn calls_and_replies_round_trip() {
        let (mut tx, mut rx) = channel();
        send_call(&mut tx, 7, &[ValueRef::Int(1), ValueRef::String("two")]).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        let call = parse_call(&view).unwrap();
        assert_eq!(call.seq, 7);
        assert_eq!(
            call.args.to_owned(),
            vec![Value::Int(1), Value::from("two")]
        );
        drop(view);

        let list = Value::List(vec![Value::Int(3)]);
        for (seq, result) in [
            (1, Ok(Value::from("x"))),
            (2, Ok(list.clone())),
            (3, Err("bad arg")),
        ] {
            send_reply(&mut tx, seq, result.clone()).unwrap();
            let view = rx.recv_timeout(WAIT).unwrap();
            let (got_seq, got) = parse_reply(&view).unwrap();
            assert_eq!(got_seq, seq);
            match (got, result) {
                (Ok(v), Ok(expected)) => assert_eq!(v.to_owned(), expected),
                (Err(m), Err(expected)) => assert_eq!(m, expected),
                (got, expected) => panic!("{got:?} != {expected:?}"),
            }
        }
    }

    #[test]
    fn a_batch_of_calls_is_the_record_rkyv_writes_and_reads_back_call_by_call() {
        let values = [
            Value::Int(1),
            Value::from("a string longer than inline"),
            Value::Null,
            Value::Float(2.5),
            Value::Bool(true),
            Value::from("x"),
        ];
        let arg = |i: usize| FieldValue::from(values[i].as_ref().expect("a scalar"));
        for (calls, arity) in [(1, 0), (3, 0), (1, 6), (2, 3), (3, 2), (6, 1)] {
            let batch = CallBatch {
                first_seq: 40,
                calls,
                arity,
                arg: &arg,
            };
            let mut buf = rkyv::util::AlignedVec::<16>::new();
            buf.resize(batch.size_bound().unwrap(), 0);
            let len = Encoder::new().encode_into(&batch, &mut buf).unwrap();
            let flat: Vec<Value> = values[..calls * arity].to_vec();
            let expected = Tuple::new(40)
                .with_meta("calls", calls as i64)
                .with_field("args", Value::List(flat.clone()));
            let mut by_rkyv = rkyv::util::AlignedVec::<16>::new();
            by_rkyv.resize(expected.size_bound().unwrap(), 0);
            let rkyv_len = Encoder::new().encode_into(&expected, &mut by_rkyv).unwrap();
            assert_eq!(&buf[..len], &by_rkyv[..rkyv_len], "{calls} x {arity}");

            let (mut tx, mut rx) = channel();
            tx.send(&batch).unwrap();
            let view = rx.recv_timeout(WAIT).unwrap();
            let call = parse_call(&view).unwrap();
            assert_eq!(call.count, calls);
            let got: Vec<(u64, Vec<Value>)> =
                call.calls().map(|(s, a)| (s, a.to_owned())).collect();
            let want: Vec<(u64, Vec<Value>)> = (0..calls)
                .map(|i| (40 + i as u64, flat[i * arity..(i + 1) * arity].to_vec()))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn calls_and_replies_written_by_hand_are_what_rkyv_writes_for_borrowed_and_received_values() {
        let nested = Tuple::new(5)
            .with_field("s", "a string longer than eight bytes")
            .with_field("short", "ok")
            .with_field("n", -7i64)
            .with_field("b", Value::Bytes(vec![1, 2, 3]))
            .with_field(
                "list",
                Value::List(vec![
                    Value::Float(0.5),
                    Value::from("inner string that is long"),
                    Value::List(vec![Value::Null, Value::Bool(true)]),
                ]),
            )
            .with_field(
                "map",
                Value::Map(
                    [
                        ("k".to_owned(), Value::Timestamp(9)),
                        ("a key longer than eight".to_owned(), Value::from("v")),
                    ]
                    .into_iter()
                    .collect(),
                ),
            );
        let (mut tx, mut rx) = channel();
        tx.send(&nested).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        let mut fields: Vec<FieldValue<'_>> = view
            .fields()
            .iter()
            .map(|(_, v)| FieldValue::View(v))
            .collect();
        fields.extend([
            FieldValue::Ref(ValueRef::String("borrowed and long enough")),
            FieldValue::Ref(ValueRef::Int(3)),
            FieldValue::Ref(ValueRef::List(&[
                ValueRef::Bool(false),
                ValueRef::String("x"),
            ])),
        ]);
        let arg = |i: usize| fields[i];
        for len in [0, 1, 3, fields.len()] {
            let call = CallRecord {
                seq: 11,
                len,
                arg: &arg,
            };
            let (hand, by_rkyv) = both_ways(&call).unwrap();
            assert_eq!(hand, by_rkyv, "a call of {len} arguments");
        }
        for arity in [1, 2] {
            let batch = CallBatch {
                first_seq: 3,
                calls: fields.len() / arity,
                arity,
                arg: &arg,
            };
            let (hand, by_rkyv) = both_ways(&batch).unwrap();
            assert_eq!(hand, by_rkyv, "a batch of arity {arity}");
        }
        for (i, field) in fields.iter().enumerate() {
            let reply = OneField {
                timestamp: 12,
                count: None,
                key: "result",
                value: Payload::Value(*field),
            };
            let (hand, by_rkyv) = both_ways(&reply).unwrap();
            assert_eq!(hand, by_rkyv, "a reply of field {i}");
        }
    }

    #[test]
    fn a_batch_whose_count_does_not_fit_its_arguments_is_refused() {
        for count in [
            Value::Int(0),
            Value::Int(-1),
            Value::Int(4),
            Value::from("3"),
        ] {
            let (mut tx, mut rx) = channel();
            let bad = Tuple::new(1)
                .with_meta("calls", count.clone())
                .with_field("args", Value::List(vec![Value::Int(1); 6]));
            tx.send(&bad).unwrap();
            let view = rx.recv_timeout(WAIT).unwrap();
            let err = parse_call(&view).unwrap_err().to_string();
            assert!(err.contains("batch of calls"), "{count:?}: {err}");
        }
    }

    #[test]
    fn other_tuples_are_not_calls_or_replies() {
        let (mut tx, mut rx) = channel();
        tx.send(&Tuple::new(1).with_field("x", 1i64)).unwrap();
        let view = rx.recv_timeout(WAIT).unwrap();
        assert!(matches!(parse_call(&view), Err(Error::InvalidTuple(_))));
        assert!(matches!(parse_reply(&view), Err(Error::InvalidTuple(_))));
    }
}
