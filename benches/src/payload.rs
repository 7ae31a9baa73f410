//! What the benches move: record sizes, 64-byte aligned buffers, and the checksum a consumer
//! folds every record into.

/// Record sizes of the throughput benches: 64 B, 1 KiB and 64 KiB.
pub const SIZES: [usize; 3] = [64, 1024, 64 * 1024];

/// Data capacity of every ring in the throughput benches, shmplug's and rtrb's alike: 1 MiB.
///
/// Big enough for 64 KiB records (a shmplug record may be a little under half the capacity)
/// and for a publication batch (an eighth of the capacity, 128 KiB) to cover many records; equal
/// to this machine's L2 per core, so the data stays in cache and the benches measure the ring,
/// not DRAM.
pub const RING_BYTES: usize = 1 << 20;

/// A printable name for a record size: `64 B`, `1 KiB`, `64 KiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The same name without spaces, for criterion benchmark ids: `64B`, `1KiB`, `64KiB`.
pub fn size_id(size: usize) -> String {
    size_label(size).replace(' ', "")
}

/// One cache line; a `Vec` of these is 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([u8; 64]);

/// A heap buffer whose first byte is 64-byte aligned.
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    /// `len` bytes of a fixed, non-constant pattern (so a checksum of it is not trivially zero).
    pub fn pattern(len: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(len);
        for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
            *b = (i.wrapping_mul(31) ^ (i >> 7)) as u8 | 1;
        }
        buf
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// What every consumer computes from every record: the record's length plus the wrapping sum of
/// its bytes read as little-endian `u64` words (a tail shorter than a word is added byte by
/// byte). It reads every byte, as a real consumer would, and compiles to a vectorised loop that
/// runs well above the rates measured here.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut sum = bytes.len() as u64;
    for word in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(word.try_into().expect("8-byte chunk")));
    }
    for &b in words.remainder() {
        sum = sum.wrapping_add(u64::from(b));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_sized() {
        let buf = AlignedBuf::pattern(1000);
        assert_eq!(buf.as_slice().len(), 1000);
        assert_eq!(buf.as_slice().as_ptr() as usize % 64, 0);
        assert_ne!(checksum(buf.as_slice()), 1000);
    }

    #[test]
    fn labels() {
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_id(64 * 1024), "64KiB");
    }
}
