//! [`TupleView`]: a received tuple, read in place, and how records are validated
//! ([`Validation`]).

use std::fmt;

use rkyv::util::AlignedVec;

use crate::error::{Error, Result};
use crate::ring::Record;

use super::RECORD_KIND;
use super::check;
use super::value::{ArchivedTuple, Tuple};
use super::value_view::{MapIter, MapView, ValueView};

/// How a [`TupleReceiver`](super::TupleReceiver) checks each record before handing out a view.
/// Chosen per channel, by how far the peer is trusted.
///
/// | mode | checks | cost | for a peer that |
/// | --- | --- | --- | --- |
/// | [`COPY_THEN_VALIDATE`](Self::COPY_THEN_VALIDATE) (default) | copies the record into a reused, private aligned buffer, releases it, then validates the copy | ~30 ns per small tuple plus a copy | is untrusted, hostile included: may rewrite a record while it is read (how the host reads every plugin-written ring) |
/// | [`VALIDATED`](Self::VALIDATED) | the tuple validator's one pass, in place | ~30 ns per small tuple | is trusted not to rewrite committed records but may be buggy (how a plugin reads host-written rings) |
/// | [`trusted`](Self::trusted) (`unsafe`) | record kind, length and alignment only | none | is known to write only valid tuples |
///
/// In every mode a record that fails its checks yields [`Error::InvalidTuple`], poisons the
/// receiver for good and closes the ring for the producer at once. Only `trusted` can turn a bad record into undefined behaviour, which is why it is
/// `unsafe` to choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Validation(pub(crate) Mode);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    Validated,
    #[default]
    CopyThenValidate,
    Trusted,
}

impl Validation {
    /// Validate each record in place: the record's bytes are checked once, then
    /// read where they are. Sound as long as the peer does not modify a record after committing
    /// it, which the ring's protocol guarantees for a peer that follows it; a peer that rewrites
    /// a record while it is checked or read could defeat the checks.
    pub const VALIDATED: Validation = Validation(Mode::Validated);

    /// Copy each record into a buffer owned by the receiver (reused, 16-byte aligned), release
    /// the record, then validate the copy (the default). For a peer that might keep writing
    /// into records it has committed: nothing it does afterwards can change what was validated,
    /// and every string and byte slice read from the view lies in the private copy.
    pub const COPY_THEN_VALIDATE: Validation = Validation(Mode::CopyThenValidate);

    /// Skip validation: records are read with rkyv's `access_unchecked`. Only the record kind,
    /// the length and the root's alignment are checked.
    ///
    /// # Safety
    /// The caller vouches that every record the peer commits to this ring with the tuple record
    /// kind is a complete, valid archived [`Tuple`] written by this version of the format (for
    /// example by an [`Encoder`](super::Encoder) in a process the caller controls), and that the
    /// peer does not modify a record after committing it. Reading an invalid record in this mode
    /// is undefined behaviour.
    pub unsafe fn trusted() -> Validation {
        Validation(Mode::Trusted)
    }

    /// True for the mode made by [`trusted`](Self::trusted).
    pub fn is_trusted(&self) -> bool {
        self.0 == Mode::Trusted
    }
}

/// A received tuple, read in place: field lookup by name and iteration need no allocation.
///
/// A view made from a ring record holds the record; dropping the view releases the record's space
/// to the producer. (In [`Validation::COPY_THEN_VALIDATE`] mode the record was released already
/// and the view borrows the receiver's copy.)
///
/// # Examples
/// ```
/// use shmplug_transport::tuple::{Encoder, Tuple, TupleView, ValueView};
///
/// let tuple = Tuple::new(5).with_field("n", 42i64);
/// let mut buf = rkyv::util::AlignedVec::<16>::new();
/// buf.resize(256, 0);
/// let len = Encoder::new().encode_into(&tuple, &mut buf)?;
/// let view = TupleView::from_bytes(&buf[..len])?;
/// assert_eq!(view.timestamp(), 5);
/// assert_eq!(view.get("n").and_then(|v| v.as_i64()), Some(42));
/// assert_eq!(view.to_owned(), tuple);
/// # Ok::<(), shmplug_transport::Error>(())
/// ```
pub struct TupleView<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    /// A record whose bytes were checked when the view was made (or whose peer is trusted).
    Record(Record<'a>),
    /// An archive validated in memory the view borrows, and its bytes.
    Archived(&'a ArchivedTuple, &'a [u8]),
}

impl<'a> TupleView<'a> {
    /// Validates `bytes` (an archived tuple; must start at an address aligned to 16 bytes, else
    /// the check fails) and views it.
    ///
    /// # Errors
    /// [`Error::InvalidTuple`] saying what is wrong with the bytes.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<TupleView<'a>> {
        let root = check::validate(bytes).map_err(Error::InvalidTuple)?;
        Ok(TupleView {
            inner: Inner::Archived(root, bytes),
        })
    }

    /// Checks a record as `validation` says and views it; `copy` is the receiver's buffer for
    /// [`Validation::COPY_THEN_VALIDATE`]. The error is the reason, for [`Error::InvalidTuple`].
    pub(crate) fn from_record(
        record: Record<'a>,
        validation: Validation,
        copy: &'a mut AlignedVec<16>,
    ) -> Result<TupleView<'a>, String> {
        if record.kind() != RECORD_KIND {
            let reason = format!(
                "record kind {:#x} is not a tuple record ({RECORD_KIND:#x})",
                record.kind()
            );
            return Err(reject(record, reason));
        }
        let checked = match validation.0 {
            Mode::Validated => check::validate(&record).map(|_| ()),
            Mode::Trusted => check::check_shape(&record),
            Mode::CopyThenValidate => {
                // Only the bytes that differ in length are touched: a reused buffer of the
                // right size is overwritten, not cleared and refilled.
                copy.resize(record.payload_len(), 0);
                record.copy_to(copy);
                let copy: &'a AlignedVec<16> = copy;
                return match check::validate(copy) {
                    Ok(root) => {
                        drop(record);
                        Ok(TupleView {
                            inner: Inner::Archived(root, copy),
                        })
                    }
                    Err(reason) => Err(reject(record, reason)),
                };
            }
        };
        match checked {
            Ok(()) => Ok(TupleView {
                inner: Inner::Record(record),
            }),
            Err(reason) => Err(reject(record, reason)),
        }
    }

    /// The archived tuple.
    pub fn archived(&self) -> &ArchivedTuple {
        match &self.inner {
            Inner::Archived(root, _) => root,
            Inner::Record(record) => {
                // SAFETY: a view holds a record only if `from_record` checked its bytes with
                // `check::validate`, or the receiver's mode came from the `unsafe`
                // `Validation::trusted`, whose caller vouched for the peer's records;
                // `check_shape` still ensured the root lies inside the record and is aligned.
                // The record's bytes are the same on every call (its position and length are
                // fixed) and the producer does not reuse them until the record is released,
                // when this view is dropped; a peer that rewrites a committed record anyway is
                // outside the trust model (see `Validation::COPY_THEN_VALIDATE`).
                unsafe { rkyv::access_unchecked::<ArchivedTuple>(record) }
            }
        }
    }

    /// A view of `bytes`, whose archived tuple `root` was validated when they were copied into
    /// memory the caller owns and does not change while borrowed.
    pub(crate) fn from_checked(root: &'a ArchivedTuple, bytes: &'a [u8]) -> TupleView<'a> {
        TupleView {
            inner: Inner::Archived(root, bytes),
        }
    }

    /// The archived tuple's bytes: what a relay copies into another record (they read the same
    /// wherever they are put, at an address aligned to 16 bytes).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Archived(_, bytes) => bytes,
            Inner::Record(record) => record,
        }
    }

    /// True if the view reads memory the receiving process owns (not the shared ring), so
    /// that its bytes cannot change while it is borrowed.
    pub(crate) fn is_private(&self) -> bool {
        matches!(self.inner, Inner::Archived(..))
    }

    /// The event time: nanoseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.archived().timestamp.to_native()
    }

    /// The message's fields.
    pub fn fields(&self) -> MapView<'_> {
        MapView::new(&self.archived().fields)
    }

    /// The metadata.
    pub fn meta(&self) -> MapView<'_> {
        MapView::new(&self.archived().meta)
    }

    /// The field named `name` (the last one, should the writer have repeated the name).
    pub fn get(&self, name: &str) -> Option<ValueView<'_>> {
        self.fields().get(name)
    }

    /// The fields as `(name, value)`, in the order they were written.
    pub fn iter(&self) -> MapIter<'_> {
        self.fields().iter()
    }

    /// Number of fields (counting repeated names).
    pub fn len(&self) -> usize {
        self.fields().len()
    }

    /// True if the tuple has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields().is_empty()
    }

    /// Copies the tuple out of the record.
    pub fn to_owned(&self) -> Tuple {
        Tuple {
            timestamp: self.timestamp(),
            meta: self.meta().to_owned(),
            fields: self.fields().to_owned(),
        }
    }
}

impl fmt::Debug for TupleView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TupleView")
            .field("timestamp", &self.timestamp())
            .field("meta", &self.meta())
            .field("fields", &self.fields())
            .finish()
    }
}

impl<'v> IntoIterator for &'v TupleView<'_> {
    type Item = (&'v str, ValueView<'v>);
    type IntoIter = MapIter<'v>;

    fn into_iter(self) -> MapIter<'v> {
        self.iter()
    }
}

/// Poisons the record's consumer and closes the ring for the producer (it sees the ring closed
/// at its next claim); returns `reason`.
fn reject(record: Record<'_>, reason: String) -> String {
    drop(record.reject("tuple", reason.clone()));
    reason
}
