//! Arbitrary bytes, as a peer process could write them to the control socket, fed to the
//! control-frame decoder as a stream of frames. The decoder must refuse what it cannot use with
//! an error, never panic, and whatever it accepts must encode and decode again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmplug_transport::Error;
use shmplug_transport::control::{ControlError, HEADER_LEN, decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match decode_frame(rest) {
            Ok((message, used)) => {
                assert!((HEADER_LEN..=rest.len()).contains(&used));
                match encode_frame(&message) {
                    Ok(frame) => {
                        let (again, _) = decode_frame(&frame).expect("a re-encoded frame decodes");
                        assert_eq!(again.type_name(), message.type_name());
                        assert_eq!(again.ring_count(), message.ring_count());
                    }
                    // Numbers may print longer than they were written ("1e2" -> "100.0").
                    Err(Error::Control(ControlError::TooLarge { .. })) => {}
                    Err(e) => panic!("a decoded message does not encode: {e}"),
                }
                rest = &rest[used..];
            }
            // A whole frame was consumed, so a stream reader would carry on with the next one.
            Err(Error::Control(
                ControlError::UnknownMessage { .. }
                | ControlError::Malformed { .. }
                | ControlError::VersionMismatch { .. },
            )) => match shmplug_transport::control::decode_header(rest) {
                Ok(body_len) => rest = &rest[HEADER_LEN + body_len..],
                Err(e) => panic!("a frame with a bad header got past the header check: {e}"),
            },
            Err(_) => break,
        }
    }
});
