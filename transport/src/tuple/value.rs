//! The owned tuple: [`Value`] and [`Tuple`], and the archived forms rkyv derives for them.

use std::collections::BTreeMap;

use rkyv::with::AsVec;
use rkyv::{Archive, Serialize};

/// A dynamically typed value: what a field of an eKuiper message (`map[string]any`) holds, except
/// that integers, byte strings and timestamps keep their type instead of becoming JSON numbers
/// and base64 strings.
///
/// Equality compares floats bit for bit (so `NaN == NaN` when the bits match, and
/// `0.0 != -0.0`): a value equals what it round-trips to, which makes `Value` [`Eq`].
///
/// In a record a value is an [`ArchivedValue`]; readers see it as a
/// [`ValueView`](super::ValueView). Lists and maps nest at most
/// [`MAX_DEPTH`](super::MAX_DEPTH) levels.
#[derive(Archive, Serialize, Clone, Debug)]
#[rkyv(derive(Debug))]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub enum Value {
    /// No value (JSON `null`, Go `nil`).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float; any bits, including NaNs and infinities.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list of values.
    List(#[rkyv(omit_bounds)] Vec<Value>),
    /// A map from names to values. In a record it is a list of entries: those written from a
    /// [`Value`] are sorted by name, those written from a [`ValueRef`](super::ValueRef) are in
    /// the writer's order.
    Map(#[rkyv(with = AsVec, omit_bounds)] BTreeMap<String, Value>),
    /// A point in time: nanoseconds since the Unix epoch (1970-01-01T00:00:00Z), which covers
    /// the years 1677 to 2262.
    Timestamp(i64),
}

impl Value {
    /// The variant's name in lower case (`"null"`, `"int"`, `"map"`, ...), for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Timestamp(_) => "timestamp",
        }
    }

    /// This value borrowed as a [`ValueRef`](super::ValueRef), without copying: scalars,
    /// strings and byte strings. `None` for a list or a map, whose items would first have to be
    /// borrowed into a new slice of `ValueRef`s (write those through an owned [`Tuple`]).
    ///
    /// # Examples
    /// ```
    /// use shmplug_transport::{Value, ValueRef};
    ///
    /// assert!(matches!(Value::from("hi").as_ref(), Some(ValueRef::String("hi"))));
    /// assert!(Value::List(vec![]).as_ref().is_none());
    /// ```
    pub fn as_ref(&self) -> Option<super::ValueRef<'_>> {
        use super::ValueRef;
        Some(match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::String(s) => ValueRef::String(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
            Value::Timestamp(t) => ValueRef::Timestamp(*t),
            Value::List(_) | Value::Map(_) => return None,
        })
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::List(v)
    }
}

impl From<BTreeMap<String, Value>> for Value {
    fn from(v: BTreeMap<String, Value>) -> Value {
        Value::Map(v)
    }
}

/// One tuple: an eKuiper message (its fields), plus metadata and an event time.
///
/// In a record it is an [`ArchivedTuple`]; readers see it as a
/// [`TupleView`](super::TupleView). Sources that hold their data in borrowed form write a
/// [`TupleRef`](super::TupleRef) instead, which produces the same bytes.
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::{Tuple, Value};
///
/// let tuple = Tuple::new(1_700_000_000_000_000_000)
///     .with_field("temperature", 21.5)
///     .with_field("device", "sensor-7")
///     .with_meta("topic", "room/1");
/// assert_eq!(tuple.fields.get("device"), Some(&Value::from("sensor-7")));
/// ```
#[derive(Archive, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Tuple {
    /// Event time: nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// Metadata (eKuiper's message meta: topic, source name, ...).
    #[rkyv(with = AsVec)]
    pub meta: BTreeMap<String, Value>,
    /// The message's fields.
    #[rkyv(with = AsVec)]
    pub fields: BTreeMap<String, Value>,
}

impl Tuple {
    /// An empty tuple with the given event time (nanoseconds since the Unix epoch).
    pub fn new(timestamp: i64) -> Tuple {
        Tuple {
            timestamp,
            meta: BTreeMap::new(),
            fields: BTreeMap::new(),
        }
    }

    /// This tuple with a field set (replacing one of the same name).
    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Tuple {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// This tuple with a metadata entry set (replacing one of the same name).
    pub fn with_meta(mut self, name: impl Into<String>, value: impl Into<Value>) -> Tuple {
        self.meta.insert(name.into(), value.into());
        self
    }
}
