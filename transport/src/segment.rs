//! Shared-memory segments: anonymous, sealed memfds mapped with memmap2.
//!
//! A segment has no name in any filesystem, is freed when the last descriptor and mapping go
//! away (so a crash leaks nothing), and is sealed against shrinking and growing so that the
//! other process cannot truncate it under our feet and turn our next access into SIGBUS. A
//! received descriptor is trusted for none of this: [`Segment::from_fd`] checks the seals and
//! the size before mapping it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Error, Result};

/// Seals every segment carries: no shrinking, no growing, no further sealing.
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A mapped, sealed memfd shared with another process.
#[derive(Debug)]
pub struct Segment {
    /// `None` once [`take_fd`](Segment::take_fd) took it: the mapping outlives the descriptor.
    fd: Option<OwnedFd>,
    map: memmap2::MmapRaw,
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes, sealed against resizing.
    ///
    /// # Errors
    /// [`Error::Io`] if the memfd cannot be created, sized, sealed or mapped (for example when
    /// the memory cgroup refuses the size).
    pub fn create(name: &str, len: usize) -> Result<Segment> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(Error::errno("creating a memfd"))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(Error::errno("sizing the memfd"))?;
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS)
            .map_err(Error::errno("sealing the memfd"))?;
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&fd)
            .map_err(Error::io("mapping the memfd"))?;
        Ok(Segment { fd: Some(fd), map })
    }

    /// Opens a segment from a descriptor received from another process, expecting at least
    /// `min_len` bytes.
    ///
    /// # Errors
    /// [`Error::BadSegment`] if the descriptor is not a memfd sealed against shrinking and
    /// growing, or is smaller than `min_len`; [`Error::Io`] if it cannot be mapped.
    pub fn from_fd(fd: OwnedFd, min_len: usize) -> Result<Segment> {
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|e| {
            Error::BadSegment(format!("the descriptor is not a sealable memfd ({e})"))
        })?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(Error::BadSegment(format!(
                "the memfd is not sealed against shrinking and growing (seals {seals:?}); \
                 the peer could truncate it and crash this process"
            )));
        }
        if seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE) {
            return Err(Error::BadSegment(format!(
                "the memfd is sealed against writing (seals {seals:?}); a ring must be writable"
            )));
        }
        let stat = rustix::fs::fstat(&fd).map_err(Error::errno("inspecting a received memfd"))?;
        let len = usize::try_from(stat.st_size)
            .map_err(|_| Error::BadSegment(format!("impossible size {}", stat.st_size)))?;
        if len < min_len {
            return Err(Error::BadSegment(format!(
                "the memfd holds {len} bytes, fewer than the {min_len} its header needs"
            )));
        }
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&fd)
            .map_err(Error::io("mapping a received memfd"))?;
        Ok(Segment { fd: Some(fd), map })
    }

    /// The segment's size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if the segment is empty (never the case for a ring's segment).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn base(&self) -> NonNull<u8> {
        NonNull::new(self.map.as_mut_ptr()).expect("mmap never returns null")
    }

    /// The memfd, to send to another process; `None` once [`take_fd`](Self::take_fd) took it.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Takes the memfd out of the segment, which stays mapped: a process that will not send the
    /// segment again drops it and so holds no descriptor for it.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_segment_is_sealed_and_reopens() {
        let seg = Segment::create("test", 8192).unwrap();
        assert_eq!(seg.len(), 8192);
        let seals = rustix::fs::fcntl_get_seals(seg.fd().unwrap()).unwrap();
        assert!(seals.contains(REQUIRED_SEALS));
        // Growing must be refused by the kernel.
        assert!(rustix::fs::ftruncate(seg.fd().unwrap(), 16384).is_err());
        let dup = seg.fd().unwrap().try_clone_to_owned().unwrap();
        let again = Segment::from_fd(dup, 4096).unwrap();
        assert_eq!(again.len(), 8192);
    }

    #[test]
    fn unsealed_or_short_descriptors_are_refused() {
        let fd =
            rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&fd, 8192).unwrap();
        let err = Segment::from_fd(fd, 4096).unwrap_err();
        assert!(
            matches!(err, Error::BadSegment(ref m) if m.contains("not sealed")),
            "{err}"
        );

        let seg = Segment::create("short", 4096).unwrap();
        let err =
            Segment::from_fd(seg.fd().unwrap().try_clone_to_owned().unwrap(), 8192).unwrap_err();
        assert!(
            matches!(err, Error::BadSegment(ref m) if m.contains("fewer")),
            "{err}"
        );

        let sealed =
            rustix::fs::memfd_create("sealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&sealed, 8192).unwrap();
        rustix::fs::fcntl_add_seals(&sealed, REQUIRED_SEALS | SealFlags::WRITE).unwrap();
        let err = Segment::from_fd(sealed, 4096).unwrap_err();
        assert!(
            matches!(err, Error::BadSegment(ref m) if m.contains("against writing")),
            "{err}"
        );

        let file = tempfile_fd();
        let err = Segment::from_fd(file, 0).unwrap_err();
        assert!(matches!(err, Error::BadSegment(_)), "{err}");
    }

    fn tempfile_fd() -> OwnedFd {
        // A pipe is neither a memfd nor sealable.
        let (r, _w) = rustix::pipe::pipe().unwrap();
        r
    }
}
