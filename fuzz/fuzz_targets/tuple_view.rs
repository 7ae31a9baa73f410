//! Arbitrary bytes as a tuple record: validation must reject them or yield a view whose every
//! field can be read, copied out, converted to JSON and written again, without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmplug_transport::tuple::{Encode, Encoder, TupleView};

fuzz_target!(|data: &[u8]| {
    // Ring payloads are 16-byte aligned; give the bytes the same alignment.
    let mut buf = vec![0u8; data.len() + 16];
    let start = buf.as_ptr().align_offset(16);
    let bytes = &mut buf[start..start + data.len()];
    bytes.copy_from_slice(data);

    let Ok(view) = TupleView::from_bytes(bytes) else {
        return;
    };
    let _ = view.timestamp();
    for (name, value) in view.iter() {
        let found = view.get(name);
        assert!(found.is_some(), "a field's own name finds it");
        let _ = value.to_json();
        if let Some(list) = value.as_list() {
            let _ = list.get(list.len().saturating_sub(1));
        }
    }
    for (name, _) in view.meta() {
        assert!(view.meta().contains_key(name));
    }
    let _ = view.to_json();

    // A valid archive converts to an owned tuple that encodes again and reads back the same.
    let owned = view.to_owned();
    let bound = owned
        .size_bound()
        .expect("a validated tuple is within the depth limit");
    let mut again = vec![0u8; bound + 16];
    let start = again.as_ptr().align_offset(16);
    let out = &mut again[start..start + bound];
    let len = Encoder::new()
        .encode_into(&owned, out)
        .expect("the bound is enough");
    let reread = TupleView::from_bytes(&out[..len]).expect("re-encoded tuple is valid");
    assert_eq!(reread.to_owned(), owned);
});
