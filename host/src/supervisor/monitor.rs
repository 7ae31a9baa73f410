//! The monitor thread: one per plugin. It owns the child process, pings it, notices its exit or
//! a missed pong, restarts it with back-off and replays its instances, swaps in an update, and
//! shuts it down.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmplug_transport::control::Message;
use shmplug_transport::control::ProtocolVersion;
use shmplug_transport::{Doorbell, Ring};

use super::process::{self, Process};
use super::state::{self, Event, Link, Supervision};
use super::{Phase, PluginSpec};
use crate::error::{Result, SymbolKind};

/// A live process and the thread reading its control channel.
pub(crate) struct Running {
    pub process: Process,
    pub reader: Option<JoinHandle<()>>,
}

/// Slots of a plugin process's doorbell: more instances than a process can hold descriptors
/// for; an instance beyond them gets eventfds of its own.
const DOORBELL_SLOTS: u32 = 1 << 16;

/// A doorbell for the plugin side of `process`'s rings, sent to it now; `None` for a plugin
/// older than protocol 1.4 or if it cannot be made (its rings then get eventfds of their own).
fn doorbell_for(shared: &Supervision, process: &Process) -> Option<Doorbell> {
    if process.hello.protocol_version < ProtocolVersion::new(1, 4) {
        return None;
    }
    let made = Doorbell::create(DOORBELL_SLOTS).and_then(|doorbell| {
        process.channel.send_doorbell(&doorbell)?;
        Ok(doorbell)
    });
    made.inspect_err(|e| {
        tracing::warn!(plugin = %shared.name, "no doorbell for the plugin's rings: {e}");
    })
    .ok()
}

/// Makes `process` the current one: starts its reader, publishes its link, replays the
/// instances on it.
pub(crate) fn install(shared: &Arc<Supervision>, process: Process) -> Running {
    let link = Arc::new(Link {
        generation: process.generation,
        pid: process.pid(),
        channel: process.channel.clone(),
        hello: process.hello.clone(),
        doorbell: doorbell_for(shared, &process),
    });
    let reader = {
        let shared = shared.clone();
        let channel = process.channel.clone();
        let generation = process.generation;
        std::thread::Builder::new()
            .name(format!("shmplug-{}-control", shared.name))
            .spawn(move || state::read_control(shared, generation, channel))
            .ok()
    };
    let mut state = shared.lock();
    state.link = Some(link.clone());
    state.phase = Phase::Running;
    shared.replay(&mut state, &link);
    drop(state);
    shared.changed.notify_all();
    tracing::info!(plugin = %shared.name, pid = link.pid, "plugin running");
    Running { process, reader }
}

/// Kills and reaps `running`, joins its reader, closes the rings it used.
fn finish(mut running: Running, retired: Vec<(SymbolKind, Vec<Ring>)>, grace: Duration) {
    let status = if grace.is_zero() {
        running.process.kill_and_reap()
    } else {
        running.process.reap_within(grace)
    };
    process::join(running.reader.take());
    for (kind, rings) in retired {
        state::close_plugin_ends(kind, &rings);
    }
    tracing::debug!(
        pid = running.process.pid(),
        ?status,
        "plugin process reaped"
    );
}

/// The monitor thread's body: launches the first process (reporting the outcome on `first`),
/// then supervises until shutdown.
pub(crate) fn run(
    shared: Arc<Supervision>,
    events: Receiver<Event>,
    first: std::sync::mpsc::SyncSender<Result<()>>,
) {
    let mut monitor = Monitor {
        shared,
        events,
        generation: 0,
        attempt: 0,
    };
    let mut current = match monitor.launch() {
        Ok(process) => {
            let running = install(&monitor.shared, process);
            let _ = first.send(Ok(()));
            Some(running)
        }
        Err(e) => {
            monitor.shared.lock().phase = Phase::Stopped;
            let _ = first.send(Err(e));
            return;
        }
    };
    loop {
        current = match current {
            Some(running) => match monitor.supervise(running) {
                Next::Continue(running) => Some(*running),
                Next::Restart => None,
                Next::Exit => return,
            },
            None => match monitor.restart() {
                Some(running) => Some(running),
                None => return,
            },
        };
    }
}

enum Next {
    Continue(Box<Running>),
    Restart,
    Exit,
}

struct Monitor {
    shared: Arc<Supervision>,
    events: Receiver<Event>,
    /// The highest process generation used so far.
    generation: u64,
    /// Failed starts in a row, for the back-off.
    attempt: u32,
}

impl Monitor {
    /// Watches a running process until it must be restarted or the plugin shuts down.
    fn supervise(&mut self, running: Running) -> Next {
        let config = self.shared.config.clone();
        let generation = running.process.generation;
        let mut nonce = 0u64;
        let mut outstanding: Option<(u64, Instant)> = None;
        let mut next_ping = Instant::now() + config.ping_interval;
        let mut healthy = false;
        let look_every = super::starve::look_interval(config.starved_after);
        let mut next_look = look_every.map(|every| Instant::now() + every);
        loop {
            if !healthy && running.process.started_at.elapsed() >= config.healthy_after {
                healthy = true;
                self.attempt = 0;
            }
            if let (Some(at), Some(every)) = (next_look, look_every)
                && Instant::now() >= at
            {
                self.shared.look_for_starvation();
                next_look = Some(Instant::now() + every);
            }
            let wake = match outstanding {
                Some((_, sent)) => sent + config.ping_timeout,
                None => next_ping,
            };
            let wake = next_look.map_or(wake, |at| wake.min(at));
            let wait = wake.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(Event::Disconnected {
                    generation: g,
                    reason,
                }) if g == generation => {
                    return self.recover(running, reason);
                }
                Ok(Event::Pong {
                    generation: g,
                    nonce: n,
                }) => {
                    if g == generation && outstanding.is_some_and(|(expected, _)| expected == n) {
                        outstanding = None;
                        next_ping = Instant::now() + config.ping_interval;
                    }
                }
                Ok(Event::Restart(reason)) => return self.recover(running, reason),
                Ok(Event::Update(spec, reply)) => match self.update(running, spec) {
                    (running, Ok(())) => {
                        let _ = reply.send(Ok(()));
                        return Next::Continue(Box::new(running));
                    }
                    (running, Err(e)) => {
                        let _ = reply.send(Err(e));
                        return Next::Continue(Box::new(running));
                    }
                },
                Ok(Event::Shutdown(reply)) => {
                    self.shutdown(Some(running));
                    let _ = reply.send(());
                    return Next::Exit;
                }
                Ok(Event::Disconnected { .. }) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown(Some(running));
                    return Next::Exit;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some((_, sent)) = outstanding
                        && sent.elapsed() >= config.ping_timeout
                    {
                        let reason = format!(
                            "it did not answer a ping within {:?} (wedged)",
                            config.ping_timeout
                        );
                        return self.recover(running, reason);
                    }
                    if outstanding.is_none() && Instant::now() >= next_ping {
                        nonce += 1;
                        let ping = Message::Ping { nonce };
                        if let Err(e) = running.process.channel.send(&ping, &[]) {
                            let reason = state::send_failure("a ping", &e, config.ping_timeout);
                            return self.recover(running, reason);
                        }
                        outstanding = Some((nonce, Instant::now()));
                    }
                    self.shared.expire_starts();
                }
            }
        }
    }

    /// Takes a dead or wedged process down and schedules a restart.
    fn recover(&mut self, mut running: Running, reason: String) -> Next {
        let status = running.process.kill_and_reap();
        let retired = {
            let mut state = self.shared.lock();
            state.link = None;
            state.phase = Phase::Restarting {
                attempt: self.attempt,
            };
            state.restarts += 1;
            let described = match status {
                Some(status) => format!("{reason}; {status}"),
                None => reason,
            };
            tracing::warn!(plugin = %self.shared.name, "plugin failed: {described}; restarting");
            state.last_error = Some(described);
            self.shared.retire_all(&mut state)
        };
        finish(running, retired, Duration::ZERO);
        Next::Restart
    }

    /// Waits out the back-off, then starts a new process; retries until it works, the restart
    /// limit is reached, or the plugin shuts down (`None`).
    fn restart(&mut self) -> Option<Running> {
        let config = self.shared.config.clone();
        loop {
            let limit_reached = config.max_restarts.is_some_and(|max| self.attempt >= max);
            if limit_reached {
                self.give_up();
                return self.wait_for_update();
            }
            let delay = backoff(&config, self.attempt);
            let deadline = Instant::now() + delay;
            let mut spec_override = None;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.events.recv_timeout(left) {
                    Ok(Event::Shutdown(reply)) => {
                        self.shutdown(None);
                        let _ = reply.send(());
                        return None;
                    }
                    Ok(Event::Update(spec, reply)) => {
                        // Start the new executable right away; report success once it runs.
                        spec_override = Some((spec, reply));
                        break;
                    }
                    Ok(_) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.shutdown(None);
                        return None;
                    }
                }
            }
            let reply = spec_override.map(|(spec, reply)| {
                self.shared.lock().spec = spec;
                reply
            });
            self.attempt += 1;
            match self.launch() {
                Ok(process) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    return Some(install(&self.shared, process));
                }
                Err(e) => {
                    tracing::warn!(plugin = %self.shared.name, "restart failed: {e}");
                    let mut state = self.shared.lock();
                    state.phase = Phase::Restarting {
                        attempt: self.attempt,
                    };
                    state.last_error = Some(e.to_string());
                    drop(state);
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    fn launch(&mut self) -> Result<Process> {
        let spec = self.shared.lock().spec.clone();
        self.generation += 1;
        process::launch(&spec, &self.shared.config, self.generation)
    }

    /// Stops restarting: fails every instance and marks the plugin failed.
    fn give_up(&mut self) {
        let rings = {
            let mut state = self.shared.lock();
            state.phase = Phase::Failed;
            let reason = format!(
                "the plugin failed {} time(s) in a row (last error: {}); fix it and update it",
                self.attempt + 1,
                state.last_error.as_deref().unwrap_or("unknown")
            );
            tracing::error!(plugin = %self.shared.name, "{reason}");
            state.last_error = Some(reason.clone());
            self.shared.fail_all(&mut state, &reason)
        };
        self.shared.changed.notify_all();
        for (kind, rings) in rings {
            state::close_plugin_ends(kind, &rings);
        }
    }

    /// After giving up: only an update (a new executable) or a shutdown can follow.
    fn wait_for_update(&mut self) -> Option<Running> {
        loop {
            match self.events.recv() {
                Ok(Event::Update(spec, reply)) => {
                    self.shared.lock().spec = spec;
                    match self.launch() {
                        Ok(process) => {
                            self.attempt = 0;
                            let _ = reply.send(Ok(()));
                            return Some(install(&self.shared, process));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Ok(Event::Shutdown(reply)) => {
                    self.shutdown(None);
                    let _ = reply.send(());
                    return None;
                }
                Ok(_) => {}
                Err(_) => {
                    self.shutdown(None);
                    return None;
                }
            }
        }
    }

    /// Swaps in `spec`'s executable: starts and greets the new process first (the old one keeps
    /// running if that fails), then stops the old instances, moves them to the new process,
    /// and retires the old process.
    fn update(&mut self, old: Running, spec: PluginSpec) -> (Running, Result<()>) {
        self.generation += 1;
        let process = match process::launch(&spec, &self.shared.config, self.generation) {
            Ok(process) => process,
            Err(e) => return (old, Err(e)),
        };
        let retired = {
            let mut state = self.shared.lock();
            state.spec = spec;
            let retired = self.shared.retire_all(&mut state);
            for id in state.instances.keys() {
                let _ = old
                    .process
                    .channel
                    .send(&Message::Stop { instance_id: *id }, &[]);
            }
            let _ = old.process.channel.send(&Message::Shutdown, &[]);
            state.link = None;
            retired
        };
        let new = install(&self.shared, process);
        self.attempt = 0;
        tracing::info!(plugin = %self.shared.name, "plugin updated; retiring the old process");
        finish(old, retired, self.shared.config.stop_timeout);
        (new, Ok(()))
    }

    /// Stops every instance, asks the process to exit, kills it after the grace period, reaps.
    fn shutdown(&mut self, running: Option<Running>) {
        let rings = {
            let mut state = self.shared.lock();
            state.phase = Phase::Stopped;
            state.link = None;
            self.shared.fail_all(&mut state, "the plugin was shut down")
        };
        self.shared.changed.notify_all();
        if let Some(running) = running {
            let _ = running.process.channel.send(&Message::Shutdown, &[]);
            finish(running, rings, self.shared.config.stop_timeout);
        } else {
            for (kind, rings) in rings {
                state::close_plugin_ends(kind, &rings);
            }
        }
    }
}

/// The delay before restart attempt `attempt` (0-based): the initial back-off doubled per
/// attempt, capped.
pub(crate) fn backoff(config: &super::SupervisorConfig, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    config
        .backoff_initial
        .checked_mul(factor)
        .unwrap_or(config.backoff_max)
        .min(config.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = crate::SupervisorConfig::default();
        let delays: Vec<u64> = (0..9)
            .map(|a| backoff(&config, a).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(backoff(&config, u32::MAX), config.backoff_max);
    }
}
