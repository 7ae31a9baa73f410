//! Helpers shared by the integration tests (`tests/transport_*.rs`) and their child binaries
//! (`tests/bin/*.rs`, included with `#[path]`).
//!
//! - [`child`]: the parent's side: spawn a child with a socket, reap it, never hang.
//! - [`peer`]: the child's side: take the inherited socket.
//! - [`pattern`]: the deterministic record stream both sides can recompute.
//! - [`script`]: handshake words and segment offsets for the step-by-step tests.
//! - [`wire`]: one-word messages over the socket, for the few handshakes tests need.
//! - [`host`]: the host tests' side: the mirror plugin installed as a package, process and
//!   descriptor checks.
//! - `memfd.rs` (included by `hostile_plugin.rs` alone, with `#[path]`): a ring's memfd read and
//!   written with `pread` / `pwrite`, for attacks behind the SDK's back.

// Each test and each child binary uses a different part of this module.
#![allow(dead_code)]

pub mod child;
pub mod host;
pub mod pattern;
pub mod peer;
pub mod script;
pub mod wire;

use std::time::Duration;

use shmplug_transport::EndpointConfig;

/// Upper bound for every wait on the other process: generous, so a loaded machine never fails a
/// test, and finite, so a broken one never hangs it.
pub const WAIT: Duration = Duration::from_secs(60);

/// Environment variable holding the inherited socket's descriptor number.
pub const SOCKET_ENV: &str = "SHMPLUG_TEST_SOCKET_FD";

/// Endpoint configuration for tests: tests run in parallel on two cores, so both sides of a
/// ring spin only briefly and then park instead of both burning a core.
pub fn cfg() -> EndpointConfig {
    EndpointConfig::default().with_spin(Duration::from_micros(20))
}
