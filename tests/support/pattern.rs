//! A deterministic stream of records: lengths from a seeded xorshift, contents from the record's
//! index, so the producer and the consumer (in different processes) agree without talking.

/// Shortest payload of a pattern record (it starts with its index).
pub const MIN_LEN: usize = 8;
/// Longest payload of a pattern record in the default length range.
pub const MAX_LEN: usize = 200;

/// Filler the payload's bytes after the index come from.
const PATTERN: [u8; 512] = make_pattern();

const fn make_pattern() -> [u8; 512] {
    let mut out = [0u8; 512];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0;
    while i < out.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (x >> 56) as u8;
        i += 1;
    }
    out
}

/// Lengths of successive records from a seed: an endless iterator.
#[derive(Clone, Debug)]
pub struct Lengths {
    state: u64,
    min: usize,
    max: usize,
}

impl Lengths {
    /// The length sequence for `seed`, in `MIN_LEN ..= MAX_LEN`.
    pub fn new(seed: u64) -> Self {
        Self::up_to(seed, MAX_LEN)
    }

    /// The length sequence for `seed`, in `MIN_LEN ..= max`.
    pub fn up_to(seed: u64, max: usize) -> Self {
        assert!(max >= MIN_LEN);
        Lengths {
            // xorshift must not start at zero.
            state: seed | 1,
            min: MIN_LEN,
            max,
        }
    }
}

impl Iterator for Lengths {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        Some(self.min + (x % (self.max - self.min + 1) as u64) as usize)
    }
}

/// The filler of record `index`: 256 bytes, repeated after the index.
fn filler(index: u64) -> &'static [u8] {
    let from = (index % 256) as usize;
    &PATTERN[from..from + 256]
}

/// Writes record `index`'s content into `buf` (at least [`MIN_LEN`] bytes): the index, then
/// filler that depends on the index.
pub fn fill(buf: &mut [u8], index: u64) {
    let (head, tail) = buf.split_at_mut(8);
    head.copy_from_slice(&index.to_le_bytes());
    let filler = filler(index);
    for chunk in tail.chunks_mut(filler.len()) {
        chunk.copy_from_slice(&filler[..chunk.len()]);
    }
}

/// True if `buf` is exactly what [`fill`] writes for record `index` of this length.
pub fn matches(buf: &[u8], index: u64) -> bool {
    if buf.len() < MIN_LEN {
        return false;
    }
    let (head, tail) = buf.split_at(8);
    let filler = filler(index);
    head == index.to_le_bytes()
        && tail
            .chunks(filler.len())
            .all(|chunk| chunk == &filler[..chunk.len()])
}

/// A running checksum over records (length and every byte, in order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum(pub u64);

impl Checksum {
    /// Folds one record into the checksum.
    pub fn add(&mut self, record: &[u8]) {
        const K: u64 = 0x0100_0000_01b3_u64.wrapping_mul(0x9e37_79b9);
        let mut h = (self.0 ^ record.len() as u64).wrapping_mul(K);
        let mut words = record.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h.rotate_left(29);
    }
}
