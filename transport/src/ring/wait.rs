//! Spinning, parking and waking.
//!
//! A side that finds nothing to do spins for its budget, then parks: it stores a waiting flag
//! in the segment, issues a `SeqCst` fence, looks once more, and only then sleeps. The other side
//! publishes its position, issues a `SeqCst` fence, and makes a wake-up system call only if it
//! sees the flag. With both fences between each side's store and its load, at least one of them
//! sees the other's store (the store-buffering litmus test), so no wake-up is lost and no system
//! call is made while nobody sleeps. The waker swaps the flag back to zero, so one park costs at
//! most one wake-up call. The flag's value says how the sleeper waits: on the flag itself as a
//! futex word, or on its eventfd (which an event loop can watch among many others).

use std::time::{Duration, Instant};

use crate::layout::{PARK_EVENTFD, PARK_FUTEX};
use crate::sync::{AtomicU32, EventFd, Ordering, spin_hint};

use super::shared::Shared;

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
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            spin: Duration::from_micros(50),
            park: Park::Futex,
            publish_bytes: 0,
        }
    }
}

impl EndpointConfig {
    /// This configuration with a different spin budget.
    pub fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
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
pub(crate) fn wake(shared: &Shared, flag: &AtomicU32, fd: Option<EventFd<'_>>) {
    // ORDERING: AcqRel so the swap is ordered after our position store and fence; whoever sees
    // the flag first wakes, nobody twice.
    match flag.swap(0, Ordering::AcqRel) {
        0 => {}
        PARK_FUTEX => shared.futex.wake(flag),
        PARK_EVENTFD => signal_eventfd(fd),
        _ => {
            // Not a value this build writes: wake both ways rather than leave someone asleep.
            shared.futex.wake(flag);
            signal_eventfd(fd);
        }
    }
}

fn signal_eventfd(fd: Option<EventFd<'_>>) {
    if let Some(fd) = fd {
        fd.signal();
    }
}

/// Empties an eventfd's counter so that the next `poll` sleeps until the next wake-up.
pub(crate) fn drain_eventfd(fd: Option<EventFd<'_>>) {
    if let Some(fd) = fd {
        fd.drain();
    }
}

/// Sleeps on `flag` (whose value is `value`) by the configured means, at most until `deadline`.
pub(crate) fn sleep(
    shared: &Shared,
    flag: &AtomicU32,
    value: u32,
    fd: Option<EventFd<'_>>,
    deadline: Option<Instant>,
) {
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match (value, fd) {
        (PARK_EVENTFD, Some(fd)) => {
            fd.poll(timeout);
            fd.drain();
        }
        _ => shared.futex.wait(flag, value, timeout),
    }
}

/// Tracks one blocking operation: its deadline and how long it has spun.
pub(crate) struct Waiter {
    start: Instant,
    spin: Duration,
    deadline: Option<Instant>,
    timeout: Duration,
    spinning: bool,
    /// Spins since the clock was last read.
    spins: u32,
}

/// Spins between looks at the clock: reading it costs about as much as a cache-line
/// transfer, which would otherwise delay noticing the other side by that much.
const SPINS_PER_CLOCK: u32 = 32;

/// What a blocked operation should do next.
pub(crate) enum Step {
    Spin,
    Park,
    TimedOut(Duration),
}

impl Waiter {
    pub fn new(config: &EndpointConfig, timeout: Option<Duration>) -> Self {
        let start = Instant::now();
        Waiter {
            start,
            spin: config.spin,
            deadline: timeout.and_then(|t| start.checked_add(t)),
            timeout: timeout.unwrap_or(Duration::MAX),
            spinning: !config.spin.is_zero() && timeout != Some(Duration::ZERO),
            spins: 0,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn next(&mut self) -> Step {
        if self.spinning && self.spins < SPINS_PER_CLOCK {
            self.spins += 1;
            spin_hint();
            return Step::Spin;
        }
        self.spins = 0;
        let elapsed = self.start.elapsed();
        if elapsed >= self.timeout {
            return Step::TimedOut(self.timeout);
        }
        if self.spinning {
            if elapsed < self.spin {
                spin_hint();
                return Step::Spin;
            }
            self.spinning = false;
        }
        Step::Park
    }
}
