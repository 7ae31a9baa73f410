//! [`TupleBatch`]: received tuples kept past their records, in one reusable private buffer.

use rkyv::util::AlignedVec;

use crate::error::{Error, Result};

use super::check;
use super::encode::{Encode, Encoder};
use super::value::ArchivedTuple;
use super::value_view::MapView;
use super::view::TupleView;

/// Where each record starts in the buffer: payloads are aligned to 16 bytes, as in a ring.
const ALIGN: usize = 16;

/// Tuples copied out of their records into one buffer this process owns, so that many can be
/// held at once (a batch of calls in flight, say) while the records go back to the producer.
/// Pushing copies a record's bytes (no allocation once the buffer has grown to the largest
/// batch); [`get`](Self::get) views a tuple where it lies.
///
/// A tuple is validated in the batch's own memory, so nothing the producer does to the ring
/// afterwards can change it: a view that already reads private memory (validated there) is
/// copied as it is, one that reads the shared ring is validated again after the copy.
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::{Encoder, Tuple, TupleBatch, TupleView};
///
/// let mut buf = rkyv::util::AlignedVec::<16>::new();
/// buf.resize(256, 0);
/// let len = Encoder::new().encode_into(&Tuple::new(1).with_field("n", 7i64), &mut buf)?;
/// let mut batch = TupleBatch::new();
/// batch.push(&TupleView::from_bytes(&buf[..len])?)?;
/// assert_eq!(batch.get(0).and_then(|t| t.get("n")?.as_i64()), Some(7));
/// batch.clear();
/// assert!(batch.is_empty());
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct TupleBatch {
    bytes: AlignedVec<ALIGN>,
    /// `(start, len)` of each tuple in `bytes`; `start` is a multiple of [`ALIGN`] and every
    /// span was validated by [`check::validate`] where it lies now.
    spans: Vec<(usize, usize)>,
}

impl TupleBatch {
    /// An empty batch.
    pub fn new() -> TupleBatch {
        TupleBatch::default()
    }

    /// Number of tuples held.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True if no tuple is held.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Forgets every tuple, keeping the memory for the next batch.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    /// Copies `view`'s tuple into the batch.
    ///
    /// # Errors
    /// [`Error::InvalidTuple`] if the copy of a tuple read from shared memory does not validate
    /// (its producer rewrote it after it was checked); nothing is added then.
    pub fn push(&mut self, view: &TupleView<'_>) -> Result<()> {
        let start = self.bytes.len().next_multiple_of(ALIGN);
        let src = view.as_bytes();
        self.bytes.resize(start, 0);
        self.bytes.extend_from_slice(src);
        if !view.is_private()
            && let Err(reason) = check::validate(&self.bytes[start..])
        {
            self.bytes.resize(start, 0);
            return Err(Error::InvalidTuple(reason));
        }
        self.spans.push((start, src.len()));
        Ok(())
    }

    /// Writes `tuple` into the batch with `encoder` (no allocation once the encoder's scratch
    /// space and the batch have grown), and validates what was written.
    ///
    /// # Errors
    /// [`Error::InvalidTuple`] if the tuple nests too deep or does not validate once written;
    /// nothing is added then.
    pub fn push_encoded<T: Encode + ?Sized>(
        &mut self,
        encoder: &mut Encoder,
        tuple: &T,
    ) -> Result<()> {
        let start = self.bytes.len().next_multiple_of(ALIGN);
        let bound = tuple.size_bound()?;
        self.bytes.resize(start + bound, 0);
        let written = encoder.encode_into(tuple, &mut self.bytes[start..]);
        let checked = written.and_then(|len| {
            check::validate(&self.bytes[start..start + len])
                .map(|_| len)
                .map_err(Error::InvalidTuple)
        });
        match checked {
            Ok(len) => {
                self.bytes.resize(start + len, 0);
                self.spans.push((start, len));
                Ok(())
            }
            Err(e) => {
                self.bytes.resize(start, 0);
                Err(e)
            }
        }
    }

    /// The tuple pushed `index`th.
    pub fn get(&self, index: usize) -> Option<TupleView<'_>> {
        let (root, bytes) = self.root(index)?;
        Some(TupleView::from_checked(root, bytes))
    }

    /// The fields of the tuple pushed `index`th, borrowed from the batch (where
    /// [`get`](Self::get)`(index)?.fields()` would borrow the view).
    pub fn fields(&self, index: usize) -> Option<MapView<'_>> {
        let (root, _) = self.root(index)?;
        Some(MapView::new(&root.fields))
    }

    fn root(&self, index: usize) -> Option<(&ArchivedTuple, &[u8])> {
        let &(start, len) = self.spans.get(index)?;
        let bytes = &self.bytes[start..start + len];
        // SAFETY: `spans` holds only ranges whose bytes were validated as an `ArchivedTuple`
        // (`check::validate`) at this same offset, aligned to 16 bytes, or
        // copied unchanged from a validated private view (an rkyv archive reads the same at any
        // address of its alignment: its pointers are relative). The buffer is not written
        // again until `clear` or a `push` past the end, both of which need `&mut self`, while
        // the result borrows `&self`.
        let root = unsafe { rkyv::access_unchecked::<ArchivedTuple>(bytes) };
        Some((root, bytes))
    }

    /// The tuples, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = TupleView<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}
