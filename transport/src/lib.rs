//! shmplug's data plane: shared-memory segments and single-producer single-consumer byte rings
//! that carry records between two processes without copying them through the kernel.
//!
//! A [`Ring`] lives in a sealed, anonymous memfd ([`Segment`]). The process that creates it sends
//! its descriptors ([`Ring::fds`]) to the other process over a Unix socket ([`fdpass`]); each side
//! takes one endpoint. The [`Producer`] claims space, the caller writes the record in place and
//! commits it; the [`Consumer`] reads it in place and releases it on drop. Blocking operations
//! spin briefly, then park on a futex word in the segment or on an eventfd
//! ([`EndpointConfig`], [`Park`]).
//!
//! ```
//! use shmplug_transport::{EndpointConfig, Ring};
//!
//! let ring = Ring::create(1 << 16)?;
//! let mut producer = ring.producer(EndpointConfig::default())?;
//! let mut consumer = ring.consumer(EndpointConfig::default())?;
//! std::thread::scope(|s| {
//!     s.spawn(move || {
//!         for i in 0u32..1000 {
//!             let mut claim = producer.claim(4).unwrap();
//!             claim.copy_from_slice(&i.to_le_bytes());
//!             claim.commit_deferred();
//!         }
//!         // Dropping the producer publishes the rest and closes the ring.
//!     });
//!     let mut sum = 0u64;
//!     loop {
//!         match consumer.read() {
//!             Ok(record) => sum += u64::from(u32::from_le_bytes(record[..4].try_into().unwrap())),
//!             Err(e) if e.is_closed() => break,
//!             Err(e) => panic!("{e}"),
//!         }
//!     }
//!     assert_eq!(sum, 999 * 1000 / 2);
//! });
//! # Ok::<(), shmplug_transport::Error>(())
//! ```
//!
//! The other process is not trusted to be correct: see [`ring`]'s module docs for what is
//! checked and [`Error::Corrupt`] for what happens when a check fails.

pub mod control;
pub mod doorbell;
mod error;
pub mod fdpass;
pub mod layout;
pub mod limits;
pub mod pingpong;
mod positions;
pub mod ring;
mod segment;
pub mod spawn;
mod sync;
pub mod tuple;
pub mod wait;

pub use doorbell::Doorbell;
pub use error::{Error, Result};
pub use positions::Positions;
pub use ring::{
    Claim, Consumer, EndpointConfig, Interrupter, Park, Producer, Record, Ring, RingFds,
    Unfinished, Wakeup,
};
pub use segment::Segment;
pub use tuple::{
    Tuple, TupleReceiver, TupleRef, TupleSender, TupleView, Validation, Value, ValueRef, ValueView,
};
