//! The shmplug host: what a stream engine embeds to run plugins as supervised processes.
#![forbid(unsafe_code)]

pub use shmplug_transport as transport;
