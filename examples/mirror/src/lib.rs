//! `mirror`: the example plugin eKuiper's Go SDK ships, written against the shmplug SDK.
//!
//! | symbol | kind | what it does |
//! | --- | --- | --- |
//! | `random` | source | emits a JSON pattern with random integers added to its numeric fields ([`RandomSource`]) |
//! | `counter` | source | emits `{"n": 0}`, `{"n": 1}`, ...; rewindable, so a plugin restart neither loses nor repeats a number ([`CounterSource`]) |
//! | `echo` | function | returns its one argument ([`Echo`]) |
//! | `file` | sink | appends each tuple's fields to a file as one JSON line ([`FileSink`]) |
//!
//! The binary `mirror` is `shmplug_sdk::start(std::env::args(), mirror::plugin_config())`;
//! its manifest is `mirror.json` beside this crate's `Cargo.toml`.
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use shmplug_sdk::{testing, Blocking, Value};
//!
//! let props = json!({"interval": 0, "pattern": {"temperature": 20}, "seed": 5, "count": 3});
//! let tuples = testing::run_source(Blocking(mirror::RandomSource::default()), "", props, 10, Duration::from_secs(10))?;
//! assert_eq!(tuples.len(), 3);
//! for tuple in &tuples {
//!     let t = tuple.fields["temperature"].clone();
//!     assert!(matches!(t, Value::Int(20..=24)), "{t:?}");
//! }
//! assert_eq!(testing::call_function(&mut mirror::Echo, &[Value::from("hi")])?, Value::from("hi"));
//! # Ok::<(), shmplug_sdk::PluginError>(())
//! ```
#![forbid(unsafe_code)]

mod counter;
mod echo;
mod file;
mod random;

pub use counter::CounterSource;
pub use echo::Echo;
pub use file::FileSink;
pub use random::RandomSource;

use shmplug_sdk::PluginConfig;

/// The plugin's name, as in `mirror.json`.
pub const NAME: &str = "mirror";

/// The plugin: sources `random` (polled: its instances run on the SDK's executor threads) and
/// `counter` (rewindable), sink `file`, function `echo`.
pub fn plugin_config() -> PluginConfig {
    PluginConfig::new(NAME)
        .polled_source("random", RandomSource::default)
        .rewindable_source("counter", CounterSource::default)
        .sink("file", FileSink::default)
        .function("echo", || Echo)
}

/// Runs the plugin (what the `mirror` binary does). Never returns.
pub fn main() -> ! {
    shmplug_sdk::start(std::env::args(), plugin_config())
}
