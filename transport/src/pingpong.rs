//! A physical reference for round trips: one cache line each way in a shared segment, a
//! counter bounced between two processes by spinning. Nothing can go between two processes
//! faster, so `shmplug bench` quotes a function call's round trip beside this one.
//!
//! The peer is not trusted: the words it writes are only compared with the value awaited,
//! and every wait has a time-out.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::Segment;
use crate::wait::{WaitStep, Waiter};

/// Size of the segment: one page.
const LEN: usize = 4096;
/// The pinging side's word (the first cache line pair).
const PING: usize = 0;
/// The answering side's word, 128 bytes on so that adjacent-line prefetch does not couple them.
const PONG: usize = 128;

/// Two shared words: the pinging side writes `ping` and spins until `pong` equals it, the
/// other side spins until `ping` moves and copies it to `pong`.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmplug_transport::pingpong::PingPong;
///
/// let a = PingPong::create()?;
/// let b = PingPong::from_fd(a.fd().try_clone_to_owned().unwrap())?;
/// std::thread::scope(|s| {
///     s.spawn(|| for seq in 1..=100 { b.answer(seq, Duration::from_secs(5)).unwrap() });
///     for seq in 1..=100 {
///         a.round_trip(seq, Duration::from_secs(5)).unwrap();
///     }
/// });
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Debug)]
pub struct PingPong {
    segment: Segment,
}

impl PingPong {
    /// A new pair of words, both zero.
    ///
    /// # Errors
    /// [`Error::Io`] if the segment cannot be made.
    pub fn create() -> Result<PingPong> {
        Ok(PingPong {
            segment: Segment::create("shmplug-pingpong", LEN)?,
        })
    }

    /// The words in a segment received from the other process.
    ///
    /// # Errors
    /// [`Error::BadSegment`] if the descriptor is not a sealed memfd of at least a page.
    pub fn from_fd(fd: OwnedFd) -> Result<PingPong> {
        Ok(PingPong {
            segment: Segment::from_fd(fd, LEN)?,
        })
    }

    /// The segment's descriptor, to send to the other process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // Never taken: a ping-pong segment keeps its descriptor for as long as it lives.
        self.segment
            .fd()
            .expect("a ping-pong segment keeps its memfd")
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= LEN && offset.is_multiple_of(8));
        // SAFETY: the segment maps at least LEN bytes (checked by create/from_fd, and sealed
        // against shrinking, so it stays mapped and backed) from a page-aligned base, so
        // `base + offset` is in bounds and 8-byte aligned for the two constant offsets used.
        // Every bit pattern is a valid u64, the other process touches these bytes only
        // through atomic operations of its own, and the reference lives no longer than
        // `&self`, which owns the mapping.
        unsafe { &*self.segment.base().as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Writes `seq` to the ping word and spins until the other side has copied it to the
    /// pong word.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if it does not within `timeout`.
    pub fn round_trip(&self, seq: u64, timeout: Duration) -> Result<()> {
        // ORDERING: Release/Acquire hand the value over; nothing else is published.
        self.word(PING).store(seq, Ordering::Release);
        spin_until(self.word(PONG), seq, timeout)
    }

    /// Spins until the ping word holds `seq`, then copies it to the pong word.
    ///
    /// # Errors
    /// [`Error::TimedOut`] if it does not within `timeout`.
    pub fn answer(&self, seq: u64, timeout: Duration) -> Result<()> {
        spin_until(self.word(PING), seq, timeout)?;
        self.word(PONG).store(seq, Ordering::Release);
        Ok(())
    }
}

/// Spins (never parks: the reference is the spinning round trip) until `word` holds `seq`.
fn spin_until(word: &AtomicU64, seq: u64, timeout: Duration) -> Result<()> {
    let mut waiter = Waiter::new(Duration::MAX, Some(timeout));
    loop {
        if word.load(Ordering::Acquire) == seq {
            return Ok(());
        }
        if let WaitStep::TimedOut(t) = waiter.step() {
            return Err(Error::TimedOut(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_peer_times_out() {
        let p = PingPong::create().unwrap();
        let err = p.round_trip(1, Duration::from_millis(5)).unwrap_err();
        assert!(matches!(err, Error::TimedOut(_)), "{err}");
        let err = p.answer(2, Duration::from_millis(5)).unwrap_err();
        assert!(matches!(err, Error::TimedOut(_)), "{err}");
    }

    #[test]
    fn a_short_descriptor_is_refused() {
        let small = Segment::create("small", 64).unwrap();
        let fd = small.fd().unwrap().try_clone_to_owned().unwrap();
        assert!(matches!(PingPong::from_fd(fd), Err(Error::BadSegment(_))));
    }
}
