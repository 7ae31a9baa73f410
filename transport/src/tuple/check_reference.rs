//! The reference validator that [`check`](super::check) replaced: a depth pre-walk, then rkyv's
//! bytecheck. Kept for tests and the `tuple_check` fuzz target, which compare the two: they must
//! accept the same records, and views of accepted records must read the same values.
//!
//! bytecheck validates nested lists and maps by recursion, one group of stack frames per level,
//! and bounds the depth only by the record's size: a hostile record of a few hundred kilobytes
//! made of nothing but nested one-element lists would overflow a thread's stack. So before
//! bytecheck runs, [`check_depth`] walks the same pointers bytecheck will follow, in safe code
//! with bounds-checked reads, and rejects any record whose lists and maps nest deeper than
//! [`MAX_DEPTH`]. It is not a validator (bytecheck is): it only has to follow every pointer to a
//! list or map that bytecheck would, and it rejects rather than skips anything it cannot follow.
//! It also stops after `len / 16` values, the most a valid record can hold (bytecheck rejects
//! records whose parts overlap), so a record whose lists all point at one shared list costs
//! linear time, not exponential.

use rkyv::rancor;

use super::MAX_DEPTH;
use super::check::{
    ENTRY_SIZE, ENTRY_VALUE, ROOT_FIELDS, ROOT_META, ROOT_SIZE, TAG_LIST, TAG_MAP, VALUE_SIZE,
    VEC_IN_VALUE,
};
use super::value::ArchivedTuple;

/// Checks `bytes` (a record payload, aligned to 16 bytes) with the depth walk and bytecheck, and
/// returns the archived tuple.
pub(crate) fn validate(bytes: &[u8]) -> Result<&ArchivedTuple, String> {
    check_depth(bytes)?;
    // `BoxedError`, not `rancor::Error`: the latter keeps no message in builds without debug
    // assertions ("failed without error information").
    rkyv::api::low::access::<ArchivedTuple, rancor::BoxedError>(bytes)
        .map_err(|e| format!("the tuple's bytes fail validation: {e}"))
}

/// Rejects records whose lists and maps nest deeper than [`MAX_DEPTH`] (see the module docs).
pub(crate) fn check_depth(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < ROOT_SIZE {
        return Err(format!(
            "{} bytes is too short for a tuple (at least {ROOT_SIZE})",
            bytes.len()
        ));
    }
    let root = bytes.len() - ROOT_SIZE;
    let mut walk = Walk {
        bytes,
        budget: bytes.len() / VALUE_SIZE + 1,
    };
    walk.map(root + ROOT_META, 0)?;
    walk.map(root + ROOT_FIELDS, 0)
}

struct Walk<'a> {
    bytes: &'a [u8],
    /// Values that may still be visited.
    budget: usize,
}

impl Walk<'_> {
    fn map(&mut self, at: usize, level: usize) -> Result<(), String> {
        let (start, len) = self.vec(at, ENTRY_SIZE)?;
        (0..len).try_for_each(|i| self.value(start + i * ENTRY_SIZE + ENTRY_VALUE, level))
    }

    fn list(&mut self, at: usize, level: usize) -> Result<(), String> {
        let (start, len) = self.vec(at, VALUE_SIZE)?;
        (0..len).try_for_each(|i| self.value(start + i * VALUE_SIZE, level))
    }

    /// Visits the value at `at`, which sits inside `level` lists and maps.
    fn value(&mut self, at: usize, level: usize) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or_else(|| "more values than the record can hold: parts overlap".to_owned())?;
        let tag = *self
            .bytes
            .get(at)
            .ok_or_else(|| format!("value at {at} is out of bounds"))?;
        if tag != TAG_LIST && tag != TAG_MAP {
            return Ok(());
        }
        if level >= MAX_DEPTH {
            return Err(format!(
                "lists and maps nest deeper than {MAX_DEPTH} levels"
            ));
        }
        if tag == TAG_LIST {
            self.list(at + VEC_IN_VALUE, level + 1)
        } else {
            self.map(at + VEC_IN_VALUE, level + 1)
        }
    }

    /// Reads the archived vector at `at`: returns where its elements start and how many there
    /// are, after checking that they lie inside the record.
    fn vec(&self, at: usize, elem: usize) -> Result<(usize, usize), String> {
        let rel = i32::from_le_bytes(self.read4(at)?);
        let len = u32::from_le_bytes(self.read4(at + 4)?) as usize;
        let start = (at as i64)
            .checked_add(i64::from(rel))
            .and_then(|s| usize::try_from(s).ok());
        let end = start.and_then(|s| len.checked_mul(elem).and_then(|n| n.checked_add(s)));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.bytes.len() => Ok((start, len)),
            _ => Err(format!(
                "{len} elements at relative offset {rel} from {at} leave the record"
            )),
        }
    }

    fn read4(&self, at: usize) -> Result<[u8; 4], String> {
        at.checked_add(4)
            .and_then(|end| self.bytes.get(at..end))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(|| format!("read at {at} is out of bounds"))
    }
}
