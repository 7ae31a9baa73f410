//! The tuples every implementation moves, and the checks every reader makes.
//!
//! Tuple `i` is a pure function of `i`, so a reader checks each field of each tuple against
//! what the writer must have sent. The small tuple has 5 fields (`id`, `seq`: ints;
//! `temperature`, `humidity`: floats; `device`: a 12-byte string), the size of a typical
//! sensor reading. The large tuple has `seq` and `data`, a 1 MiB bytes field whose every byte
//! the reader sums.

use shmplug_transport::tuple::{MapView, Tuple, TupleRef, Value, ValueRef, ValueView};

use super::BenchError;

/// Event time of tuple 0, nanoseconds since the Unix epoch; tuple `i` is `i` µs later.
const TIMESTAMP_BASE: i64 = 1_700_000_000_000_000_000;

/// Bytes in the large tuple's `data` field.
pub const LARGE_BYTES: usize = 1 << 20;

/// Names of the small tuple's fields, in writing order.
pub const SMALL_FIELDS: [&str; 5] = ["id", "seq", "temperature", "humidity", "device"];

/// The data the tuples are made of: the strings and the buffer a source would hold.
#[derive(Debug)]
pub struct Workload {
    devices: Vec<String>,
    data: Vec<u8>,
    data_sum: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload::new()
    }
}

/// The scalars of small tuple `i`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scalars {
    /// Event time.
    pub timestamp: i64,
    /// `id`.
    pub id: i64,
    /// `seq`.
    pub seq: i64,
    /// `temperature` (a multiple of 0.25, exact in JSON).
    pub temperature: f64,
    /// `humidity` (a multiple of 0.5).
    pub humidity: f64,
}

impl Scalars {
    /// Those of tuple `i`.
    pub fn of(i: u64) -> Scalars {
        let n = i as i64;
        Scalars {
            timestamp: TIMESTAMP_BASE.wrapping_add(n.wrapping_mul(1000)),
            id: n,
            seq: n.wrapping_mul(7).wrapping_add(3),
            temperature: (i % 1024) as f64 * 0.25,
            humidity: 20.0 + (i % 64) as f64 * 0.5,
        }
    }
}

impl Workload {
    /// 16 device names and one 1 MiB data buffer.
    pub fn new() -> Workload {
        let devices = (0..16)
            .map(|k| format!("sensor-{:05}", k * 37 + 100))
            .collect();
        let data: Vec<u8> = (0..LARGE_BYTES)
            .map(|j| (j.wrapping_mul(31) ^ (j >> 9)) as u8)
            .collect();
        let data_sum = checksum(&data);
        Workload {
            devices,
            data,
            data_sum,
        }
    }

    /// The `device` of tuple `i`.
    pub fn device(&self, i: u64) -> &str {
        &self.devices[(i % 16) as usize]
    }

    /// The large tuple's `data`.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The small tuple's fields as call arguments (the echo function's input), in
    /// [`SMALL_FIELDS`] order.
    pub fn small_args(&self, i: u64) -> [ValueRef<'_>; 5] {
        let s = Scalars::of(i);
        [
            ValueRef::Int(s.id),
            ValueRef::Int(s.seq),
            ValueRef::Float(s.temperature),
            ValueRef::Float(s.humidity),
            ValueRef::String(self.device(i)),
        ]
    }

    /// The small tuple's fields as owned values, in [`SMALL_FIELDS`] order.
    pub fn small_values(&self, i: u64) -> Vec<Value> {
        let s = Scalars::of(i);
        vec![
            Value::Int(s.id),
            Value::Int(s.seq),
            Value::Float(s.temperature),
            Value::Float(s.humidity),
            Value::String(self.device(i).to_owned()),
        ]
    }

    /// Calls `f` with small tuple `i`, its fields borrowed.
    pub fn with_small<R>(&self, i: u64, f: impl FnOnce(&TupleRef<'_>) -> R) -> R {
        let args = self.small_args(i);
        let fields: [(&str, ValueRef<'_>); 5] = std::array::from_fn(|k| (SMALL_FIELDS[k], args[k]));
        f(&TupleRef::new(Scalars::of(i).timestamp, &fields))
    }

    /// Small tuple `i` as an owned [`Tuple`], built with the builder as a plugin would.
    pub fn owned_small(&self, i: u64) -> Tuple {
        let s = Scalars::of(i);
        Tuple::new(s.timestamp)
            .with_field("id", s.id)
            .with_field("seq", s.seq)
            .with_field("temperature", s.temperature)
            .with_field("humidity", s.humidity)
            .with_field("device", self.device(i))
    }

    /// Calls `f` with large tuple `i`, its data borrowed.
    pub fn with_large<R>(&self, i: u64, f: impl FnOnce(&TupleRef<'_>) -> R) -> R {
        let fields = [
            ("seq", ValueRef::Int(i as i64)),
            ("data", ValueRef::Bytes(&self.data)),
        ];
        f(&TupleRef::new(Scalars::of(i).timestamp, &fields))
    }

    /// Large tuple `i` as an owned [`Tuple`] (the data copied into a new vector).
    pub fn owned_large(&self, i: u64) -> Tuple {
        Tuple::new(Scalars::of(i).timestamp)
            .with_field("seq", i as i64)
            .with_field("data", Value::Bytes(self.data.clone()))
    }

    /// Checks the fields of small tuple `i`, read from a view.
    ///
    /// # Errors
    /// [`BenchError::Protocol`] naming the first field that differs.
    #[expect(
        clippy::explicit_counter_loop,
        reason = "enumerate's next stayed out of line in the CLI's build (see the loop)"
    )]
    pub fn check_small_view(&self, fields: &MapView<'_>, i: u64) -> Result<(), BenchError> {
        // One pass over the entries, each name compared first with the one expected at its
        // position: what a reader that knows its schema does. Each value is read as its
        // field's type at once (keeping the views themselves for later costs a copy of each
        // through the stack, a third of this check's time in a profile).
        let mut ints = [None; 2];
        let mut floats = [None; 2];
        let mut device = None;
        // A counter, not `enumerate`: in the CLI's build the adapter's `next` stayed out of
        // line, a call per field (36 cycles per tuple in the sink plugin's profile).
        let mut at = 0;
        for (name, value) in fields.iter() {
            let k = if SMALL_FIELDS.get(at) == Some(&name) {
                Some(at)
            } else {
                SMALL_FIELDS.iter().position(|f| *f == name)
            };
            at += 1;
            match k {
                Some(k @ 0..2) => ints[k] = value.as_i64(),
                Some(k @ 2..4) => floats[k - 2] = value.as_f64(),
                Some(_) => device = value.as_str(),
                None => {}
            }
        }
        self.check_small_fields(i, ints, floats, device)
    }

    /// Checks the arguments of an echo call (or its reply's list), in [`SMALL_FIELDS`] order.
    ///
    /// # Errors
    /// [`BenchError::Protocol`] naming the first field that differs.
    pub fn check_small_list<'v>(
        &self,
        mut values: impl Iterator<Item = ValueView<'v>>,
        i: u64,
    ) -> Result<(), BenchError> {
        let values: [Option<ValueView<'v>>; 5] = std::array::from_fn(|_| values.next());
        self.check_small_with(i, |k| values[k])
    }

    fn check_small_with<'v>(
        &self,
        i: u64,
        field: impl Fn(usize) -> Option<ValueView<'v>>,
    ) -> Result<(), BenchError> {
        self.check_small_fields(
            i,
            [0, 1].map(|k| field(k).and_then(|v| v.as_i64())),
            [2, 3].map(|k| field(k).and_then(|v| v.as_f64())),
            field(4).and_then(|v| v.as_str()),
        )
    }

    /// The one comparison every small-tuple check ends in: `ints` are `id` and `seq`,
    /// `floats` `temperature` and `humidity`, then `device`.
    fn check_small_fields(
        &self,
        i: u64,
        ints: [Option<i64>; 2],
        floats: [Option<f64>; 2],
        device: Option<&str>,
    ) -> Result<(), BenchError> {
        let s = Scalars::of(i);
        let ok = ints == [Some(s.id), Some(s.seq)]
            && floats == [Some(s.temperature), Some(s.humidity)]
            && device == Some(self.device(i));
        if ok {
            Ok(())
        } else {
            Err(mismatch("small", i))
        }
    }

    /// Checks an owned small tuple `i` (the rtrb and JSON readers).
    ///
    /// # Errors
    /// [`BenchError::Protocol`] if a field differs.
    pub fn check_small_owned(&self, tuple: &Tuple, i: u64) -> Result<(), BenchError> {
        let field = |k: usize| tuple.fields.get(SMALL_FIELDS[k]);
        self.check_small_owned_with(i, field)
    }

    /// Checks owned values found by position `k` in [`SMALL_FIELDS`] order.
    fn check_small_owned_with<'v>(
        &self,
        i: u64,
        field: impl Fn(usize) -> Option<&'v Value>,
    ) -> Result<(), BenchError> {
        let int = |k| match field(k) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let float = |k| match field(k) {
            Some(Value::Float(x)) => Some(*x),
            _ => None,
        };
        let device = match field(4) {
            Some(Value::String(d)) => Some(d.as_str()),
            _ => None,
        };
        self.check_small_fields(i, [int(0), int(1)], [float(2), float(3)], device)
    }

    /// Checks owned values (an echo's reply) against small tuple `i`'s fields, in
    /// [`SMALL_FIELDS`] order.
    ///
    /// # Errors
    /// [`BenchError::Protocol`] if a value differs.
    pub fn check_small_values(&self, values: &[Value], i: u64) -> Result<(), BenchError> {
        if values.len() != SMALL_FIELDS.len() {
            return Err(mismatch("small", i));
        }
        self.check_small_owned_with(i, |k| values.get(k))
    }

    /// Checks large tuple `i`: its `seq`, and the sum of every byte of its `data`.
    ///
    /// # Errors
    /// [`BenchError::Protocol`] if either differs.
    pub fn check_large(
        &self,
        seq: Option<i64>,
        data: Option<&[u8]>,
        i: u64,
    ) -> Result<(), BenchError> {
        if seq == Some(i as i64)
            && data.is_some_and(|d| d.len() == LARGE_BYTES && checksum(d) == self.data_sum)
        {
            Ok(())
        } else {
            Err(mismatch("large", i))
        }
    }

    /// Checks large tuple `i` read from a view.
    ///
    /// # Errors
    /// [`BenchError::Protocol`] if a field differs.
    pub fn check_large_view(&self, fields: &MapView<'_>, i: u64) -> Result<(), BenchError> {
        self.check_large(
            fields.get("seq").and_then(|v| v.as_i64()),
            fields.get("data").and_then(|v| v.as_bytes()),
            i,
        )
    }

    /// Checks an owned large tuple `i`.
    ///
    /// # Errors
    /// [`BenchError::Protocol`] if a field differs.
    pub fn check_large_owned(&self, tuple: &Tuple, i: u64) -> Result<(), BenchError> {
        let seq = match tuple.fields.get("seq") {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let data = match tuple.fields.get("data") {
            Some(Value::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        };
        self.check_large(seq, data, i)
    }
}

/// Small tuple `i` as the JSON message an eKuiper portable plugin sends (serialized straight
/// from borrowed fields: the cheapest JSON there is).
#[derive(Debug, serde::Serialize)]
pub struct SmallJson<'a> {
    id: i64,
    seq: i64,
    temperature: f64,
    humidity: f64,
    device: &'a str,
}

/// Large tuple `i` as a JSON message: bytes travel as base64, as Go's `encoding/json` sends
/// a `[]byte`.
#[derive(Debug, serde::Serialize)]
pub struct LargeJson {
    seq: i64,
    data: String,
}

impl Workload {
    /// Small tuple `i` as a JSON message.
    pub fn small_json(&self, i: u64) -> SmallJson<'_> {
        let s = Scalars::of(i);
        SmallJson {
            id: s.id,
            seq: s.seq,
            temperature: s.temperature,
            humidity: s.humidity,
            device: self.device(i),
        }
    }

    /// The echo call's arguments as a JSON array, in [`SMALL_FIELDS`] order.
    pub fn small_json_args(&self, i: u64) -> (i64, i64, f64, f64, &str) {
        let s = Scalars::of(i);
        (s.id, s.seq, s.temperature, s.humidity, self.device(i))
    }

    /// Large tuple `i` as a JSON message (the base64 encoding made here, per tuple, as a
    /// JSON encoder would).
    pub fn large_json(&self, i: u64) -> LargeJson {
        use base64::Engine as _;
        LargeJson {
            seq: i as i64,
            data: base64::engine::general_purpose::STANDARD.encode(&self.data),
        }
    }

    /// Checks small tuple `i` decoded from JSON: an object (a message) or an array (call
    /// arguments, or their echo).
    ///
    /// # Errors
    /// [`BenchError::Protocol`] if a field differs.
    pub fn check_small_json(&self, json: &serde_json::Value, i: u64) -> Result<(), BenchError> {
        let field = |k: usize| match json {
            serde_json::Value::Object(map) => map.get(SMALL_FIELDS[k]),
            serde_json::Value::Array(items) => items.get(k),
            _ => None,
        };
        self.check_small_fields(
            i,
            [0, 1].map(|k| field(k).and_then(|v| v.as_i64())),
            [2, 3].map(|k| field(k).and_then(|v| v.as_f64())),
            field(4).and_then(|v| v.as_str()),
        )
    }

    /// Checks large tuple `i` decoded from JSON (its base64 decoded).
    ///
    /// # Errors
    /// [`BenchError::Protocol`] if a field differs or the data is not base64.
    pub fn check_large_json(&self, json: &serde_json::Value, i: u64) -> Result<(), BenchError> {
        use base64::Engine as _;
        let data = json
            .get("data")
            .and_then(|d| d.as_str())
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        self.check_large(json.get("seq").and_then(|v| v.as_i64()), data.as_deref(), i)
    }
}

/// A sum of every byte (as little-endian `u64` words, then the tail), quick enough to run at
/// memory speed: reading a field means touching all of it.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for w in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
    }
    for &b in words.remainder() {
        sum = sum.wrapping_add(u64::from(b));
    }
    sum
}

fn mismatch(shape: &str, i: u64) -> BenchError {
    BenchError::Protocol(format!(
        "{shape} tuple {i} arrived with fields other than those sent (or out of order)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmplug_transport::tuple::{Encoder, TupleView};

    #[test]
    fn small_tuple_checks_after_a_round_trip_through_bytes() {
        let w = Workload::new();
        let mut enc = Encoder::new();
        let mut buf = vec![0u8; 4096];
        // Keep the archive 16-byte aligned for the view.
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        for i in [0, 1, 17, 1 << 40] {
            let len = w.with_small(i, |t| enc.encode_into(t, &mut buf)).unwrap();
            aligned.clear();
            aligned.extend_from_slice(&buf[..len]);
            let view = TupleView::from_bytes(&aligned).unwrap();
            w.check_small_view(&view.fields(), i).unwrap();
            assert!(w.check_small_view(&view.fields(), i + 1).is_err());
            w.check_small_owned(&view.to_owned(), i).unwrap();
            assert_eq!(view.to_owned(), w.owned_small(i));
        }
    }

    #[test]
    fn large_tuple_check_reads_every_byte() {
        let w = Workload::new();
        let t = w.owned_large(5);
        w.check_large_owned(&t, 5).unwrap();
        let mut bad = w.data().to_vec();
        bad[LARGE_BYTES - 1] ^= 1;
        assert!(w.check_large(Some(5), Some(&bad), 5).is_err());
        assert!(w.check_large(Some(4), Some(w.data()), 5).is_err());
    }
}
