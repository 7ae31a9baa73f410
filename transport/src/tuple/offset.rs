//! [`Offset`]: where a rewindable source stands after a tuple, carried in a record of its own
//! ([`OFFSET_KIND`]) just before the tuple's record.
//!
//! eKuiper's rewindable sources report their offset as `any` (a Kafka offset, a file and a
//! line, a row key). Here it is opaque bytes chosen by the source, at most
//! [`MAX_OFFSET_LEN`]: a source that is not rewindable writes no offset records and pays
//! nothing; a rewindable one pays one small record (8 header bytes plus its offset, aligned)
//! per tuple. A receiver takes an offset record as belonging to the next tuple record.

use std::fmt;

/// The record kind of an offset record, `"OFS1"` read as a little-endian `u32`.
pub const OFFSET_KIND: u32 = u32::from_le_bytes(*b"OFS1");

/// Most bytes an [`Offset`] holds.
pub const MAX_OFFSET_LEN: usize = 64;

/// A rewindable source's offset after one tuple: up to [`MAX_OFFSET_LEN`] bytes whose meaning
/// only the source knows. Kept inline (no allocation), so it can be copied per tuple.
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::Offset;
///
/// let offset = Offset::from_u64(42);
/// assert_eq!(offset.as_u64(), Some(42));
/// assert_eq!(Offset::new(b"file.csv:17").unwrap().as_bytes(), b"file.csv:17");
/// assert!(Offset::new(&[0; 65]).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Offset {
    len: u8,
    bytes: [u8; MAX_OFFSET_LEN],
}

impl Offset {
    /// An offset holding `bytes`; `None` if they are more than [`MAX_OFFSET_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Offset> {
        if bytes.len() > MAX_OFFSET_LEN {
            return None;
        }
        let mut offset = Offset {
            len: bytes.len() as u8,
            bytes: [0; MAX_OFFSET_LEN],
        };
        offset.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(offset)
    }

    /// A position or sequence number, as 8 little-endian bytes.
    pub fn from_u64(n: u64) -> Offset {
        let mut offset = Offset {
            len: 8,
            bytes: [0; MAX_OFFSET_LEN],
        };
        offset.bytes[..8].copy_from_slice(&n.to_le_bytes());
        offset
    }

    /// The number an offset made by [`from_u64`](Self::from_u64) holds; `None` unless it is
    /// 8 bytes long.
    pub fn as_u64(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.as_bytes().try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// The offset's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Reads an offset record's payload through `copy` (which copies the record's `len` bytes
    /// into the buffer it is given, without trusting them).
    ///
    /// # Errors
    /// The reason, if the record is longer than [`MAX_OFFSET_LEN`].
    pub(crate) fn from_record(
        len: usize,
        copy: impl FnOnce(&mut [u8]),
    ) -> std::result::Result<Offset, String> {
        if len > MAX_OFFSET_LEN {
            return Err(format!(
                "an offset record of {len} bytes (an offset has at most {MAX_OFFSET_LEN})"
            ));
        }
        let mut offset = Offset {
            len: len as u8,
            bytes: [0; MAX_OFFSET_LEN],
        };
        copy(&mut offset.bytes[..len]);
        Ok(offset)
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_u64() {
            Some(n) => write!(f, "Offset({n})"),
            None => write!(f, "Offset({:02x?})", self.as_bytes()),
        }
    }
}
