//! One thread per instance: make it from its factory, configure and open it, reply `Started`
//! or `Failed`, serve its rings, close it, and reply `Stopped` when the host asked for the stop.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use shmplug_transport::Ring;
use shmplug_transport::control::{ControlChannel, Message, Start};
use shmplug_transport::tuple::{MAX_OFFSET_LEN, Offset};
use tracing::Dispatch;

use super::drive::{self, Throttle, method};
use crate::api::Source;
use crate::config::PluginConfig;
use crate::context::{Cancel, FunctionContext, Meta, StateStore, StreamContext};
use crate::error::{PluginError, catch};

/// What kind of symbol an instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Source,
    Sink,
    Function,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Sink => "sink",
            Kind::Function => "function",
        }
    }
}

/// What every instance thread shares with the control loop.
#[derive(Clone)]
pub(crate) struct InstanceEnv {
    pub config: Arc<PluginConfig>,
    pub channel: Arc<ControlChannel>,
    pub dispatch: Dispatch,
    /// Each thread sends its instance id here as the last thing it does.
    pub done: Sender<u64>,
}

/// A running instance, as the control loop holds it.
pub(crate) struct Instance {
    pub state: Arc<State>,
    /// Its own thread, or the executor thread (by index) that runs it.
    pub runs_on: RunsOn,
}

impl Instance {
    /// Waits for its own thread, if it has one (it has finished with the instance).
    pub(crate) fn join(self) {
        if let RunsOn::Thread(handle) = self.runs_on {
            let _ = handle.join();
        }
    }
}

/// Where an instance runs.
pub(crate) enum RunsOn {
    Thread(JoinHandle<()>),
    Executor(usize),
}

/// The stop handshake between the control loop and the instance's thread.
#[derive(Default)]
pub(crate) struct State {
    pub cancel: Cancel,
    status: Mutex<Status>,
}

#[derive(Default)]
struct Status {
    stop_requested: bool,
    finished: bool,
}

impl State {
    /// Cancels the instance; true if its thread has already finished (the caller then replies
    /// `Stopped`, else the thread will).
    pub(crate) fn request_stop(&self) -> bool {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.stop_requested = true;
        self.cancel.cancel();
        status.finished
    }

    /// True once the instance's thread is done with the instance (it may still be exiting).
    pub(crate) fn is_finished(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finished
    }

    /// Marks the thread finished; true if a stop was requested (the thread then replies
    /// `Stopped`).
    pub(crate) fn finish(&self) -> bool {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.finished = true;
        status.stop_requested
    }
}

/// Starts a thread for the instance `start` asks for. The thread replies `Started` or
/// `Failed` itself.
///
/// # Errors
/// The `Failed` text when the thread cannot be spawned.
pub(crate) fn spawn(
    shared: &InstanceEnv,
    kind: Kind,
    start: Start,
    rings: Vec<Ring>,
) -> Result<Instance, String> {
    let state = Arc::new(State::default());
    let thread_state = state.clone();
    let shared = shared.clone();
    let name = format!("{}-{}-{}", kind.name(), start.symbol, start.instance_id);
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(shared, kind, start, rings, thread_state))
        .map_err(|e| format!("cannot start a thread for the instance: {e}"))?;
    Ok(Instance {
        state,
        runs_on: RunsOn::Thread(handle),
    })
}

/// The context of the instance `start` asks for.
pub(crate) fn context(env: &InstanceEnv, start: &Start, state: &State) -> StreamContext {
    let meta = Meta {
        plugin: env.config.name.clone(),
        symbol: start.symbol.clone(),
        rule_id: start.rule_id.clone(),
        op_id: start.op_id.clone(),
        instance_id: start.instance_id,
    };
    let store = StateStore::new(start.state.clone(), Some(env.channel.clone()));
    StreamContext::with_state(meta, state.cancel.clone(), store)
}

fn run(shared: InstanceEnv, kind: Kind, start: Start, rings: Vec<Ring>, state: Arc<State>) {
    let id = start.instance_id;
    // A panic outside the plugin's methods (which `catch` reports where they are called), in
    // the runtime or a logging layer, still fails the instance with its text at once.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tracing::dispatcher::with_default(&shared.dispatch, || {
            let ctx = context(&shared, &start, &state);
            let _entered = ctx.span().clone().entered();
            let reply = Reply {
                channel: &shared.channel,
                ctx: &ctx,
                kind,
            };
            match kind {
                Kind::Source => source(&shared.config, &ctx, &start, rings, &reply),
                Kind::Sink => sink(&shared.config, &ctx, &start, rings, &reply),
                Kind::Function => function(&shared.config, &ctx, &start, rings, &reply),
            }
        });
    }));
    if let Err(payload) = ran {
        let error = format!(
            "the instance's thread panicked: {}",
            crate::error::panic_message(payload.as_ref())
        );
        let _ = shared.channel.send(
            &Message::Failed {
                instance_id: id,
                error,
            },
            &[],
        );
    }
    if state.finish() {
        let _ = shared
            .channel
            .send(&Message::Stopped { instance_id: id }, &[]);
    }
    let _ = shared.done.send(id);
}

/// Sends an instance's `Started` or `Failed`.
pub(crate) struct Reply<'a> {
    pub channel: &'a ControlChannel,
    pub ctx: &'a StreamContext,
    pub kind: Kind,
}

impl Reply<'_> {
    pub(crate) fn started(&self) {
        let instance_id = self.ctx.instance_id();
        let _ = self.channel.send(&Message::Started { instance_id }, &[]);
    }

    pub(crate) fn failed(&self, phase: &str, error: &PluginError) {
        let ctx = self.ctx;
        // Only what the host does not know: it names the plugin, symbol and instance itself
        // (and this event's span tags it with them), so saying them here would repeat them.
        let error = format!("{phase} failed: {error}");
        tracing::debug!("{error}");
        let instance_id = ctx.instance_id();
        let _ = self
            .channel
            .send(&Message::Failed { instance_id, error }, &[]);
    }
}

fn source(
    config: &PluginConfig,
    ctx: &StreamContext,
    start: &Start,
    rings: Vec<Ring>,
    reply: &Reply<'_>,
) {
    let symbol = ctx.symbol();
    let what = |name| method("source", symbol, name);
    let Some(mut source) = create(&config.sources, symbol, reply) else {
        return;
    };
    let data_source = start.data_source.as_deref().unwrap_or("");
    if let Err(e) = catch(
        || what("configure"),
        || source.configure(data_source, &start.properties),
    ) {
        return reply.failed("configure", &e);
    }
    if let Some(bytes) = &start.rewind_to
        && let Err(e) = rewind(&mut *source, bytes, symbol)
    {
        return reply.failed("rewind", &e);
    }
    let Some(producer) = take(&rings, 0, |ring| ring.producer(config.endpoint), reply) else {
        return;
    };
    reply.started();
    match drive::run_source(&mut *source, ctx, producer, start.send_offsets) {
        Ok(()) if ctx.is_cancelled() => tracing::debug!("source stopped"),
        Ok(()) => tracing::info!("source ended its stream"),
        Err(e) => tracing::error!("source failed: {e}"),
    }
    if let Err(e) = catch(|| what("close"), || source.close(ctx)) {
        tracing::error!("closing the source failed: {e}");
    }
}

/// Rewinds a restarted source to the offset the host kept (`Start::rewind_to`).
fn rewind(source: &mut dyn Source, bytes: &[u8], symbol: &str) -> Result<(), PluginError> {
    let offset = Offset::new(bytes).ok_or_else(|| {
        PluginError::new(format!(
            "the host sent an offset of {} bytes (at most {MAX_OFFSET_LEN})",
            bytes.len()
        ))
    })?;
    let Some(rewindable) = source.as_rewindable() else {
        return Err(PluginError::new(
            "the host asked to rewind a source that is not rewindable (register it with \
             PluginConfig::rewindable_source)",
        ));
    };
    tracing::info!("rewinding to {offset:?}");
    catch(
        || method("source", symbol, "rewind"),
        || rewindable.rewind(&offset),
    )
}

fn sink(
    config: &PluginConfig,
    ctx: &StreamContext,
    start: &Start,
    rings: Vec<Ring>,
    reply: &Reply<'_>,
) {
    let symbol = ctx.symbol();
    let what = |name| method("sink", symbol, name);
    let Some(mut sink) = create(&config.sinks, symbol, reply) else {
        return;
    };
    if let Err(e) = catch(|| what("configure"), || sink.configure(&start.properties)) {
        return reply.failed("configure", &e);
    }
    let Some(consumer) = take(&rings, 0, |ring| ring.consumer(config.endpoint), reply) else {
        return;
    };
    if let Err(e) = catch(|| what("open"), || sink.open(ctx)) {
        return reply.failed("open", &e);
    }
    reply.started();
    let mut throttle = Throttle::new();
    let mut on_error = |e: PluginError| {
        throttle.event(|left_out| match left_out {
            0 => tracing::error!("collect failed: {e}"),
            n => tracing::error!("collect failed: {e} ({n} more failures not logged)"),
        });
    };
    match drive::run_sink(&mut *sink, ctx, consumer, &mut on_error) {
        Ok(()) if ctx.is_cancelled() => tracing::debug!("sink stopped"),
        Ok(()) => tracing::info!("the host ended the sink's stream"),
        Err(e) => tracing::error!("the sink's ring failed: {e}"),
    }
    if let Err(e) = catch(|| what("close"), || sink.close(ctx)) {
        tracing::error!("closing the sink failed: {e}");
    }
}

fn function(
    config: &PluginConfig,
    ctx: &StreamContext,
    start: &Start,
    rings: Vec<Ring>,
    reply: &Reply<'_>,
) {
    let symbol = ctx.symbol();
    let Some(mut function) = create(&config.functions, symbol, reply) else {
        return;
    };
    let Some(requests) = take(&rings, 0, |ring| ring.consumer(config.endpoint), reply) else {
        return;
    };
    let Some(replies) = take(&rings, 1, |ring| ring.producer(config.endpoint), reply) else {
        return;
    };
    let function_id = start
        .properties
        .get("funcId")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let fctx = FunctionContext::new(ctx.clone(), function_id);
    reply.started();
    let mut throttle = Throttle::new();
    let mut on_panic = |e: &PluginError| {
        throttle.event(|left_out| match left_out {
            0 => tracing::error!("{e}"),
            n => tracing::error!("{e} ({n} more panics not logged)"),
        });
    };
    let batched = start.reply_batches;
    match drive::run_function(
        &mut *function,
        &fctx,
        requests,
        replies,
        batched,
        &mut on_panic,
    ) {
        Ok(()) => tracing::debug!("function stopped"),
        Err(e) => tracing::error!("the function's rings failed: {e}"),
    }
}

/// Makes an instance of `symbol` with its factory in `factories`, replying `Failed` if there is
/// no such symbol or the factory panics.
fn create<P: ?Sized>(
    factories: &BTreeMap<String, Box<dyn Fn() -> Box<P> + Send + Sync>>,
    symbol: &str,
    reply: &Reply<'_>,
) -> Option<Box<P>> {
    let kind = reply.kind.name();
    let Some(factory) = factories.get(symbol) else {
        reply.failed("lookup", &PluginError::new(format!("no such {kind}")));
        return None;
    };
    match catch(|| method(kind, symbol, "factory"), || Ok(factory())) {
        Ok(instance) => Some(instance),
        Err(e) => {
            reply.failed("create", &e);
            None
        }
    }
}

/// Takes an endpoint of `rings[index]`, replying `Failed` if that is impossible.
fn take<T>(
    rings: &[Ring],
    index: usize,
    endpoint: impl FnOnce(&Ring) -> shmplug_transport::Result<T>,
    reply: &Reply<'_>,
) -> Option<T> {
    let result = match rings.get(index) {
        Some(ring) => endpoint(ring).map_err(PluginError::from),
        None => Err(PluginError::new(format!(
            "the start message carries {} ring(s), the instance needs {}",
            rings.len(),
            index + 1
        ))),
    };
    match result {
        Ok(end) => Some(end),
        Err(e) => {
            reply.failed("taking its ring", &e);
            None
        }
    }
}
