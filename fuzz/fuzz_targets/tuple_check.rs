//! The tuple validator against the reference it replaced (depth walk, then rkyv's bytecheck):
//! for arbitrary bytes as a tuple record, both must accept or both reject, and an accepted
//! record must read as the same tuple through either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmplug_transport::tuple::fuzzing::{validate, validate_reference};

fuzz_target!(|data: &[u8]| {
    // Ring payloads are 16-byte aligned; give the bytes the same alignment.
    let mut buf = vec![0u8; data.len() + 16];
    let start = buf.as_ptr().align_offset(16);
    let bytes = &mut buf[start..start + data.len()];
    bytes.copy_from_slice(data);

    match (validate(bytes), validate_reference(bytes)) {
        (Ok(new), Ok(old)) => assert_eq!(new, old, "both accept but read differently"),
        (Err(_), Err(_)) => {}
        (new, old) => panic!("the validators disagree: new {new:?}, reference {old:?}"),
    }
});
