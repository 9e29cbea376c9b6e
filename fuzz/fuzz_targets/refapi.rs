//! The reference binary application protocol's framer and decoder on arbitrary bytes, split arbitrarily: never a
//! panic, every record found decodes the same as it re-encodes, and the framer never holds more than one record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_guest::refapi::{encode, RefFramer, RECORD};

fuzz_target!(|data: &[u8]| {
    let (split, bytes) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let mut f = RefFramer::default();
    for chunk in bytes.chunks(split) {
        let mut input = chunk;
        while !input.is_empty() {
            let (n, item) = f.push(input);
            assert!(n > 0 || item.is_some(), "progress");
            input = &input[n..];
            if let Some(Ok((seq, msg))) = item {
                let mut out = [0u8; RECORD];
                encode(&msg, seq, &mut out);
                let again = vigil_guest::refapi::decode(&out).expect("what we encode decodes");
                assert_eq!(again, (seq, msg));
            }
        }
    }
});
