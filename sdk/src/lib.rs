//! The shmplug plugin SDK: what a plugin author depends on.
//!
//! A plugin is an executable that the shmplug host starts, as eKuiper starts a *portable*
//! plugin; it offers sources, sinks and functions in the shape of eKuiper's API
//! ([`Source`], [`Sink`], [`Function`]), and its `main` hands a [`PluginConfig`] to [`start`]
//! (eKuiper's `sdk.Start(os.Args, &PluginConfig{...})`). Tuples do not travel as JSON over a
//! socket but through rings in shared memory ([`shmplug_transport`]): a source serializes
//! straight into its ring ([`Emitter`]), a sink and a function read their input in place
//! ([`TupleView`], [`ValueView`]).
//!
//! The runtime behind [`start`] connects to the host's control socket, says `Hello`, and then
//! runs each instance the host starts, a [`Source`], sink or function on a thread of its own, a
//! [`PolledSource`] on one of a few executor threads shared by all of them: it makes the instance with the
//! symbol's factory, configures and opens it, replies `Started` or `Failed` (with the error's
//! text, so that starting a rule fails loudly), and on `Stop` cancels, closes and replies
//! `Stopped`. A panic in a plugin method is caught and reported as that instance's error.
//! `tracing` events reach the host's log, tagged with the instance. The plugin exits when the
//! host sends `Shutdown` or goes away.
//!
//! [`testing`] runs a source, sink or function in a test without a host. [`PropsExt`] reads
//! typed properties with errors that name them, [`parse_timestamp`] reads RFC 3339 text, and
//! [`TupleBuilder`] keeps one list of borrowed fields for a source that refills a buffer.
//! `docs/guide.md` in the repository walks through writing, testing, packaging, installing
//! and running a plugin from an empty directory.
//!
//! # A complete plugin
//! ```no_run
//! use std::time::Duration;
//! use shmplug_sdk::{
//!     Emitter, Function, FunctionContext, PluginConfig, PluginError, Props, PropsExt, Sink,
//!     SinkContext, Source, SourceContext, TupleRef, TupleView, Value, ValueRef, ValueView,
//! };
//!
//! /// Emits `{"tick": n}` every `interval` milliseconds.
//! #[derive(Default)]
//! struct Ticker {
//!     interval: Duration,
//! }
//!
//! impl Source for Ticker {
//!     fn configure(&mut self, _data_source: &str, props: &Props) -> Result<(), PluginError> {
//!         // `1000`, `"1s"`, `"250ms"`; an error names the property and what it accepts.
//!         self.interval = props.duration("interval")?.unwrap_or(Duration::from_secs(1));
//!         Ok(())
//!     }
//!
//!     fn open(&mut self, ctx: &SourceContext, emitter: &mut Emitter) -> Result<(), PluginError> {
//!         tracing::info!("ticking every {:?}", self.interval);
//!         for n in 0.. {
//!             let fields = [("tick", ValueRef::Int(n))];
//!             emitter.emit(&TupleRef::new(shmplug_sdk::now_nanos(), &fields))?;
//!             ctx.sleep(self.interval)?; // returns Err(Cancelled) when the rule stops
//!         }
//!         Ok(())
//!     }
//! }
//!
//! /// Upper-cases its one string argument.
//! struct Upper;
//!
//! impl Function for Upper {
//!     fn validate(&self, args: &[ValueView<'_>]) -> Result<(), PluginError> {
//!         match args {
//!             [ValueView::String(_)] => Ok(()),
//!             _ => Err(PluginError::new("upper takes one string argument")),
//!         }
//!     }
//!
//!     fn exec(&mut self, _: &FunctionContext, args: &[ValueView<'_>]) -> Result<Value, PluginError> {
//!         Ok(Value::from(args[0].as_str().unwrap_or_default().to_uppercase()))
//!     }
//! }
//!
//! /// Prints each tuple's fields as JSON.
//! #[derive(Default)]
//! struct Print;
//!
//! impl Sink for Print {
//!     fn configure(&mut self, _props: &Props) -> Result<(), PluginError> {
//!         Ok(())
//!     }
//!
//!     fn collect(&mut self, _: &SinkContext, tuple: &TupleView<'_>) -> Result<(), PluginError> {
//!         println!("{}", tuple.to_json_message());
//!         Ok(())
//!     }
//! }
//!
//! fn main() {
//!     let config = PluginConfig::new("demo")
//!         .source("ticker", Ticker::default)
//!         .function("upper", || Upper)
//!         .sink("print", Print::default);
//!     shmplug_sdk::start(std::env::args(), config)
//! }
//! ```
//!
//! Its manifest, `demo.json`, in eKuiper's format:
//! `{"version": "v1.0.0", "language": "rust", "executable": "demo", "sources": ["ticker"],
//! "sinks": ["print"], "functions": ["upper"]}`.
#![forbid(unsafe_code)]

mod api;
mod builder;
mod config;
mod context;
mod emitter;
mod error;
mod polled;
mod props;
mod runtime;
pub mod testing;
mod time;

pub use api::{Answer, Arg, Function, Props, Rewindable, Sink, Source};
pub use builder::{TupleBuilder, TupleDraft};
pub use config::{
    DEFAULT_SPIN, FunctionFactory, PluginConfig, PolledSourceFactory, SinkFactory, SourceFactory,
};
pub use context::{FunctionContext, SinkContext, SourceContext, StreamContext};
pub use emitter::Emitter;
pub use error::PluginError;
pub use polled::{Blocking, Next, PolledSource};
pub use props::{PropsExt, parse_duration};
pub use runtime::{
    EXECUTOR_THREADS_ENV, EXIT_NO_HOST, LOG_LEVEL_ENV, SHUTDOWN_GRACE, ServeError, serve, start,
};
pub use shmplug_transport as transport;
pub use shmplug_transport::{Tuple, TupleRef, TupleView, Value, ValueRef, ValueView};
pub use time::{format_timestamp, parse_timestamp};
pub use tracing;

/// The current time as nanoseconds since the Unix epoch, the unit of tuple timestamps; 0 if
/// the clock is before 1970, `i64::MAX` after 2262.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
