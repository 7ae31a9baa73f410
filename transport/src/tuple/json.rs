//! Conversion to and from `serde_json::Value`, eKuiper's message format. The mapping is
//! documented in the [module docs](crate::tuple#json).

use std::collections::BTreeMap;

use serde_json::{Map as JsonMap, Number, Value as Json};

use crate::error::{Error, Result};

use super::encode::deeper;
use super::value::{Tuple, Value};
use super::value_view::{MapView, ValueView};
use super::view::TupleView;

impl Value {
    /// This value as JSON (see the [mapping](crate::tuple#json)).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => float(*f),
            Value::String(s) => Json::String(s.clone()),
            Value::Bytes(b) => Json::String(base64(b)),
            Value::List(l) => Json::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                Json::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Timestamp(t) => Json::String(rfc3339(*t)),
        }
    }

    /// A value from JSON (see the [mapping](crate::tuple#json)).
    ///
    /// # Errors
    /// [`Error::InvalidTuple`] if arrays and objects nest deeper than
    /// [`MAX_DEPTH`](super::MAX_DEPTH).
    pub fn from_json(json: &Json) -> Result<Value> {
        from_json_at(json, 0)
    }
}

fn from_json_at(json: &Json, level: usize) -> Result<Value> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => number(n)?,
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => {
            let level = deeper(level)?;
            Value::List(
                items
                    .iter()
                    .map(|v| from_json_at(v, level))
                    .collect::<Result<_>>()?,
            )
        }
        Json::Object(map) => Value::Map(object(map, deeper(level)?)?),
    })
}

fn object(map: &JsonMap<String, Json>, level: usize) -> Result<BTreeMap<String, Value>> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), from_json_at(v, level)?)))
        .collect()
}

fn number(n: &Number) -> Result<Value> {
    if let Some(i) = n.as_i64() {
        return Ok(Value::Int(i));
    }
    n.as_f64()
        .map(Value::Float)
        .ok_or_else(|| Error::InvalidTuple(format!("JSON number {n} is not representable")))
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

impl ValueView<'_> {
    /// This value as JSON (see the [mapping](crate::tuple#json)).
    pub fn to_json(&self) -> Json {
        match *self {
            ValueView::Null => Json::Null,
            ValueView::Bool(b) => Json::Bool(b),
            ValueView::Int(i) => Json::from(i),
            ValueView::Float(f) => float(f),
            ValueView::String(s) => Json::String(s.to_owned()),
            ValueView::Bytes(b) => Json::String(base64(b)),
            ValueView::List(l) => Json::Array(l.iter().map(|v| v.to_json()).collect()),
            ValueView::Map(m) => m.to_json(),
            ValueView::Timestamp(t) => Json::String(rfc3339(t)),
        }
    }
}

impl MapView<'_> {
    /// This map as a JSON object (a repeated name keeps its last value).
    pub fn to_json(&self) -> Json {
        Json::Object(
            self.iter()
                .map(|(k, v)| (k.to_owned(), v.to_json()))
                .collect(),
        )
    }
}

impl Tuple {
    /// `{"timestamp": <integer nanoseconds>, "meta": {...}, "fields": {...}}`.
    pub fn to_json(&self) -> Json {
        let mut out = JsonMap::new();
        out.insert("timestamp".to_owned(), Json::from(self.timestamp));
        out.insert("meta".to_owned(), Value::Map(self.meta.clone()).to_json());
        out.insert("fields".to_owned(), self.to_json_message());
        Json::Object(out)
    }

    /// The fields as a JSON object: the eKuiper message.
    pub fn to_json_message(&self) -> Json {
        Json::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// A tuple from the form [`to_json`](Self::to_json) writes; each member may be missing
    /// (timestamp 0, no metadata, no fields).
    ///
    /// # Errors
    /// [`Error::InvalidTuple`] if `json` is not an object with only those members, of those
    /// types, or nests too deep.
    pub fn from_json(json: &Json) -> Result<Tuple> {
        let invalid = |what: &str| Error::InvalidTuple(format!("JSON tuple: {what}"));
        let obj = json.as_object().ok_or_else(|| invalid("not an object"))?;
        let mut tuple = Tuple::default();
        for (key, value) in obj {
            match key.as_str() {
                "timestamp" => {
                    tuple.timestamp = value
                        .as_i64()
                        .ok_or_else(|| invalid("timestamp is not an i64 integer"))?;
                }
                "meta" => {
                    let map = value
                        .as_object()
                        .ok_or_else(|| invalid("meta is not an object"))?;
                    tuple.meta = object(map, 0)?;
                }
                "fields" => {
                    let map = value
                        .as_object()
                        .ok_or_else(|| invalid("fields is not an object"))?;
                    tuple.fields = object(map, 0)?;
                }
                other => return Err(invalid(&format!("unknown member {other:?}"))),
            }
        }
        Ok(tuple)
    }

    /// A tuple whose fields are an eKuiper message (a JSON object), with no metadata.
    ///
    /// # Errors
    /// [`Error::InvalidTuple`] if `message` is not an object or nests too deep.
    pub fn from_json_message(message: &Json, timestamp: i64) -> Result<Tuple> {
        let map = message
            .as_object()
            .ok_or_else(|| Error::InvalidTuple("JSON message is not an object".to_owned()))?;
        Ok(Tuple {
            timestamp,
            meta: BTreeMap::new(),
            fields: object(map, 0)?,
        })
    }
}

impl TupleView<'_> {
    /// As [`Tuple::to_json`].
    pub fn to_json(&self) -> Json {
        let mut out = JsonMap::new();
        out.insert("timestamp".to_owned(), Json::from(self.timestamp()));
        out.insert("meta".to_owned(), self.meta().to_json());
        out.insert("fields".to_owned(), self.fields().to_json());
        Json::Object(out)
    }

    /// As [`Tuple::to_json_message`].
    pub fn to_json_message(&self) -> Json {
        self.fields().to_json()
    }
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// RFC 3339 in UTC with the fraction's trailing zeros trimmed, as Go's `time.RFC3339Nano`.
pub(crate) fn rfc3339(ns: i64) -> String {
    let mut out = String::new();
    // Writing into a `String` cannot fail.
    let _ = write_rfc3339(&mut out, ns);
    out
}

/// Writes what [`rfc3339`] returns.
pub(crate) fn write_rfc3339(out: &mut impl std::fmt::Write, ns: i64) -> std::fmt::Result {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )?;
    if nanos != 0 {
        let mut digits = 9;
        let mut fraction = nanos;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        write!(out, ".{fraction:0digits$}")?;
    }
    out.write_char('Z')
}

/// The proleptic Gregorian date `days` after 1970-01-01. Counts in 400-year eras that start on
/// 1 March, so the leap day is the last day of an era-relative year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_500_000_000), "2023-11-14T22:13:20.5Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(rfc3339(i64::MAX), "2262-04-11T23:47:16.854775807Z");
    }
}
