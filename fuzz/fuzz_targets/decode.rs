//! The decoder on arbitrary lines: never panics; whatever decodes re-encodes (when it fits a line) to something
//! that decodes to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::{decode, MAX_WIRE};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode(data) {
        let mut buf = [0u8; MAX_WIRE];
        if let Ok(n) = m.encode(&mut buf) {
            let again = decode(&buf[1..n - 1]).expect("our own encoding decodes");
            assert_eq!(again, m);
        }
    }
});
