//! The decoder on arbitrary lines: never panics; the fast path (`challenge`, `challenge_response` in their common
//! form) answers exactly as the general codec does; whatever decodes re-encodes (when it fits a line) to something
//! that decodes to the same message, and the fast encoder writes what the general encoder writes. An answer the
//! monitor reads in place is the answer `decode` makes of the same line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::{decode, decode_answer_in_place, decode_general, Body, MAX_WIRE};

fuzz_target!(|data: &[u8]| {
    let m = decode(data);
    if let Some((sequence, nonce, health, action, text)) = decode_answer_in_place(data) {
        match &m {
            Ok(msg) => match &msg.body {
                Body::ChallengeResponse(r) => {
                    assert_eq!(msg.sequence, sequence);
                    assert_eq!(
                        (r.heartbeat_response, r.heartbeat_health, r.corrective_action),
                        (nonce, health, action)
                    );
                    assert_eq!(r.log_msg.as_str(), text);
                }
                other => panic!("read in place as an answer, decoded as {other:?}"),
            },
            Err(e) => panic!("read in place as an answer, refused by decode: {e:?}"),
        }
    }
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
