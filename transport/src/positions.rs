//! A read-only look at a ring's shared positions, for someone who watches a ring without being
//! one of its endpoints (a supervisor that reports a ring nobody reads from).
//!
//! Both positions live in memory the other process can write at any moment, so what this
//! returns is a hint: it never affects the ring, and odd values (a write position behind the
//! read position, or more than a capacity ahead of it) are reported as such, not trusted.

use crate::ring::Ring;
use crate::sync::Ordering;

/// A ring's write and read positions, as published to shared memory when they were loaded
/// ([`Ring::positions`]). The consumer publishes its read position in batches (and whenever it
/// finds the ring empty), so `read` may lag what the consumer has actually read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Positions {
    /// Bytes the producer committed and published.
    pub write: u64,
    /// Bytes the consumer released and published.
    pub read: u64,
    /// The ring's data capacity (the opener's private, checked copy).
    pub capacity: u64,
}

impl Positions {
    /// Bytes published but not released yet; `None` if the positions are inconsistent (the
    /// write position behind the read position, or more than a capacity ahead of it), which
    /// the consumer reports as corruption on its next read.
    pub fn unread(&self) -> Option<u64> {
        self.write
            .checked_sub(self.read)
            .filter(|&unread| unread <= self.capacity)
    }
}

impl Ring {
    /// The positions both sides last published: two relaxed loads, no effect on the ring.
    /// Values a misbehaving peer wrote are returned as they are; see [`Positions::unread`].
    ///
    /// # Examples
    /// ```
    /// use shmplug_transport::{EndpointConfig, Ring};
    ///
    /// let ring = Ring::create(4096)?;
    /// let mut producer = ring.producer(EndpointConfig::default())?;
    /// assert_eq!(ring.positions().unread(), Some(0));
    /// producer.claim(8)?.commit();
    /// assert!(ring.positions().unread().is_some_and(|n| n > 0));
    /// # Ok::<(), shmplug_transport::Error>(())
    /// ```
    pub fn positions(&self) -> Positions {
        let control = self.shared.control();
        // ORDERING: Relaxed: the values are a hint for a watcher, which reads no record
        // through them.
        let write = control.write_pos.0.load(Ordering::Relaxed);
        // ORDERING: Relaxed, as above.
        let read = control.read_pos.0.load(Ordering::Relaxed);
        Positions {
            write,
            read,
            capacity: self.shared.capacity,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Positions;

    #[test]
    fn odd_positions_are_not_trusted() {
        let p = |write, read| Positions {
            write,
            read,
            capacity: 4096,
        };
        assert_eq!(p(100, 100).unread(), Some(0));
        assert_eq!(p(4196, 100).unread(), Some(4096));
        assert_eq!(p(4197, 100).unread(), None);
        assert_eq!(p(99, 100).unread(), None);
        assert_eq!(p(u64::MAX, 0).unread(), None);
    }
}
