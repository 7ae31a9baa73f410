//! The executor: a few threads that run every [`PolledSource`] instance.
//!
//! Each thread owns the instances given to it and an epoll set holding its wake-up eventfd and
//! the host's doorbell (see [`shmplug_transport::doorbell`]): the host rings an instance's slot
//! of it when it made room in a ring the instance waits on, so thousands of instances cost no
//! descriptor each. An instance goes to the thread its slot names (slot modulo the number of
//! threads), so that each thread takes the flags of its own slots only. A ring without a slot
//! (from a host older than protocol 1.4) has its space eventfd in the epoll set instead. Its
//! loop: take the control loop's commands, move the instances whose instant has come from
//! the timer queue to the ready queue, give every ready instance one `poll` (round-robin; a
//! `poll` emits a bounded batch), then sleep in `epoll_wait` until the next instant, a
//! command, or room in a ring some instance waits for. An instance whose ring is full parks
//! on the ring's waiting flag with the eventfd way ([`Producer::prepare_park`]): the host's
//! consumer signals the eventfd once it has made room, and nothing spins meanwhile.
//!
//! A panic in an instance's code is caught where it happens ([`catch`]), and a panic anywhere
//! else while an instance is started or served is caught around the whole step: either way
//! that instance fails (the host gets `Failed` with the panic's text) and the thread serves
//! the others.
//!
//! [`Producer::prepare_park`]: shmplug_transport::Producer::prepare_park

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::event::{EventfdFlags, eventfd};
use shmplug_transport::control::{Message, Start};
use shmplug_transport::{Doorbell, Ring, TupleSender};

use super::drive::{Throttle, method};
use super::instance::{InstanceEnv, Kind, Reply, State, context};
use crate::context::StreamContext;
use crate::emitter::Emitter;
use crate::error::{PluginError, catch};
use crate::polled::{Next, PolledSource};

/// The environment variable that sets the number of executor threads (when
/// [`PluginConfig::executor_threads`](crate::PluginConfig::executor_threads) does not).
pub const EXECUTOR_THREADS_ENV: &str = "SHMPLUG_EXECUTOR_THREADS";

/// The epoll key of a thread's own wake-up eventfd; instances get keys from 0 up.
const WAKE_KEY: u64 = u64::MAX;
/// The epoll key of the host's doorbell.
const DOORBELL_KEY: u64 = u64::MAX - 1;

/// How much later than the earliest instant an executor thread with nothing ready may wake, at
/// most, so that the instances due within it are served in one wake-up (and the host reads
/// their tuples in one of its own): see [`PluginConfig::executor_timer_slack`].
///
/// [`PluginConfig::executor_timer_slack`]: crate::PluginConfig::executor_timer_slack
pub(crate) const DEFAULT_TIMER_SLACK: Duration = Duration::from_millis(10);

/// An instant's slack is at most this fraction of the wait it ends: a source that waits
/// 100 ms may be served 10 ms late, one that waits 1 ms, 0.1 ms late.
const SLACK_DIVISOR: u32 = 10;

/// A `poll` (or a start) that takes longer than this held up every other instance on its
/// thread: it is logged, naming the instance (polled sources must not block).
const SLOW_TURN: Duration = Duration::from_millis(100);

/// Events taken from the kernel per `epoll_wait`.
const EVENTS: usize = 256;

/// The executor threads, started with the first polled instance.
pub(crate) struct Executor {
    env: InstanceEnv,
    threads: usize,
    workers: Vec<Worker>,
    /// The worker the next instance goes to.
    next: usize,
}

/// One executor thread, as the control loop holds it.
struct Worker {
    inbox: Arc<Inbox>,
    handle: Option<JoinHandle<()>>,
}

/// What the control loop hands a worker, and the eventfd that wakes it to look.
struct Inbox {
    commands: Mutex<Vec<Command>>,
    wake: OwnedFd,
}

enum Command {
    Start(Box<Job>),
    /// The instance was cancelled: end it.
    Stop(u64),
    /// End every instance and the thread.
    Shutdown,
}

struct Job {
    start: Start,
    rings: Vec<Ring>,
    state: Arc<State>,
    /// The doorbell the host sent, which the ring's slot (if any) belongs to.
    doorbell: Option<Doorbell>,
}

impl Inbox {
    fn post(&self, command: Command) {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(command);
        // Fails only if the counter would overflow, which leaves the eventfd readable anyway.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    fn take(&self) -> Vec<Command> {
        let mut buf = [0u8; 8];
        // Non-blocking: empties the counter, or finds it empty.
        let _ = rustix::io::read(&self.wake, &mut buf);
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Executor {
    pub(crate) fn new(env: InstanceEnv) -> Executor {
        let threads = env
            .config
            .executor_threads
            .or_else(|| {
                std::env::var(EXECUTOR_THREADS_ENV)
                    .ok()
                    .and_then(|n| n.trim().parse().ok())
            })
            .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
            .unwrap_or(1)
            .max(1);
        Executor {
            env,
            threads,
            workers: Vec::new(),
            next: 0,
        }
    }

    /// Hands the instance `start` asks for to a worker, which replies `Started` or `Failed`;
    /// returns the worker's index.
    ///
    /// # Errors
    /// The `Failed` text when no executor thread can be started.
    pub(crate) fn start(
        &mut self,
        start: Start,
        rings: Vec<Ring>,
        state: Arc<State>,
    ) -> Result<usize, String> {
        // Every thread at once: an instance's thread follows from its doorbell slot and the
        // number of threads, which must not change once slots were dealt out.
        while self.workers.len() < self.threads {
            if let Err(e) = self.spawn() {
                if self.workers.is_empty() {
                    return Err(e);
                }
                // Fewer threads than asked for still serve.
                tracing::warn!("{e}; {} executor threads serve", self.workers.len());
                self.threads = self.workers.len();
            }
        }
        let slot = rings.first().and_then(Ring::doorbell_slot);
        let index = match slot {
            Some(slot) => slot as usize % self.workers.len(),
            None => {
                self.next = self.next.wrapping_add(1);
                self.next % self.workers.len()
            }
        };
        self.workers[index].inbox.post(Command::Start(Box::new(Job {
            start,
            rings,
            state,
            doorbell: self.env.channel.doorbell(),
        })));
        Ok(index)
    }

    /// Ends instance `id` on `worker` (already cancelled) at once, whatever it waits for.
    pub(crate) fn stop(&self, worker: usize, id: u64) {
        if let Some(worker) = self.workers.get(worker) {
            worker.inbox.post(Command::Stop(id));
        }
    }

    /// Ends every worker thread: the instances left are ended as stopped. Joins the threads
    /// if `join` (every instance has finished, so none is stuck in a plugin's method).
    pub(crate) fn shutdown(&mut self, join: bool) {
        for worker in &self.workers {
            worker.inbox.post(Command::Shutdown);
        }
        for mut worker in self.workers.drain(..) {
            if let Some(handle) = worker.handle.take()
                && join
            {
                let _ = handle.join();
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("cannot start an executor thread: {e}");
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| failed(e.into()))?;
        let poller = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| failed(e.into()))?;
        epoll::add(
            &poller,
            &wake,
            epoll::EventData::new_u64(WAKE_KEY),
            epoll::EventFlags::IN,
        )
        .map_err(|e| failed(e.into()))?;
        let inbox = Arc::new(Inbox {
            commands: Mutex::new(Vec::new()),
            wake,
        });
        let env = self.env.clone();
        let thread_inbox = inbox.clone();
        let index = self.workers.len();
        let threads = self.threads;
        // Made on the thread: plugin types need not be `Send`.
        let handle = std::thread::Builder::new()
            .name(format!("executor-{}", self.workers.len()))
            .spawn(move || {
                Thread {
                    slack: env.config.executor_timer_slack,
                    env,
                    inbox: thread_inbox,
                    poller,
                    tasks: HashMap::new(),
                    by_id: HashMap::new(),
                    next_key: 0,
                    timers: BinaryHeap::new(),
                    ready: VecDeque::new(),
                    slow: Throttle::new(),
                    doorbell: None,
                    by_slot: HashMap::new(),
                    index,
                    threads,
                }
                .run();
            })
            .map_err(failed)?;
        self.workers.push(Worker {
            inbox,
            handle: Some(handle),
        });
        Ok(())
    }
}

/// An executor thread's own state.
struct Thread {
    env: InstanceEnv,
    inbox: Arc<Inbox>,
    poller: OwnedFd,
    /// See [`DEFAULT_TIMER_SLACK`].
    slack: Duration,
    tasks: HashMap<u64, Task>,
    /// Instance id to key.
    by_id: HashMap<u64, u64>,
    next_key: u64,
    /// Instances waiting for an instant, earliest first, with the slack the instant allows;
    /// an entry whose task has since been given another instant (or ended) is skipped.
    timers: BinaryHeap<Reverse<(Instant, u64, Duration)>>,
    /// Instances to poll, in turn.
    ready: VecDeque<u64>,
    /// Slow polls are logged at most about once a second.
    slow: Throttle,
    /// The host's doorbell, once an instance with a slot of it came.
    doorbell: Option<Doorbell>,
    /// The instances waking through each doorbell slot (more than one only while an ended
    /// instance's slot was handed to a new one).
    by_slot: HashMap<u32, Vec<u64>>,
    /// This thread serves the slots equal to `index` modulo `threads`.
    index: usize,
    threads: usize,
}

/// A running instance on its executor thread.
struct Task {
    source: Box<dyn PolledSource>,
    ctx: StreamContext,
    emitter: Emitter,
    state: Arc<State>,
    /// Its ring: holds the eventfd registered in the epoll set, or its doorbell slot.
    ring: Ring,
    wait: Wait,
    spin: Spin,
}

/// How long an instance whose ring is full spins for room before it parks: the endpoint's
/// spin at most; halved each time spinning did not find room (down to none, so that a
/// stalled or slow reader costs no spinning), doubled each time it did.
struct Spin {
    max: Duration,
    current: Duration,
}

impl Spin {
    fn new(max: Duration) -> Spin {
        Spin { max, current: max }
    }

    /// Spins until `producer` has room for `len` bytes (true) or the spin is spent (false).
    fn wait(&mut self, producer: &mut shmplug_transport::Producer, len: usize) -> bool {
        if self.current.is_zero() {
            // Try again now and then: the reader may have sped up.
            self.current = Duration::from_micros(1).min(self.max);
            return false;
        }
        let start = Instant::now();
        let mut looks = 0u32;
        loop {
            if producer.has_room(len).unwrap_or(true) {
                self.current = (self.current * 2).min(self.max);
                return true;
            }
            looks += 1;
            // The clock costs about as much as a look: read it every few looks.
            if looks.is_multiple_of(16) && start.elapsed() >= self.current {
                self.current /= 2;
                if self.current < Duration::from_micros(1) {
                    self.current = Duration::ZERO;
                }
                return false;
            }
            std::hint::spin_loop();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// In the ready queue.
    Ready,
    /// In the timer queue, for this instant.
    Until(Instant),
    /// Parked on its ring's waiting flag, for room.
    Room,
}

/// How a task ended.
enum End {
    /// Done, stopped, or the host closed the ring.
    Normal(&'static str),
    /// An error: logged.
    Error(PluginError),
    /// A panic: the instance fails with its text.
    Panic(String),
}

impl Thread {
    fn run(mut self) {
        let dispatch = self.env.dispatch.clone();
        tracing::dispatcher::with_default(&dispatch, || self.serve());
    }

    fn serve(&mut self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
        loop {
            let now = Instant::now();
            while let Some(&Reverse((when, key, _))) = self.timers.peek() {
                if when > now {
                    break;
                }
                self.timers.pop();
                if let Some(task) = self.tasks.get_mut(&key)
                    && task.wait == Wait::Until(when)
                {
                    task.wait = Wait::Ready;
                    self.ready.push_back(key);
                }
            }
            // One turn each for the instances ready now; those that stay ready go to the back.
            for _ in 0..self.ready.len() {
                if let Some(key) = self.ready.pop_front() {
                    self.step(key);
                }
            }
            let timeout = if self.ready.is_empty() {
                self.timers.peek().map(|Reverse((when, _, slack))| {
                    when.saturating_duration_since(Instant::now()) + *slack
                })
            } else {
                Some(Duration::ZERO)
            };
            let timeout = timeout.map(|t| rustix::time::Timespec {
                tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: t.subsec_nanos().into(),
            });
            events.clear();
            match epoll::wait(
                &self.poller,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    // Not expected of a valid epoll set; keep serving rather than spin.
                    tracing::error!("executor: epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            for event in &events {
                let key = event.data.u64();
                if key == WAKE_KEY {
                    if self.commands() {
                        return;
                    }
                } else if key == DOORBELL_KEY {
                    self.rung();
                } else if let Some(task) = self.tasks.get_mut(&key) {
                    // Clears the waiting flag and empties the eventfd, whatever woke it.
                    task.emitter.producer().finish_park();
                    if task.wait == Wait::Room {
                        task.wait = Wait::Ready;
                        self.ready.push_back(key);
                    }
                }
            }
        }
    }

    /// The doorbell rang: takes the flags of this thread's slots and readies the instances
    /// waiting on them. Nothing empties the doorbell's counter: each thread watches it
    /// edge-triggered, and emptying it could hide a ring from another thread.
    fn rung(&mut self) {
        let Some(doorbell) = &self.doorbell else {
            return;
        };
        let mut rung = Vec::new();
        doorbell.for_each_rung(|slot| {
            if slot as usize % self.threads == self.index {
                rung.push(slot);
            }
        });
        for slot in rung {
            // Taken even when no instance has the slot (any more): a flag left set would keep
            // the host from ringing it for the next instance.
            if !doorbell.take(slot) {
                continue;
            }
            for key in self.by_slot.get(&slot).into_iter().flatten() {
                if let Some(task) = self.tasks.get_mut(key) {
                    task.emitter.producer().finish_park();
                    if task.wait == Wait::Room {
                        task.wait = Wait::Ready;
                        self.ready.push_back(*key);
                    }
                }
            }
        }
    }

    /// Watches `ring`'s wake-up for instance `key`: its doorbell slot, or its space eventfd.
    fn watch(&mut self, key: u64, ring: &Ring, doorbell: Option<Doorbell>) -> Result<(), String> {
        let Some(slot) = ring.doorbell_slot() else {
            let Some(fd) = ring.space_ready_fd() else {
                return Err("its ring has neither an eventfd nor a doorbell slot".to_string());
            };
            return epoll::add(
                &self.poller,
                fd,
                epoll::EventData::new_u64(key),
                epoll::EventFlags::IN,
            )
            .map_err(|e| e.to_string());
        };
        let Some(doorbell) = doorbell else {
            return Err("its ring names a doorbell slot, but no doorbell came".to_string());
        };
        match &self.doorbell {
            Some(watched) if watched.eventfd().as_raw_fd() == doorbell.eventfd().as_raw_fd() => {}
            Some(_) => return Err("the host sent a second doorbell".to_string()),
            None => {
                // Edge-triggered: every ring of the doorbell wakes every thread watching it, and
                // none empties the counter (see `rung`).
                epoll::add(
                    &self.poller,
                    doorbell.eventfd(),
                    epoll::EventData::new_u64(DOORBELL_KEY),
                    epoll::EventFlags::IN | epoll::EventFlags::ET,
                )
                .map_err(|e| e.to_string())?;
                self.doorbell = Some(doorbell);
            }
        }
        self.by_slot.entry(slot).or_default().push(key);
        Ok(())
    }

    /// Stops watching instance `key`'s ring.
    fn unwatch(&mut self, key: u64, ring: &Ring) {
        match ring.doorbell_slot() {
            Some(slot) => {
                if let Some(keys) = self.by_slot.get_mut(&slot) {
                    keys.retain(|&k| k != key);
                    if keys.is_empty() {
                        self.by_slot.remove(&slot);
                    }
                }
            }
            None => {
                if let Some(fd) = ring.space_ready_fd() {
                    let _ = epoll::delete(&self.poller, fd);
                }
            }
        }
    }

    /// Runs the control loop's commands; true on shutdown.
    fn commands(&mut self) -> bool {
        for command in self.inbox.take() {
            match command {
                Command::Start(job) => {
                    let id = job.start.instance_id;
                    let state = job.state.clone();
                    let started = std::panic::catch_unwind(AssertUnwindSafe(|| self.begin(*job)));
                    if let Err(payload) = started {
                        let error = format!(
                            "start failed: the executor panicked: {}",
                            crate::error::panic_message(payload.as_ref())
                        );
                        let _ = self.env.channel.send(
                            &Message::Failed {
                                instance_id: id,
                                error,
                            },
                            &[],
                        );
                        self.finished(id, &state);
                    }
                }
                Command::Stop(id) => {
                    if let Some(&key) = self.by_id.get(&id)
                        && let Some(task) = self.tasks.get_mut(&key)
                        && task.wait != Wait::Ready
                    {
                        task.wait = Wait::Ready;
                        self.ready.push_back(key);
                    }
                }
                Command::Shutdown => {
                    let keys: Vec<u64> = self.tasks.keys().copied().collect();
                    for key in keys {
                        self.end(key, End::Normal("source stopped"));
                    }
                    return true;
                }
            }
        }
        false
    }

    /// Makes, configures and opens the instance `job` asks for, and replies `Started` or
    /// `Failed`.
    fn begin(&mut self, job: Job) {
        let Job {
            start,
            rings,
            state,
            doorbell,
        } = job;
        let id = start.instance_id;
        let ctx = context(&self.env, &start, &state);
        let channel = self.env.channel.clone();
        let reply = Reply {
            channel: &channel,
            ctx: &ctx,
            kind: Kind::Source,
        };
        let opened = ctx
            .span()
            .in_scope(|| self.open(&ctx, &start, &rings, &reply));
        let Some((source, emitter, ring)) = opened else {
            self.finished(id, &state);
            return;
        };
        let key = self.next_key;
        self.next_key += 1;
        if let Err(e) = self.watch(key, &ring, doorbell) {
            let e = PluginError::new(format!(
                "the executor cannot watch the instance's ring: {e}"
            ));
            ctx.span().in_scope(|| reply.failed("open", &e));
            self.finished(id, &state);
            return;
        }
        reply.started();
        self.tasks.insert(
            key,
            Task {
                source,
                ctx,
                emitter,
                state,
                ring,
                wait: Wait::Ready,
                spin: Spin::new(self.env.config.endpoint.spin),
            },
        );
        self.by_id.insert(id, key);
        self.ready.push_back(key);
    }

    fn open(
        &self,
        ctx: &StreamContext,
        start: &Start,
        rings: &[Ring],
        reply: &Reply<'_>,
    ) -> Option<(Box<dyn PolledSource>, Emitter, Ring)> {
        let config = &self.env.config;
        let symbol = ctx.symbol();
        let what = |name| method("source", symbol, name);
        let Some(factory) = config.polled_sources.get(symbol) else {
            reply.failed("lookup", &PluginError::new("no such polled source"));
            return None;
        };
        let mut source = match catch(|| what("factory"), || Ok(factory())) {
            Ok(source) => source,
            Err(e) => {
                reply.failed("create", &e);
                return None;
            }
        };
        let data_source = start.data_source.as_deref().unwrap_or("");
        if let Err(e) = catch(
            || what("configure"),
            || source.configure(data_source, &start.properties),
        ) {
            reply.failed("configure", &e);
            return None;
        }
        if start.rewind_to.is_some() {
            let e = PluginError::new(
                "the host asked to rewind a polled source, which is not rewindable",
            );
            reply.failed("rewind", &e);
            return None;
        }
        let Some(ring) = rings.first().cloned() else {
            let e = PluginError::new("the start message carries no ring, the source needs one");
            reply.failed("taking its ring", &e);
            return None;
        };
        let producer = match ring.producer(config.endpoint) {
            Ok(producer) => producer,
            Err(e) => {
                reply.failed("taking its ring", &e.into());
                return None;
            }
        };
        let emitter = Emitter::new(TupleSender::new(producer), ctx.cancel().clone())
            .with_offsets(start.send_offsets)
            .polled();
        if let Err(e) = catch(|| what("open"), || source.open(ctx)) {
            reply.failed("open", &e);
            return None;
        }
        Some((source, emitter, ring))
    }

    /// One turn of instance `key`: one `poll`, and what it asks for next.
    fn step(&mut self, key: u64) {
        let others = self.tasks.len().saturating_sub(1);
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        if task.state.cancel.is_cancelled() {
            return self.end(key, End::Normal("source stopped"));
        }
        let began = Instant::now();
        let turn = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let Task {
                source,
                ctx,
                emitter,
                ..
            } = task;
            ctx.span().in_scope(|| {
                catch(
                    || method("source", ctx.symbol(), "poll"),
                    || source.poll(ctx, emitter),
                )
            })
        }));
        let took = began.elapsed();
        if took >= SLOW_TURN {
            task.ctx.span().in_scope(|| {
                self.slow.event(|left_out| {
                    tracing::warn!(
                        "poll took {took:?}, during which the {others} other instances on its \
                         executor thread waited: a polled source must not block (give a source \
                         that must a thread of its own: make it a Source) ({left_out} more slow \
                         polls not logged)"
                    );
                });
            });
        }
        let result = match turn {
            Ok(result) => result,
            Err(payload) => Err(PluginError::Panicked {
                method: "the executor serving the source".into(),
                message: crate::error::panic_message(payload.as_ref()),
            }),
        };
        match result {
            Ok(Next::Now) => self.ready.push_back(key),
            Ok(Next::At(when)) => {
                task.emitter.flush();
                let now = Instant::now();
                if when <= now {
                    self.ready.push_back(key);
                } else {
                    let slack = ((when - now) / SLACK_DIVISOR).min(self.slack);
                    task.wait = Wait::Until(when);
                    self.timers.push(Reverse((when, key, slack)));
                }
            }
            Ok(Next::Done) => self.end(key, End::Normal("source ended its stream")),
            Err(PluginError::RingFull) => {
                let room = task.emitter.wanted();
                // With no other instance waiting for its turn, spin briefly for the host to make
                // room, as a blocking emit does: a busy stream then does not pay a wake-up per
                // ring's worth of tuples. The spin follows the traffic (see `Spin`).
                let spun = self.ready.is_empty() && task.spin.wait(task.emitter.producer(), room);
                if spun || task.emitter.producer().prepare_park(room) {
                    // Room came (or the ring failed: the next emit reports it).
                    self.ready.push_back(key);
                } else {
                    task.wait = Wait::Room;
                }
            }
            Err(e) if e.is_stop() => self.end(key, End::Normal("source stopped")),
            Err(e @ PluginError::Panicked { .. }) => self.end(key, End::Panic(e.to_string())),
            Err(e) => self.end(key, End::Error(e)),
        }
    }

    /// Ends instance `key`: closes its ring (the host sees the end of the stream) and the
    /// source, and tells the host what it needs to know.
    fn end(&mut self, key: u64, how: End) {
        let Some(task) = self.tasks.remove(&key) else {
            return;
        };
        let Task {
            mut source,
            ctx,
            emitter,
            state,
            ring,
            wait: _,
            spin: _,
        } = task;
        let id = ctx.instance_id();
        self.by_id.remove(&id);
        self.unwatch(key, &ring);
        let ended = std::panic::catch_unwind(AssertUnwindSafe(|| {
            ctx.span().in_scope(|| {
                drop(emitter);
                match &how {
                    End::Normal(what) => tracing::debug!("{what}"),
                    End::Error(e) => tracing::error!("source failed: {e}"),
                    End::Panic(e) => tracing::error!("{e}"),
                }
                let what = || method("source", ctx.symbol(), "close");
                if let Err(e) = catch(what, || source.close(&ctx)) {
                    tracing::error!("closing the source failed: {e}");
                }
            })
        }));
        drop(ring);
        if let End::Panic(error) = how {
            let error = format!("poll failed: {error}");
            let _ = self.env.channel.send(
                &Message::Failed {
                    instance_id: id,
                    error,
                },
                &[],
            );
        } else if let Err(payload) = ended {
            tracing::error!(
                instance_id = id,
                "closing the source panicked: {}",
                crate::error::panic_message(payload.as_ref())
            );
        }
        self.finished(id, &state);
    }

    /// The instance is done with: `Stopped` if the host asked for it, and the control loop
    /// may forget it.
    fn finished(&self, id: u64, state: &State) {
        if state.finish() {
            let _ = self
                .env
                .channel
                .send(&Message::Stopped { instance_id: id }, &[]);
        }
        let _ = self.env.done.send(id);
    }
}
