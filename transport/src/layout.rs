//! The ring's layout in shared memory.
//!
//! ```text
//! offset   0  Meta       magic, layout version, header size, data capacity  (written once)
//! offset 128  Producer   write position                                    (producer writes)
//! offset 256  Consumer   read position                                     (consumer writes)
//! offset 384  Signals    waiting flags (futex words) and closed flags       (rarely written)
//! offset 512  Acks       acknowledged and taken positions                  (consumer writes)
//! offset 4096 data       `capacity` bytes, a power of two
//! ```
//!
//! Each dynamic part sits on its own 128-byte span (two cache lines, so the adjacent-line
//! prefetcher on x86-64 does not couple them). Positions are monotonically increasing byte
//! counts; a position's offset in the data region is `pos & (capacity - 1)`. The data region
//! starts on a page boundary so that 64-byte aligned payloads are 64-byte aligned in memory.
//!
//! A record is a 16-byte [`RecordHeader`] (`len: u32`, `kind: u32`, 8 reserved bytes) followed by its payload, the whole padded to a
//! multiple of 16 bytes, so a payload is always 16-byte aligned (an rkyv root can be accessed
//! in place). Payloads of [`LARGE_PAYLOAD`] bytes or more start on a 64-byte boundary, which keeps
//! big copies in and out of the ring fast. A record never crosses the end of the region: the
//! space before the end, or before an aligned start, is filled with a padding record.

use crate::sync::{AtomicU32, AtomicU64};

/// `b"SHMPLUG\x01"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPLUG\x01");
/// Version of this layout; a segment with another version is refused.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes before the data region.
pub const HEADER_SIZE: usize = 4096;
/// Size of a record header, and the alignment of every record.
pub const RECORD_ALIGN: u64 = 16;
/// Payloads at least this long start on a 64-byte boundary.
pub const LARGE_PAYLOAD: u64 = 1024;
/// Record kind of a padding record (skipped by the consumer).
pub const KIND_PADDING: u32 = u32::MAX;
/// Smallest data capacity a segment-backed ring accepts.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest data capacity (1 GiB): keeps every record length inside a `u32`.
pub const MAX_CAPACITY: u64 = 1 << 30;

/// Positions above this are refused as corrupt. At 2^62 bytes a ring moving 100 GB/s would
/// take over a year to get there; refusing more keeps every position sum far from overflow.
pub const MAX_POSITION: u64 = 1 << 62;

/// Segment offset of the producer's write position (a `u64`).
pub const WRITE_POSITION_OFFSET: usize = 128;
/// Segment offset of the consumer's read position (a `u64`).
pub const READ_POSITION_OFFSET: usize = 256;
/// Segment offset of the waiting and closed flags (four `u32`s: consumer waiting, producer
/// waiting, producer closed, consumer closed).
pub const SIGNALS_OFFSET: usize = 384;
/// Segment offset of the consumer's acknowledgements (three `u64`s: acknowledged position, taken
/// position, non-zero once it acknowledges; all zero while the consumer does not).
pub const ACKS_OFFSET: usize = 512;
/// Segment offsets of the header fields the creator writes once: magic (`u64`), layout version
/// (`u32`), header size (`u32`), capacity (`u64`).
pub const META_MAGIC_OFFSET: usize = 0;
/// See [`META_MAGIC_OFFSET`].
pub const META_VERSION_OFFSET: usize = 8;
/// See [`META_MAGIC_OFFSET`].
pub const META_HEADER_SIZE_OFFSET: usize = 12;
/// See [`META_MAGIC_OFFSET`].
pub const META_CAPACITY_OFFSET: usize = 16;

/// Written once by the creator, validated and copied out by the opener, never read again.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Meta {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub capacity: u64,
    pub _reserved: [u64; 13],
}

/// 128-byte aligned wrapper: one span per side, no false sharing.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Span<T>(pub T);

/// The waiting and closed flags. Written only when a side parks, wakes the other, or closes.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// Futex word: the consumer sleeps waiting for data. 0 = awake, [`PARK_FUTEX`] or
    /// [`PARK_EVENTFD`] = asleep, and how to wake it.
    pub consumer_waiting: AtomicU32,
    /// Futex word: the producer sleeps waiting for space (same values).
    pub producer_waiting: AtomicU32,
    /// Non-zero once the producer closed; its final write position is already published.
    pub producer_closed: AtomicU32,
    /// Non-zero once the consumer closed.
    pub consumer_closed: AtomicU32,
}

/// What a consumer that acknowledges ([`Consumer::acknowledge`](crate::Consumer::acknowledge))
/// says about each record, one store per record on a span of its own that the producer reads
/// only when the consumer has died, so it costs no cache-line transfer in steady state.
///
/// Both are positions, like `read_pos`, and zero while the consumer does not acknowledge. A
/// record is acknowledged once its reader is done with it (for a sink: `collect` returned and
/// the reader asks for the next record); `read_pos` follows in batches. So after the consumer died, the records in
/// `max(acked, read_pos) .. write` are the ones it never finished, and the first of them was
/// being worked on (perhaps half done) if `taken` is past `acked`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// Position after the last record the consumer finished with. Stored with `Release` after
    /// the record's work.
    pub acked: AtomicU64,
    /// Position after the last record handed to the consumer's reader.
    pub taken: AtomicU64,
    /// Non-zero once the consumer acknowledges.
    pub enabled: AtomicU64,
}

/// Flag value: the parked side sleeps on the futex word itself.
pub(crate) const PARK_FUTEX: u32 = 1;
/// Flag value: the parked side waits for its eventfd to become readable.
pub(crate) const PARK_EVENTFD: u32 = 2;

/// The shared control block at the start of the segment.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Control {
    pub meta: Span<Meta>,
    /// Bytes committed and published by the producer. In `read_pos ..= read_pos + capacity`.
    pub write_pos: Span<AtomicU64>,
    /// Bytes released by the consumer. Never above `write_pos`.
    pub read_pos: Span<AtomicU64>,
    pub signals: Span<Signals>,
    pub acks: Span<Acks>,
}

// The layout is shared with other processes (which may run another build of this crate):
// pin it down. Under loom the atomics are model types and the block lives on the heap.
#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Meta>() == 128);
    assert!(offset_of!(Control, meta) == 0);
    assert!(offset_of!(Control, write_pos) == WRITE_POSITION_OFFSET);
    assert!(offset_of!(Control, read_pos) == READ_POSITION_OFFSET);
    assert!(offset_of!(Control, signals) == SIGNALS_OFFSET);
    assert!(offset_of!(Meta, magic) == META_MAGIC_OFFSET);
    assert!(offset_of!(Meta, version) == META_VERSION_OFFSET);
    assert!(offset_of!(Meta, header_size) == META_HEADER_SIZE_OFFSET);
    assert!(offset_of!(Meta, capacity) == META_CAPACITY_OFFSET);
    assert!(offset_of!(Control, acks) == ACKS_OFFSET);
    assert!(size_of::<Control>() == 640);
    assert!(align_of::<Control>() == 128);
    assert!(size_of::<Control>() <= HEADER_SIZE);
    assert!(size_of::<AtomicU64>() == 8 && size_of::<AtomicU32>() == 4);
};

/// The header in front of every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes (for padding: the padding's length minus the header).
    pub len: u32,
    /// [`KIND_PADDING`] or a user kind (`1 ..= u32::MAX - 1`).
    pub kind: u32,
}

impl RecordHeader {
    /// The header's 16 bytes as they sit in the ring.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..8].copy_from_slice(&self.kind.to_le_bytes());
        b
    }

    /// Reads a header from its 16 bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        RecordHeader {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            kind: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Total bytes a record with a `len`-byte payload occupies: header plus payload, padded to 16.
pub const fn record_span(len: u64) -> u64 {
    (RECORD_ALIGN + len).next_multiple_of(RECORD_ALIGN)
}

/// Largest payload a ring of `capacity` bytes accepts.
///
/// A record may need padding up to the end of the region, then up to 48 bytes of alignment
/// padding, before it fits; with records of at most half the capacity (minus that slack) a
/// record always fits once the consumer has drained the ring, so a writer can never deadlock.
pub const fn max_payload(capacity: u64) -> u64 {
    capacity / 2 - 64
}
