//! The plugin runtime: introduce the plugin to the host, then serve its control messages,
//! with one thread per instance, except for polled sources, which share the executor's few
//! threads.

mod connect;
pub(crate) mod drive;
mod executor;
mod instance;
pub(crate) mod log;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use shmplug_transport::control::{ArgShape, ControlChannel, ControlError, Message, Start};
use shmplug_transport::{Error, Ring};

use crate::api::Arg;
use crate::config::PluginConfig;
use crate::error::catch;
use executor::Executor;
use instance::{Instance, InstanceEnv, Kind, RunsOn, State};

pub use connect::{EXIT_NO_HOST, start};
pub(crate) use executor::DEFAULT_TIMER_SLACK;
pub use executor::EXECUTOR_THREADS_ENV;
pub use log::LOG_LEVEL_ENV;

/// How long the control loop waits for a message before it reaps finished instances.
const IDLE: Duration = Duration::from_secs(1);

/// How long a shutdown waits for the instances to stop before it gives up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why [`serve`] ended other than by the host's `Shutdown` or closing the channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The control channel failed for good (a broken frame, a socket error).
    #[error("the control channel failed: {0}")]
    Channel(#[from] Error),
}

/// Serves the host on `channel` until it sends `Shutdown` or closes the channel: sends the
/// `Hello`, then answers every control message. Instances run on their own threads; at the
/// end every instance is stopped (for at most [`SHUTDOWN_GRACE`]).
///
/// [`start`] calls this once it has connected; tests call it on a thread with one end of
/// [`ControlChannel::pair`] and play the host on the other.
///
/// `tracing` events of the plugin (inside instance threads, and on the calling thread while
/// `serve` runs) are forwarded to the host as `Log` messages.
///
/// # Errors
/// [`ServeError::Channel`] if the channel fails other than by the host closing it.
#[doc(hidden)]
pub fn serve(channel: ControlChannel, config: PluginConfig) -> Result<(), ServeError> {
    serve_with(channel, config, false)
}

/// [`serve`] for a plugin process: its `tracing` dispatcher also becomes the global default,
/// so that events on threads the plugin spawns itself reach the host too.
pub(crate) fn serve_process(
    channel: ControlChannel,
    config: PluginConfig,
) -> Result<(), ServeError> {
    serve_with(channel, config, true)
}

fn serve_with(
    channel: ControlChannel,
    config: PluginConfig,
    global: bool,
) -> Result<(), ServeError> {
    let channel = Arc::new(channel);
    let dispatch = log::dispatch(&config.name, Some(channel.clone()), log::level_from_env());
    if global {
        // Fails only if the plugin set a global subscriber itself; that one then stays.
        let _ = tracing::dispatcher::set_global_default(dispatch.clone());
    }
    let (done, finished) = mpsc::channel();
    let shared = InstanceEnv {
        config: Arc::new(config),
        channel,
        dispatch: dispatch.clone(),
        done,
    };
    tracing::dispatcher::with_default(&dispatch, || {
        let mut runtime = Runtime {
            executor: Executor::new(shared.clone()),
            shared,
            instances: HashMap::new(),
            finished,
        };
        let result = runtime.run();
        let all_stopped = runtime.stop_all();
        runtime.executor.shutdown(all_stopped);
        result
    })
}

struct Runtime {
    shared: InstanceEnv,
    /// Runs the polled sources' instances.
    executor: Executor,
    instances: HashMap<u64, Instance>,
    /// Ids of instances whose threads have ended.
    finished: Receiver<u64>,
}

impl Runtime {
    fn run(&mut self) -> Result<(), ServeError> {
        let channel = self.shared.channel.clone();
        channel.send(&Message::Hello(self.shared.config.hello()), &[])?;
        loop {
            self.reap();
            let (message, rings) = match channel.recv_timeout(Some(IDLE)) {
                Ok(received) => received,
                Err(Error::Control(ControlError::Closed)) => return Ok(()),
                Err(Error::Control(ControlError::TimedOut(_))) => continue,
                Err(Error::Control(e)) if !e.is_fatal() => {
                    self.tell_host(format!("the plugin could not use a control message: {e}"));
                    continue;
                }
                Err(e @ Error::BadSegment(_)) => {
                    self.tell_host(format!("the plugin could not open a ring it was sent: {e}"));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match message {
                Message::StartSource(start) => self.start(Kind::Source, start, rings),
                Message::StartSink(start) => self.start(Kind::Sink, start, rings),
                Message::StartFunction(start) => self.start(Kind::Function, start, rings),
                Message::Stop { instance_id } => self.stop(instance_id),
                Message::Validate {
                    request_id,
                    symbol,
                    args,
                } => {
                    let error = self.validate(&symbol, &args);
                    self.send(&Message::Validated { request_id, error });
                }
                Message::Ping { nonce } => self.send(&Message::Pong { nonce }),
                Message::Pong { .. } => {}
                // The channel keeps it; the starts that name its slots find it there.
                Message::Doorbell => {}
                Message::Shutdown => return Ok(()),
                Message::Error { message } => {
                    eprintln!("[{}] the host reports: {message}", self.shared.config.name);
                }
                other => self.tell_host(format!(
                    "a plugin does not expect a `{}` message from the host; ignored",
                    other.type_name()
                )),
            }
        }
    }

    fn start(&mut self, kind: Kind, start: Start, rings: Vec<Ring>) {
        let instance_id = start.instance_id;
        if let Some(existing) = self.instances.get(&instance_id) {
            if !existing.state.is_finished() {
                let error = format!(
                    "plugin `{}` already runs an instance {instance_id}; stop it first or use \
                     another instance id",
                    self.shared.config.name
                );
                return self.send(&Message::Failed { instance_id, error });
            }
            // An earlier instance with this id that has ended: its thread is exiting.
            if let Some(old) = self.instances.remove(&instance_id) {
                old.join();
            }
        }
        if let Some(error) = self.unknown_symbol(kind, &start.symbol) {
            return self.send(&Message::Failed { instance_id, error });
        }
        if kind == Kind::Source
            && self
                .shared
                .config
                .polled_sources
                .contains_key(&start.symbol)
        {
            let state = Arc::new(State::default());
            match self.executor.start(start, rings, state.clone()) {
                Ok(worker) => {
                    let runs_on = RunsOn::Executor(worker);
                    self.instances
                        .insert(instance_id, Instance { state, runs_on });
                }
                Err(error) => self.send(&Message::Failed { instance_id, error }),
            }
            return;
        }
        match instance::spawn(&self.shared, kind, start, rings) {
            Ok(instance) => {
                self.instances.insert(instance_id, instance);
            }
            Err(error) => self.send(&Message::Failed { instance_id, error }),
        }
    }

    /// The `Failed` text for a symbol this plugin does not offer.
    fn unknown_symbol(&self, kind: Kind, symbol: &str) -> Option<String> {
        let config = &self.shared.config;
        let offered: Vec<&String> = match kind {
            Kind::Source => {
                let mut sources: Vec<&String> = config
                    .sources
                    .keys()
                    .chain(config.polled_sources.keys())
                    .collect();
                sources.sort();
                sources
            }
            Kind::Sink => config.sinks.keys().collect(),
            Kind::Function => config.functions.keys().collect(),
        };
        if offered.iter().any(|s| *s == symbol) {
            return None;
        }
        let list = if offered.is_empty() {
            "none".to_owned()
        } else {
            offered
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(format!(
            "plugin `{}` has no {} `{symbol}` (its {}s: {list}); check the rule and the \
             plugin's manifest",
            config.name,
            kind.name(),
            kind.name(),
        ))
    }

    /// Whether function `symbol` accepts `args` (its `validate_args`, on a value made for the
    /// question): `None`, or the refusal's text.
    fn validate(&self, symbol: &str, args: &[ArgShape]) -> Option<String> {
        let Some(factory) = self.shared.config.functions.get(symbol) else {
            return self.unknown_symbol(Kind::Function, symbol);
        };
        let args: Vec<Arg<'_>> = args
            .iter()
            .map(|arg| match arg {
                ArgShape::Field { name } => Arg::Field(name),
            })
            .collect();
        let method = || format!("function `{symbol}`: validate_args");
        catch(method, || factory().validate_args(&args))
            .err()
            .map(|e| e.to_string())
    }

    fn stop(&mut self, instance_id: u64) {
        match self.instances.get(&instance_id) {
            Some(instance) => {
                if instance.state.request_stop() {
                    self.send(&Message::Stopped { instance_id });
                } else if let RunsOn::Executor(worker) = instance.runs_on {
                    self.executor.stop(worker, instance_id);
                }
            }
            // Unknown or already reaped: stopping is idempotent.
            None => self.send(&Message::Stopped { instance_id }),
        }
    }

    /// Forgets instances whose threads have ended.
    fn reap(&mut self) {
        while let Ok(id) = self.finished.try_recv() {
            if let Some(instance) = self.instances.get(&id)
                && instance.state.is_finished()
                && let Some(instance) = self.instances.remove(&id)
            {
                instance.join();
            }
        }
    }

    /// Stops every instance and waits up to [`SHUTDOWN_GRACE`] for them; true if all stopped.
    fn stop_all(&mut self) -> bool {
        for (&id, instance) in &self.instances {
            if !instance.state.request_stop()
                && let RunsOn::Executor(worker) = instance.runs_on
            {
                self.executor.stop(worker, id);
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.instances.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.finished.recv_timeout(left) {
                Ok(id) => {
                    if let Some(instance) = self.instances.get(&id)
                        && instance.state.is_finished()
                        && let Some(instance) = self.instances.remove(&id)
                    {
                        instance.join();
                    }
                }
                Err(_) => break,
            }
        }
        for id in self.instances.keys() {
            tracing::warn!(
                instance_id = id,
                "instance did not stop within {SHUTDOWN_GRACE:?}; leaving it behind"
            );
        }
        let all_stopped = self.instances.is_empty();
        self.instances.clear();
        all_stopped
    }

    fn send(&self, message: &Message) {
        let _ = self.shared.channel.send(message, &[]);
    }

    fn tell_host(&self, message: String) {
        self.send(&Message::Error { message });
    }
}

#[cfg(test)]
mod tests;
