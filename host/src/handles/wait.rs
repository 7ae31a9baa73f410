//! Waiting for a ring without consuming from it: spin, then sleep on its eventfd, either in
//! `poll(2)` (blocking) or in tokio's reactor (async).
//!
//! Both use the endpoints' `prepare_park` / `finish_park`, which set the ring's waiting flag to
//! "eventfd" and re-check before sleeping, so no wake-up is lost. The waits only report
//! readiness; the caller then reads or writes without waiting.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use shmplug_transport::{Consumer, Producer, Ring};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Index of the data-ready eventfd in [`Ring::fds`].
pub(crate) const DATA_READY: usize = 1;
/// Index of the space-ready eventfd in [`Ring::fds`].
pub(crate) const SPACE_READY: usize = 2;

/// One of a ring's eventfds, owned through the ring, for [`AsyncFd`].
#[derive(Debug)]
pub(crate) struct RingFd {
    ring: Ring,
    index: usize,
}

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.fds()[self.index].as_raw_fd()
    }
}

/// Registers eventfd `index` of `ring` with the current tokio runtime.
///
/// # Panics
/// Outside a tokio runtime (as [`AsyncFd::new`] does).
pub(crate) fn async_fd(ring: &Ring, index: usize) -> std::io::Result<AsyncFd<RingFd>> {
    // Tokio 1.54 deprecates its safe constructors because a careless `AsRawFd` could hand it
    // a descriptor that closes or changes while registered; the replacement is `unsafe`,
    // which this crate forbids. `RingFd` holds a clone of the ring, which owns the eventfd, so
    // the descriptor stays open and the same for as long as the `AsyncFd` lives.
    #[allow(deprecated)]
    AsyncFd::with_interest(
        RingFd {
            ring: ring.clone(),
            index,
        },
        Interest::READABLE,
    )
}

/// Something that can announce it is about to sleep and re-check first.
pub(crate) trait Park {
    /// True if ready now. Writes nothing the other side reads, so spinning on it costs the
    /// peer nothing; an error counts as ready (the caller's read or write then reports it).
    fn ready(&mut self) -> bool;
    /// Sets the waiting flag and checks again; true if ready (the flag is then cleared).
    fn prepare(&mut self) -> bool;
    /// Clears the waiting flag and empties the eventfd.
    fn finish(&mut self);
}

impl Park for Consumer {
    fn ready(&mut self) -> bool {
        self.is_ready().unwrap_or(true)
    }
    fn prepare(&mut self) -> bool {
        self.prepare_park()
    }
    fn finish(&mut self) {
        self.finish_park();
    }
}

/// A producer waiting for room for `len` bytes.
pub(crate) struct Room<'a>(pub &'a mut Producer, pub usize);

impl Park for Room<'_> {
    fn ready(&mut self) -> bool {
        self.0.has_room(self.1).unwrap_or(true)
    }
    fn prepare(&mut self) -> bool {
        self.0.prepare_park(self.1)
    }
    fn finish(&mut self) {
        self.0.finish_park();
    }
}

/// Waits until any of `parks` is ready or `deadline` passes; spins for `spin` first. Each
/// entry pairs an endpoint with the eventfd it sleeps on. Returns false on time-out.
pub(crate) fn block(
    parks: &mut [(&mut dyn Park, BorrowedFd<'_>)],
    spin: Duration,
    deadline: Option<Instant>,
) -> bool {
    // Spin on the plain checks: setting the waiting flags (and the fence that goes with
    // them) on every call would move the ring's signal line between the cores once per
    // record, which costs the other side as much as it costs us.
    let start = Instant::now();
    let mut spins = 0u32;
    if deadline.is_some_and(|d| d <= start) {
        // A try: one look, no spinning.
        return parks.iter_mut().any(|(park, _)| park.ready());
    }
    loop {
        if parks.iter_mut().any(|(park, _)| park.ready()) {
            return true;
        }
        // The clock costs about a cache-line transfer: look at it only now and then.
        spins += 1;
        if !spins.is_multiple_of(32) {
            std::hint::spin_loop();
            continue;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return false;
        }
        if now.duration_since(start) >= spin {
            break;
        }
        std::hint::spin_loop();
    }
    loop {
        let mut ready = false;
        let mut waiting = [false; 2];
        for (i, (park, _)) in parks.iter_mut().enumerate() {
            let this = park.prepare();
            ready |= this;
            if let Some(w) = waiting.get_mut(i) {
                *w = !this;
            }
        }
        if ready {
            // A ready endpoint cleared its own flag; only the others need finishing.
            for (i, (park, _)) in parks.iter_mut().enumerate() {
                if waiting.get(i).copied().unwrap_or(true) {
                    park.finish();
                }
            }
            return true;
        }
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if timeout == Some(Duration::ZERO) {
            finish_all(parks);
            return false;
        }
        let timespec = timeout.and_then(|t| rustix::time::Timespec::try_from(t).ok());
        // At most two endpoints (as `waiting` above): a fixed array, so that waiting allocates
        // nothing.
        debug_assert!(parks.len() <= 2, "wait::block takes one or two endpoints");
        let Some(first) = parks.first().map(|(_, fd)| *fd) else {
            return false;
        };
        let second = parks.get(1).map_or(first, |(_, fd)| *fd);
        let mut fds = [
            PollFd::from_borrowed_fd(first, PollFlags::IN),
            PollFd::from_borrowed_fd(second, PollFlags::IN),
        ];
        let n = parks.len().min(fds.len());
        let _ = rustix::event::poll(&mut fds[..n], timespec.as_ref());
        finish_all(parks);
    }
}

fn finish_all(parks: &mut [(&mut dyn Park, BorrowedFd<'_>)]) {
    for (park, _) in parks.iter_mut() {
        park.finish();
    }
}

/// Awaits readiness of `park`, sleeping on `fd` in the tokio reactor.
pub(crate) async fn ready(
    park: &mut (dyn Park + Send),
    fd: &AsyncFd<RingFd>,
) -> std::io::Result<()> {
    loop {
        if park.prepare() {
            return Ok(());
        }
        let mut guard = fd.readable().await?;
        park.finish();
        guard.clear_ready();
    }
}

/// Awaits readiness of either `a` or `b`.
pub(crate) async fn ready_either(
    a: &mut (dyn Park + Send),
    a_fd: &AsyncFd<RingFd>,
    b: &mut (dyn Park + Send),
    b_fd: &AsyncFd<RingFd>,
) -> std::io::Result<()> {
    loop {
        let ready_a = a.prepare();
        let ready_b = b.prepare();
        if ready_a || ready_b {
            if !ready_a {
                a.finish();
            }
            if !ready_b {
                b.finish();
            }
            return Ok(());
        }
        tokio::select! {
            guard = a_fd.readable() => {
                let mut guard = guard?;
                a.finish();
                guard.clear_ready();
            }
            guard = b_fd.readable() => {
                let mut guard = guard?;
                b.finish();
                guard.clear_ready();
            }
        }
    }
}
