//! Helpers for the command's integration tests: the host's test helpers (the fake plugin,
//! process checks) and ways to run the `shmplug` command.
#![allow(dead_code)]

#[path = "../../../host/tests/support/mod.rs"]
mod host;

pub mod cli;
#[allow(unused_imports)]
pub use host::*;
