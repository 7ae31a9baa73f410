//! The shmplug plugin SDK: what a plugin author depends on.
//!
//! Plugins implement eKuiper's `Source`, `Sink` and `Function` shapes and exchange tuples with
//! the host through [`shmplug_transport`] rings in shared memory.
#![forbid(unsafe_code)]

pub use shmplug_transport as transport;
