//! Forwarding the plugin's [`Log`] messages into `tracing`.

use shmplug_transport::control::{Log, LogLevel};

/// Emits `entry` as a `tracing` event with target `shmplug::plugin` and the fields `plugin`,
/// `instance` (when the plugin named one) and `source` (the plugin's own log target).
pub(crate) fn forward(plugin: &str, entry: &Log) {
    macro_rules! emit {
        ($level:expr) => {
            match entry.instance_id {
                Some(instance) => tracing::event!(
                    target: "shmplug::plugin",
                    $level,
                    plugin,
                    instance,
                    source = %entry.target,
                    "{}",
                    entry.message
                ),
                None => tracing::event!(
                    target: "shmplug::plugin",
                    $level,
                    plugin,
                    source = %entry.target,
                    "{}",
                    entry.message
                ),
            }
        };
    }
    match entry.level {
        LogLevel::Error => emit!(tracing::Level::ERROR),
        LogLevel::Warn => emit!(tracing::Level::WARN),
        LogLevel::Info => emit!(tracing::Level::INFO),
        LogLevel::Debug => emit!(tracing::Level::DEBUG),
        LogLevel::Trace => emit!(tracing::Level::TRACE),
    }
}
