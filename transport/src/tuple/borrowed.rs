//! Borrowed tuples: [`ValueRef`] and [`TupleRef`] archive to exactly the bytes of [`Value`] and
//! [`Tuple`], so a source can write a tuple straight from its own buffers without building an
//! owned one.
//!
//! Both derive rkyv's `Archive` with `as = ...`: their archived type *is* the owned type's
//! archived type, and each field is archived with a wrapper that writes the owned field's
//! layout (`&str` as a `String`, `&[T]` as a `Vec<T>`, a slice of pairs as a map). Tests compare
//! the bytes of both forms variant by variant.

use rkyv::collections::util::{Entry, EntryAdapter};
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::ArchivedString;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, AsString, AsVec, SerializeWith, With};
use rkyv::{Archive, Place, Serialize};

use super::value::{ArchivedTuple, ArchivedValue};

/// A map borrowed from the writer: `(name, value)` pairs, archived like the owned map.
pub type MapRef<'a> = &'a [(&'a str, ValueRef<'a>)];

/// A [`Value`](super::Value) that borrows its strings, bytes, lists and maps. Writes the same
/// archived bytes as the owned value.
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::ValueRef;
///
/// let readings = [ValueRef::Float(20.5), ValueRef::Float(21.0)];
/// let location = [("lat", ValueRef::Float(48.1)), ("lon", ValueRef::Float(11.6))];
/// let values = [ValueRef::List(&readings), ValueRef::Map(&location), ValueRef::from("ok")];
/// # let _ = values;
/// ```
#[derive(Archive, Serialize, Clone, Copy, Debug)]
#[rkyv(as = ArchivedValue)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
pub enum ValueRef<'a> {
    /// As [`Value::Null`](super::Value::Null).
    Null,
    /// As [`Value::Bool`](super::Value::Bool).
    Bool(bool),
    /// As [`Value::Int`](super::Value::Int).
    Int(i64),
    /// As [`Value::Float`](super::Value::Float).
    Float(f64),
    /// As [`Value::String`](super::Value::String).
    String(#[rkyv(with = AsString)] &'a str),
    /// As [`Value::Bytes`](super::Value::Bytes).
    Bytes(#[rkyv(with = AsVec)] &'a [u8]),
    /// As [`Value::List`](super::Value::List).
    List(#[rkyv(with = AsVec, omit_bounds)] &'a [ValueRef<'a>]),
    /// As [`Value::Map`](super::Value::Map); entries are archived in this order.
    Map(#[rkyv(with = MapEntries, omit_bounds)] MapRef<'a>),
    /// As [`Value::Timestamp`](super::Value::Timestamp): nanoseconds since the Unix epoch.
    Timestamp(i64),
}

impl<'a> From<&'a str> for ValueRef<'a> {
    fn from(v: &'a str) -> ValueRef<'a> {
        ValueRef::String(v)
    }
}

impl<'a> From<&'a String> for ValueRef<'a> {
    fn from(v: &'a String) -> ValueRef<'a> {
        ValueRef::String(v)
    }
}

impl<'a> From<&'a [u8]> for ValueRef<'a> {
    fn from(v: &'a [u8]) -> ValueRef<'a> {
        ValueRef::Bytes(v)
    }
}

impl From<bool> for ValueRef<'_> {
    fn from(v: bool) -> Self {
        ValueRef::Bool(v)
    }
}

impl From<i64> for ValueRef<'_> {
    fn from(v: i64) -> Self {
        ValueRef::Int(v)
    }
}

impl From<f64> for ValueRef<'_> {
    fn from(v: f64) -> Self {
        ValueRef::Float(v)
    }
}

/// A [`Tuple`](super::Tuple) whose metadata and fields are borrowed slices of `(name, value)`
/// pairs. Writes the same archived bytes as an owned tuple with those entries (in the slice's
/// order; a reader's lookup by name finds the last entry of that name).
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::{TupleRef, ValueRef};
///
/// let payload: &[u8] = b"\x01\x02";
/// let fields = [("id", ValueRef::Int(7)), ("raw", ValueRef::Bytes(payload))];
/// let tuple = TupleRef { timestamp: 0, meta: &[], fields: &fields };
/// # let _ = tuple;
/// ```
#[derive(Archive, Serialize, Clone, Copy, Debug, Default)]
#[rkyv(as = ArchivedTuple)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
pub struct TupleRef<'a> {
    /// As [`Tuple::timestamp`](super::Tuple::timestamp): nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// As [`Tuple::meta`](super::Tuple::meta).
    // `omit_bounds` keeps `MapEntries: ArchiveWith<..>` out of the where clause, so the
    // compiler normalizes its `Archived` type through the impl below.
    #[rkyv(with = MapEntries, omit_bounds)]
    pub meta: MapRef<'a>,
    /// As [`Tuple::fields`](super::Tuple::fields).
    #[rkyv(with = MapEntries, omit_bounds)]
    pub fields: MapRef<'a>,
}

impl<'a> TupleRef<'a> {
    /// A tuple with these fields and no metadata.
    pub fn new(timestamp: i64, fields: MapRef<'a>) -> TupleRef<'a> {
        TupleRef {
            timestamp,
            meta: &[],
            fields,
        }
    }
}

/// The archived form of a map: its entries, in order.
pub(crate) type ArchivedMap = ArchivedVec<Entry<ArchivedString, ArchivedValue>>;

/// rkyv wrapper that archives a [`MapRef`] exactly like `AsVec` archives the owned
/// `BTreeMap<String, Value>`: a vector of `Entry { key, value }`.
#[derive(Debug)]
pub struct MapEntries;

/// A key archived as a `String`.
type Key<'a> = With<&'a str, AsString>;

impl<'a> ArchiveWith<MapRef<'a>> for MapEntries {
    type Archived = ArchivedMap;
    type Resolver = VecResolver;

    fn resolve_with(field: &MapRef<'a>, resolver: VecResolver, out: Place<ArchivedMap>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<'a, S> SerializeWith<MapRef<'a>, S> for MapEntries
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &MapRef<'a>, serializer: &mut S) -> Result<VecResolver, S::Error> {
        let entries = field
            .iter()
            .map(|(key, value)| EntryAdapter::new(Key::<'a>::cast(key), value));
        ArchivedVec::serialize_from_iter::<
            EntryAdapter<&Key<'a>, &ValueRef<'a>, Key<'a>, ValueRef<'a>>,
            _,
            _,
        >(entries, serializer)
    }
}
