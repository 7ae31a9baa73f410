//! The one import point for atomics and parking, in the shape of tokio's `loom` module.
//!
//! Normal builds get `std`'s atomics, the Linux futex and the ring's eventfds; builds with
//! `RUSTFLAGS="--cfg loom"` get loom's atomics and stand-ins for the futex and the eventfd built
//! from a loom `Mutex` and `Condvar`, so the ring's position protocol and both park/wake
//! handshakes run unchanged under the model checker.
//!
//! [`Granules`] lets loom see the ring's data region: every access to a 16-byte granule of the
//! region is reported to a loom `UnsafeCell`, so a record read while it may still be written (or
//! overwritten while it is still being read) is a data race loom reports. In normal builds it is
//! an empty type and every call compiles to nothing.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

/// Hint to the processor (or to loom's scheduler) that this thread is spinning.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// `d` as a kernel time-out, saturating at the largest one (which is as good as forever).
pub(crate) fn timespec(d: std::time::Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos().into(),
    }
}

/// Waits on a futex word shared between processes.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct Futex;

#[cfg(not(loom))]
impl Futex {
    /// Sleeps while `word` holds `expected`, at most `timeout`. Returns early on a wake-up, a
    /// signal, or when the word already differs; callers re-check their condition either way.
    pub(crate) fn wait(
        &self,
        word: &AtomicU32,
        expected: u32,
        timeout: Option<std::time::Duration>,
    ) {
        use rustix::thread::futex;
        let ts = timeout.map(timespec);
        // Shared futex (no FUTEX_PRIVATE_FLAG): the kernel keys it by the memfd page, so the two
        // processes may map the segment at different addresses. EAGAIN (word changed), EINTR and
        // ETIMEDOUT all mean "go and look again", so the result is deliberately ignored.
        let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
    }

    /// Wakes every thread (in any process) sleeping on `word`.
    pub(crate) fn wake(&self, word: &AtomicU32) {
        use rustix::thread::futex;
        let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
    }
}

/// loom stand-in for the futex: a waiter re-checks the word under the mutex before sleeping on
/// the condition variable, and a waker takes the same mutex before notifying, which gives the
/// futex's "sleep only if the word still holds the expected value" atomicity.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Futex {
    lock: loom::sync::Mutex<()>,
    cond: loom::sync::Condvar,
}

#[cfg(loom)]
impl Futex {
    pub(crate) fn wait(
        &self,
        word: &AtomicU32,
        expected: u32,
        _timeout: Option<std::time::Duration>,
    ) {
        let guard = self.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(self.cond.wait(guard).unwrap());
        }
    }

    pub(crate) fn wake(&self, _word: &AtomicU32) {
        let _guard = self.lock.lock().unwrap();
        self.cond.notify_all();
    }
}

/// One of a ring's eventfds, as the waiting code uses it: signalled by the side that wakes,
/// polled and drained by the side that sleeps.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventFd<'a>(pub(crate) std::os::fd::BorrowedFd<'a>);

#[cfg(not(loom))]
impl EventFd<'_> {
    /// Makes the eventfd readable (adds one to its counter).
    pub(crate) fn signal(self) {
        // EAGAIN only if the counter is about to overflow, i.e. it is already readable.
        let _ = rustix::io::write(self.0, &1u64.to_ne_bytes());
    }

    /// Empties the counter so that the next poll sleeps until the next signal.
    pub(crate) fn drain(self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(self.0, &mut buf);
    }

    /// Sleeps until the eventfd is readable, at most `timeout`. Returns early on a signal too;
    /// callers re-check their condition either way.
    pub(crate) fn poll(self, timeout: Option<std::time::Duration>) {
        let ts = timeout.map(timespec);
        let mut pfd = [rustix::event::PollFd::new(
            &self.0,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(&mut pfd, ts.as_ref());
    }
}

/// How a parked side is woken, as the waiting code uses it: its own eventfd, or a slot of a
/// [`Doorbell`](crate::doorbell::Doorbell) shared with other rings.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bell<'a> {
    Fd(EventFd<'a>),
    Slot(&'a crate::doorbell::Doorbell, u32),
}

#[cfg(not(loom))]
impl Bell<'_> {
    pub(crate) fn signal(self) {
        match self {
            Bell::Fd(fd) => fd.signal(),
            Bell::Slot(doorbell, slot) => doorbell.ring(slot),
        }
    }

    /// Empties an own eventfd; a doorbell is emptied by the thread that serves it.
    pub(crate) fn drain(self) {
        if let Bell::Fd(fd) = self {
            fd.drain();
        }
    }

    /// True if a thread can sleep on this bell by itself (an own eventfd); a doorbell slot is
    /// watched by whoever serves the doorbell, so a lone blocking wait parks on the futex.
    pub(crate) fn can_sleep(self) -> bool {
        matches!(self, Bell::Fd(_))
    }

    pub(crate) fn poll(self, timeout: Option<std::time::Duration>) {
        if let Bell::Fd(fd) = self {
            fd.poll(timeout);
        }
    }
}

/// Under loom every bell is a stand-in eventfd.
#[cfg(loom)]
pub(crate) type Bell<'a> = EventFd<'a>;

/// loom stand-in for an eventfd's counter: readable while non-zero. It also counts every
/// signal, so a model can check that nobody is woken more often than it parked.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct EventCounter {
    /// (counter, signals ever made)
    state: loom::sync::Mutex<(u64, u64)>,
    cond: loom::sync::Condvar,
}

/// Under loom, one of a heap ring's [`EventCounter`]s.
#[cfg(loom)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventFd<'a>(pub(crate) &'a EventCounter);

#[cfg(loom)]
impl EventFd<'_> {
    pub(crate) fn signal(self) {
        let mut state = self.0.state.lock().unwrap();
        state.0 += 1;
        state.1 += 1;
        self.0.cond.notify_all();
    }

    pub(crate) fn drain(self) {
        self.0.state.lock().unwrap().0 = 0;
    }

    /// Sleeps until the counter is non-zero; the time-out is ignored, so that a lost wake-up
    /// leaves the sleeper blocked for good, which loom reports as a deadlock.
    pub(crate) fn poll(self, _timeout: Option<std::time::Duration>) {
        let mut state = self.0.state.lock().unwrap();
        while state.0 == 0 {
            state = self.0.cond.wait(state).unwrap();
        }
    }

    pub(crate) fn can_sleep(self) -> bool {
        true
    }

    /// Every signal made so far.
    #[cfg(test)]
    pub(crate) fn signals(self) -> u64 {
        self.0.state.lock().unwrap().1
    }
}

/// Access tracking for the data region (see the module docs).
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct Granules;

#[cfg(not(loom))]
impl Granules {
    pub(crate) fn new(_capacity: u64) -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn write(&self, _offset: u64, _len: u64) {}
    #[inline(always)]
    pub(crate) fn read(&self, _offset: u64, _len: u64) {}
}

#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Granules(Box<[loom::cell::UnsafeCell<()>]>);

#[cfg(loom)]
impl Granules {
    pub(crate) fn new(capacity: u64) -> Self {
        Self(
            (0..capacity / 16)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        )
    }
    fn cells(&self, offset: u64, len: u64) -> impl Iterator<Item = &loom::cell::UnsafeCell<()>> {
        let n = self.0.len() as u64;
        (offset / 16..(offset + len).div_ceil(16)).map(move |g| &self.0[(g % n) as usize])
    }
    pub(crate) fn write(&self, offset: u64, len: u64) {
        self.cells(offset, len).for_each(|c| c.with_mut(|_| ()));
    }
    pub(crate) fn read(&self, offset: u64, len: u64) {
        self.cells(offset, len).for_each(|c| c.with(|_| ()));
    }
}
