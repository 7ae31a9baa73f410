//! `serde::Serialize` for views: a received tuple written as JSON (or any serde format) straight
//! from the record, with the [mapping](crate::tuple#json) of `to_json` and no intermediate
//! `serde_json::Value`. Entries come in the record's order; parsed back, the JSON is the value
//! `to_json` makes (which keeps the last of a repeated name, as a JSON parser does).

use std::fmt;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};

use super::value_view::{ListView, MapView, ValueView};
use super::view::TupleView;

/// As [`ValueView::to_json`]: bytes become base64 strings, timestamps RFC 3339 strings,
/// non-finite floats `null`. Allocates nothing (strings are written through `Display`).
impl Serialize for ValueView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            ValueView::Null => serializer.serialize_unit(),
            ValueView::Bool(b) => serializer.serialize_bool(b),
            ValueView::Int(i) => serializer.serialize_i64(i),
            ValueView::Float(f) if f.is_finite() => serializer.serialize_f64(f),
            ValueView::Float(_) => serializer.serialize_unit(),
            ValueView::String(s) => serializer.serialize_str(s),
            ValueView::Bytes(b) => serializer.collect_str(&Base64(b)),
            ValueView::List(l) => l.serialize(serializer),
            ValueView::Map(m) => m.serialize(serializer),
            ValueView::Timestamp(t) => serializer.collect_str(&Rfc3339(t)),
        }
    }
}

/// An array.
impl Serialize for ListView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for v in self.iter() {
            seq.serialize_element(&v)?;
        }
        seq.end()
    }
}

/// An object, entries in the record's order.
impl Serialize for MapView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, &v)?;
        }
        map.end()
    }
}

/// As [`TupleView::to_json`]: `{"timestamp": ..., "meta": {...}, "fields": {...}}`. For the
/// eKuiper message alone, serialize [`fields`](TupleView::fields).
impl Serialize for TupleView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_struct("Tuple", 3)?;
        tuple.serialize_field("timestamp", &self.timestamp())?;
        tuple.serialize_field("meta", &self.meta())?;
        tuple.serialize_field("fields", &self.fields())?;
        tuple.end()
    }
}

/// Standard base64 with padding, written as it is computed.
struct Base64<'a>(&'a [u8]);

impl fmt::Display for Base64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for chunk in self.0.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let mut out = [b'='; 4];
            for (i, c) in out.iter_mut().enumerate().take(chunk.len() + 1) {
                *c = ALPHABET[((n >> (18 - 6 * i)) & 63) as usize];
            }
            // The alphabet and padding are ASCII.
            f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// A timestamp as [`rfc3339`](super::json::rfc3339) writes it.
struct Rfc3339(i64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::json::write_rfc3339(f, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Encoder, Tuple, TupleView, Value};
    use std::collections::BTreeMap;

    #[test]
    fn serializes_as_to_json() {
        let mut nested = BTreeMap::new();
        nested.insert(
            "a".to_owned(),
            Value::List(vec![Value::Int(1), Value::Null]),
        );
        let tuple = Tuple::new(1_700_000_000_500_000_000)
            .with_field("i", -3i64)
            .with_field("f", 1.5)
            .with_field("nan", f64::NAN)
            .with_field("s", "héllo \"q\"")
            .with_field("b", vec![1u8, 2, 3, 4, 5])
            .with_field("e", Vec::<u8>::new())
            .with_field("t", Value::Timestamp(1_700_000_000_500_000_000))
            .with_field("t0", Value::Timestamp(-1))
            .with_field("m", Value::Map(nested))
            .with_field("n", Value::Null)
            .with_meta("topic", "x");
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.resize(4096, 0);
        let len = Encoder::new().encode_into(&tuple, &mut buf).unwrap();
        let view = TupleView::from_bytes(&buf[..len]).unwrap();
        let text = serde_json::to_string(&view).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, tuple.to_json());
        let message = serde_json::to_value(view.fields()).unwrap();
        assert_eq!(message, tuple.to_json_message());
    }
}
