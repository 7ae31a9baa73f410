//! Reading archived values without copying or allocating: [`ValueView`], [`ListView`],
//! [`MapView`].

use std::collections::BTreeMap;
use std::fmt;
use std::iter::FusedIterator;
use std::slice;

use rkyv::collections::util::Entry;
use rkyv::string::ArchivedString;

use super::borrowed::ArchivedMap;
use super::value::{ArchivedValue, Value};

/// A value inside a received tuple, with native scalars and borrowed strings, bytes, lists and
/// maps. Cheap to copy; converting it never allocates except [`to_owned`](Self::to_owned) and
/// [`to_json`](Self::to_json).
#[derive(Clone, Copy, Debug)]
pub enum ValueView<'a> {
    /// [`Value::Null`].
    Null,
    /// [`Value::Bool`].
    Bool(bool),
    /// [`Value::Int`].
    Int(i64),
    /// [`Value::Float`].
    Float(f64),
    /// [`Value::String`].
    String(&'a str),
    /// [`Value::Bytes`].
    Bytes(&'a [u8]),
    /// [`Value::List`].
    List(ListView<'a>),
    /// [`Value::Map`].
    Map(MapView<'a>),
    /// [`Value::Timestamp`]: nanoseconds since the Unix epoch.
    Timestamp(i64),
}

impl<'a> ValueView<'a> {
    /// A view of an archived value.
    #[inline]
    pub fn new(archived: &'a ArchivedValue) -> ValueView<'a> {
        match archived {
            ArchivedValue::Null => ValueView::Null,
            ArchivedValue::Bool(b) => ValueView::Bool(*b),
            ArchivedValue::Int(i) => ValueView::Int(i.to_native()),
            ArchivedValue::Float(f) => ValueView::Float(f.to_native()),
            ArchivedValue::String(s) => ValueView::String(s.as_str()),
            ArchivedValue::Bytes(b) => ValueView::Bytes(b.as_slice()),
            ArchivedValue::List(l) => ValueView::List(ListView(l.as_slice())),
            ArchivedValue::Map(m) => ValueView::Map(MapView(m.as_slice())),
            ArchivedValue::Timestamp(t) => ValueView::Timestamp(t.to_native()),
        }
    }

    /// The variant's name in lower case, as [`Value::type_name`].
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueView::Null => "null",
            ValueView::Bool(_) => "bool",
            ValueView::Int(_) => "int",
            ValueView::Float(_) => "float",
            ValueView::String(_) => "string",
            ValueView::Bytes(_) => "bytes",
            ValueView::List(_) => "list",
            ValueView::Map(_) => "map",
            ValueView::Timestamp(_) => "timestamp",
        }
    }

    /// True for [`ValueView::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, ValueView::Null)
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        if let ValueView::Bool(b) = *self {
            Some(b)
        } else {
            None
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        if let ValueView::Int(i) = *self {
            Some(i)
        } else {
            None
        }
    }

    /// The float, if this is one (integers are not converted).
    pub fn as_f64(&self) -> Option<f64> {
        if let ValueView::Float(f) = *self {
            Some(f)
        } else {
            None
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&'a str> {
        if let ValueView::String(s) = *self {
            Some(s)
        } else {
            None
        }
    }

    /// The bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        if let ValueView::Bytes(b) = *self {
            Some(b)
        } else {
            None
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<ListView<'a>> {
        if let ValueView::List(l) = *self {
            Some(l)
        } else {
            None
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<MapView<'a>> {
        if let ValueView::Map(m) = *self {
            Some(m)
        } else {
            None
        }
    }

    /// The timestamp (nanoseconds since the Unix epoch), if this is one.
    pub fn as_timestamp(&self) -> Option<i64> {
        if let ValueView::Timestamp(t) = *self {
            Some(t)
        } else {
            None
        }
    }

    /// Copies the value out of the record.
    pub fn to_owned(&self) -> Value {
        match *self {
            ValueView::Null => Value::Null,
            ValueView::Bool(b) => Value::Bool(b),
            ValueView::Int(i) => Value::Int(i),
            ValueView::Float(f) => Value::Float(f),
            ValueView::String(s) => Value::String(s.to_owned()),
            ValueView::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueView::List(l) => Value::List(l.to_owned()),
            ValueView::Map(m) => Value::Map(m.to_owned()),
            ValueView::Timestamp(t) => Value::Timestamp(t),
        }
    }
}

/// Compares as [`Value`]'s equality does: floats bit for bit; maps entry by entry (a map view
/// with repeated names equals the owned map it converts to).
impl PartialEq<Value> for ValueView<'_> {
    fn eq(&self, other: &Value) -> bool {
        match (*self, other) {
            (ValueView::Null, Value::Null) => true,
            (ValueView::Bool(a), Value::Bool(b)) => a == *b,
            (ValueView::Int(a), Value::Int(b)) => a == *b,
            (ValueView::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (ValueView::String(a), Value::String(b)) => a == b,
            (ValueView::Bytes(a), Value::Bytes(b)) => a == b.as_slice(),
            (ValueView::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == *y)
            }
            (ValueView::Map(a), Value::Map(b)) => a.to_owned() == *b,
            (ValueView::Timestamp(a), Value::Timestamp(b)) => a == *b,
            _ => false,
        }
    }
}

/// An archived list.
#[derive(Clone, Copy)]
pub struct ListView<'a>(&'a [ArchivedValue]);

impl<'a> ListView<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if the list has no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at `index`.
    pub fn get(&self, index: usize) -> Option<ValueView<'a>> {
        self.0.get(index).map(ValueView::new)
    }

    /// The values in `range` (clamped to the list).
    pub fn slice(&self, range: std::ops::Range<usize>) -> ListView<'a> {
        let end = range.end.min(self.0.len());
        ListView(&self.0[range.start.min(end)..end])
    }

    /// The values in order.
    pub fn iter(&self) -> ListIter<'a> {
        ListIter(self.0.iter())
    }

    /// The archived values.
    pub fn as_archived(&self) -> &'a [ArchivedValue] {
        self.0
    }

    /// Copies the list out of the record.
    pub fn to_owned(&self) -> Vec<Value> {
        self.iter().map(|v| v.to_owned()).collect()
    }
}

impl fmt::Debug for ListView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for ListView<'a> {
    type Item = ValueView<'a>;
    type IntoIter = ListIter<'a>;

    fn into_iter(self) -> ListIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`ListView`].
#[derive(Clone, Debug)]
pub struct ListIter<'a>(slice::Iter<'a, ArchivedValue>);

impl<'a> Iterator for ListIter<'a> {
    type Item = ValueView<'a>;

    fn next(&mut self) -> Option<ValueView<'a>> {
        self.0.next().map(ValueView::new)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for ListIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(ValueView::new)
    }
}

impl ExactSizeIterator for ListIter<'_> {}
impl FusedIterator for ListIter<'_> {}

/// An archived map: its entries in the order they were written (sorted by name when written
/// from an owned [`Value`] or [`Tuple`](super::Tuple)).
///
/// Lookup by name scans the entries (no allocation; for the few to few dozen fields of a typical
/// message this is as fast as a search tree). A map written from a borrowed slice may repeat a
/// name; then lookup finds the last entry, and [`to_owned`](Self::to_owned) keeps the last, as
/// JSON decoders do. Iteration yields every entry.
#[derive(Clone, Copy)]
pub struct MapView<'a>(&'a [Entry<ArchivedString, ArchivedValue>]);

impl<'a> MapView<'a> {
    /// A map with no entries.
    pub(crate) const EMPTY: MapView<'static> = MapView(&[]);

    pub(crate) fn new(map: &'a ArchivedMap) -> MapView<'a> {
        MapView(map.as_slice())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the last entry named `name`.
    pub fn get(&self, name: &str) -> Option<ValueView<'a>> {
        self.0
            .iter()
            .rev()
            .find(|e| e.key.as_str() == name)
            .map(|e| ValueView::new(&e.value))
    }

    /// True if an entry is named `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.0.iter().any(|e| e.key.as_str() == name)
    }

    /// The entries as `(name, value)`, in order.
    pub fn iter(&self) -> MapIter<'a> {
        MapIter(self.0.iter())
    }

    /// The archived entries.
    pub fn as_archived(&self) -> &'a [Entry<ArchivedString, ArchivedValue>] {
        self.0
    }

    /// Copies the map out of the record.
    pub fn to_owned(&self) -> BTreeMap<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl fmt::Debug for MapView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for MapView<'a> {
    type Item = (&'a str, ValueView<'a>);
    type IntoIter = MapIter<'a>;

    fn into_iter(self) -> MapIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`MapView`]'s entries.
#[derive(Clone, Debug)]
pub struct MapIter<'a>(slice::Iter<'a, Entry<ArchivedString, ArchivedValue>>);

impl<'a> Iterator for MapIter<'a> {
    type Item = (&'a str, ValueView<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next()
            .map(|e| (e.key.as_str(), ValueView::new(&e.value)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for MapIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0
            .next_back()
            .map(|e| (e.key.as_str(), ValueView::new(&e.value)))
    }
}

impl ExactSizeIterator for MapIter<'_> {}
impl FusedIterator for MapIter<'_> {}
