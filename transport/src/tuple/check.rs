//! Validating a record before it is read: one pass over the archived tuple, written for its
//! format.
//!
//! A record is an rkyv archive of a [`Tuple`](super::Tuple): the root ([`ArchivedTuple`], at the
//! end of the record) holds two vectors of map entries; an entry is a string key and an
//! [`ArchivedValue`]; a value is a one-byte tag and a payload, which for strings, byte strings,
//! lists and maps points elsewhere in the record. [`validate`] walks that tree once, from the
//! root, and checks everything a reader of the archive relies on:
//!
//! - every tag names a variant, every bool is 0 or 1;
//! - every relative pointer (of a vector, or of a string stored out of line) lands inside the
//!   record, aligned for what it points at, with room for its length;
//! - every string is UTF-8, in either of rkyv's representations: inline (up to eight bytes in
//!   the string's own eight, ended by the first `0xff`) or out of line (a length, whose low byte
//!   has the two top bits `10`, and an offset from the string itself);
//! - lists and maps nest at most [`MAX_DEPTH`] levels, so the recursion is bounded;
//! - the parts of the record do not overlap, by rkyv's own rule (a pointed-to part lies before
//!   the part that points to it, and parts visited later lie after parts visited earlier): each
//!   byte is claimed once, so the walk is linear in the record's size, and a visit budget of
//!   `len / 16` values stops it even if that rule were got wrong.
//!
//! It accepts exactly the records that the depth walk plus rkyv's bytecheck accepted before it
//! (the `tuple_check` fuzz target and the unit tests compare the two), in one pass and without
//! bytecheck's generic machinery. The layout facts it relies on are asserted below at compile
//! time where Rust allows it, and checked against real archives by the tests.

use std::mem::{align_of, offset_of, size_of};

use rkyv::collections::util::Entry;
use rkyv::string::ArchivedString;
use rkyv::string::repr::INLINE_CAPACITY;
use rkyv::vec::ArchivedVec;

use super::MAX_DEPTH;
use super::value::{ArchivedTuple, ArchivedValue};

/// Size and alignment of a value in a list.
pub(crate) const VALUE_SIZE: usize = size_of::<ArchivedValue>();
const VALUE_ALIGN: usize = align_of::<ArchivedValue>();
/// Size and alignment of a map entry, and where its key and value sit.
pub(crate) const ENTRY_SIZE: usize = size_of::<Entry<ArchivedString, ArchivedValue>>();
const ENTRY_ALIGN: usize = align_of::<Entry<ArchivedString, ArchivedValue>>();
const ENTRY_KEY: usize = offset_of!(Entry<ArchivedString, ArchivedValue>, key);
pub(crate) const ENTRY_VALUE: usize = offset_of!(Entry<ArchivedString, ArchivedValue>, value);
/// Size and alignment of the root, which sits at the end of the record.
pub(crate) const ROOT_SIZE: usize = size_of::<ArchivedTuple>();
const ROOT_ALIGN: usize = align_of::<ArchivedTuple>();
/// Offsets of the root's two maps.
pub(crate) const ROOT_META: usize = offset_of!(ArchivedTuple, meta);
pub(crate) const ROOT_FIELDS: usize = offset_of!(ArchivedTuple, fields);
/// Offset of a `String`, `Bytes`, `List` or `Map` payload in a value: after the one-byte tag,
/// aligned (all four are 4-byte aligned); of a `Bool`: right after the tag.
pub(crate) const VEC_IN_VALUE: usize = align_of::<ArchivedVec<ArchivedValue>>();
const STRING_IN_VALUE: usize = align_of::<ArchivedString>();
const BOOL_IN_VALUE: usize = 1;
/// Tags of the variants: declaration order of `Value` (checked by the tests).
const TAG_NULL: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_STRING: u8 = 4;
const TAG_BYTES: u8 = 5;
pub(crate) const TAG_LIST: u8 = 6;
pub(crate) const TAG_MAP: u8 = 7;
const TAG_TIMESTAMP: u8 = 8;

// rkyv's default format: an archived vector is a 32-bit relative pointer (from the vector's own
// address) then a 32-bit length; a string is eight bytes, inline or (length, offset from the
// string's own address); little-endian throughout. Other rkyv format features would change
// these and fail here or in the tests.
const _: () = assert!(size_of::<ArchivedVec<ArchivedValue>>() == 8);
const _: () = assert!(align_of::<ArchivedVec<ArchivedValue>>() == 4);
const _: () = assert!(size_of::<ArchivedVec<u8>>() == 8 && align_of::<ArchivedVec<u8>>() == 4);
const _: () = assert!(size_of::<ArchivedString>() == 8 && STRING_IN_VALUE == 4);
const _: () = assert!(INLINE_CAPACITY == 8);
const _: () = assert!(VALUE_SIZE == 16 && VALUE_ALIGN == 8);
const _: () = assert!(ENTRY_SIZE == 24 && ENTRY_ALIGN == 8 && ENTRY_KEY == 0 && ENTRY_VALUE == 8);
const _: () = assert!(ROOT_SIZE == 24 && ROOT_ALIGN == 8);
const _: () = assert!(offset_of!(ArchivedTuple, timestamp) == 0);
const _: () = assert!(ROOT_META == 8 && ROOT_FIELDS == 16);

/// Checks `bytes` (a record payload) as the module docs say and returns the archived tuple.
pub(crate) fn validate(bytes: &[u8]) -> Result<&ArchivedTuple, String> {
    check(bytes)?;
    // SAFETY: `check` accepted `bytes`: the root lies in its last `ROOT_SIZE` bytes at an
    // address aligned for `ArchivedTuple`, and every part of the archive reachable from it (each
    // vector's elements, each out-of-line string's bytes) lies inside `bytes`, aligned for its
    // type, with a valid tag, bool or UTF-8 contents wherever the type has invalid bit patterns
    // (the integers and floats have none). That is what `access_unchecked` requires for the
    // archive to be read through shared references for as long as `bytes` is borrowed, during
    // which the bytes cannot change.
    Ok(unsafe { rkyv::access_unchecked::<ArchivedTuple>(bytes) })
}

/// The checks that even a trusted record gets: long enough, root aligned. Enough for
/// `access_unchecked` not to compute an address outside the record.
pub(crate) fn check_shape(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < ROOT_SIZE {
        return Err(format!(
            "{} bytes is too short for a tuple (at least {ROOT_SIZE})",
            bytes.len()
        ));
    }
    let root = bytes.as_ptr() as usize + (bytes.len() - ROOT_SIZE);
    if !root.is_multiple_of(ROOT_ALIGN) {
        return Err(format!(
            "a {}-byte record puts the tuple's root at a misaligned address",
            bytes.len()
        ));
    }
    Ok(())
}

/// The walk of [`validate`].
fn check(bytes: &[u8]) -> Result<(), String> {
    check_shape(bytes)?;
    let root = bytes.len() - ROOT_SIZE;
    let mut walk = Walk {
        bytes,
        addr: bytes.as_ptr() as usize,
        start: 0,
        end: bytes.len(),
        budget: bytes.len() / VALUE_SIZE + 1,
        reason: None,
    };
    let walked = walk
        .claim(root, ROOT_SIZE, ROOT_ALIGN)
        .and_then(|_| walk.map(root + ROOT_META, 0))
        .and_then(|()| walk.map(root + ROOT_FIELDS, 0));
    match (walked, walk.reason) {
        (Ok(()), _) => Ok(()),
        (Err(Failed), Some(reason)) => Err(reason.to_string()),
        (Err(Failed), None) => Err("the tuple's bytes fail validation".to_owned()),
    }
}

/// A check failed; the walk holds the reason. (Small, so that the walk's results stay in
/// registers.)
#[derive(Debug)]
struct Failed;

/// Why a record was rejected.
#[derive(Debug, Clone, Copy)]
enum Reject {
    Overlap {
        at: usize,
        size: usize,
        start: usize,
        end: usize,
    },
    Misaligned {
        at: usize,
        align: usize,
    },
    Pointer {
        at: usize,
        rel: i32,
    },
    Bounds {
        at: usize,
        len: usize,
    },
    Budget,
    Bool {
        at: usize,
        byte: u8,
    },
    Tag {
        at: usize,
        tag: u8,
    },
    Depth,
    ShortOutOfLine {
        at: usize,
        len: usize,
    },
    Utf8 {
        at: usize,
    },
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Reject::Overlap {
                at,
                size,
                start,
                end,
            } => write!(
                f,
                "{size} bytes at offset {at} leave the record or overlap another part (they \
                 must lie in {start}..{end})"
            ),
            Reject::Misaligned { at, align } => {
                write!(f, "a part at offset {at} is not aligned to {align} bytes")
            }
            Reject::Pointer { at, rel } => write!(
                f,
                "a pointer at offset {at} to {rel} bytes away leaves the record"
            ),
            Reject::Bounds { at, len } => {
                write!(f, "{len} bytes at offset {at} are out of bounds")
            }
            Reject::Budget => write!(f, "more values than the record can hold: parts overlap"),
            Reject::Bool { at, byte } => {
                write!(f, "a bool at offset {at} is {byte}, neither 0 nor 1")
            }
            Reject::Tag { at, tag } => write!(f, "a value at offset {at} has no variant {tag}"),
            Reject::Depth => write!(f, "lists and maps nest deeper than {MAX_DEPTH} levels"),
            Reject::ShortOutOfLine { at, len } => write!(
                f,
                "a string at offset {at} is stored out of line with only {len} bytes"
            ),
            Reject::Utf8 { at } => write!(f, "the string at offset {at} is not UTF-8"),
        }
    }
}

struct Walk<'a> {
    bytes: &'a [u8],
    /// The address of `bytes[0]`, for alignment.
    addr: usize,
    /// Where the next part may lie: offsets `start..end` (rkyv's subtree range). A part's own
    /// pointers must land between `start` and the part; once a part is done, later parts must
    /// lie after it.
    start: usize,
    end: usize,
    /// List elements and map entries that may still be visited.
    budget: usize,
    /// Why the walk failed, once it has.
    reason: Option<Reject>,
}

impl Walk<'_> {
    #[cold]
    fn fail(&mut self, reason: Reject) -> Failed {
        self.reason = Some(reason);
        Failed
    }

    /// Claims `size` bytes at `at`, aligned to `align`, as the part now being checked; returns
    /// the range's end to give back to [`Walk::done`].
    #[inline]
    fn claim(&mut self, at: usize, size: usize, align: usize) -> Result<usize, Failed> {
        match at.checked_add(size) {
            Some(end) if at >= self.start && end <= self.end => {}
            _ => {
                let (start, end) = (self.start, self.end);
                return Err(self.fail(Reject::Overlap {
                    at,
                    size,
                    start,
                    end,
                }));
            }
        }
        if !(self.addr.wrapping_add(at)).is_multiple_of(align) {
            return Err(self.fail(Reject::Misaligned { at, align }));
        }
        Ok(std::mem::replace(&mut self.end, at))
    }

    /// Ends the part claimed at `at..end`: later parts lie after it, up to `outer`.
    #[inline]
    fn done(&mut self, end: usize, outer: usize) {
        self.start = end;
        self.end = outer;
    }

    /// Checks the map whose vector is at `at`, inside `level` lists and maps.
    fn map(&mut self, at: usize, level: usize) -> Result<(), Failed> {
        let (start, len) = self.vec(at)?;
        let (size, outer) = self.claim_elements(start, len, ENTRY_SIZE, ENTRY_ALIGN)?;
        for entry in (start..start + size).step_by(ENTRY_SIZE) {
            self.string(entry + ENTRY_KEY)?;
            self.value(entry + ENTRY_VALUE, level)?;
        }
        self.done(start + size, outer);
        Ok(())
    }

    /// Checks the list whose vector is at `at`, inside `level` lists and maps.
    fn list(&mut self, at: usize, level: usize) -> Result<(), Failed> {
        let (start, len) = self.vec(at)?;
        let (size, outer) = self.claim_elements(start, len, VALUE_SIZE, VALUE_ALIGN)?;
        for value in (start..start + size).step_by(VALUE_SIZE) {
            self.value(value, level)?;
        }
        self.done(start + size, outer);
        Ok(())
    }

    /// Claims `len` elements of `elem` bytes at `start`, within the visit budget; returns their
    /// size and the range's end.
    #[inline]
    fn claim_elements(
        &mut self,
        start: usize,
        len: usize,
        elem: usize,
        align: usize,
    ) -> Result<(usize, usize), Failed> {
        let Some(size) = len.checked_mul(elem) else {
            return Err(self.fail(Reject::Bounds { at: start, len }));
        };
        let outer = self.claim(start, size, align)?;
        match self.budget.checked_sub(len) {
            Some(left) => self.budget = left,
            None => return Err(self.fail(Reject::Budget)),
        }
        Ok((size, outer))
    }

    /// Checks the value at `at`, which sits inside `level` lists and maps.
    #[inline(always)]
    fn value(&mut self, at: usize, level: usize) -> Result<(), Failed> {
        match self.byte(at)? {
            TAG_NULL | TAG_INT | TAG_FLOAT | TAG_TIMESTAMP => Ok(()),
            TAG_BOOL => match self.byte(at + BOOL_IN_VALUE)? {
                0 | 1 => Ok(()),
                byte => Err(self.fail(Reject::Bool { at, byte })),
            },
            TAG_STRING => self.string(at + STRING_IN_VALUE),
            TAG_BYTES => {
                let (start, len) = self.vec(at + VEC_IN_VALUE)?;
                let outer = self.claim(start, len, 1)?;
                self.done(start + len, outer);
                Ok(())
            }
            tag @ (TAG_LIST | TAG_MAP) => {
                if level >= MAX_DEPTH {
                    return Err(self.fail(Reject::Depth));
                }
                if tag == TAG_LIST {
                    self.list(at + VEC_IN_VALUE, level + 1)
                } else {
                    self.map(at + VEC_IN_VALUE, level + 1)
                }
            }
            tag => Err(self.fail(Reject::Tag { at, tag })),
        }
    }

    /// Checks the string at `at`: inline, or out of line with its bytes elsewhere.
    #[inline(always)]
    fn string(&mut self, at: usize) -> Result<(), Failed> {
        let repr = u64::from_le_bytes(self.read(at)?);
        if repr & 0xc0 != 0x80 {
            // Inline: the bytes up to the first 0xff (or all eight). Bytes that are 0xff become
            // zero in `!repr`; the lowest flagged zero byte is exact (a borrow only flags bytes
            // above a true zero).
            let inverted = !repr;
            let zeros = inverted.wrapping_sub(ONES) & !inverted & HIGHS;
            let len = (zeros.trailing_zeros() / 8) as usize;
            let used = if len == 8 {
                u64::MAX
            } else {
                (1u64 << (len * 8)) - 1
            };
            if repr & used & HIGHS == 0 {
                return Ok(()); // ASCII
            }
            let bytes = repr.to_le_bytes();
            return match std::str::from_utf8(&bytes[..len]) {
                Ok(_) => Ok(()),
                Err(_) => Err(self.fail(Reject::Utf8 { at })),
            };
        }
        let raw = repr as u32;
        // The low byte's top two bits mark the representation; the length is the rest.
        let len = ((raw & 0x3f) | ((raw & !0xff) >> 2)) as usize;
        if len <= INLINE_CAPACITY {
            return Err(self.fail(Reject::ShortOutOfLine { at, len }));
        }
        let start = self.target(at, (repr >> 32) as u32 as i32)?;
        let outer = self.claim(start, len, 1)?;
        let bytes = self.slice(start, len)?;
        if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
            return Err(self.fail(Reject::Utf8 { at: start }));
        }
        self.done(start + len, outer);
        Ok(())
    }

    /// Reads the archived vector at `at`: where its elements start and how many there are
    /// (not yet checked against the record).
    #[inline]
    fn vec(&mut self, at: usize) -> Result<(usize, usize), Failed> {
        let word = u64::from_le_bytes(self.read(at)?);
        let start = self.target(at, word as u32 as i32)?;
        Ok((start, (word >> 32) as usize))
    }

    /// Where a relative pointer at `at` points, if inside the record at all.
    #[inline]
    fn target(&mut self, at: usize, rel: i32) -> Result<usize, Failed> {
        match isize::try_from(at)
            .ok()
            .and_then(|at| at.checked_add(rel as isize))
            .and_then(|t| usize::try_from(t).ok())
        {
            Some(t) if t <= self.bytes.len() => Ok(t),
            _ => Err(self.fail(Reject::Pointer { at, rel })),
        }
    }

    #[inline]
    fn byte(&mut self, at: usize) -> Result<u8, Failed> {
        match self.bytes.get(at) {
            Some(&b) => Ok(b),
            None => Err(self.fail(Reject::Bounds { at, len: 1 })),
        }
    }

    #[inline]
    fn read<const N: usize>(&mut self, at: usize) -> Result<[u8; N], Failed> {
        match self.bytes.get(at..).and_then(<[u8]>::first_chunk::<N>) {
            Some(b) => Ok(*b),
            None => Err(self.fail(Reject::Bounds { at, len: N })),
        }
    }

    #[inline]
    fn slice(&mut self, at: usize, len: usize) -> Result<&[u8], Failed> {
        let bytes = self.bytes;
        match at.checked_add(len).and_then(|end| bytes.get(at..end)) {
            Some(b) => Ok(b),
            None => Err(self.fail(Reject::Bounds { at, len })),
        }
    }
}

/// 0x01 and 0x80 in every byte of a word.
const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
