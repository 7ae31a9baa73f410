//! The single-producer single-consumer byte ring in a shared-memory segment.
//!
//! The producer [`claim`](Producer::claim)s space for a record, writes the payload straight
//! into shared memory and [`commit`](Claim::commit)s it; the consumer [`read`](Consumer::read)s
//! a record in place and releases it by dropping the [`Record`]. See [`crate::layout`] for the
//! bytes in the segment.
//!
//! # Protocol
//! Positions are monotonically increasing byte counts. The producer publishes its write
//! position with a `Release` store once a record is complete (so a record that was claimed but
//! never committed, for example because the producer died while writing it, is never visible);
//! the consumer loads it with `Acquire` before reading a record header. The consumer publishes
//! its read position with `Release` once it has finished with a record; the producer loads it
//! with `Acquire` before reusing the space. Each side caches the other's position and reloads it
//! only when the ring looks empty (or full), and publishes its own in batches, so that in steady
//! state the two processes do not bounce a cache line per record. This is the design of Agrona's
//! one-to-one ring buffer and rtrb's cached indices.
//!
//! # Trust
//! The other process may be buggy. Every position and record header read from shared memory is
//! checked before it is used: a position that moves backwards or past the capacity, a record
//! that crosses the end of the region or the write position, an unknown record kind, all return
//! [`Error::Corrupt`](crate::Error::Corrupt) and poison the endpoint (which also tells the other
//! side that this side closed). A peer that rewrites a record *while* it is being read is outside
//! this model; copy the record out first if that matters.

mod consumer;
mod producer;
mod shared;

pub use crate::wait::{EndpointConfig, Park};
pub use consumer::{Consumer, Record};
pub use producer::{Claim, Producer, Unfinished};
pub(crate) use shared::RingMemory;
pub(crate) use shared::check_eventfd;
pub use shared::{Interrupter, Ring, RingFds, Wakeup};

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
