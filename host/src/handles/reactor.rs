//! Waiting for a ring without consuming from it, in tokio's reactor. The blocking form is the
//! transport's [`block`](shmplug_transport::wait::block); both run the transport's
//! [`Readiness`] checks: look first, then set the ring's waiting flag to "eventfd" and look
//! again before sleeping, so no wake-up is lost and a ready ring costs no flag or fence. The
//! waits only report readiness; the caller then reads or writes without waiting.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use shmplug_transport::Ring;
use shmplug_transport::wait::Readiness;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The data-ready eventfd ([`Ring::data_ready_fd`]).
pub(crate) const DATA_READY: usize = 1;
/// The space-ready eventfd ([`Ring::space_ready_fd`]).
pub(crate) const SPACE_READY: usize = 2;

/// The host's own eventfd `index` of `ring` ([`DATA_READY`] or [`SPACE_READY`]). The host
/// makes its rings with eventfds of its own for the side it waits on (only the plugin's side
/// may go through a doorbell), so this fails only if that promise was broken.
pub(crate) fn own_fd(ring: &Ring, index: usize) -> shmplug_transport::Result<BorrowedFd<'_>> {
    let fd = match index {
        DATA_READY => ring.data_ready_fd(),
        SPACE_READY => ring.space_ready_fd(),
        _ => None,
    };
    fd.ok_or_else(|| {
        shmplug_transport::Error::BadSegment(
            "the host's side of a ring has no eventfd of its own to wait on".to_string(),
        )
    })
}

/// One of a ring's eventfds, owned through the ring, for [`AsyncFd`].
#[derive(Debug)]
pub(crate) struct RingFd {
    ring: Ring,
    index: usize,
}

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        // `async_fd` checked that the eventfd exists.
        own_fd(&self.ring, self.index).map_or(-1, |fd| fd.as_raw_fd())
    }
}

/// Registers eventfd `index` of `ring` with the current tokio runtime.
///
/// # Panics
/// Outside a tokio runtime (as [`AsyncFd::new`] does).
pub(crate) fn async_fd(ring: &Ring, index: usize) -> std::io::Result<AsyncFd<RingFd>> {
    own_fd(ring, index).map_err(std::io::Error::other)?;
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

/// Awaits readiness of `wait`, sleeping on `fd` in the tokio reactor.
pub(crate) async fn ready(
    wait: &mut (dyn Readiness + Send),
    fd: &AsyncFd<RingFd>,
) -> std::io::Result<()> {
    // Ready now: no waiting flag, no fence (as the blocking wait).
    if wait.ready() {
        return Ok(());
    }
    loop {
        if wait.prepare() {
            return Ok(());
        }
        let mut guard = fd.readable().await?;
        wait.finish();
        guard.clear_ready();
    }
}

/// Awaits readiness of either `a` or `b`.
pub(crate) async fn ready_either(
    a: &mut (dyn Readiness + Send),
    a_fd: &AsyncFd<RingFd>,
    b: &mut (dyn Readiness + Send),
    b_fd: &AsyncFd<RingFd>,
) -> std::io::Result<()> {
    if a.ready() || b.ready() {
        return Ok(());
    }
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
