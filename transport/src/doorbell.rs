//! Doorbells: one eventfd and a set of "rung" flags in shared memory, so that a few threads can
//! sleep on thousands of rings with one descriptor between them.
//!
//! A ring normally has an eventfd per waiting side, and a thread that serves many rings
//! registers each one with its epoll set: two descriptors per ring in each process, which at
//! ten thousand rings is more than a process may hold. A ring whose side uses a [`Doorbell`]
//! instead names a *slot* of it: the waker sets the slot's flag and writes the eventfd only if
//! the flag was clear (so a burst of wake-ups for rings nobody has looked at yet costs one
//! write), and the woken thread takes the flags of the slots it serves ([`Doorbell::take`]) and
//! looks at those rings. The doorbell's creator hands out the slots ([`Doorbell::allocate`]);
//! a ring created with one gives its slot back when it is dropped.
//!
//! The flags are hints, never trusted: a peer that sets flags spuriously makes the other side
//! look at rings that have nothing new (which it checks anyway), and one that clears them only
//! delays its own wake-ups. The waker's guarantee is the ring's: whoever parks sets the ring's
//! waiting flag to "eventfd" and looks again, and the waker that sees the flag rings the slot.
//!
//! Layout of the segment: a 64-byte header (magic, version, number of slots), then one bit per
//! slot in 64-bit words.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::segment::Segment;

/// "SHMPBELL", little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"SHMPBELL");
const VERSION: u32 = 1;
const HEADER: usize = 64;
/// Most slots a doorbell may have.
pub const MAX_SLOTS: u32 = 1 << 20;

/// One eventfd and a flag per slot in a shared segment (see the module docs).
///
/// Cloning is cheap and shares the doorbell.
#[derive(Clone, Debug)]
pub struct Doorbell {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Keeps the mapping alive; holds the memfd on the creator's side only.
    segment: Segment,
    words: NonNull<AtomicU64>,
    slots: u32,
    eventfd: OwnedFd,
    /// The creator's free slots: never handed out yet from `next` up, and given back.
    free: Option<Mutex<FreeSlots>>,
}

// SAFETY: `words` points into the mapping `segment` owns for the lifetime of `Inner`, and is
// only accessed through atomics; everything else is `Send + Sync`.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`.
unsafe impl Sync for Inner {}

#[derive(Debug)]
struct FreeSlots {
    next: u32,
    /// Given back, reused oldest first so that a slot is reused as late as possible.
    released: VecDeque<u32>,
}

impl Doorbell {
    /// Creates a doorbell with `slots` slots (rounded up to a multiple of 64, at most
    /// [`MAX_SLOTS`]), in a new sealed memfd, with a new eventfd.
    ///
    /// # Errors
    /// [`Error::BadSegment`] for a slot count out of range; [`Error::Io`] if the memfd or the
    /// eventfd cannot be created.
    pub fn create(slots: u32) -> Result<Doorbell> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(Error::BadSegment(format!(
                "a doorbell has 1 to {MAX_SLOTS} slots, not {slots}"
            )));
        }
        let slots = slots.next_multiple_of(64);
        let segment = Segment::create("shmplug-doorbell", HEADER + slots as usize / 8)?;
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&MAGIC.to_le_bytes());
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&slots.to_le_bytes());
        // SAFETY: the segment is at least HEADER bytes, page aligned, zero-filled, and nobody
        // else has its descriptor yet; the header is plain bytes at offset 0.
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), segment.base().as_ptr(), header.len())
        };
        let flags = rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
        let eventfd =
            rustix::event::eventfd(0, flags).map_err(Error::errno("creating an eventfd"))?;
        Ok(Self::wrap(
            segment,
            slots,
            eventfd,
            Some(FreeSlots {
                next: 0,
                released: VecDeque::new(),
            }),
        ))
    }

    /// Opens a doorbell from descriptors received from another process, checking the memfd's
    /// seals, size and header and that `eventfd` is an eventfd. The memfd is closed once
    /// mapped: this side never sends it on.
    ///
    /// # Errors
    /// [`Error::BadSegment`] naming the first check that failed.
    pub fn from_fds(memory: OwnedFd, eventfd: OwnedFd) -> Result<Doorbell> {
        crate::ring::check_eventfd(&eventfd)?;
        let mut segment = Segment::from_fd(memory, HEADER)?;
        let mut header = [0u8; 16];
        // SAFETY: the segment is at least HEADER bytes; the header is copied out once into
        // private memory, and any bytes are a valid value of it (checked below).
        unsafe { std::ptr::copy_nonoverlapping(segment.base().as_ptr(), header.as_mut_ptr(), 16) };
        let word = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&header[range]);
            u64::from_le_bytes(bytes)
        };
        if word(0..8) != MAGIC {
            return Err(Error::BadSegment(
                "bad magic: not a shmplug doorbell".to_string(),
            ));
        }
        if word(8..12) != u64::from(VERSION) {
            return Err(Error::BadSegment(format!(
                "doorbell layout version {} but this build speaks version {VERSION}",
                word(8..12)
            )));
        }
        let slots = word(12..16) as u32;
        if slots == 0 || slots > MAX_SLOTS || !slots.is_multiple_of(64) {
            return Err(Error::BadSegment(format!(
                "a doorbell of {slots} slots (a multiple of 64 up to {MAX_SLOTS} expected)"
            )));
        }
        if segment.len() < HEADER + slots as usize / 8 {
            return Err(Error::BadSegment(format!(
                "the doorbell's memfd holds {} bytes, fewer than its {slots} slots need",
                segment.len()
            )));
        }
        drop(segment.take_fd());
        Ok(Self::wrap(segment, slots, eventfd, None))
    }

    fn wrap(segment: Segment, slots: u32, eventfd: OwnedFd, free: Option<FreeSlots>) -> Doorbell {
        // SAFETY: HEADER is inside the mapping (checked by both constructors), and page
        // alignment plus HEADER (64) keeps the words 8-byte aligned.
        let words = unsafe { segment.base().add(HEADER) }.cast::<AtomicU64>();
        Doorbell {
            inner: Arc::new(Inner {
                segment,
                words,
                slots,
                eventfd,
                free: free.map(Mutex::new),
            }),
        }
    }

    /// The descriptors to send to the other process (memfd, eventfd); `None` on the side that
    /// received the doorbell.
    pub fn fds(&self) -> Option<[BorrowedFd<'_>; 2]> {
        let memory = self.inner.segment.fd()?;
        Some([memory, self.inner.eventfd.as_fd()])
    }

    /// The eventfd a thread sleeps on (readable after a slot was rung).
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.inner.eventfd.as_fd()
    }

    /// The number of slots.
    pub fn slots(&self) -> u32 {
        self.inner.slots
    }

    /// Hands out a free slot (on the creator's side); `None` if all are in use or this side
    /// received the doorbell.
    pub fn allocate(&self) -> Option<u32> {
        let mut free = self
            .inner
            .free
            .as_ref()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if free.next < self.inner.slots {
            free.next += 1;
            return Some(free.next - 1);
        }
        free.released.pop_front()
    }

    /// Gives `slot` back (from [`allocate`](Self::allocate)). Its flag is cleared when it is
    /// handed out again.
    pub fn release(&self, slot: u32) {
        if let Some(free) = &self.inner.free {
            free.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .released
                .push_back(slot);
        }
    }

    fn word(&self, slot: u32) -> Option<(&AtomicU64, u64)> {
        if slot >= self.inner.slots {
            return None;
        }
        // SAFETY: `slot / 64` is below `slots / 64`, the number of words in the mapping (see
        // `wrap`), which lives as long as `self`; the words are only ever accessed atomically,
        // by this process and the other, and any bit pattern is a valid `u64`.
        let word = unsafe { self.inner.words.add(slot as usize / 64).as_ref() };
        Some((word, 1u64 << (slot % 64)))
    }

    /// Rings `slot`: sets its flag, and writes the eventfd if the flag was clear (if it was
    /// set, whoever serves the slot has not taken it yet and will see it). Out-of-range slots
    /// are ignored.
    pub fn ring(&self, slot: u32) {
        let Some((word, bit)) = self.word(slot) else {
            return;
        };
        // ORDERING: AcqRel: the waker's position store (and its fence) come before, and the
        // server's `take` (AcqRel) reads this, so it sees the ring's state as the waker left it.
        if word.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            // EAGAIN only if the counter is about to overflow, i.e. it is already readable.
            let _ = rustix::io::write(&self.inner.eventfd, &1u64.to_ne_bytes());
        }
    }

    /// Clears `slot`'s flag; true if it was set (the slot was rung since it was last taken).
    /// Look at the slot's ring after this, not before.
    pub fn take(&self, slot: u32) -> bool {
        let Some((word, bit)) = self.word(slot) else {
            return false;
        };
        // ORDERING: AcqRel pairs with `ring`'s.
        word.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Calls `f` with every slot whose flag is set now, lowest first, without clearing any:
    /// the caller [`take`](Self::take)s the ones it serves.
    pub fn for_each_rung(&self, mut f: impl FnMut(u32)) {
        for index in 0..self.inner.slots / 64 {
            let Some((word, _)) = self.word(index * 64) else {
                return;
            };
            // ORDERING: Relaxed: only a hint of which slots to `take`, which synchronises.
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                f(index * 64 + bit);
                bits &= bits - 1;
            }
        }
    }

    /// Empties the eventfd's counter (a thread that sleeps in `poll` on it does this after
    /// waking; one that watches it edge-triggered may skip it).
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.inner.eventfd, &mut buf);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn readable(doorbell: &Doorbell) -> bool {
        let mut buf = [0u8; 8];
        rustix::io::read(doorbell.eventfd(), &mut buf).is_ok()
    }

    #[test]
    fn a_rung_slot_is_seen_and_taken_once_and_a_burst_writes_once() {
        let bell = Doorbell::create(100).unwrap();
        assert_eq!(bell.slots(), 128);
        bell.ring(3);
        bell.ring(3);
        bell.ring(127);
        let mut rung = Vec::new();
        bell.for_each_rung(|slot| rung.push(slot));
        assert_eq!(rung, [3, 127]);
        let mut buf = [0u8; 8];
        rustix::io::read(bell.eventfd(), &mut buf).unwrap();
        assert_eq!(
            u64::from_ne_bytes(buf),
            2,
            "one write per slot rung from clear"
        );
        assert!(bell.take(3));
        assert!(!bell.take(3));
        assert!(bell.take(127));
        // Out of range: ignored both ways.
        bell.ring(128);
        assert!(!bell.take(128));
        assert!(!readable(&bell));
    }

    #[test]
    fn the_other_side_sees_the_same_flags_and_the_memfd_is_closed_there() {
        let bell = Doorbell::create(64).unwrap();
        let [memory, eventfd] = bell.fds().unwrap();
        let other = Doorbell::from_fds(
            memory.try_clone_to_owned().unwrap(),
            eventfd.try_clone_to_owned().unwrap(),
        )
        .unwrap();
        assert!(other.fds().is_none(), "the receiver holds only the eventfd");
        assert_eq!(other.slots(), 64);
        other.ring(9);
        assert!(readable(&bell));
        assert!(bell.take(9));
        assert!(
            other.allocate().is_none(),
            "only the creator hands out slots"
        );
    }

    #[test]
    fn slots_are_handed_out_once_and_reused_oldest_first() {
        let bell = Doorbell::create(64).unwrap();
        let all: Vec<u32> = std::iter::from_fn(|| bell.allocate()).collect();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
        bell.release(5);
        bell.release(2);
        assert_eq!(bell.allocate(), Some(5));
        assert_eq!(bell.allocate(), Some(2));
        assert_eq!(bell.allocate(), None);
    }

    #[test]
    fn bad_doorbells_are_refused() {
        assert!(Doorbell::create(0).is_err());
        assert!(Doorbell::create(MAX_SLOTS + 1).is_err());
        let eventfd = || rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        // A ring's memfd is not a doorbell.
        let ring = crate::Ring::create(4096).unwrap();
        let memory = ring.memory_fd().unwrap().try_clone_to_owned().unwrap();
        let err = Doorbell::from_fds(memory, eventfd()).unwrap_err();
        assert!(err.to_string().contains("not a shmplug doorbell"), "{err}");
        // An eventfd is required.
        let bell = Doorbell::create(64).unwrap();
        let [memory, _] = bell.fds().unwrap();
        let memory = memory.try_clone_to_owned().unwrap();
        let not_eventfd = bell.fds().unwrap()[0].try_clone_to_owned().unwrap();
        let err = Doorbell::from_fds(memory, not_eventfd).unwrap_err();
        assert!(err.to_string().contains("eventfd"), "{err}");
    }
}
