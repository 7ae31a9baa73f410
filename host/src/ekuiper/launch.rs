//! Starting an eKuiper plugin process: the control socket, the process as eKuiper starts it,
//! its `handshake`, then the bridge (see the [module docs](super)).

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use shmplug_transport::control::ControlChannel;

use super::Symbols;
use super::bridge::{self, BridgeSetup};
use super::paths;
use super::sp::{Rep, SpError, SpListener, proto};
use crate::error::{Error, Result};
use crate::supervisor::process::{self, Process};
use crate::supervisor::{PluginSpec, SupervisorConfig};

/// Starts `spec`'s process, waits for its `handshake` on `/tmp/plugin_{name}.ipc`, and starts
/// its bridge. On any failure the process is killed and reaped before the error returns.
pub(crate) fn launch(
    spec: &PluginSpec,
    symbols: &Symbols,
    config: &SupervisorConfig,
    generation: u64,
) -> Result<Process> {
    let handshake_error = |detail: String| Error::Handshake {
        plugin: spec.name.clone(),
        detail,
    };
    let spawn_error = |source| Error::Spawn {
        plugin: spec.name.clone(),
        executable: spec.executable.clone(),
        source,
    };
    let control_path = paths::control(&spec.name).map_err(handshake_error)?;
    let listener = SpListener::bind(&control_path).map_err(|e| {
        handshake_error(format!(
            "cannot listen on ipc://{}: {e}",
            control_path.display()
        ))
    })?;
    let mut command = Command::new(&spec.executable);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // As for shmplug plugins: the supervisor's kill takes the process's children too.
        .process_group(0);
    // eKuiper's SDKs ask for no parent-death signal: without this, a host killed with SIGKILL
    // would leave the process running, re-dialing its control socket for ever. (Launched from
    // the supervisor's monitor thread, which lives as long as the plugin.)
    shmplug_transport::spawn::kill_child_on_parent_death(&mut command);
    if let Some(dir) = &spec.dir {
        command.current_dir(dir);
    }
    let mut child = {
        // No descriptor of ours is inheritable, but another spawn's may be at this moment.
        let _guard = process::SPAWN_LOCK
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        command.spawn().map_err(spawn_error)?
    };
    if let Some(out) = child.stdout.take() {
        process::forward_output(&spec.name, "stdout", out);
    }
    if let Some(err) = child.stderr.take() {
        process::forward_output(&spec.name, "stderr", err);
    }
    let kill = |child: &mut std::process::Child| {
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_child(child),
            rustix::process::Signal::KILL,
        );
        let _ = child.kill();
        let _ = child.wait();
    };
    // The child is not reaped before this process record drops it, so its pid is its own.
    let pidfd = match rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            kill(&mut child);
            return Err(spawn_error(e.into()));
        }
    };
    let control = match await_handshake(&listener, &pidfd, config.handshake_timeout) {
        Ok(control) => control,
        Err(e) => {
            let exited = matches!(e, Waited::Exited);
            kill(&mut child);
            let status = child.try_wait().ok().flatten();
            return Err(match e {
                Waited::TimedOut => Error::HandshakeTimeout {
                    plugin: spec.name.clone(),
                    executable: spec.executable.clone(),
                    timeout: config.handshake_timeout,
                },
                Waited::Exited | Waited::Failed(_) => handshake_error(format!(
                    "{}; an eKuiper portable plugin dials ipc://{} (the name given to its \
                     SDK's PluginConfig must be `{}`) and sends `handshake`; its output is in \
                     the log",
                    match e {
                        Waited::Failed(e) => format!("its control socket failed: {e}"),
                        _ if exited => format!(
                            "it exited before its handshake ({})",
                            status.map_or_else(|| "exit status unknown".into(), |s| s.to_string())
                        ),
                        _ => String::new(),
                    },
                    control_path.display(),
                    spec.name
                )),
            });
        }
    };
    let (host_end, bridge_end) = UnixStream::pair().map_err(spawn_error)?;
    let channels = ControlChannel::new(host_end)
        .and_then(|host| ControlChannel::new(bridge_end).map(|bridge| (host, bridge)));
    let (host_channel, bridge_channel) = match channels {
        Ok(pair) => pair,
        Err(e) => {
            kill(&mut child);
            return Err(Error::Transport {
                plugin: spec.name.clone(),
                source: e,
            });
        }
    };
    let bridge = bridge::spawn(BridgeSetup {
        plugin: spec.name.clone(),
        symbols: symbols.clone(),
        channel: bridge_channel,
        control,
        control_listener: listener,
        pidfd,
    });
    let bridge = match bridge {
        Ok(bridge) => bridge,
        Err(e) => {
            kill(&mut child);
            return Err(spawn_error(e));
        }
    };
    let channel = std::sync::Arc::new(host_channel);
    let mut process = Process {
        generation,
        child,
        channel,
        hello: shmplug_transport::control::Hello::new(spec.name.clone()),
        started_at: Instant::now(),
        bridge: Some(bridge),
    };
    match process::handshake_hello(spec, config, &process.channel) {
        Ok(hello) => {
            process.hello = hello;
            Ok(process)
        }
        Err(e) => {
            process.kill_and_reap();
            Err(e)
        }
    }
}

enum Waited {
    TimedOut,
    Exited,
    Failed(SpError),
}

/// Accepts the plugin's control connection and its `handshake` request within `timeout`,
/// giving up early if the process exits.
fn await_handshake(
    listener: &SpListener,
    pidfd: &std::os::fd::OwnedFd,
    timeout: Duration,
) -> std::result::Result<Rep, Waited> {
    const STEP: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + timeout;
    let exited = || {
        let mut fds = [rustix::event::PollFd::new(
            pidfd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    };
    let stream = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Waited::TimedOut);
        }
        match listener.accept(proto::REP, super::MAX_MESSAGE, left.min(STEP)) {
            Ok(stream) => break stream,
            Err(SpError::TimedOut(_)) if exited() => return Err(Waited::Exited),
            Err(SpError::TimedOut(_)) => {}
            Err(e) => return Err(Waited::Failed(e)),
        }
    };
    let mut rep = Rep::new(stream);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Waited::TimedOut);
        }
        match rep.recv(left.min(STEP)) {
            Ok(body) if body == b"handshake" => return Ok(rep),
            Ok(body) => {
                return Err(Waited::Failed(SpError::Protocol(format!(
                    "its first request is {:?}, not `handshake`",
                    String::from_utf8_lossy(&body[..body.len().min(64)])
                ))));
            }
            Err(SpError::TimedOut(_)) if exited() => return Err(Waited::Exited),
            Err(SpError::TimedOut(_)) => {}
            Err(e) => return Err(Waited::Failed(e)),
        }
    }
}
