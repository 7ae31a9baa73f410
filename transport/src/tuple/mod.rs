//! Tuples in shared memory: the rkyv format of a tuple, writing it straight into a ring record,
//! and reading it in place.
//!
//! A [`Tuple`] is an eKuiper message (its [`fields`](Tuple::fields), a map from names to
//! [`Value`]s) plus [`meta`](Tuple::meta)data and an event [`timestamp`](Tuple::timestamp). Unlike
//! JSON, integers stay `i64`, byte strings stay bytes and timestamps stay timestamps.
//!
//! - **Writing.** A [`TupleSender`] (or an [`Encoder`] and a [`Producer`](crate::Producer))
//!   serializes a tuple with rkyv directly into the claimed record: no intermediate buffer and,
//!   in steady state, no allocation. A source that holds its data in its own buffers writes a
//!   [`TupleRef`] of [`ValueRef`]s (borrowed `&str`, `&[u8]` and slices), which archives to
//!   exactly the bytes of the owned tuple. A tuple larger than the ring's largest record fails
//!   with [`Error::TooLarge`](crate::Error::TooLarge) and leaves nothing in the ring.
//! - **Reading.** A [`TupleReceiver`] hands out [`TupleView`]s of the archived tuple inside the
//!   record. Lookup by name ([`TupleView::get`]) and iteration allocate nothing; the record is
//!   released when the view is dropped. [`TupleView::to_owned`] copies a tuple out, and
//!   [`Tuple::to_json`] / [`Tuple::from_json`] convert to and from `serde_json` ([JSON](#json)).
//! - **Trust.** Records come from another process. Each receiver checks them as its
//!   [`Validation`] mode says: copied then validated (default), validated in place, or trusted
//!   (unchecked, chosen with an `unsafe` constructor). A record that fails yields
//!   [`Error::InvalidTuple`](crate::Error::InvalidTuple) and poisons the receiver.
//! - **Depth.** Lists and maps nest at most [`MAX_DEPTH`] levels. Writers refuse deeper
//!   values; readers reject deeper records in the same one-pass validation that checks the rest of
//!   the record, so a hostile record cannot overflow the stack.
//!
//! Tuple records carry the record kind [`RECORD_KIND`], which also names the format's version.
//!
//! # JSON
//! eKuiper's portable plugins exchange messages as JSON objects. [`Value::to_json`],
//! [`Value::from_json`] and their tuple and view counterparts map:
//!
//! | [`Value`] | JSON | back to [`Value`] |
//! | --- | --- | --- |
//! | `Null`, `Bool`, `String` | `null`, `true`/`false`, string | the same |
//! | `Int(i)` | integer number | `Int(i)` |
//! | `Float(f)`, finite | number (`1.0` keeps its fraction) | `Float(f)`, bit for bit |
//! | `Float` NaN or infinite | `null` (JSON has no such numbers) | `Null` |
//! | `Bytes(b)` | string: standard base64 with padding, as Go's `encoding/json` writes `[]byte` | `String` |
//! | `Timestamp(ns)` | string: RFC 3339 in UTC with up to nine fraction digits, as Go writes `time.Time` (`"2023-11-14T22:13:20.5Z"`) | `String` |
//! | `List`, `Map` | array, object | `List`, `Map` |
//!
//! Strings are never guessed to be bytes or times: a reader that expects those converts them
//! itself. JSON integers beyond `i64` become `Float`. Conversions to and from
//! `serde_json::Value` are exact; through JSON *text*, floats come back bit for bit only with
//! serde_json's `float_roundtrip` feature (its default parser can be one unit in the last place
//! off). Depth is limited to [`MAX_DEPTH`] both ways.
//!
//! A whole tuple is `{"timestamp": <integer nanoseconds>, "meta": {...}, "fields": {...}}`
//! ([`Tuple::to_json`], [`Tuple::from_json`]); an eKuiper message is its fields alone
//! ([`Tuple::to_json_message`], [`Tuple::from_json_message`], [`TupleView::to_json_message`]).
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use shmplug_transport::tuple::{Tuple, TupleReceiver, TupleRef, TupleSender, ValueRef};
//! use shmplug_transport::{EndpointConfig, Ring};
//!
//! let ring = Ring::create(1 << 16)?;
//! let mut tx = TupleSender::new(ring.producer(EndpointConfig::default())?);
//! let mut rx = TupleReceiver::new(ring.consumer(EndpointConfig::default())?);
//!
//! // A source writes from borrowed data...
//! let raw = [0xde, 0xad];
//! let fields = [("device", ValueRef::String("sensor-7")), ("raw", ValueRef::Bytes(&raw))];
//! tx.send(&TupleRef::new(1_700_000_000_000_000_000, &fields))?;
//! // ...or from an owned tuple.
//! tx.send(&Tuple::new(1).with_field("temperature", 21.5))?;
//!
//! let view = rx.recv_timeout(Duration::from_secs(5))?;
//! assert_eq!(view.get("device").and_then(|v| v.as_str()), Some("sensor-7"));
//! assert_eq!(view.get("raw").and_then(|v| v.as_bytes()), Some(&raw[..]));
//! drop(view); // releases the record
//!
//! let tuple = rx.recv_timeout(Duration::from_secs(5))?.to_owned();
//! assert_eq!(tuple, Tuple::new(1).with_field("temperature", 21.5));
//! assert_eq!(tuple.to_json_message(), serde_json::json!({"temperature": 21.5}));
//! # Ok::<(), shmplug_transport::Error>(())
//! ```

mod archive;
mod batch;
mod borrowed;
pub mod call;
mod channel;
mod check;
#[cfg(any(test, fuzzing))]
mod check_reference;
mod encode;
mod json;
mod offset;
mod relay;
mod replies;
mod serialize;
mod value;
mod value_view;
mod view;

pub use batch::TupleBatch;
pub use borrowed::{MapRef, TupleRef, ValueRef};
pub use channel::{TupleReceiver, TupleSender};
pub use encode::{Encode, Encoder};
pub use offset::{MAX_OFFSET_LEN, OFFSET_KIND, Offset};
pub use relay::{FieldValue, FieldValueResolver, TupleFields, TupleWith};
pub use value::{ArchivedTuple, ArchivedValue, Tuple, Value};
pub use value_view::{ListIter, ListView, MapIter, MapView, ValueView};
pub use view::{TupleView, Validation};

/// How deep lists and maps may nest. A field whose value is a scalar has depth 0, a list of
/// scalars depth 1, a list of such lists depth 2; a field's value may have depth up to
/// `MAX_DEPTH`. Enforced when writing (an [`Error::InvalidTuple`](crate::Error::InvalidTuple),
/// nothing written), when reading (the validator rejects the record), and when converting from JSON.
pub const MAX_DEPTH: usize = 64;

/// The record kind ([`Claim::set_kind`](crate::Claim::set_kind)) of a tuple record, `"TPL1"`
/// read as a little-endian `u32`. The trailing digit is the format's version: a change to the
/// archived layout changes the kind, so an old reader rejects new records instead of
/// misreading them.
pub const RECORD_KIND: u32 = u32::from_le_bytes(*b"TPL1");

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod tests;

/// Hooks for the fuzz targets, built only with `--cfg fuzzing` (as `cargo fuzz` builds).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use super::{Tuple, TupleView};

    /// The validator every receiver uses; an accepted record is read out as an owned tuple.
    pub fn validate(bytes: &[u8]) -> Result<Tuple, String> {
        super::check::validate(bytes).map(|root| TupleView::from_checked(root, bytes).to_owned())
    }

    /// What the host writes from a received tuple, by hand and by rkyv, as pairs of bytes that
    /// must be equal: the tuple relayed with fields added (one new, one overriding its first
    /// field, one copied from its last), a tuple of its fields, a call whose arguments are its
    /// field values, a batch of such calls, and a reply of each field value.
    pub fn written_both_ways(view: &TupleView<'_>) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        use super::call::CallBatch;
        use super::encode::both_ways;
        use super::{FieldValue, TupleFields, TupleWith, ValueRef};
        let fields: Vec<(&str, FieldValue<'_>)> = view
            .fields()
            .iter()
            .map(|(k, v)| (k, FieldValue::View(v)))
            .collect();
        let values: Vec<FieldValue<'_>> = fields.iter().map(|(_, v)| *v).collect();
        let mut added = vec![("added by the host", FieldValue::Ref(ValueRef::Int(1)))];
        if let (Some(first), Some(last)) = (fields.first(), fields.last()) {
            added.push((
                first.0,
                FieldValue::Ref(ValueRef::String("overridden value")),
            ));
            added.push(("copied", last.1));
        }
        let arg = |i: usize| values[i];
        let mut out = Vec::new();
        let mut keep = |what, pair: Option<(Vec<u8>, Vec<u8>)>| {
            if let Some((hand, theirs)) = pair {
                out.push((what, hand, theirs));
            }
        };
        keep("relay", both_ways(&TupleWith::new(view, &added)));
        keep("relay as is", both_ways(&TupleWith::new(view, &[])));
        let timestamp = view.timestamp();
        keep(
            "fields",
            both_ways(&TupleFields {
                timestamp,
                fields: &fields,
            }),
        );
        let call = super::call::CallRecord {
            seq: 3,
            len: values.len(),
            arg: &arg,
        };
        keep("call", both_ways(&call));
        if !values.is_empty() {
            let batch = CallBatch {
                first_seq: 4,
                calls: values.len(),
                arity: 1,
                arg: &arg,
            };
            keep("batch of calls", both_ways(&batch));
        }
        for value in &values {
            keep("reply", super::call::reply_both_ways(*value));
        }
        out
    }

    /// The validator it replaced (depth walk, then rkyv's bytecheck), which it must agree with.
    pub fn validate_reference(bytes: &[u8]) -> Result<Tuple, String> {
        super::check_reference::validate(bytes)
            .map(|root| TupleView::from_checked(root, bytes).to_owned())
    }
}
