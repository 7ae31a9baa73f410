//! Starting one plugin process: the inherited control socket, the output readers, the
//! handshake.

use std::io::{BufRead, BufReader, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmplug_transport::control::{CONTROL_FD_ENV, ControlChannel, ControlError, Hello, Message};

use super::{PluginSpec, SupervisorConfig, log};
use crate::error::{Error, Result};

/// Shortest send time-out on a control socket (a zero ping time-out would mean none at all).
const MIN_SEND_TIMEOUT: Duration = Duration::from_millis(10);

/// Held while a child is spawned: the child's end of the control socket is inheritable for that
/// moment, and another spawn from this crate must not pick it up (its child would keep the
/// socket open and hide our plugin's exit).
pub(crate) static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// A running plugin process that has said hello.
#[derive(Debug)]
pub(crate) struct Process {
    pub generation: u64,
    pub child: Child,
    pub channel: Arc<ControlChannel>,
    pub hello: Hello,
    pub started_at: Instant,
    /// The host thread that speaks eKuiper's protocol to the process, if it is an eKuiper
    /// plugin ([`crate::ekuiper`]); joined when the process is reaped, after its clean-up.
    pub bridge: Option<crate::ekuiper::bridge::BridgeThread>,
}

impl Process {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (if it is still running) and reaps it.
    pub(crate) fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        // The plugin leads its own process group (see `launch`): kill whatever it started
        // too. Done before the reap, while the group id cannot have been reused.
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::KILL,
        );
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        let _ = self.channel.get_ref().shutdown(Shutdown::Both);
        self.join_bridge();
        status
    }

    /// Waits for an eKuiper bridge to finish (its control channel is shut down by now).
    fn join_bridge(&mut self) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.join();
        }
    }

    /// Waits up to `grace` for the process to exit by itself, then kills it; reaps it.
    pub(crate) fn reap_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let _ = self.channel.get_ref().shutdown(Shutdown::Both);
                    self.join_bridge();
                    return Some(status);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        self.kill_and_reap()
    }
}

/// Starts `spec`'s executable with the control socket inherited, waits for its `Hello` and
/// checks it. On any failure the child is killed and reaped before the error returns.
pub(crate) fn launch(
    spec: &PluginSpec,
    config: &SupervisorConfig,
    generation: u64,
) -> Result<Process> {
    if let super::Protocol::Ekuiper(symbols) = &spec.protocol {
        return crate::ekuiper::launch::launch(spec, symbols, config, generation);
    }
    let plugin = spec.name.clone();
    let transport = |source| Error::Transport {
        plugin: plugin.clone(),
        source,
    };
    let spawn_error = |source| Error::Spawn {
        plugin: spec.name.clone(),
        executable: spec.executable.clone(),
        source,
    };
    let (host_end, child_end) = UnixStream::pair().map_err(spawn_error)?;
    host_end
        .set_write_timeout(Some(config.control_write_timeout))
        .map_err(spawn_error)?;
    let mut command = Command::new(&spec.executable);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(CONTROL_FD_ENV, child_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a plugin killed by the supervisor takes the processes it
        // started with it, and a terminal's Ctrl-C reaches the host alone, which then stops
        // its plugins in order.
        .process_group(0);
    if let Some(dir) = &spec.dir {
        command.current_dir(dir);
    }
    let mut child = {
        let _guard = SPAWN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        rustix::io::fcntl_setfd(&child_end, rustix::io::FdFlags::empty())
            .map_err(|e| spawn_error(e.into()))?;
        let spawned = command.spawn();
        // Close our copy of the child's end while still holding the lock.
        drop(child_end);
        spawned.map_err(spawn_error)?
    };
    if let Some(out) = child.stdout.take() {
        forward_output(&spec.name, "stdout", out);
    }
    if let Some(err) = child.stderr.take() {
        forward_output(&spec.name, "stderr", err);
    }
    // A plugin that stops reading its control socket must not block the host's sends (a pong,
    // a ping, a start) for longer than a ping may stay unanswered: past that, a send fails
    // and the plugin is treated as wedged.
    if let Err(e) = host_end.set_write_timeout(Some(config.ping_timeout.max(MIN_SEND_TIMEOUT))) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Io {
            context: "setting the control socket's send time-out",
            path: spec.executable.clone(),
            source: e,
        });
    }
    let channel = match ControlChannel::new(host_end) {
        Ok(channel) => Arc::new(channel),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(transport(e));
        }
    };
    let mut process = Process {
        generation,
        child,
        channel,
        hello: Hello::new(spec.name.clone()),
        started_at: Instant::now(),
        bridge: None,
    };
    match handshake(spec, config, &process.channel) {
        Ok(hello) => {
            process.hello = hello;
            Ok(process)
        }
        Err(Failure::Kill(e)) => {
            process.kill_and_reap();
            Err(e)
        }
        Err(Failure::Exited(describe)) => {
            let status = process.reap_within(Duration::from_millis(500));
            Err(describe(status))
        }
    }
}

enum Failure {
    /// Kill the child and return the error.
    Kill(Error),
    /// The child is exiting: reap it and describe the error with its exit status.
    Exited(Box<dyn FnOnce(Option<ExitStatus>) -> Error>),
}

/// Waits for the `Hello` of a process launched with a bridge (an eKuiper plugin), which the
/// bridge sends at once; as [`handshake`], killing nothing.
pub(crate) fn handshake_hello(
    spec: &PluginSpec,
    config: &SupervisorConfig,
    channel: &ControlChannel,
) -> Result<Hello> {
    handshake(spec, config, channel).map_err(|failure| match failure {
        Failure::Kill(e) => e,
        Failure::Exited(describe) => describe(None),
    })
}

fn handshake(
    spec: &PluginSpec,
    config: &SupervisorConfig,
    channel: &ControlChannel,
) -> std::result::Result<Hello, Failure> {
    let plugin = spec.name.clone();
    let handshake_error = |detail: String| Error::Handshake {
        plugin: plugin.clone(),
        detail,
    };
    let deadline = Instant::now() + config.handshake_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let received = channel.recv_timeout(Some(left.max(Duration::from_millis(1))));
        let error = match received {
            Ok((Message::Hello(hello), _)) => {
                if hello.plugin_name != spec.name {
                    let detail = format!(
                        "it introduced itself as `{}` but was started as `{}`; the name passed \
                         to the SDK's start function must equal the plugin's json name",
                        hello.plugin_name, spec.name
                    );
                    let _ = channel.send(
                        &Message::Error {
                            message: detail.clone(),
                        },
                        &[],
                    );
                    return Err(Failure::Kill(handshake_error(detail)));
                }
                return Ok(hello);
            }
            Ok((Message::Log(entry), _)) => {
                log::forward(&spec.name, &entry);
                continue;
            }
            Ok((other, _)) => {
                let detail = format!(
                    "its first message was `{}`, not `hello`; it does not follow the shmplug \
                     control protocol",
                    other.type_name()
                );
                let _ = channel.send(
                    &Message::Error {
                        message: detail.clone(),
                    },
                    &[],
                );
                return Err(Failure::Kill(handshake_error(detail)));
            }
            Err(e) => e,
        };
        let shmplug_transport::Error::Control(control) = error else {
            return Err(Failure::Kill(handshake_error(error.to_string())));
        };
        return Err(match control {
            ControlError::TimedOut(_) => Failure::Kill(Error::HandshakeTimeout {
                plugin: spec.name.clone(),
                executable: spec.executable.clone(),
                timeout: config.handshake_timeout,
            }),
            ControlError::VersionMismatch { .. } => {
                let detail = control.to_string();
                let _ = channel.send(
                    &Message::Error {
                        message: detail.clone(),
                    },
                    &[],
                );
                Failure::Kill(Error::VersionMismatch {
                    plugin: spec.name.clone(),
                    detail,
                })
            }
            ControlError::Closed => {
                let plugin = spec.name.clone();
                let executable = spec.executable.clone();
                Failure::Exited(Box::new(move |status| Error::Handshake {
                    plugin,
                    detail: format!(
                        "it closed the control socket before saying hello ({}); is `{}` a \
                         shmplug plugin? Its output is in the log",
                        status.map_or_else(|| "exit status unknown".into(), |s| s.to_string()),
                        executable.display()
                    ),
                }))
            }
            other => Failure::Kill(handshake_error(other.to_string())),
        });
    }
}

/// Sends each line the plugin writes to `stream` into `tracing`, tagged with the plugin name.
pub(crate) fn forward_output(plugin: &str, stream: &'static str, pipe: impl Read + Send + 'static) {
    let name = plugin.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("shmplug-{plugin}-{stream}"))
        .spawn(move || {
            let plugin = name;
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                if stream == "stderr" {
                    tracing::warn!(target: "shmplug::plugin", plugin = %plugin, stream, "{text}");
                } else {
                    tracing::info!(target: "shmplug::plugin", plugin = %plugin, stream, "{text}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(plugin, "cannot start the {stream} reader thread: {e}");
    }
}

/// Joins a thread, ignoring its panic (already reported by the panic hook).
pub(crate) fn join(handle: Option<JoinHandle<()>>) {
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}
