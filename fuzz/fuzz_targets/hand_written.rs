//! Arbitrary bytes as a received tuple record: whatever the host writes from an accepted one
//! (the record relayed with fields added, its fields as a tuple, calls with its values as
//! arguments, replies of its values) must be the same bytes whether written by hand in one pass
//! or by rkyv's serializer, and must read back as a valid record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmplug_transport::tuple::TupleView;
use shmplug_transport::tuple::fuzzing::written_both_ways;

fuzz_target!(|data: &[u8]| {
    // Ring payloads are 16-byte aligned; give the bytes the same alignment.
    let mut buf = vec![0u8; data.len() + 16];
    let start = buf.as_ptr().align_offset(16);
    let bytes = &mut buf[start..start + data.len()];
    bytes.copy_from_slice(data);
    let Ok(view) = TupleView::from_bytes(bytes) else {
        return;
    };
    for (what, hand, theirs) in written_both_ways(&view) {
        assert_eq!(hand, theirs, "{what}: the hand writer differs from rkyv's");
        let mut again = vec![0u8; hand.len() + 16];
        let start = again.as_ptr().align_offset(16);
        let out = &mut again[start..start + hand.len()];
        out.copy_from_slice(&hand);
        assert!(TupleView::from_bytes(out).is_ok(), "{what}: written but invalid");
    }
});
