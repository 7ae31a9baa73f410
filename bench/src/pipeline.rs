//! The `pipeline` case's code, run by every line of it: the source's 20-field tuples, the
//! function on two of their fields, and the sink's check of every field and of the answer;
//! and the in-process line ([`Impl::Native`](super::Impl::Native)), which calls them directly.
//!
//! Tuple `i` is a pure function of `i` (as in [`workload`](super::workload)): field `k`
//! (named [`WIDE_FIELDS`]`[k]`) is an int, a float or a string by `k % 3`. The function adds
//! the two floats named by [`ARGS`]; the sink finds its answer under [`ANSWER`].

use std::time::Instant;

use shmplug_transport::tuple::{MapView, Tuple, TupleRef, Value, ValueRef, ValueView};

use super::workload::{Scalars, Workload};
use super::{BenchError, Measurement};

/// Names of the wide tuple's fields, in writing order.
pub const WIDE_FIELDS: [&str; 20] = [
    "f00", "f01", "f02", "f03", "f04", "f05", "f06", "f07", "f08", "f09", "f10", "f11", "f12",
    "f13", "f14", "f15", "f16", "f17", "f18", "f19",
];

/// The function's arguments: positions in [`WIDE_FIELDS`] (two floats).
pub const ARGS: [usize; 2] = [1, 4];
const _: () = assert!(
    ARGS[0] % 3 == 1 && ARGS[1] % 3 == 1,
    "the arguments are float fields"
);

/// The field under which the sink receives the function's answer.
pub const ANSWER: &str = "answer";

/// Field `k` of wide tuple `i`.
pub fn wide_value(workload: &Workload, i: u64, k: usize) -> ValueRef<'_> {
    match k % 3 {
        0 => ValueRef::Int((i as i64).wrapping_mul(k as i64 + 1).wrapping_add(k as i64)),
        1 => ValueRef::Float(float_field(i, k)),
        _ => ValueRef::String(workload.device(i.wrapping_add(k as u64))),
    }
}

/// Float field `k` of tuple `i`: a multiple of 0.25, exact in JSON and in sums.
fn float_field(i: u64, k: usize) -> f64 {
    (i.wrapping_add(k as u64) % 4096) as f64 * 0.25
}

/// Calls `f` with wide tuple `i`, its fields borrowed (the source's tuple).
pub fn with_wide<R>(workload: &Workload, i: u64, f: impl FnOnce(&TupleRef<'_>) -> R) -> R {
    let fields: [(&str, ValueRef<'_>); 20] =
        std::array::from_fn(|k| (WIDE_FIELDS[k], wide_value(workload, i, k)));
    f(&TupleRef::new(Scalars::of(i).timestamp, &fields))
}

/// Wide tuple `i` as an owned [`Tuple`], built as a native plugin's source would.
pub fn owned_wide(workload: &Workload, i: u64) -> Tuple {
    let mut tuple = Tuple::new(Scalars::of(i).timestamp);
    for (k, name) in WIDE_FIELDS.iter().enumerate() {
        let value = match wide_value(workload, i, k) {
            ValueRef::Int(n) => Value::Int(n),
            ValueRef::Float(x) => Value::Float(x),
            ValueRef::String(s) => Value::String(s.to_owned()),
            _ => Value::Null,
        };
        tuple = tuple.with_field(*name, value);
    }
    tuple
}

/// The function: the sum of its two arguments, `None` unless both are numbers.
pub fn function(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

/// The answer the sink expects with tuple `i`.
fn expected_answer(i: u64) -> f64 {
    float_field(i, ARGS[0]) + float_field(i, ARGS[1])
}

/// The sink's check: every field of wide tuple `i`, found by position `k` in [`WIDE_FIELDS`]
/// order, and the function's answer.
fn check_with<'v>(
    workload: &Workload,
    i: u64,
    field: impl Fn(usize) -> Option<ValueRef<'v>>,
    answer: Option<f64>,
) -> Result<(), BenchError> {
    let fields_ok = (0..WIDE_FIELDS.len()).all(|k| match (wide_value(workload, i, k), field(k)) {
        (ValueRef::Int(a), Some(ValueRef::Int(b))) => a == b,
        (ValueRef::Float(a), Some(ValueRef::Float(b))) => a == b,
        (ValueRef::String(a), Some(ValueRef::String(b))) => a == b,
        _ => false,
    });
    if fields_ok && answer == Some(expected_answer(i)) {
        Ok(())
    } else {
        Err(BenchError::Protocol(format!(
            "wide tuple {i} reached the sink with fields (or an answer) other than those sent"
        )))
    }
}

fn scalar(v: ValueView<'_>) -> Option<ValueRef<'_>> {
    match v {
        ValueView::Int(n) => Some(ValueRef::Int(n)),
        ValueView::Float(x) => Some(ValueRef::Float(x)),
        ValueView::String(s) => Some(ValueRef::String(s)),
        _ => None,
    }
}

/// Checks wide tuple `i` plus its answer, read from a view (the shmplug plugin's sink).
///
/// # Errors
/// [`BenchError::Protocol`] if a field or the answer differs.
pub fn check_view(workload: &Workload, fields: &MapView<'_>, i: u64) -> Result<(), BenchError> {
    // One pass, each name compared first with the one expected at its position (the answer
    // sorts first among the keys the writer may have kept in order).
    let mut found: [Option<ValueView<'_>>; 20] = [None; 20];
    let mut answer = None;
    for (at, (name, value)) in fields.iter().enumerate() {
        if name == ANSWER {
            answer = value.as_f64();
            continue;
        }
        let k = [at, at.wrapping_sub(1)]
            .into_iter()
            .find(|&k| WIDE_FIELDS.get(k) == Some(&name))
            .or_else(|| WIDE_FIELDS.iter().position(|f| *f == name));
        if let Some(k) = k {
            found[k] = Some(value);
        }
    }
    check_with(workload, i, |k| found[k].and_then(scalar), answer)
}

/// Checks an owned wide tuple `i` plus its answer (the in-process sink).
///
/// # Errors
/// [`BenchError::Protocol`] if a field or the answer differs.
pub fn check_owned(workload: &Workload, tuple: &Tuple, i: u64) -> Result<(), BenchError> {
    let answer = match tuple.fields.get(ANSWER) {
        Some(Value::Float(x)) => Some(*x),
        _ => None,
    };
    check_with(
        workload,
        i,
        |k| tuple.fields.get(WIDE_FIELDS[k]).and_then(Value::as_ref),
        answer,
    )
}

/// Checks wide tuple `i` plus its answer decoded from JSON (the JSON sink).
///
/// # Errors
/// [`BenchError::Protocol`] if a field or the answer differs.
pub fn check_json(workload: &Workload, json: &serde_json::Value, i: u64) -> Result<(), BenchError> {
    let field = |k: usize| {
        let v = json.get(WIDE_FIELDS[k])?;
        if let Some(n) = v.as_i64() {
            Some(ValueRef::Int(n))
        } else if let Some(x) = v.as_f64() {
            Some(ValueRef::Float(x))
        } else {
            v.as_str().map(ValueRef::String)
        }
    };
    check_with(
        workload,
        i,
        field,
        json.get(ANSWER).and_then(|a| a.as_f64()),
    )
}

/// Wide tuple `i` as the JSON message a portable plugin's source sends (serialized straight
/// from borrowed fields).
#[derive(Debug)]
pub struct WideJson<'w> {
    /// The workload.
    pub workload: &'w Workload,
    /// The tuple's number.
    pub i: u64,
}

impl serde::Serialize for WideJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(WIDE_FIELDS.len()))?;
        for (k, name) in WIDE_FIELDS.iter().enumerate() {
            match wide_value(self.workload, self.i, k) {
                ValueRef::Int(n) => map.serialize_entry(name, &n)?,
                ValueRef::Float(x) => map.serialize_entry(name, &x)?,
                ValueRef::String(v) => map.serialize_entry(name, v)?,
                _ => map.serialize_entry(name, &())?,
            }
        }
        map.end()
    }
}

/// What an eKuiper native plugin costs: the source, the function and the sink called directly,
/// one after the other, in one thread of this process; each tuple an owned map (Go's
/// `map[string]interface{}`), the answer added to it, no ring and no copy between stages.
pub(super) fn measure_native(n: u64) -> Result<Measurement, BenchError> {
    let workload = Workload::new();
    let start = Instant::now();
    for i in 0..n {
        let mut tuple = owned_wide(&workload, i);
        let arg = |k: usize| match tuple.fields.get(WIDE_FIELDS[ARGS[k]]) {
            Some(Value::Float(x)) => Some(*x),
            _ => None,
        };
        let answer = function(arg(0), arg(1)).map_or(Value::Null, Value::Float);
        tuple.fields.insert(ANSWER.to_owned(), answer);
        check_owned(&workload, &tuple, i)?;
    }
    Ok(Measurement::throughput(n, start.elapsed(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmplug_transport::tuple::{Encoder, TupleView};

    #[test]
    fn a_wide_tuple_with_its_answer_checks_owned_and_as_json() {
        let w = Workload::new();
        for i in [0, 1, 4095, 1 << 33] {
            let mut t = owned_wide(&w, i);
            assert!(check_owned(&w, &t, i).is_err(), "no answer yet");
            let answer = function(
                t.fields[WIDE_FIELDS[ARGS[0]]].as_ref().and_then(as_f64),
                t.fields[WIDE_FIELDS[ARGS[1]]].as_ref().and_then(as_f64),
            );
            t.fields
                .insert(ANSWER.into(), Value::Float(answer.unwrap()));
            check_owned(&w, &t, i).unwrap();
            assert!(check_owned(&w, &t, i + 1).is_err());
            let mut json = serde_json::to_value(WideJson { workload: &w, i }).unwrap();
            json[ANSWER] = serde_json::json!(answer.unwrap());
            check_json(&w, &json, i).unwrap();
            json["f02"] = serde_json::json!("other");
            assert!(check_json(&w, &json, i).is_err());
        }
    }

    fn as_f64(v: ValueRef<'_>) -> Option<f64> {
        match v {
            ValueRef::Float(x) => Some(x),
            _ => None,
        }
    }

    #[test]
    fn a_wide_tuple_checks_from_a_view() {
        let w = Workload::new();
        let mut enc = Encoder::new();
        let mut buf = vec![0u8; 8192];
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        let len = with_wide(&w, 9, |t| enc.encode_into(t, &mut buf)).unwrap();
        aligned.extend_from_slice(&buf[..len]);
        let view = TupleView::from_bytes(&aligned).unwrap();
        // No answer: refused.
        assert!(check_view(&w, &view.fields(), 9).is_err());
    }
}
