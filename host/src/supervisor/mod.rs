//! The supervisor: runs one plugin executable as a child process and keeps it healthy.
//!
//! - **Launch.** The child inherits one end of a Unix socket pair; its descriptor number is in
//!   [`CONTROL_FD_ENV`](shmplug_transport::control::CONTROL_FD_ENV). No socket file is created.
//!   Its stdout and stderr lines go to `tracing` (target `shmplug::plugin`, field `plugin`),
//!   and so do its [`Log`](shmplug_transport::control::Log) messages (with `instance`).
//! - **Handshake.** The plugin must send `Hello` within
//!   [`handshake_timeout`](SupervisorConfig::handshake_timeout), naming itself as installed
//!   and speaking a compatible protocol version; otherwise it is told why
//!   ([`Message::Error`](shmplug_transport::control::Message::Error)), killed and reaped.
//! - **Liveness.** A monitor thread pings the plugin every
//!   [`ping_interval`](SupervisorConfig::ping_interval); a plugin that does not answer within
//!   [`ping_timeout`](SupervisorConfig::ping_timeout) is wedged and gets restarted, as does one
//!   whose control socket closes (it exited or crashed).
//! - **Starvation.** The same thread notices an instance whose ring has held data the host
//!   did not read for longer than [`starved_after`](SupervisorConfig::starved_after): it is
//!   reported in [`InstanceStatus::starved_for`] and logged once per episode (see
//!   [`InstanceStatus::starvations`]).
//! - **Restart.** After a back-off (doubling from
//!   [`backoff_initial`](SupervisorConfig::backoff_initial) up to
//!   [`backoff_max`](SupervisorConfig::backoff_max), reset once a process stayed up for
//!   [`healthy_after`](SupervisorConfig::healthy_after)) a new process starts and every
//!   instance that was running is started again on new rings. The data handles
//!   ([`SourceReader`], ...) switch to the new rings by themselves.
//! - **Update.** [`Plugin::update`] starts the new executable, moves the instances to it and
//!   retires the old process, without the engine re-opening anything.
//! - **Reaping.** Every child is waited for; dropping a [`Plugin`] shuts its process down
//!   (`Shutdown`, then `SIGKILL` after [`stop_timeout`](SupervisorConfig::stop_timeout)).
//!   If the host dies without dropping it, the plugin still exits: the SDK asks the kernel
//!   for a parent-death signal (`PR_SET_PDEATHSIG`) and exits when its control socket closes.
//!
//! Spawns from this crate are serialised, because the child's socket end is inheritable while a
//! child is being spawned. A process that spawns children by other means (`std::process` in
//! another thread) at that moment could let one inherit it; such a grandchild would keep the
//! socket open and delay the notice of the plugin's exit until the ping time-out.

mod limits;
mod log;
mod monitor;
pub(crate) mod process;
pub(crate) mod slot;
mod starve;
pub(crate) mod state;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use shmplug_transport::control::{ArgShape, Hello};

use crate::error::{Error, Result, SymbolKind};
use crate::handles::{FunctionClient, SinkWriter, SourceReader};
use crate::registry::PluginInfo;
use state::{Event, State, Supervision};

/// What to run: the plugin's name and executable, and how to start it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSpec {
    /// The plugin's name; its `Hello` must carry the same name.
    pub name: String,
    /// The executable.
    pub executable: PathBuf,
    /// Arguments to pass.
    pub args: Vec<OsString>,
    /// Extra environment variables (the host's environment is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The working directory; `None` keeps the host's.
    pub dir: Option<PathBuf>,
    /// The protocol the process speaks.
    pub protocol: Protocol,
}

/// The protocol a plugin process speaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// shmplug's: control socket and shared-memory rings.
    #[default]
    Shmplug,
    /// eKuiper's portable protocol, unchanged ([`crate::ekuiper`]), offering these symbols.
    Ekuiper(crate::ekuiper::Symbols),
}

impl PluginSpec {
    /// Runs `executable` as plugin `name`, with no arguments, in the host's directory.
    pub fn new(name: impl Into<String>, executable: impl Into<PathBuf>) -> PluginSpec {
        PluginSpec {
            name: name.into(),
            executable: executable.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            protocol: Protocol::Shmplug,
        }
    }

    /// Runs an installed plugin, in its own directory (as eKuiper does), which it also finds
    /// in [`PLUGIN_DIR_ENV`](shmplug_transport::control::PLUGIN_DIR_ENV) when `dir` is
    /// changed.
    ///
    /// A plugin whose manifest's language is `go` or `python` is an eKuiper portable plugin:
    /// it is started as eKuiper starts it ([`crate::ekuiper::command_line`]) and spoken to in
    /// eKuiper's protocol.
    pub fn from_info(info: &PluginInfo) -> PluginSpec {
        let manifest = &info.manifest;
        if crate::ekuiper::is_ekuiper_language(&manifest.language) {
            let (program, args) =
                crate::ekuiper::command_line(&manifest.language, &info.executable);
            return PluginSpec {
                args,
                dir: Some(info.dir.clone()),
                protocol: Protocol::Ekuiper(crate::ekuiper::Symbols {
                    sources: manifest.sources.clone(),
                    sinks: manifest.sinks.clone(),
                    functions: manifest.functions.clone(),
                }),
                ..PluginSpec::new(info.name.clone(), program)
            }
            .env(shmplug_transport::control::PLUGIN_DIR_ENV, &info.dir);
        }
        PluginSpec {
            dir: Some(info.dir.clone()),
            ..PluginSpec::new(info.name.clone(), info.executable.clone())
        }
        .env(shmplug_transport::control::PLUGIN_DIR_ENV, &info.dir)
    }

    /// This spec with `arg` appended to the arguments.
    pub fn arg(mut self, arg: impl Into<OsString>) -> PluginSpec {
        self.args.push(arg.into());
        self
    }

    /// This spec with the environment variable `key` set to `value`.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> PluginSpec {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Time-outs, back-off and ring sizes for supervised plugins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// How long a new process has to send `Hello`. Default 5 s.
    pub handshake_timeout: Duration,
    /// How often a running plugin is pinged. Default 1 s.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the plugin counts as wedged. Default 5 s.
    pub ping_timeout: Duration,
    /// How long a start may go unanswered (`Started` or `Failed`). Default 10 s.
    pub start_timeout: Duration,
    /// How long a process may take to exit after `Shutdown` before it is killed. Default 2 s.
    pub stop_timeout: Duration,
    /// The first restart's delay; each failed restart doubles it. Default 100 ms.
    pub backoff_initial: Duration,
    /// The longest delay between restarts. Default 10 s.
    pub backoff_max: Duration,
    /// A process that stays up this long resets the back-off. Default 30 s.
    pub healthy_after: Duration,
    /// Give up (fail every instance) after this many failed restarts in a row; `None` never
    /// gives up. Default `None`.
    pub max_restarts: Option<u32>,
    /// Data region of each ring, bytes (a power of two); an instance may choose its own
    /// ([`InstanceSpec::ring_capacity`]). A tuple takes at most half of it. Default 1 MiB.
    pub ring_capacity: usize,
    /// How long a write to the control socket may block. Default 5 s.
    pub control_write_timeout: Duration,
    /// How long a data handle spins before it sleeps. Default 50 µs.
    pub handle_spin: Duration,
    /// Raise this process's soft limit of open descriptors to its hard limit when the first
    /// plugin starts: each source or sink instance holds 3 descriptors in the host (a function
    /// 6), so the usual soft limit of 1024 caps a host at a few hundred instances. Default true.
    pub raise_descriptor_limit: bool,
    /// An instance whose ring has held data (a source's tuples, a function's answers) that the
    /// host did not read from for this long is *starved*: its reader is not being served. The
    /// supervisor looks a few times per threshold (every quarter of it, between 10 ms and
    /// 1 s), reports it in [`InstanceStatus::starved_for`] while it lasts, and logs a warning
    /// naming the plugin, symbol and instance once per episode. The ring's positions are
    /// written by the plugin, so this is a hint, not a proof. [`Duration::MAX`] turns the
    /// looks off. Default 1 s.
    pub starved_after: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            handshake_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            healthy_after: Duration::from_secs(30),
            max_restarts: None,
            ring_capacity: 1 << 20,
            control_write_timeout: Duration::from_secs(5),
            handle_spin: Duration::from_micros(50),
            raise_descriptor_limit: true,
            starved_after: Duration::from_secs(1),
        }
    }
}

/// Where a plugin stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The process runs and answers.
    Running,
    /// The process died or was wedged; a new one is being started (`attempt` failures in a
    /// row so far).
    Restarting {
        /// Failed restarts in a row.
        attempt: u32,
    },
    /// Restarting gave up ([`SupervisorConfig::max_restarts`]); only an update helps.
    Failed,
    /// The plugin was shut down.
    Stopped,
}

/// What a start needs besides the symbol's kind: eKuiper's rule and operator ids, the symbol,
/// the data source and properties.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceSpec {
    /// The rule the instance belongs to.
    pub rule_id: String,
    /// The operator in the rule.
    pub op_id: String,
    /// The symbol to instantiate.
    pub symbol: String,
    /// The data source (a source's topic, for example).
    pub data_source: Option<String>,
    /// Configuration properties.
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// The data region of this instance's rings, bytes (a power of two, at least 4 KiB);
    /// `None`: [`SupervisorConfig::ring_capacity`]. A tuple takes at most half of it: a small
    /// ring suits a sparse stream of small tuples (many instances), a large one bursts and large
    /// tuples.
    pub ring_capacity: Option<usize>,
}

impl InstanceSpec {
    /// An instance of `symbol` with empty ids and properties.
    pub fn new(symbol: impl Into<String>) -> InstanceSpec {
        InstanceSpec {
            symbol: symbol.into(),
            ..InstanceSpec::default()
        }
    }

    /// This spec with a data source.
    pub fn data_source(mut self, data_source: impl Into<String>) -> InstanceSpec {
        self.data_source = Some(data_source.into());
        self
    }

    /// This spec with property `key` set.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// This spec with its own ring capacity ([`ring_capacity`](Self::ring_capacity)).
    pub fn ring_capacity(mut self, bytes: usize) -> InstanceSpec {
        self.ring_capacity = Some(bytes);
        self
    }

    /// This spec with rule and operator ids.
    pub fn rule(mut self, rule_id: impl Into<String>, op_id: impl Into<String>) -> Self {
        self.rule_id = rule_id.into();
        self.op_id = op_id.into();
        self
    }
}

/// A plugin's state, for `shmplug status` and health endpoints.
#[derive(Clone, Debug)]
pub struct PluginStatus {
    /// The plugin.
    pub name: String,
    /// Where it stands.
    pub phase: Phase,
    /// The current process, if one runs.
    pub pid: Option<u32>,
    /// How many times the process was restarted.
    pub restarts: u64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// The instances it runs.
    pub instances: Vec<InstanceStatus>,
}

/// One instance in a [`PluginStatus`].
#[derive(Clone, Debug)]
pub struct InstanceStatus {
    /// The instance id.
    pub id: u64,
    /// Source, sink or function.
    pub kind: SymbolKind,
    /// The symbol.
    pub symbol: String,
    /// The rule it belongs to.
    pub rule_id: String,
    /// True once the current process confirmed it with `Started`.
    pub live: bool,
    /// A sink's records written again to a restarted process (at-least-once delivery).
    pub replayed: u64,
    /// Of those, how many the dead process may have collected already.
    pub duplicates: u64,
    /// Tuples into the instance: written to a sink, calls sent to a function (see each
    /// handle's `stats()`; a sink's deferred writes count once flushed).
    pub tuples_in: u64,
    /// Tuples out of it: received from a source, answers a function gave.
    pub tuples_out: u64,
    /// Calls that failed (the function's error, a crash, a time-out) and records refused as
    /// invalid.
    pub errors: u64,
    /// While the instance is starved (its ring has held data the host did not read for
    /// longer than [`SupervisorConfig::starved_after`]): for how long so far. `None` while
    /// the host keeps reading it or its ring is empty. Sources and functions (their answers);
    /// always `None` for a sink.
    pub starved_for: Option<Duration>,
    /// Episodes of starvation so far, each also logged once (a `warn`).
    pub starvations: u64,
}

/// A supervised plugin process. See the [module docs](self).
///
/// Dropping it shuts the process down and fails every handle opened from it.
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// use shmplug_host::{InstanceSpec, Plugin, PluginSpec, SupervisorConfig};
///
/// let plugin = Plugin::start(PluginSpec::new("mirror", "/opt/plugins/mirror/mirror"),
///                            SupervisorConfig::default())?;
/// let mut source = plugin.source(InstanceSpec::new("random").data_source("demo"))?;
/// let tuple = source.recv_timeout(Duration::from_secs(1))?;
/// println!("{:?}", tuple.map(|t| t.to_owned()));
/// # Ok::<(), shmplug_host::Error>(())
/// ```
#[derive(Debug)]
pub struct Plugin {
    shared: Arc<Supervision>,
    monitor: Option<JoinHandle<()>>,
}

impl Plugin {
    /// Starts `spec`'s process, waits for its hello, and begins supervising it.
    ///
    /// # Errors
    /// [`Error::Spawn`], [`Error::HandshakeTimeout`], [`Error::Handshake`],
    /// [`Error::VersionMismatch`]; the child is reaped before any of them returns.
    pub fn start(spec: PluginSpec, config: SupervisorConfig) -> Result<Plugin> {
        if config.raise_descriptor_limit {
            limits::raise_descriptor_limit();
        }
        let (events_tx, events_rx) = mpsc::channel();
        let name = spec.name.clone();
        let executable = spec.executable.clone();
        let shared = Arc::new(Supervision {
            name: spec.name.clone(),
            config,
            state: Mutex::new(State {
                spec,
                phase: Phase::Restarting { attempt: 0 },
                link: None,
                instances: BTreeMap::new(),
                next_instance: 0,
                restarts: 0,
                last_error: None,
                stop_waiters: HashMap::new(),
                next_request: 0,
                validate_waiters: HashMap::new(),
            }),
            changed: Condvar::new(),
            events: Mutex::new(events_tx),
        });
        // The monitor thread spawns every process of this plugin, the first one included: the
        // SDK's parent-death signal fires when the *thread* that spawned the child exits, and
        // the monitor lives exactly as long as the plugin.
        let (first_tx, first_rx) = mpsc::sync_channel(1);
        let monitored = shared.clone();
        let monitor = std::thread::Builder::new()
            .name(format!("shmplug-{name}-monitor"))
            .spawn(move || monitor::run(monitored, events_rx, first_tx))
            .map_err(|source| Error::Spawn {
                plugin: name.clone(),
                executable,
                source,
            })?;
        match first_rx.recv() {
            Ok(Ok(())) => Ok(Plugin {
                shared,
                monitor: Some(monitor),
            }),
            Ok(Err(e)) => {
                let _ = monitor.join();
                Err(e)
            }
            Err(_) => {
                let _ = monitor.join();
                Err(Error::Unavailable {
                    plugin: name,
                    reason: "its monitor thread ended unexpectedly".into(),
                })
            }
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The running process's `Hello` (its symbols), if a process runs.
    pub fn hello(&self) -> Option<Hello> {
        self.shared.lock().link.as_ref().map(|l| l.hello.clone())
    }

    /// The plugin's state.
    pub fn status(&self) -> PluginStatus {
        let state = self.shared.lock();
        let now = std::time::Instant::now();
        PluginStatus {
            name: self.shared.name.clone(),
            phase: state.phase,
            pid: state.link.as_ref().map(|l| l.pid),
            restarts: state.restarts,
            last_error: state.last_error.clone(),
            instances: state
                .instances
                .iter()
                .map(|(id, i)| {
                    let watch = i.slot.watch();
                    InstanceStatus {
                        id: *id,
                        kind: i.kind,
                        symbol: i.start.symbol.clone(),
                        rule_id: i.start.rule_id.clone(),
                        live: i.live,
                        replayed: i.slot.delivered.replayed.load(Ordering::Relaxed),
                        duplicates: i.slot.delivered.duplicates.load(Ordering::Relaxed),
                        tuples_in: i.slot.traffic.tuples_in.load(Ordering::Relaxed),
                        tuples_out: i.slot.traffic.tuples_out.load(Ordering::Relaxed),
                        errors: i.slot.traffic.errors.load(Ordering::Relaxed),
                        starved_for: watch.starved_for(now),
                        starvations: watch.episodes(),
                    }
                })
                .collect(),
        }
    }

    /// Starts a source instance and returns the handle that reads its tuples.
    ///
    /// # Errors
    /// [`Error::UnknownSymbol`], [`Error::StartFailed`] (the plugin's configure or open
    /// error), [`Error::TimedOut`] (no answer within the start time-out),
    /// [`Error::Unavailable`], [`Error::Transport`] (rings could not be created).
    pub fn source(&self, spec: InstanceSpec) -> Result<SourceReader> {
        let slot = self.shared.start_instance(SymbolKind::Source, spec)?;
        Ok(SourceReader::new(self.shared.clone(), slot))
    }

    /// Starts a sink instance and returns the handle that writes its tuples.
    ///
    /// # Errors
    /// As [`source`](Self::source).
    pub fn sink(&self, spec: InstanceSpec) -> Result<SinkWriter> {
        let slot = self.shared.start_instance(SymbolKind::Sink, spec)?;
        Ok(SinkWriter::new(self.shared.clone(), slot))
    }

    /// Starts a function instance and returns the handle that calls it.
    ///
    /// # Errors
    /// As [`source`](Self::source).
    pub fn function(&self, spec: InstanceSpec) -> Result<FunctionClient> {
        let slot = self.shared.start_instance(SymbolKind::Function, spec)?;
        Ok(FunctionClient::new(self.shared.clone(), slot))
    }

    /// Asks the plugin whether function `symbol` accepts the argument list `args` (its
    /// `validate_args`), before any instance of it starts: a rule's bad argument list then
    /// fails its start, before any tuple flows. A plugin older than control protocol 1.2 is
    /// not asked (`Ok`).
    ///
    /// # Errors
    /// [`Error::ArgsRefused`] with the plugin's message; [`Error::UnknownSymbol`],
    /// [`Error::Unavailable`], [`Error::TimedOut`] (no answer within the start time-out).
    pub fn validate_function(&self, symbol: &str, args: Vec<ArgShape>) -> Result<()> {
        self.shared.validate(symbol, args)
    }

    /// Replaces the process with `spec`'s executable (a new version): the new process is
    /// started and greeted first, then the instances move to it and the old process is retired.
    /// Handles keep working. If the new process fails its handshake, the old one keeps running.
    ///
    /// # Errors
    /// As [`start`](Self::start), for the new process; [`Error::Unavailable`] if the plugin
    /// was shut down.
    pub fn update(&self, spec: PluginSpec) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.send_event(Event::Update(spec, tx));
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Unavailable {
                plugin: self.shared.name.clone(),
                reason: "it was shut down".into(),
            })
        })
    }

    /// Kills the process and restarts it (as if it had crashed), replaying its instances.
    pub fn restart(&self, reason: impl Into<String>) {
        self.shared.send_event(Event::Restart(reason.into()));
    }

    /// Stops every instance, shuts the process down (killing it after the stop time-out) and
    /// reaps it. Also done on drop.
    pub fn shutdown(mut self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&mut self) {
        let Some(monitor) = self.monitor.take() else {
            return;
        };
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.send_event(Event::Shutdown(tx));
        let _ = rx.recv();
        let _ = monitor.join();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}
