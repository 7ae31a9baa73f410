//! What the tuple benches send, shared by the bench (`benches/tuples.rs`) and its helper process
//! (`src/bin/tuple_peer.rs`), both of which include this file with `#[path]`.
//!
//! Tuple `i` of a [`Shape`] is a pure function of `i`, so the reader can check what it summed
//! against what the writer must have sent. Every writer starts from the same borrowed fields
//! ([`Source::with_ref`]): shmplug writes them as a [`TupleRef`] or builds an owned [`Tuple`]
//! from them ([`Source::owned`]), the JSON baseline serializes them with serde
//! ([`JsonMessage`]), the rtrb baseline moves owned tuples.
//!
//! Floats are multiples of 0.25 below 512, so sums of them are exact in any order (the owned
//! tuple's fields come out sorted by name, the borrowed ones in writing order).

use serde::ser::{Error as _, Serialize, SerializeMap, Serializer};
use shmplug_transport::tuple::{MapRef, Tuple, TupleRef, ValueRef};

/// Event time of tuple 0, nanoseconds since the Unix epoch; tuple `i` is `i` µs later.
const TIMESTAMP_BASE: i64 = 1_700_000_000_000_000_000;

/// Length of the small tuple's string field.
pub const DEVICE_LEN: usize = 12;

/// Length of the large tuple's string field.
pub const PAYLOAD_LEN: usize = 1024;

/// The two tuples the benches move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// 5 fields: `id` and `seq` (ints), `temperature` and `humidity` (floats), `device` (a
    /// 12-byte string).
    Small,
    /// 3 fields: `id` (int), `temperature` (float), `payload` (a 1 KiB string).
    Large,
}

impl Shape {
    /// Both shapes, small first.
    pub const ALL: [Shape; 2] = [Shape::Small, Shape::Large];

    /// The command-line and benchmark-id name.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Small => "small",
            Shape::Large => "large",
        }
    }
}

/// How the helper process writes tuples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// `TupleSender::send_deferred` of a [`TupleRef`] over the fields' borrowed data.
    Borrowed,
    /// `TupleSender::send_deferred` of an owned [`Tuple`], built (allocated) per tuple.
    Owned,
    /// Length-prefixed JSON over the Unix socket (no ring).
    Json,
}

impl Writer {
    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Writer::Borrowed => "borrowed",
            Writer::Owned => "owned",
            Writer::Json => "json",
        }
    }
}

/// The data tuples are made of: the strings a source would hold in its own buffers.
pub struct Source {
    devices: Vec<String>,
    payloads: Vec<String>,
}

impl Default for Source {
    fn default() -> Self {
        Source::new()
    }
}

impl Source {
    /// 16 device names of [`DEVICE_LEN`] bytes and 4 payloads of [`PAYLOAD_LEN`] ASCII bytes
    /// (nothing JSON would escape).
    pub fn new() -> Source {
        let devices = (0..16)
            .map(|k| format!("sensor-{:05}", k * 37 + 100))
            .collect::<Vec<_>>();
        debug_assert!(devices.iter().all(|d| d.len() == DEVICE_LEN));
        let payloads = (0..4u8)
            .map(|k| {
                (0..PAYLOAD_LEN)
                    .map(|j| char::from(b'a' + ((j * 7 + usize::from(k)) % 26) as u8))
                    .collect()
            })
            .collect();
        Source { devices, payloads }
    }

    /// Calls `f` with tuple `i` of `shape`, its fields borrowed from this source.
    #[inline]
    pub fn with_ref<R>(&self, shape: Shape, i: u64, f: impl FnOnce(&TupleRef<'_>) -> R) -> R {
        let s = Scalars::of(i);
        match shape {
            Shape::Small => {
                let fields = [
                    ("id", ValueRef::Int(s.id)),
                    ("seq", ValueRef::Int(s.seq)),
                    ("temperature", ValueRef::Float(s.temperature)),
                    ("humidity", ValueRef::Float(s.humidity)),
                    ("device", ValueRef::String(self.device(i))),
                ];
                f(&TupleRef::new(s.timestamp, &fields))
            }
            Shape::Large => {
                let fields = [
                    ("id", ValueRef::Int(s.id)),
                    ("temperature", ValueRef::Float(s.temperature)),
                    ("payload", ValueRef::String(self.payload(i))),
                ];
                f(&TupleRef::new(s.timestamp, &fields))
            }
        }
    }

    /// Tuple `i` of `shape` as an owned [`Tuple`], built as a plugin would with the builder
    /// (every name and string allocated, fields inserted into the `BTreeMap` one by one).
    #[inline]
    pub fn owned(&self, shape: Shape, i: u64) -> Tuple {
        let s = Scalars::of(i);
        match shape {
            Shape::Small => Tuple::new(s.timestamp)
                .with_field("id", s.id)
                .with_field("seq", s.seq)
                .with_field("temperature", s.temperature)
                .with_field("humidity", s.humidity)
                .with_field("device", self.device(i)),
            Shape::Large => Tuple::new(s.timestamp)
                .with_field("id", s.id)
                .with_field("temperature", s.temperature)
                .with_field("payload", self.payload(i)),
        }
    }

    /// Replaces `out` with the frame of tuple `i` of `shape` for the JSON baseline: a
    /// little-endian `u32` length, then the fields as a JSON object (an eKuiper message),
    /// serialized with `serde_json::to_writer` straight from the borrowed fields.
    ///
    /// # Panics
    /// If serde_json fails, which it cannot for these fields.
    #[inline]
    pub fn json_frame(&self, shape: Shape, i: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0; 4]);
        self.with_ref(shape, i, |t| {
            serde_json::to_writer(&mut *out, &JsonMessage(t.fields))
        })
        .expect("serializing a JSON message");
        let len = u32::try_from(out.len() - 4).expect("JSON message over 4 GiB");
        out[..4].copy_from_slice(&len.to_le_bytes());
    }

    fn device(&self, i: u64) -> &str {
        &self.devices[(i % 16) as usize]
    }

    fn payload(&self, i: u64) -> &str {
        &self.payloads[(i % 4) as usize]
    }
}

/// The scalars of tuple `i`.
struct Scalars {
    timestamp: i64,
    id: i64,
    seq: i64,
    temperature: f64,
    humidity: f64,
}

impl Scalars {
    #[inline]
    fn of(i: u64) -> Scalars {
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

/// Serializes borrowed fields as a JSON object: what an eKuiper portable plugin sends.
pub struct JsonMessage<'a>(pub MapRef<'a>);

impl Serialize for JsonMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            match *value {
                ValueRef::Int(v) => map.serialize_entry(name, &v)?,
                ValueRef::Float(v) => map.serialize_entry(name, &v)?,
                ValueRef::String(v) => map.serialize_entry(name, v)?,
                _ => {
                    return Err(S::Error::custom(
                        "the benches send ints, floats and strings",
                    ));
                }
            }
        }
        map.end()
    }
}
