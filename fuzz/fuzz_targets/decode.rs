//! The decoder on arbitrary lines: never panics; the fast path (`challenge`, `challenge_response` in their common
//! form) answers exactly as the general codec does; whatever decodes re-encodes (when it fits a line) to something
//! that decodes to the same message, and the fast encoder writes what the general encoder writes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::{decode, decode_general, MAX_WIRE};

fuzz_target!(|data: &[u8]| {
    let m = decode(data);
    assert_eq!(m, decode_general(data), "the fast path and the general codec disagree");
    if let Ok(m) = m {
        let mut buf = [0u8; MAX_WIRE];
        if let Ok(n) = m.encode(&mut buf) {
            let mut general = [0u8; MAX_WIRE];
            let k = m.encode_general(&mut general).expect("the general encoder encodes what the fast one did");
            assert_eq!(&buf[..n], &general[..k], "the fast and the general encoder disagree");
            let again = decode(&buf[1..n - 1]).expect("our own encoding decodes");
            assert_eq!(again, m);
        }
    }
});
