//! Spinning, parking and waking: the one place that says how every blocking operation in
//! shmplug waits.
//!
//! [`Waiter`] holds the spin-then-park policy: spin on a cheap check for the endpoint's budget,
//! looking at the clock only every few spins, then park; give up at the deadline. The ring's
//! blocking [`read`](crate::Consumer::read) and [`claim`](crate::Producer::claim), [`block`]
//! (a caller waiting for any of several rings, as the host's data handles do) and the
//! [`PingPong`](crate::pingpong::PingPong) reference all run it.
//!
//! A side that finds nothing to do spins for its budget, then parks: it stores a waiting flag
//! in the segment, issues a `SeqCst` fence, looks once more, and only then sleeps. The other side
//! publishes its position, issues a `SeqCst` fence, and makes a wake-up system call only if it
//! sees the flag. With both fences between each side's store and its load, at least one of them
//! sees the other's store (the store-buffering litmus test), so no wake-up is lost and no system
//! call is made while nobody sleeps. The waker swaps the flag back to zero, so one park costs at
//! most one wake-up call. The flag's value says how the sleeper waits: on the flag itself as a
//! futex word, or on its eventfd (which an event loop can watch among many others).

use std::os::fd::BorrowedFd;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::{PARK_EVENTFD, PARK_FUTEX};
use crate::ring::RingMemory;
use crate::ring::{Consumer, Producer};
use crate::sync::{AtomicU32, Bell, Ordering, fence, spin_hint, timespec};

/// How a blocked endpoint sleeps once its spin budget is spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Park {
    /// Sleep in `futex(2)` on the waiting flag inside the segment: one system call per wake-up.
    #[default]
    Futex,
    /// Sleep in `poll(2)` on the ring's eventfd; the same fd can be awaited by an event loop
    /// (tokio's `AsyncFd`) together with many others, see [`crate::Consumer::prepare_park`].
    EventFd,
}

/// Per-endpoint tuning: how long to spin before parking, how to park, and how often to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// How long a blocking operation spins before it parks. Waking a parked process costs tens
    /// of microseconds on a virtual machine, so latency-critical endpoints spin longer; idle
    /// endpoints cost no CPU once parked. Default 50 µs.
    pub spin: Duration,
    /// How to sleep once the spin budget is spent. Default [`Park::Futex`].
    pub park: Park,
    /// Publish this endpoint's position after this many bytes even if nothing else forces it;
    /// `0` means an eighth of the ring's capacity. A consumer also publishes when the ring runs
    /// empty or the producer waits for space; a producer publishes on every
    /// [`commit`](crate::Claim::commit) and batches only [`commit_deferred`](crate::Claim::commit_deferred).
    pub publish_bytes: u64,
    /// Let the spin follow the traffic: a wait that outlasted [`spin`](Self::spin) halves the
    /// next wait's spin (down to none), one that would have fit doubles it (up to `spin`). A
    /// sparse stream then parks at once instead of spinning for every record, and spinning
    /// threads do not take the CPU from the side they wait for when there are more of them than
    /// cores. Default true.
    pub adaptive_spin: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            spin: Duration::from_micros(50),
            park: Park::Futex,
            publish_bytes: 0,
            adaptive_spin: true,
        }
    }
}

impl EndpointConfig {
    /// This configuration with a different spin budget.
    pub fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// This configuration with the spin fixed (`false`) or following the traffic (`true`, the
    /// default; see [`adaptive_spin`](Self::adaptive_spin)).
    pub fn with_adaptive_spin(mut self, adaptive: bool) -> Self {
        self.adaptive_spin = adaptive;
        self
    }

    /// This configuration with a different way to park.
    pub fn with_park(mut self, park: Park) -> Self {
        self.park = park;
        self
    }

    /// This configuration with a different publication batch (bytes).
    pub fn with_publish_bytes(mut self, bytes: u64) -> Self {
        self.publish_bytes = bytes;
        self
    }

    pub(crate) fn batch_for(&self, capacity: u64) -> u64 {
        match self.publish_bytes {
            0 => capacity / 8,
            n => n.min(capacity / 2),
        }
    }

    pub(crate) fn flag(&self) -> u32 {
        match self.park {
            Park::Futex => PARK_FUTEX,
            Park::EventFd => PARK_EVENTFD,
        }
    }
}

/// Wakes the side sleeping on `flag` (if any), by the means it chose.
pub(crate) fn wake(memory: &RingMemory, flag: &AtomicU32, fd: Option<Bell<'_>>) {
    // ORDERING: AcqRel so the swap is ordered after our position store and fence; whoever sees
    // the flag first wakes, nobody twice.
    match flag.swap(0, Ordering::AcqRel) {
        0 => {}
        PARK_FUTEX => memory.futex.wake(flag),
        PARK_EVENTFD => signal_eventfd(fd),
        _ => {
            // Not a value this build writes: wake both ways rather than leave someone asleep.
            memory.futex.wake(flag);
            signal_eventfd(fd);
        }
    }
}

fn signal_eventfd(fd: Option<Bell<'_>>) {
    if let Some(fd) = fd {
        fd.signal();
    }
}

/// Empties an eventfd's counter so that the next `poll` sleeps until the next wake-up.
fn drain_eventfd(fd: Option<Bell<'_>>) {
    if let Some(fd) = fd {
        fd.drain();
    }
}

/// Sleeps on `flag` (whose value is `value`) by the configured means, at most until `deadline`.
fn sleep(
    memory: &RingMemory,
    flag: &AtomicU32,
    value: u32,
    fd: Option<Bell<'_>>,
    deadline: Option<Instant>,
) {
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match (value, fd) {
        (PARK_EVENTFD, Some(fd)) if fd.can_sleep() => {
            fd.poll(timeout);
            fd.drain();
        }
        _ => memory.futex.wait(flag, value, timeout),
    }
}

/// Parks once, for a blocking operation whose spin budget is spent: sets the waiting `flag` to
/// `value`, looks once more with `check`, and sleeps (at most until `deadline`) only if that
/// found nothing. Returns what `check` found (`Ok(None)` after a sleep: look again); the flag
/// is clear again on return.
pub(crate) fn park<T>(
    memory: &RingMemory,
    flag: &AtomicU32,
    value: u32,
    fd: Option<Bell<'_>>,
    deadline: Option<Instant>,
    check: impl FnOnce() -> Result<Option<T>>,
) -> Result<Option<T>> {
    // A blocking wait cannot sleep on a doorbell slot alone: it parks on the futex, and the
    // waker, seeing that, wakes the futex.
    let value = match fd {
        Some(bell) if value == PARK_EVENTFD && !bell.can_sleep() => PARK_FUTEX,
        _ => value,
    };
    flag.store(value, Ordering::Relaxed);
    // ORDERING: pairs with the other side's fence between storing its position (or closed
    // flag) and loading this flag: either it sees our flag and wakes us, or we see its store now.
    // The same for an `Interrupter`'s fence between its flag and ours.
    fence(Ordering::SeqCst);
    if memory.is_interrupted() {
        flag.store(0, Ordering::Relaxed);
        return Err(Error::Interrupted);
    }
    let found = check();
    if !matches!(found, Ok(None)) {
        flag.store(0, Ordering::Relaxed);
        return found;
    }
    sleep(memory, flag, value, fd, deadline);
    flag.store(0, Ordering::Relaxed);
    Ok(None)
}

/// The first half of an event-loop wait for `endpoint`: sets its waiting flag (`flag`) to
/// "eventfd" and looks once more with `ready`. True if ready (the flag is clear again): do not
/// sleep.
pub(crate) fn prepare_park<E>(
    endpoint: &mut E,
    flag: fn(&E) -> &AtomicU32,
    ready: impl FnOnce(&mut E) -> bool,
) -> bool {
    flag(endpoint).store(PARK_EVENTFD, Ordering::Relaxed);
    // ORDERING: as in `park`.
    fence(Ordering::SeqCst);
    let ready = ready(endpoint);
    if ready {
        flag(endpoint).store(0, Ordering::Relaxed);
    }
    ready
}

/// The second half of an event-loop wait: clears the waiting `flag` and empties the eventfd.
pub(crate) fn finish_park(flag: &AtomicU32, fd: Option<Bell<'_>>) {
    flag.store(0, Ordering::Relaxed);
    drain_eventfd(fd);
}

/// The spin-then-park policy for one blocking operation: its deadline and how long it has
/// spun. Ask [`step`](Self::step) each time a look found nothing.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmplug_transport::wait::{WaitStep, Waiter};
///
/// let mut waiter = Waiter::new(Duration::from_micros(10), Some(Duration::from_millis(1)));
/// let mut parked = false;
/// loop {
///     // Look for work here; nothing ever comes in this example.
///     match waiter.step() {
///         WaitStep::Spin => {}
///         WaitStep::Park => parked = true, // sleep until woken or `waiter.deadline()`
///         WaitStep::TimedOut(_) => break,
///     }
/// }
/// assert!(parked);
/// ```
#[derive(Debug)]
pub struct Waiter {
    /// When the wait began, as far as the clock knows: read at its first look (after a few
    /// spins), so that a wait that ends within them reads no clock at all.
    start: Option<Instant>,
    spin: Duration,
    /// The deadline: given ([`until`](Self::until)), or made from `timeout` at the first look.
    deadline: Option<Instant>,
    /// The time-out given to [`new`](Self::new) (`None` for [`until`](Self::until), or for
    /// none at all).
    timeout: Option<Duration>,
    spinning: bool,
    /// Spins since the clock was last read.
    spins: u32,
    /// The clock was read since the start: the wait has lasted more than a few spins.
    looked: bool,
}

/// Spins between looks at the clock: reading it costs about as much as a cache-line
/// transfer, which would otherwise delay noticing the other side by that much.
const SPINS_PER_CLOCK: u32 = 32;

/// The spin of an endpoint's next wait: [`EndpointConfig::spin`], or less when recent waits
/// outlasted it ([`EndpointConfig::adaptive_spin`]). Kept by each endpoint; [`block`] follows
/// the budgets of the endpoints it waits on.
#[derive(Clone, Copy, Debug)]
pub struct SpinBudget {
    max: Duration,
    current: Duration,
    adaptive: bool,
}

/// Below this an adaptive spin is none at all; growing again starts here.
const MIN_ADAPTIVE_SPIN: Duration = Duration::from_micros(1);

impl SpinBudget {
    pub(crate) fn new(config: &EndpointConfig) -> SpinBudget {
        SpinBudget {
            max: config.spin,
            current: config.spin,
            adaptive: config.adaptive_spin,
        }
    }

    /// How long the next wait spins.
    pub(crate) fn get(&self) -> Duration {
        self.current
    }

    /// A wait lasted `elapsed` (spinning, parked, or both).
    pub(crate) fn waited(&mut self, elapsed: Duration) {
        if !self.adaptive {
            return;
        }
        self.current = if elapsed <= self.max {
            // Spinning that long would have caught it.
            self.current
                .saturating_mul(2)
                .max(MIN_ADAPTIVE_SPIN)
                .min(self.max)
        } else {
            let half = self.current / 2;
            if half < MIN_ADAPTIVE_SPIN {
                Duration::ZERO
            } else {
                half
            }
        };
    }
}

/// What a blocked operation should do next, as [`Waiter::step`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStep {
    /// Look again now (the waiter has issued a spin hint).
    Spin,
    /// The spin budget is spent: set the waiting flag, look once more, and sleep until woken
    /// or until [`Waiter::deadline`].
    Park,
    /// The time-out, given here, has passed.
    TimedOut(Duration),
}

impl Waiter {
    /// A wait that spins for `spin`, then parks, and times out after `timeout` (`None`: never).
    /// A zero `timeout` is a try: the first [`step`](Self::step) says
    /// [`TimedOut`](WaitStep::TimedOut). A `spin` of [`Duration::MAX`] never parks. The clock is
    /// first read after a few spins: a wait that ends sooner costs no clock read.
    pub fn new(spin: Duration, timeout: Option<Duration>) -> Self {
        Waiter {
            start: None,
            spin,
            deadline: None,
            timeout,
            spinning: !spin.is_zero() && timeout != Some(Duration::ZERO),
            spins: 0,
            looked: false,
        }
    }

    /// As [`new`](Self::new), with a deadline instead of a time-out; a deadline that has passed
    /// times the wait out at its first look at the clock.
    pub fn until(spin: Duration, deadline: Option<Instant>) -> Self {
        Waiter {
            deadline,
            ..Waiter::new(spin, None)
        }
    }

    /// When the wait gives up (`None`: never); a park sleeps at most until then. Known once the
    /// wait has looked at the clock, which it always has when [`step`](Self::step) says
    /// [`Park`](WaitStep::Park).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How long the wait has lasted; zero, without reading the clock, while it has not yet
    /// looked at the clock (a wait of a few spins, all the same to a spin budget).
    pub fn elapsed(&self) -> Duration {
        match self.start {
            Some(start) if self.looked => start.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// True for a try: a zero time-out.
    pub fn is_try(&self) -> bool {
        self.timeout == Some(Duration::ZERO)
    }

    /// What to do after a look that found nothing.
    pub fn step(&mut self) -> WaitStep {
        if self.spinning && self.spins < SPINS_PER_CLOCK {
            self.spins += 1;
            spin_hint();
            return WaitStep::Spin;
        }
        self.spins = 0;
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        if !self.looked {
            self.looked = true;
            if let Some(timeout) = self.timeout {
                self.deadline = start.checked_add(timeout);
            }
        }
        if let Some(deadline) = self.deadline
            && now >= deadline
        {
            let timeout = self
                .timeout
                .unwrap_or_else(|| deadline.saturating_duration_since(start));
            return WaitStep::TimedOut(timeout);
        }
        if self.spinning {
            if now.saturating_duration_since(start) < self.spin {
                spin_hint();
                return WaitStep::Spin;
            }
            self.spinning = false;
        }
        WaitStep::Park
    }
}

/// An endpoint a caller waits for without consuming from it, parking on its eventfd: a
/// [`Consumer`] waiting for a record, or a producer waiting for [`Room`]. The waiting flag is
/// set to "eventfd" (whatever the endpoint's [`Park`]) so that the other side signals the
/// eventfd, which [`block`] polls, or an event loop awaits.
pub trait Readiness {
    /// True if ready now. Writes nothing the other side reads, so spinning on it costs the
    /// peer nothing; an error counts as ready (the caller's read or write then reports it).
    fn ready(&mut self) -> bool;
    /// Sets the waiting flag and checks again; true if ready (the flag is then cleared).
    fn prepare(&mut self) -> bool;
    /// Clears the waiting flag and empties the eventfd.
    fn finish(&mut self);
    /// The endpoint's spin budget, for [`block`] to follow and update.
    #[doc(hidden)]
    fn spin_budget(&mut self) -> Option<&mut SpinBudget> {
        None
    }
}

impl Readiness for Consumer {
    fn ready(&mut self) -> bool {
        self.is_ready().unwrap_or(true)
    }
    fn prepare(&mut self) -> bool {
        self.prepare_park()
    }
    fn finish(&mut self) {
        self.finish_park();
    }
    fn spin_budget(&mut self) -> Option<&mut SpinBudget> {
        Some(self.spin_budget())
    }
}

/// A producer waiting for room for a record of this many bytes.
#[derive(Debug)]
pub struct Room<'a>(pub &'a mut Producer, pub usize);

impl Readiness for Room<'_> {
    fn ready(&mut self) -> bool {
        self.0.has_room(self.1).unwrap_or(true)
    }
    fn prepare(&mut self) -> bool {
        self.0.prepare_park(self.1)
    }
    fn finish(&mut self) {
        self.0.finish_park();
    }
    fn spin_budget(&mut self) -> Option<&mut SpinBudget> {
        Some(self.0.spin_budget())
    }
}

/// Waits until any of `waits` is ready or `deadline` passes, by the [`Waiter`] policy (spin
/// for `spin` on the plain checks, then park in `poll(2)` on the eventfds). Each entry pairs an
/// endpoint with the eventfd it sleeps on ([`Ring::fds`](crate::Ring::fds)`[1]` for data,
/// `[2]` for space). A deadline that has passed is a try: one look. Returns false on time-out.
///
/// # Panics
/// If `waits` has more than two entries (a handle waits on at most two rings; a fixed set of
/// poll entries keeps waiting free of allocation).
pub fn block(
    waits: &mut [(&mut dyn Readiness, BorrowedFd<'_>)],
    spin: Duration,
    deadline: Option<Instant>,
) -> bool {
    // Spin on the plain checks: setting the waiting flags (and the fence that goes with
    // them) on every call would move the ring's signal line between the cores once per
    // record, which costs the other side as much as it costs us.
    assert!(waits.len() <= 2, "wait::block takes one or two endpoints");
    // Spin no longer than the endpoints' adaptive budgets, and tell them how long a real wait
    // (not a try) lasted.
    let spin = waits
        .iter_mut()
        .filter_map(|(wait, _)| wait.spin_budget().map(|b| b.get()))
        .fold(spin, Duration::min);
    let mut waiter = Waiter::until(spin, deadline);
    let is_try = waiter.is_try();
    let done = |waits: &mut [(&mut dyn Readiness, BorrowedFd<'_>)], waiter: &Waiter, ready| {
        if !is_try {
            let elapsed = waiter.elapsed();
            for (wait, _) in waits.iter_mut() {
                if let Some(budget) = wait.spin_budget() {
                    budget.waited(elapsed);
                }
            }
        }
        ready
    };
    loop {
        if waits.iter_mut().any(|(wait, _)| wait.ready()) {
            return done(waits, &waiter, true);
        }
        match waiter.step() {
            WaitStep::Spin => continue,
            WaitStep::TimedOut(_) => return done(waits, &waiter, false),
            WaitStep::Park => {}
        }
        let mut ready = false;
        let mut waiting = [false; 2];
        for (i, (wait, _)) in waits.iter_mut().enumerate() {
            let this = wait.prepare();
            ready |= this;
            if let Some(w) = waiting.get_mut(i) {
                *w = !this;
            }
        }
        if !ready {
            let timeout = waiter
                .deadline()
                .map(|d| timespec(d.saturating_duration_since(Instant::now())));
            let Some(first) = waits.first().map(|(_, fd)| *fd) else {
                return false;
            };
            let second = waits.get(1).map_or(first, |(_, fd)| *fd);
            let mut fds = [first, second].map(|fd| {
                rustix::event::PollFd::from_borrowed_fd(fd, rustix::event::PollFlags::IN)
            });
            let _ = rustix::event::poll(&mut fds[..waits.len()], timeout.as_ref());
        }
        // A ready endpoint cleared its own flag; only the others need finishing.
        for (i, (wait, _)) in waits.iter_mut().enumerate() {
            if waiting.get(i).copied().unwrap_or(true) {
                wait.finish();
            }
        }
        if ready {
            return done(waits, &waiter, true);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn budget(adaptive: bool) -> SpinBudget {
        let config = EndpointConfig::default()
            .with_spin(Duration::from_micros(32))
            .with_adaptive_spin(adaptive);
        SpinBudget::new(&config)
    }

    #[test]
    fn the_spin_shrinks_for_long_waits_and_grows_back_for_short_ones() {
        let mut spin = budget(true);
        assert_eq!(spin.get(), Duration::from_micros(32));
        let long = Duration::from_millis(100);
        for expected in [16, 8, 4, 2, 1, 0, 0] {
            spin.waited(long);
            assert_eq!(spin.get(), Duration::from_micros(expected));
        }
        // From none, waits that spinning would have caught bring it back, up to the maximum.
        let short = Duration::from_micros(20);
        for expected in [1, 2, 4, 8, 16, 32, 32] {
            spin.waited(short);
            assert_eq!(spin.get(), Duration::from_micros(expected));
        }
    }

    #[test]
    fn a_fixed_spin_stays() {
        let mut spin = budget(false);
        spin.waited(Duration::from_secs(1));
        assert_eq!(spin.get(), Duration::from_micros(32));
        let mut never = SpinBudget::new(&EndpointConfig::default().with_spin(Duration::MAX));
        never.waited(Duration::from_secs(1));
        assert_eq!(
            never.get(),
            Duration::MAX,
            "a wait shorter than forever keeps spinning"
        );
    }
}
