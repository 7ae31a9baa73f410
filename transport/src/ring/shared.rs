//! The mapping both endpoints of a ring share, and the [`Ring`] handle that creates and opens it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::doorbell::Doorbell;
use crate::error::{Error, Result};
use crate::layout::{
    Control, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MIN_CAPACITY, Meta, RecordHeader,
    max_payload,
};
use crate::segment::Segment;
use crate::sync::{Bell, Futex, Granules};

use super::consumer::Consumer;
use super::producer::Producer;
use crate::wait::{self, EndpointConfig};

/// What keeps the memory behind [`RingMemory`] alive.
#[derive(Debug)]
enum Backing {
    Segment {
        /// The mapping; its memfd is held by [`Ring::memory`] instead.
        _segment: Segment,
        data_ready: BellFd,
        space_ready: BellFd,
    },
    /// Loom models run the ring on the heap: loom's atomics cannot live in shared memory.
    #[cfg(loom)]
    Heap {
        _control: Box<Control>,
        _data: Box<[std::cell::UnsafeCell<u8>]>,
        data_ready: crate::sync::EventCounter,
        space_ready: crate::sync::EventCounter,
    },
}

/// How one side of a ring is woken once it parked the eventfd way.
#[derive(Debug)]
enum BellFd {
    /// Its own eventfd.
    Own(OwnedFd),
    /// A slot of a doorbell shared with other rings.
    Shared(SharedBell),
}

/// A doorbell slot; one this side allocated is given back when the ring is dropped.
#[derive(Debug)]
struct SharedBell {
    doorbell: Doorbell,
    slot: u32,
    leased: bool,
}

impl Drop for SharedBell {
    fn drop(&mut self) {
        if self.leased {
            self.doorbell.release(self.slot);
        }
    }
}

impl BellFd {
    #[cfg(not(loom))]
    fn bell(&self) -> Bell<'_> {
        match self {
            BellFd::Own(fd) => Bell::Fd(crate::sync::EventFd(fd.as_fd())),
            BellFd::Shared(shared) => Bell::Slot(&shared.doorbell, shared.slot),
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            BellFd::Own(fd) => Some(fd.as_fd()),
            BellFd::Shared(_) => None,
        }
    }

    fn slot(&self) -> Option<u32> {
        match self {
            BellFd::Own(_) => None,
            BellFd::Shared(shared) => Some(shared.slot),
        }
    }
}

/// Which of a ring's two wake-ups goes through a shared [`Doorbell`]: the one the consumer
/// waits on (`Data`) or the one the producer waits on (`Space`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// The consumer's: the producer rings the slot when data arrives.
    Data,
    /// The producer's: the consumer rings the slot when space frees up.
    Space,
}

/// The state both endpoints in this process share: where the control block and the data region
/// are, and the ring's geometry as validated when it was opened.
#[derive(Debug)]
pub(crate) struct RingMemory {
    control: NonNull<Control>,
    data: NonNull<u8>,
    /// Size of the data region, a power of two in `MIN_CAPACITY ..= MAX_CAPACITY`.
    pub capacity: u64,
    /// Largest payload, `max_payload(capacity)`.
    pub max_payload: u64,
    pub futex: Futex,
    pub granules: Granules,
    producer_taken: AtomicBool,
    consumer_taken: AtomicBool,
    /// Set by [`Interrupter::interrupt`]: every wait on this ring in this process ends.
    interrupted: crate::sync::AtomicBool,
    backing: Backing,
}

// SAFETY: `control` and `data` point into memory owned by `backing` for the lifetime of
// `RingMemory`.
// The control block is only accessed through atomics; the data region is accessed by at most one
// producer and one consumer (enforced by `producer_taken` / `consumer_taken` in this process), in
// disjoint ranges that the position protocol hands from one to the other with Release/Acquire.
unsafe impl Send for RingMemory {}
// SAFETY: as for `Send`: every access through `&RingMemory` is atomic or covered by the protocol.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// True once an [`Interrupter`] of this ring was used.
    pub fn is_interrupted(&self) -> bool {
        // ORDERING: Relaxed: a waiter reads it after its SeqCst fence in `wait::park`, which
        // pairs with the interrupter's fence.
        self.interrupted.load(crate::sync::Ordering::Relaxed)
    }

    /// The shared control block.
    pub fn control(&self) -> &Control {
        // SAFETY: `control` points to a `Control` that lives as long as `self` (see `Backing`),
        // is 128-byte aligned (page-aligned mapping or a `Box`), and consists of atomics (valid
        // for any bit pattern, safe to share) plus `Meta`, which is plain data read only by the
        // opener before any other process writes it is relevant.
        unsafe { self.control.as_ref() }
    }

    /// Offset of `pos` in the data region.
    #[inline]
    pub fn offset(&self, pos: u64) -> u64 {
        pos & (self.capacity - 1)
    }

    /// Copies `bytes` into the data region at `offset`.
    ///
    /// Callers own `offset .. offset + bytes.len()` under the position protocol.
    #[inline]
    pub fn write_at(&self, offset: u64, bytes: &[u8]) {
        assert!(
            offset + bytes.len() as u64 <= self.capacity,
            "write outside the data region"
        );
        self.granules.write(offset, bytes.len() as u64);
        // SAFETY: the range is inside the data region (asserted above), which is valid for
        // writes for the lifetime of `self`; the caller owns it under the protocol, so no one
        // else accesses it now. `bytes` is local memory, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.data.as_ptr().add(offset as usize),
                bytes.len(),
            );
        }
    }

    /// Reads the record header at `offset`.
    #[inline]
    pub fn header_at(&self, offset: u64) -> RecordHeader {
        assert!(
            offset + 16 <= self.capacity,
            "header outside the data region"
        );
        self.granules.read(offset, 16);
        let mut raw = [0u8; 16];
        // SAFETY: the 16 bytes are inside the data region (asserted above) and were published
        // to us by the producer, which no longer writes them; `raw` is local.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.data.as_ptr().add(offset as usize),
                raw.as_mut_ptr(),
                16,
            );
        }
        RecordHeader::from_bytes(raw)
    }

    /// Copies the data region's bytes `offset .. offset + dst.len()` into `dst`, private memory.
    ///
    /// This is how a consumer reads a record whose producer it does not trust: the producer may
    /// write these bytes while they are copied, and nothing it does can change `dst` afterwards.
    #[inline]
    pub fn copy_out(&self, offset: u64, dst: &mut [u8]) {
        assert!(
            offset + dst.len() as u64 <= self.capacity,
            "read outside the data region"
        );
        self.granules.read(offset, dst.len() as u64);
        // SAFETY: the source range is inside the data region (asserted above against the
        // private, checked capacity), which is mapped for the lifetime of `self`; `dst` is
        // private memory, so the ranges do not overlap. The other process may write the source
        // bytes during the copy. The copy goes through raw pointers only (no reference to the
        // shared bytes is made, so nothing tells the compiler they are immutable), reads each
        // byte once, and `u8` has no invalid values: a concurrent write can only leave `dst`
        // holding a mix of old and new bytes, which the caller validates as untrusted input.
        // The memory model does not describe another process's writes; like `header_at` and
        // `Ring::from_fds`, we treat the mapping as memory that changes under us and never
        // read the same shared bytes twice expecting the same value.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.data.as_ptr().add(offset as usize),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
    }

    /// The data region's bytes `offset .. offset + len`, mutable.
    ///
    /// # Safety
    /// The range must be inside the data region and owned by the caller (the producer's claimed
    /// span) for as long as the returned slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, offset: u64, len: u64) -> &mut [u8] {
        debug_assert!(offset + len <= self.capacity);
        // SAFETY: guaranteed by the caller.
        unsafe {
            std::slice::from_raw_parts_mut(self.data.as_ptr().add(offset as usize), len as usize)
        }
    }

    /// The data region's bytes `offset .. offset + len`.
    ///
    /// # Safety
    /// The range must be inside the data region and published to the caller (the consumer's
    /// current record) for as long as the returned slice lives.
    #[inline]
    pub unsafe fn slice(&self, offset: u64, len: u64) -> &[u8] {
        debug_assert!(offset + len <= self.capacity);
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(offset as usize), len as usize) }
    }

    /// How the consumer is woken for data, if this ring has eventfds.
    pub fn data_ready(&self) -> Option<Bell<'_>> {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment { data_ready, .. } => Some(data_ready.bell()),
            // Loom models wait only on heap rings, whose eventfds are stand-ins.
            #[cfg(loom)]
            Backing::Segment { .. } => None,
            #[cfg(loom)]
            Backing::Heap { data_ready, .. } => Some(crate::sync::EventFd(data_ready)),
        }
    }

    /// How the producer is woken for space, if this ring has eventfds.
    pub fn space_ready(&self) -> Option<Bell<'_>> {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment { space_ready, .. } => Some(space_ready.bell()),
            #[cfg(loom)]
            Backing::Segment { .. } => None,
            #[cfg(loom)]
            Backing::Heap { space_ready, .. } => Some(crate::sync::EventFd(space_ready)),
        }
    }

    pub fn release_producer(&self) {
        self.producer_taken
            .store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn release_consumer(&self) {
        self.consumer_taken
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// The descriptors that make up a ring, as sent to or received from another process.
#[derive(Debug)]
pub struct RingFds {
    /// The sealed memfd holding the control block and the data region.
    pub memory: OwnedFd,
    /// eventfd the consumer waits on (written by the producer when data arrives).
    pub data_ready: OwnedFd,
    /// eventfd the producer waits on (written by the consumer when space frees up).
    pub space_ready: OwnedFd,
}

/// A ring in a shared-memory segment: create it, send its descriptors to another process, and
/// take one endpoint on each side.
///
/// # Examples
/// ```
/// use shmplug_transport::{EndpointConfig, Ring};
///
/// let ring = Ring::create(64 * 1024)?;
/// let mut tx = ring.producer(EndpointConfig::default())?;
/// let mut rx = ring.consumer(EndpointConfig::default())?;
///
/// let mut claim = tx.claim(5)?;
/// claim.copy_from_slice(b"hello");
/// claim.commit();
///
/// let record = rx.read()?;
/// assert_eq!(&*record, b"hello");
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Ring {
    pub(crate) shared: Arc<RingMemory>,
    /// The memfd, to send; `None` on the side that received the ring and in a clone made by
    /// [`without_memory_fd`](Ring::without_memory_fd).
    memory: Option<Arc<OwnedFd>>,
}

impl Ring {
    /// Creates a ring whose data region holds `capacity` bytes (a power of two from 4 KiB to
    /// 1 GiB), in a new sealed memfd, with two eventfds for waking.
    ///
    /// # Errors
    /// [`Error::BadSegment`] for a capacity out of range; [`Error::Io`] if the memfd or the
    /// eventfds cannot be created.
    pub fn create(capacity: usize) -> Result<Ring> {
        Self::create_inner(capacity, None)
    }

    /// As [`create`](Self::create), with one of the two wake-ups going through a slot of
    /// `doorbell` instead of an eventfd of its own (see [`crate::doorbell`]): the side that
    /// waits for it is served by a thread that sleeps on many rings at once. If the doorbell
    /// has no free slot, the ring gets its own eventfd ([`doorbell_slot`](Self::doorbell_slot)
    /// is then `None`). The slot is given back when the last clone of the ring is dropped.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_with_doorbell(
        capacity: usize,
        doorbell: &Doorbell,
        which: Wakeup,
    ) -> Result<Ring> {
        let shared = doorbell.allocate().map(|slot| {
            (
                which,
                SharedBell {
                    doorbell: doorbell.clone(),
                    slot,
                    leased: true,
                },
            )
        });
        if let Some((_, bell)) = &shared {
            // A flag left by the slot's last ring would suppress the first ring's signal.
            bell.doorbell.take(bell.slot);
        }
        Self::create_inner(capacity, shared)
    }

    fn create_inner(capacity: usize, shared: Option<(Wakeup, SharedBell)>) -> Result<Ring> {
        let capacity = capacity as u64;
        check_capacity(capacity)?;
        let mut segment = Segment::create("shmplug-ring", HEADER_SIZE + capacity as usize)?;
        let meta = Meta {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            capacity,
            _reserved: [0; 13],
        };
        // SAFETY: the segment is at least HEADER_SIZE bytes, page aligned, and nobody else has
        // its descriptor yet; `Meta` is `Pod` and sits at offset 0.
        unsafe { segment.base().cast::<Meta>().write(meta) };
        let flags = rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
        let eventfd = || -> Result<BellFd> {
            let fd =
                rustix::event::eventfd(0, flags).map_err(Error::errno("creating an eventfd"))?;
            Ok(BellFd::Own(fd))
        };
        let (data_ready, space_ready) = match shared {
            None => (eventfd()?, eventfd()?),
            Some((Wakeup::Data, bell)) => (BellFd::Shared(bell), eventfd()?),
            Some((Wakeup::Space, bell)) => (eventfd()?, BellFd::Shared(bell)),
        };
        let memory = segment.take_fd().map(Arc::new);
        let mut ring = Self::from_segment(segment, capacity, data_ready, space_ready)?;
        ring.memory = memory;
        Ok(ring)
    }

    /// Opens a ring from descriptors received from another process, checking everything: the
    /// memfd's seals and size, the header's magic, layout version and capacity, and that the
    /// other two descriptors are eventfds. The memfd is closed once mapped: this side never
    /// sends the ring on.
    ///
    /// # Errors
    /// [`Error::BadSegment`] naming the first check that failed.
    pub fn from_fds(fds: RingFds) -> Result<Ring> {
        check_eventfd(&fds.data_ready)?;
        check_eventfd(&fds.space_ready)?;
        Self::open_segment(
            fds.memory,
            BellFd::Own(fds.data_ready),
            BellFd::Own(fds.space_ready),
        )
    }

    /// As [`from_fds`](Self::from_fds), for a ring whose `which` wake-up goes through `slot`
    /// of `doorbell` (received before) and whose other one is the eventfd `own`.
    ///
    /// # Errors
    /// [`Error::BadSegment`] naming the first check that failed, or a slot out of range.
    pub fn from_fds_with_doorbell(
        memory: OwnedFd,
        own: OwnedFd,
        doorbell: &Doorbell,
        slot: u32,
        which: Wakeup,
    ) -> Result<Ring> {
        check_eventfd(&own)?;
        if slot >= doorbell.slots() {
            return Err(Error::BadSegment(format!(
                "doorbell slot {slot} of a doorbell with {} slots",
                doorbell.slots()
            )));
        }
        let shared = BellFd::Shared(SharedBell {
            doorbell: doorbell.clone(),
            slot,
            leased: false,
        });
        let own = BellFd::Own(own);
        match which {
            Wakeup::Data => Self::open_segment(memory, shared, own),
            Wakeup::Space => Self::open_segment(memory, own, shared),
        }
    }

    fn open_segment(memory: OwnedFd, data_ready: BellFd, space_ready: BellFd) -> Result<Ring> {
        let mut segment = Segment::from_fd(memory, HEADER_SIZE)?;
        drop(segment.take_fd());
        // SAFETY: the segment is at least HEADER_SIZE bytes and page aligned, `Meta` is `Pod`
        // (any bytes are a valid value) and we copy it out once; the peer rewriting it
        // concurrently could only give us a torn value, which the checks below reject.
        let meta: Meta = unsafe { segment.base().cast::<Meta>().read_volatile() };
        if meta.magic != MAGIC {
            return Err(Error::BadSegment(format!(
                "bad magic {:#018x} (expected {MAGIC:#018x}): not a shmplug ring",
                meta.magic
            )));
        }
        if meta.version != LAYOUT_VERSION {
            return Err(Error::BadSegment(format!(
                "ring layout version {} but this build speaks version {LAYOUT_VERSION}; \
                 rebuild the plugin against a matching shmplug",
                meta.version
            )));
        }
        if meta.header_size as usize != HEADER_SIZE {
            return Err(Error::BadSegment(format!(
                "header size {} (expected {HEADER_SIZE})",
                meta.header_size
            )));
        }
        check_capacity(meta.capacity)?;
        if segment.len() as u64 != HEADER_SIZE as u64 + meta.capacity {
            return Err(Error::BadSegment(format!(
                "segment is {} bytes but its header says {} + {}",
                segment.len(),
                HEADER_SIZE,
                meta.capacity
            )));
        }
        Self::from_segment(segment, meta.capacity, data_ready, space_ready)
    }

    /// Wraps a segment whose size is `HEADER_SIZE + capacity`. `capacity` is the caller's
    /// private, checked value: the header in the mapping is never read again, since the other
    /// process may rewrite it at any moment.
    fn from_segment(
        segment: Segment,
        capacity: u64,
        data_ready: BellFd,
        space_ready: BellFd,
    ) -> Result<Ring> {
        debug_assert_eq!(segment.len() as u64, HEADER_SIZE as u64 + capacity);
        let base = segment.base();
        // SAFETY: HEADER_SIZE is inside the mapping (the segment is HEADER_SIZE + capacity).
        let data = unsafe { base.add(HEADER_SIZE) };
        Ok(Ring {
            shared: Arc::new(RingMemory {
                control: base.cast::<Control>(),
                data,
                capacity,
                max_payload: max_payload(capacity),
                // A unit struct in normal builds, a mutex and condvar under loom.
                #[allow(clippy::default_constructed_unit_structs)]
                futex: Futex::default(),
                granules: Granules::new(capacity),
                producer_taken: AtomicBool::new(false),
                consumer_taken: AtomicBool::new(false),
                interrupted: crate::sync::AtomicBool::new(false),
                backing: Backing::Segment {
                    _segment: segment,
                    data_ready,
                    space_ready,
                },
            }),
            memory: None,
        })
    }

    /// A heap-backed ring for loom models (any power-of-two capacity of 256 bytes or more).
    #[cfg(loom)]
    pub(crate) fn heap(capacity: u64) -> Ring {
        use crate::layout::Span;
        assert!(capacity.is_power_of_two() && capacity >= 256);
        let control = Box::new(Control {
            meta: Span(Meta {
                magic: MAGIC,
                version: LAYOUT_VERSION,
                header_size: 0,
                capacity,
                _reserved: [0; 13],
            }),
            write_pos: Span(Default::default()),
            read_pos: Span(Default::default()),
            signals: Span(Default::default()),
            acks: Span(Default::default()),
        });
        let data: Box<[std::cell::UnsafeCell<u8>]> = (0..capacity)
            .map(|_| std::cell::UnsafeCell::new(0))
            .collect();
        Ring {
            shared: Arc::new(RingMemory {
                control: NonNull::from(&*control),
                data: NonNull::new(data.as_ptr() as *mut u8).unwrap(),
                capacity,
                max_payload: max_payload(capacity),
                futex: Futex::default(),
                granules: Granules::new(capacity),
                producer_taken: AtomicBool::new(false),
                consumer_taken: AtomicBool::new(false),
                interrupted: crate::sync::AtomicBool::new(false),
                backing: Backing::Heap {
                    _control: control,
                    _data: data,
                    data_ready: Default::default(),
                    space_ready: Default::default(),
                },
            }),
            memory: None,
        }
    }

    /// The descriptors to send to the other process: the memfd, then the eventfds of its own
    /// (data, space; a wake-up through a doorbell has none). Empty on the side that received
    /// the ring, or after [`without_memory_fd`](Self::without_memory_fd).
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let Some(memory) = self.memory_fd() else {
            return Vec::new();
        };
        std::iter::once(memory)
            .chain(self.data_ready_fd())
            .chain(self.space_ready_fd())
            .collect()
    }

    /// The memfd; `None` on the side that received the ring, or after
    /// [`without_memory_fd`](Self::without_memory_fd).
    pub fn memory_fd(&self) -> Option<BorrowedFd<'_>> {
        self.memory.as_deref().map(AsFd::as_fd)
    }

    /// The eventfd the consumer waits on for data; `None` if that wake-up goes through a
    /// doorbell.
    pub fn data_ready_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.shared.backing {
            Backing::Segment { data_ready, .. } => data_ready.fd(),
            #[cfg(loom)]
            Backing::Heap { .. } => None,
        }
    }

    /// The eventfd the producer waits on for space; `None` if that wake-up goes through a
    /// doorbell.
    pub fn space_ready_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.shared.backing {
            Backing::Segment { space_ready, .. } => space_ready.fd(),
            #[cfg(loom)]
            Backing::Heap { .. } => None,
        }
    }

    /// The doorbell slot one of this ring's wake-ups goes through, if any.
    pub fn doorbell_slot(&self) -> Option<u32> {
        match &self.shared.backing {
            Backing::Segment {
                data_ready,
                space_ready,
                ..
            } => data_ready.slot().or(space_ready.slot()),
            #[cfg(loom)]
            Backing::Heap { .. } => None,
        }
    }

    /// This ring without its memfd: once the other process has it, the creator keeps the
    /// mapping and drops the descriptor (it closes when no clone holds it any more), so that a
    /// host with thousands of rings does not hold a descriptor for each.
    pub fn without_memory_fd(self) -> Ring {
        Ring {
            shared: self.shared,
            memory: None,
        }
    }

    /// Takes the producing end. A ring has one producer: across processes that is the caller's
    /// promise; in this process a second call before the first producer is dropped fails. A
    /// producer may be taken again after the previous one was dropped without closing (its
    /// process died, say), and carries on from the published write position; once a producer
    /// has closed the ring, the producing end is gone for good.
    ///
    /// # Errors
    /// [`Error::AlreadyTaken`]; [`Error::Closed`] if a producer already closed the ring;
    /// [`Error::Corrupt`] if the shared positions are invalid.
    pub fn producer(&self, config: EndpointConfig) -> Result<Producer> {
        if self
            .shared
            .producer_taken
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Err(Error::AlreadyTaken("producer"));
        }
        // ORDERING: Acquire pairs with the Release store in `Producer::close`.
        let closed = &self.shared.control().signals.0.producer_closed;
        if closed.load(crate::sync::Ordering::Acquire) != 0 {
            self.shared.release_producer();
            return Err(Error::Closed);
        }
        Producer::new(self.shared.clone(), config).inspect_err(|_| self.shared.release_producer())
    }

    /// Takes the consuming end (see [`Ring::producer`]).
    ///
    /// # Errors
    /// [`Error::AlreadyTaken`]; [`Error::Closed`] if a consumer already closed the ring;
    /// [`Error::Corrupt`] if the shared positions are invalid.
    pub fn consumer(&self, config: EndpointConfig) -> Result<Consumer> {
        if self
            .shared
            .consumer_taken
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Err(Error::AlreadyTaken("consumer"));
        }
        // ORDERING: Acquire pairs with the Release store in `Consumer::close`.
        let closed = &self.shared.control().signals.0.consumer_closed;
        if closed.load(crate::sync::Ordering::Acquire) != 0 {
            self.shared.release_consumer();
            return Err(Error::Closed);
        }
        Consumer::new(self.shared.clone(), config).inspect_err(|_| self.shared.release_consumer())
    }

    /// Closes the producing end on behalf of a producer that cannot do it any more (its process
    /// died): the consumer reads what was published, then sees [`Error::Closed`]. Records the
    /// dead producer committed without publishing are lost.
    pub fn close_producer_end(&self) {
        let signals = &self.shared.control().signals.0;
        // ORDERING: as in `Producer::close`: the flag is released, and the fence pairs with
        // the consumer's fence before it sleeps.
        signals
            .producer_closed
            .store(1, crate::sync::Ordering::Release);
        crate::sync::fence(crate::sync::Ordering::SeqCst);
        wait::wake(
            &self.shared,
            &signals.consumer_waiting,
            self.shared.data_ready(),
        );
    }

    /// Closes the consuming end on behalf of a consumer that cannot do it any more: the
    /// producer's next claim fails with [`Error::Closed`].
    pub fn close_consumer_end(&self) {
        let signals = &self.shared.control().signals.0;
        // ORDERING: as in `Consumer::close`.
        signals
            .consumer_closed
            .store(1, crate::sync::Ordering::Release);
        crate::sync::fence(crate::sync::Ordering::SeqCst);
        wait::wake(
            &self.shared,
            &signals.producer_waiting,
            self.shared.space_ready(),
        );
    }

    /// Size of the data region in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.capacity as usize
    }

    /// Largest payload a single record may carry: a little under half the capacity.
    pub fn max_record_len(&self) -> usize {
        self.shared.max_payload as usize
    }
}

fn check_capacity(capacity: u64) -> Result<()> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(Error::BadSegment(format!(
            "capacity {capacity} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
        )));
    }
    Ok(())
}

/// Refuses anything but an eventfd: the ring writes 8 bytes to it and polls it, which on some
/// other kind of file (a socket to somewhere, a regular file) would misbehave.
pub(crate) fn check_eventfd(fd: &OwnedFd) -> Result<()> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(Error::io("inspecting a received descriptor"))?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        return Err(Error::BadSegment(format!(
            "expected an eventfd for waking, got {}",
            link.display()
        )));
    }
    Ok(())
}

/// Which waits an [`Interrupter`] ends: those of the endpoint it was taken from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

/// Ends the waits of one endpoint of a ring, in this process, now and from then on: a claim or
/// read that waits (or would) returns [`Error::Interrupted`]; tries are unaffected. For a thread
/// that waits on a ring without a time-out and must still be stopped from another thread
/// (instead of waking every few milliseconds to look for a stop).
///
/// Taken with [`Producer::interrupter`] or [`Consumer::interrupter`]; cheap to clone, `Send`
/// and `Sync`.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmplug_transport::{EndpointConfig, Error, Ring};
///
/// let ring = Ring::create(4096)?;
/// let mut consumer = ring.consumer(EndpointConfig::default())?;
/// let stop = consumer.interrupter();
/// let waiting = std::thread::spawn(move || matches!(consumer.read(), Err(Error::Interrupted)));
/// stop.interrupt();
/// assert!(waiting.join().unwrap());
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Clone)]
pub struct Interrupter {
    memory: Arc<RingMemory>,
    side: Side,
}

impl std::fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupter")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl Interrupter {
    pub(crate) fn new(memory: Arc<RingMemory>, side: Side) -> Interrupter {
        Interrupter { memory, side }
    }

    /// Ends the endpoint's current wait, if any, and every later one. Idempotent.
    pub fn interrupt(&self) {
        use crate::sync::{Ordering, fence};
        self.memory.interrupted.store(true, Ordering::Relaxed);
        // ORDERING: pairs with the fence in `wait::park` between setting the waiting flag and
        // looking at `interrupted`: either the waiter sees the store, or we see its flag below
        // and wake it (clearing the flag, so a sleep that has not begun returns at once).
        fence(Ordering::SeqCst);
        let memory = &self.memory;
        let signals = &memory.control().signals.0;
        match self.side {
            Side::Producer => wait::wake(memory, &signals.producer_waiting, memory.space_ready()),
            Side::Consumer => wait::wake(memory, &signals.consumer_waiting, memory.data_ready()),
        }
    }
}
