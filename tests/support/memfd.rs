//! A ring's memfd seen from the process that was handed it, read and written with `pread` /
//! `pwrite` (no mapping, no `unsafe`): what `hostile-plugin` uses to attack its host behind
//! the SDK's back.

use std::fs::File;

use rkyv::util::AlignedVec;
use shmplug_transport::TupleView;
use shmplug_transport::layout::{HEADER_SIZE, META_CAPACITY_OFFSET, SIGNALS_OFFSET};

/// A record header's 16 bytes.
pub fn header(len: u32, kind: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&kind.to_le_bytes());
    h
}

/// A ring's memfd, opened again through `/proc/self/fd` (which works for memfds).
pub struct Shm {
    pub file: File,
    pub capacity: u64,
}

impl Shm {
    /// The one ring of a source instance.
    pub fn find() -> Shm {
        let mut all = Shm::find_all();
        assert_eq!(all.len(), 1, "one ring expected");
        all.remove(0)
    }

    /// Every ring of this process. The SDK closes a ring's memfd once it has mapped it, so
    /// the memfd is opened again from the mapping (`/proc/self/map_files`, which takes
    /// `CAP_SYS_ADMIN`, as a hostile plugin running as root has); a ring whose memfd is still
    /// open is found in `/proc/self/fd`.
    pub fn find_all() -> Vec<Shm> {
        let is_ring = |link: &str| link.starts_with("/memfd:shmplug-ring");
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").expect("listing descriptors") {
            let path = entry.expect("descriptor entry").path();
            let Ok(link) = std::fs::read_link(&path) else {
                continue;
            };
            if is_ring(&link.to_string_lossy()) {
                found.push(path);
            }
        }
        if found.is_empty() {
            let maps = std::fs::read_to_string("/proc/self/maps").expect("reading the mappings");
            for line in maps.lines() {
                let mut parts = line.split_whitespace();
                let range = parts.next().unwrap_or_default();
                if parts.nth(4).is_some_and(is_ring) {
                    found.push(format!("/proc/self/map_files/{range}").into());
                }
            }
        }
        found
            .iter()
            .map(|path| {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .expect("opening a ring's memfd");
                let mut shm = Shm { file, capacity: 0 };
                shm.capacity = shm.u64_at(META_CAPACITY_OFFSET);
                shm
            })
            .collect()
    }

    /// True if the record at position 0 is a tuple with the field `name`.
    pub fn first_record_has(&self, name: &str) -> bool {
        let mut raw = [0u8; 16];
        self.read(HEADER_SIZE as u64, &mut raw);
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        if len == 0 || len as u64 > self.capacity / 2 {
            return false;
        }
        let mut bytes = AlignedVec::<16>::new();
        bytes.resize(len, 0);
        self.read(HEADER_SIZE as u64 + 16, &mut bytes);
        TupleView::from_bytes(&bytes).is_ok_and(|view| view.get(name).is_some())
    }

    pub fn read(&self, at: u64, buf: &mut [u8]) {
        let n = rustix::io::pread(&self.file, &mut *buf, at).expect("pread");
        assert_eq!(n, buf.len(), "short pread");
    }

    pub fn write(&self, at: u64, bytes: &[u8]) {
        let n = rustix::io::pwrite(&self.file, bytes, at).expect("pwrite");
        assert_eq!(n, bytes.len(), "short pwrite");
    }

    pub fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        self.read(at as u64, &mut b);
        u64::from_le_bytes(b)
    }

    pub fn set_u64(&self, at: usize, value: u64) {
        self.write(at as u64, &value.to_le_bytes());
    }

    /// The host sleeps waiting for data.
    pub fn consumer_waiting(&self) -> bool {
        let mut b = [0u8; 4];
        self.read(SIGNALS_OFFSET as u64, &mut b);
        u32::from_le_bytes(b) != 0
    }

    pub fn consumer_closed(&self) -> bool {
        let mut b = [0u8; 4];
        self.read(SIGNALS_OFFSET as u64 + 12, &mut b);
        u32::from_le_bytes(b) != 0
    }

    pub fn data_offset(&self, pos: u64) -> u64 {
        HEADER_SIZE as u64 + (pos & (self.capacity - 1))
    }
}
