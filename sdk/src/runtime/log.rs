//! Forwarding the plugin's `tracing` events to the host as [`Message::Log`], tagged with the
//! instance whose span they happen in; to standard error when there is no host.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use shmplug_transport::control::{ControlChannel, Log, LogLevel, Message};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Environment variable that sets the most detailed level forwarded: `error`, `warn`, `info`
/// (the default), `debug`, `trace` or `off`.
pub const LOG_LEVEL_ENV: &str = "SHMPLUG_LOG";

/// Longest message forwarded, in bytes; longer ones are cut (a control frame is at most 1 MiB).
const MAX_MESSAGE_LEN: usize = 16 * 1024;

/// A `tracing` dispatcher for `plugin` that forwards events at `level` or more severe over
/// `channel`, or prints them to standard error when there is no channel (or sending fails).
pub(crate) fn dispatch(
    plugin: &str,
    channel: Option<Arc<ControlChannel>>,
    level: LevelFilter,
) -> Dispatch {
    let layer = Forward {
        plugin: plugin.to_owned(),
        channel,
        level,
    };
    Dispatch::new(Registry::default().with(layer))
}

/// The level named by [`LOG_LEVEL_ENV`], [`LevelFilter::INFO`] if it is unset or unreadable.
pub(crate) fn level_from_env() -> LevelFilter {
    std::env::var(LOG_LEVEL_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

struct Forward {
    plugin: String,
    channel: Option<Arc<ControlChannel>>,
    level: LevelFilter,
}

/// What a span says about the instance it belongs to; kept in the span's extensions.
#[derive(Clone, Debug)]
struct InstanceTag {
    instance_id: u64,
    symbol: String,
}

impl<S> Layer<S> for Forward
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.is_span() || *metadata.level() <= self.level
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = TagVisitor::default();
        attrs.record(&mut visitor);
        if let (Some(instance_id), Some(span)) = (visitor.instance_id, ctx.span(id)) {
            span.extensions_mut().insert(InstanceTag {
                instance_id,
                symbol: visitor.symbol.unwrap_or_default(),
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let tag = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<InstanceTag>().cloned())
        });
        let mut text = MessageVisitor::default();
        event.record(&mut text);
        let mut message = text.finish();
        if message.len() > MAX_MESSAGE_LEN {
            let mut cut = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let metadata = event.metadata();
        if let Some(channel) = &self.channel {
            let log = Log {
                level: log_level(metadata.level()),
                target: metadata.target().to_owned(),
                message,
                instance_id: tag.as_ref().map(|t| t.instance_id),
            };
            let log = Message::Log(log);
            if channel.send(&log, &[]).is_ok() {
                return;
            }
            // The host is gone or refused the frame: keep the event on standard error.
            let Message::Log(Log { message: text, .. }) = log else {
                return;
            };
            message = text;
        }
        let who = match &tag {
            Some(t) => format!(" {}#{}", t.symbol, t.instance_id),
            None => String::new(),
        };
        eprintln!(
            "[{}] {:>5}{who} {}: {message}",
            self.plugin,
            metadata.level(),
            metadata.target()
        );
    }
}

fn log_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

/// Picks `instance_id` and `symbol` out of a span's fields.
#[derive(Default)]
struct TagVisitor {
    instance_id: Option<u64>,
    symbol: Option<String>,
}

impl Visit for TagVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "instance_id" {
            self.instance_id = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "instance_id" {
            self.instance_id = u64::try_from(value).ok();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "symbol" {
            self.symbol = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "symbol" {
            self.symbol = Some(format!("{value:?}"));
        }
    }
}

/// Formats an event: its `message`, then ` name=value` for every other field.
#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl MessageVisitor {
    fn finish(self) -> String {
        let mut out = self.message;
        if out.is_empty() {
            return self.fields.trim_start().to_owned();
        }
        out.push_str(&self.fields);
        out
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
