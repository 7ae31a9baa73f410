//! What a parent and a child agree on in the tests that go step by step: handshake words sent
//! with [`super::wire`], and where things sit in a ring's segment.

use shmplug_transport::layout::HEADER_SIZE;

/// Parent -> child: "I have read your records, go on".
pub const GO: u64 = 0x474f;
/// Parent -> child: "I saw what I expected; tell me what your endpoint says now".
pub const CHECK: u64 = 0x0043_4845_434b;
/// Child -> parent: "done (scribbled, read, or sent)".
pub const DONE: u64 = 0x444f_4e45;
/// Child -> parent: "I am in the middle of writing a record".
pub const MID_WRITE: u64 = 0x4d49_4457;

/// Child -> parent answers to [`CHECK`]: the endpoint reported [`shmplug_transport::Error::Closed`].
pub const SAW_CLOSED: u64 = 1;
/// ... it reported some other error.
pub const SAW_OTHER_ERROR: u64 = 2;
/// ... it succeeded.
pub const SAW_SUCCESS: u64 = 3;

#[allow(unused_imports)] // not every binary that includes `support` uses every name
pub use shmplug_transport::fdpass::RING_TAG;
#[allow(unused_imports)]
pub use shmplug_transport::layout::{
    META_CAPACITY_OFFSET, META_MAGIC_OFFSET, META_VERSION_OFFSET,
    READ_POSITION_OFFSET as READ_POS_OFFSET, WRITE_POSITION_OFFSET as WRITE_POS_OFFSET,
};

/// Writes `bytes` at `offset` of the ring's segment through its memfd, the way a faulty peer
/// that maps the segment could.
///
/// A received ring's memfd is closed once mapped: then the bytes are written through
/// `/proc/self/mem` at the ring's mapping (the process's only ring).
pub fn scribble(ring: &shmplug_transport::Ring, offset: usize, bytes: &[u8]) {
    let written = match ring.memory_fd() {
        Some(fd) => rustix::io::pwrite(fd, bytes, offset as u64).expect("pwrite into the segment"),
        None => {
            let maps = std::fs::read_to_string("/proc/self/maps").expect("reading the mappings");
            let starts: Vec<u64> = maps
                .lines()
                .filter(|line| line.contains("/memfd:shmplug-ring"))
                .filter_map(|line| line.split('-').next())
                .map(|start| u64::from_str_radix(start, 16).expect("a mapping's address"))
                .collect();
            assert_eq!(starts.len(), 1, "one ring mapped in this process");
            let mem = std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/mem")
                .expect("opening /proc/self/mem");
            rustix::io::pwrite(&mem, bytes, starts[0] + offset as u64)
                .expect("pwrite into the mapping")
        }
    };
    assert_eq!(written, bytes.len(), "short pwrite into the segment");
}

/// Bytes a record with a `len`-byte payload occupies in the ring.
pub fn record_span(len: usize) -> u64 {
    shmplug_transport::layout::record_span(len as u64)
}

/// Segment offset of ring position `pos` in a ring of `capacity` bytes.
pub fn data_offset(pos: u64, capacity: usize) -> usize {
    HEADER_SIZE + (pos as usize & (capacity - 1))
}

/// A record header as the ring writes it: length, kind, 8 reserved bytes.
pub fn record_header(len: u32, kind: u32) -> [u8; 16] {
    shmplug_transport::layout::RecordHeader { len, kind }.to_bytes()
}
