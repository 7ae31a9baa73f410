//! The shmplug host: what a stream engine embeds to run plugins as supervised processes.
//!
//! - [`registry`]: the plugins directory: install (from a directory or a zip), list, describe,
//!   update, remove.
//! - [`Plugin`]: one supervised plugin process (handshake, pings, restart with back-off,
//!   replay of running instances, hot update).
//! - [`SourceReader`], [`SinkWriter`], [`FunctionClient`]: the data handles of plugin
//!   instances, blocking and async, which survive plugin restarts.
//! - [`ekuiper`]: eKuiper's portable plugins (Go, Python), unchanged, behind the same handles.
//!
//! ```no_run
//! use std::time::Duration;
//! use shmplug_host::registry::Registry;
//! use shmplug_host::{InstanceSpec, Plugin, PluginSpec, SupervisorConfig};
//! use shmplug_host::transport::ValueRef;
//!
//! let registry = Registry::open(Registry::default_dir()?)?;
//! let info = registry.describe("mirror")?;
//! let plugin = Plugin::start(PluginSpec::from_info(&info), SupervisorConfig::default())?;
//! let mut source = plugin.source(InstanceSpec::new("random"))?;
//! let mut echo = plugin.function(InstanceSpec::new("echo"))?;
//! while let Some(tuple) = source.recv_timeout(Duration::from_secs(1))? {
//!     let value = tuple.get("value").map(|v| v.to_owned());
//!     drop(tuple);
//!     if let Some(shmplug_host::transport::Value::Int(n)) = value {
//!         println!("{:?}", echo.call(&[ValueRef::Int(n)])?);
//!     }
//! }
//! # Ok::<(), shmplug_host::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod ekuiper;
mod error;
pub mod handles;
pub mod registry;
pub mod supervisor;

pub use error::{Error, Result, SymbolKind};
pub use handles::{
    Delivery, FunctionClient, FunctionStats, SinkStats, SinkWriter, SourceReader, SourceStats,
};
pub use shmplug_transport as transport;
pub use supervisor::{
    InstanceSpec, InstanceStatus, Phase, Plugin, PluginSpec, PluginStatus, Protocol,
    SupervisorConfig,
};
