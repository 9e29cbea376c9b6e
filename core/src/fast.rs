//! The fast path for the two messages of every heartbeat: `challenge` and `challenge_response`.
//!
//! A heartbeat is one `challenge` out and one `challenge_response` back; everything else is rare. Both sides of
//! every implementation we know (the reference guest and host, and ours) write them with the keys in one order,
//! no white space and no escapes: then a message is a fixed sequence of literals and values, read in one pass with
//! no scratch buffer, no visitor and one UTF-8 check of the only free text (`log_msg`), and written in place.
//!
//! The rule that keeps it honest: the fast path either returns exactly what the general codec returns for the
//! same bytes, or declines (`None`) and the general codec decides. It declines anything unusual: another key order,
//! white space, an escape, a leading zero, an unknown enumerated word, a version below ours (whose refusal the
//! general codec words). The fuzz target `decode` checks the rule on arbitrary bytes, and the unit tests below on
//! the reference guest's recorded bytes.

use crate::msg::*;

/// A cursor over one line.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    /// Inlined so that each literal's length is known where it is compared: a few wide loads instead of a call
    /// to `bcmp` per literal (eight per answer).
    #[inline(always)]
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        let end = self.i.checked_add(s.len())?;
        (self.b.get(self.i..end)? == s).then(|| self.i = end)
    }

    /// A JSON unsigned integer that fits 32 bits, without a leading zero. At most 11 digits are read: 11 never
    /// fit, and a longer run is refused all the same.
    fn uint(&mut self) -> Option<u32> {
        let rest = self.b.get(self.i..)?;
        let (mut v, mut n) = (0u64, 0);
        for &c in rest.iter().take(11) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v * 10 + u64::from(d);
            n += 1;
        }
        if n == 0 || (n > 1 && rest[0] == b'0') {
            return None;
        }
        self.i += n;
        u32::try_from(v).ok()
    }

    /// The rest of a string whose opening quote was read: no escapes, no control bytes, valid UTF-8.
    /// The bytes of a string with no escape up to its closing quote.
    fn plain(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        let len = self.b.get(start..)?.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        self.b.get(start..start + len)
    }

    fn plain_str(&mut self) -> Option<&'a str> {
        core::str::from_utf8(self.plain()?).ok()
    }

    fn end(&self) -> Option<()> {
        (self.i == self.b.len()).then_some(())
    }
}

/// Decodes `line` if it is a `challenge` or `challenge_response` in the common form; `None` leaves it to the
/// general codec.
pub(crate) fn decode(line: &[u8]) -> Option<Message> {
    let mut c = Cur { b: line, i: 0 };
    c.lit(b"{\"version\":")?;
    let version = c.uint().filter(|&v| v >= VERSION)?;
    c.lit(b",\"revision\":")?;
    let revision = c.uint()?;
    c.lit(b",\"msg_type\":\"")?;
    let body = if c.lit(b"challenge\",\"sequence\":").is_some() {
        let sequence = c.uint()?;
        c.lit(b",\"heartbeat_challenge\":")?;
        let body = Body::Challenge { heartbeat_challenge: c.uint()? };
        c.lit(b"}")?;
        c.end()?;
        (sequence, body)
    } else {
        let a = answer_rest(&mut c)?;
        let r = ChallengeResponse {
            heartbeat_response: a.heartbeat_response,
            heartbeat_health: a.heartbeat_health,
            corrective_action: a.corrective_action,
            log_msg: LogMsg::try_from(a.log_msg).ok()?,
        };
        (a.sequence, Body::ChallengeResponse(r))
    };
    let (sequence, body) = body;
    Some(Message { version, revision, sequence, body })
}

/// A `challenge_response` in the common form, read in place: its text is checked (UTF-8, no escape, at most
/// [`MAX_LOG_MSG`] bytes, as [`decode`] requires) but not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer<'a> {
    pub sequence: u32,
    pub heartbeat_response: u32,
    pub heartbeat_health: Health,
    pub corrective_action: CorrectiveAction,
    pub log_msg: &'a str,
}

/// Reads `line` as [`decode`] would if it is a `challenge_response` in the common form (`None` otherwise: leave it
/// to [`decode`]), without building a [`Message`].
pub(crate) fn decode_answer(line: &[u8]) -> Option<Answer<'_>> {
    let mut c = Cur { b: line, i: 0 };
    c.lit(b"{\"version\":")?;
    c.uint().filter(|&v| v >= VERSION)?;
    c.lit(b",\"revision\":")?;
    c.uint()?;
    c.lit(b",\"msg_type\":\"")?;
    answer_rest(&mut c)
}

/// The rest of a `challenge_response` after `"msg_type":"`, to the end of the line.
fn answer_rest<'a>(c: &mut Cur<'a>) -> Option<Answer<'a>> {
    c.lit(b"challenge_response\",\"sequence\":")?;
    let sequence = c.uint()?;
    c.lit(b",\"heartbeat_response\":")?;
    let heartbeat_response = c.uint()?;
    c.lit(b",\"heartbeat_health\":\"")?;
    let heartbeat_health = Health::from_wire_bytes(c.plain()?)?;
    c.lit(b",\"corrective_action\":\"")?;
    let corrective_action = CorrectiveAction::from_wire_bytes(c.plain()?)?;
    c.lit(b",\"log_msg\":\"")?;
    let log_msg = c.plain_str().filter(|s| s.len() <= MAX_LOG_MSG)?;
    c.lit(b"}")?;
    c.end()?;
    Some(Answer { sequence, heartbeat_response, heartbeat_health, corrective_action, log_msg })
}

/// Writes `msg` (framed: `\n{...}\n`) into `buf` if it is a `challenge`, or a `challenge_response` whose `log_msg`
/// needs no escape; returns the length, or `None` to leave it to the general encoder. `buf` holds at least
/// [`MAX_WIRE`] bytes.
pub(crate) fn encode(msg: &Message, buf: &mut [u8]) -> Option<usize> {
    if let Body::Challenge { heartbeat_challenge } = msg.body {
        return encode_challenge(msg.version, msg.revision, msg.sequence, heartbeat_challenge, buf);
    }
    let mut w = Out { buf, n: 0 };
    w.put(b"\n{\"version\":")?;
    w.uint(msg.version)?;
    w.put(b",\"revision\":")?;
    w.uint(msg.revision)?;
    match &msg.body {
        Body::ChallengeResponse(r) => {
            let text = r.log_msg.as_bytes();
            if text.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20 || c == 0x7f) {
                return None;
            }
            w.put(b",\"msg_type\":\"challenge_response\",\"sequence\":")?;
            w.uint(msg.sequence)?;
            w.put(b",\"heartbeat_response\":")?;
            w.uint(r.heartbeat_response)?;
            w.put(b",\"heartbeat_health\":\"")?;
            w.put(r.heartbeat_health.as_str().as_bytes())?;
            w.put(b"\",\"corrective_action\":\"")?;
            w.put(r.corrective_action.as_str().as_bytes())?;
            w.put(b"\",\"log_msg\":\"")?;
            w.put(text)?;
            w.put(b"\"")?;
        }
        _ => return None,
    }
    w.put(b"}\n")?;
    Some(w.n)
}

/// A `challenge`, written straight from its four numbers: the message a host sends most, built without a
/// [`Message`] (a whole message moved around costs more than writing these few bytes).
pub(crate) fn encode_challenge(
    version: u32,
    revision: u32,
    sequence: u32,
    nonce: u32,
    buf: &mut [u8],
) -> Option<usize> {
    let mut w = Out { buf, n: 0 };
    w.put(b"\n{\"version\":")?;
    w.uint(version)?;
    w.put(b",\"revision\":")?;
    w.uint(revision)?;
    w.put(b",\"msg_type\":\"challenge\",\"sequence\":")?;
    w.uint(sequence)?;
    w.put(b",\"heartbeat_challenge\":")?;
    w.uint(nonce)?;
    w.put(b"}\n")?;
    Some(w.n)
}

struct Out<'a> {
    buf: &'a mut [u8],
    n: usize,
}

impl Out<'_> {
    fn put(&mut self, s: &[u8]) -> Option<()> {
        let end = self.n.checked_add(s.len())?;
        self.buf.get_mut(self.n..end)?.copy_from_slice(s);
        self.n = end;
        Some(())
    }

    fn uint(&mut self, v: u32) -> Option<()> {
        let mut digits = [0u8; 10];
        self.put(u32_ascii(v, &mut digits))
    }
}

/// The decimal digits of `v`, written at the end of `buf` (shared by every writer of the core).
pub(crate) fn u32_ascii(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    fn general(line: &[u8]) -> Result<Message, crate::DecodeError> {
        crate::codec::decode_general(line)
    }

    /// The reference guest's recorded lines (`../shared/testdata`, copied into the core's tests).
    const REFERENCE: [&str; 3] = [
        r#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":2,"heartbeat_response":2147483647,"heartbeat_health":"healthy","corrective_action":"reboot","log_msg":""}"#,
        r#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":9,"heartbeat_response":0,"heartbeat_health":"unhealthy","corrective_action":"stop","log_msg":"db down: état dégradé"}"#,
        r#"{"version":3,"revision":1,"msg_type":"challenge","sequence":8,"heartbeat_challenge":846930886}"#,
    ];

    #[test]
    fn the_common_form_is_decoded_as_the_general_codec_decodes_it() {
        for line in REFERENCE {
            let fast = decode(line.as_bytes()).expect("common form");
            assert_eq!(Ok(fast), general(line.as_bytes()), "{line}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_general_codec() {
        let base = REFERENCE[0];
        let variants: Vec<String> = [
            base.replace(":3,", ":2,"), // old version: the general codec words the refusal
            base.replace("\"sequence\":2", "\"sequence\":02"), // leading zero
            base.replace("2147483647", "4294967296"), // over 32 bits
            base.replace("2147483647", "42949672950"), // eleven digits
            base.replace("2147483647", "00000000001"), // eleven digits, and leading zeros
            base.replace("2147483647", "-1"), // a sign
            base.replace("healthy", "fine"), // unknown health: the general codec maps it
            base.replace("\"\"}", "\"a\\\"b\"}"), // an escape
            base.replace(",\"revision\"", ", \"revision\""), // white space
            base.replace("}", "} "),    // trailing bytes
            base.replace("\"log_msg\":\"\"", "\"log_msg\":\"\",\"x\":1"), // an extra key
            base.replace("\"log_msg\":\"\"", &std::format!("\"log_msg\":\"{}\"", "x".repeat(300))), // too long
        ]
        .into();
        for v in &variants {
            assert_eq!(decode(v.as_bytes()), None, "{v}");
            assert_eq!(decode_answer(v.as_bytes()), None, "{v}");
        }
    }

    #[test]
    fn an_answer_read_in_place_is_the_answer_decode_builds() {
        for line in REFERENCE {
            let in_place = decode_answer(line.as_bytes());
            match decode(line.as_bytes()).map(|m| (m.sequence, m.body)) {
                Some((sequence, Body::ChallengeResponse(r))) => assert_eq!(
                    in_place,
                    Some(Answer {
                        sequence,
                        heartbeat_response: r.heartbeat_response,
                        heartbeat_health: r.heartbeat_health,
                        corrective_action: r.corrective_action,
                        log_msg: r.log_msg.as_str(),
                    }),
                    "{line}"
                ),
                _ => assert_eq!(in_place, None, "not an answer: {line}"),
            }
        }
        // the edges of a number: zero, and the largest 32-bit one
        for (from, to) in [("\"sequence\":2", "\"sequence\":0"), ("2147483647", "4294967295")] {
            let line = REFERENCE[0].replace(from, to);
            let a = decode_answer(line.as_bytes()).unwrap();
            assert_eq!(
                (a.sequence, a.heartbeat_response),
                if to.ends_with(":0") { (0, 2147483647) } else { (2, u32::MAX) }
            );
        }
        let longest =
            REFERENCE[0].replace("\"log_msg\":\"\"", &std::format!("\"log_msg\":\"{}\"", "x".repeat(MAX_LOG_MSG)));
        assert_eq!(decode_answer(longest.as_bytes()).map(|a| a.log_msg.len()), Some(MAX_LOG_MSG));
    }

    #[test]
    fn the_fast_encoder_writes_what_the_general_encoder_writes() {
        let messages = [
            Message::new(0, Body::Challenge { heartbeat_challenge: 0 }),
            Message::new(u32::MAX, Body::Challenge { heartbeat_challenge: MAX_NONCE }),
            Message::new(
                7,
                Body::ChallengeResponse(ChallengeResponse {
                    heartbeat_response: 123,
                    heartbeat_health: Health::Unhealthy,
                    corrective_action: CorrectiveAction::Reboot,
                    log_msg: bounded("état dégradé"),
                }),
            ),
        ];
        for m in messages {
            let (mut a, mut b) = ([0u8; MAX_WIRE], [0u8; MAX_WIRE]);
            let n = encode(&m, &mut a).expect("fast");
            let k = m.encode_general(&mut b).expect("general");
            assert_eq!(&a[..n], &b[..k]);
            assert_eq!(decode(&a[1..n - 1]), Some(m));
        }
        let quote = Message::new(
            1,
            Body::ChallengeResponse(ChallengeResponse {
                heartbeat_response: 1,
                heartbeat_health: Health::Healthy,
                corrective_action: CorrectiveAction::None,
                log_msg: bounded("say \"hi\""),
            }),
        );
        assert_eq!(encode(&quote, &mut [0u8; MAX_WIRE]), None, "escapes are the general encoder's");
    }

    #[test]
    fn wire_names_read_from_bytes_are_read_as_from_text() {
        for s in
            ["healthy", "unhealthy", "unknown", "none", "log", "reboot", "stop", "", "Healthy", "healthy ", "reboo"]
        {
            assert_eq!(Health::from_wire_bytes(s.as_bytes()), Health::from_wire(s), "{s:?}");
            assert_eq!(CorrectiveAction::from_wire_bytes(s.as_bytes()), CorrectiveAction::from_wire(s), "{s:?}");
        }
    }

    #[test]
    fn a_challenge_written_from_its_numbers_is_the_message_the_general_encoder_writes() {
        for (sequence, nonce) in [(0, 0), (1, 1), (9, 10), (99_999, 4_000_000_000), (u32::MAX, MAX_NONCE)] {
            let (mut a, mut b) = ([0u8; MAX_WIRE], [0u8; MAX_WIRE]);
            let n = encode_challenge(VERSION, REVISION, sequence, nonce, &mut a).expect("fits");
            let k = Message::new(sequence, Body::Challenge { heartbeat_challenge: nonce })
                .encode_general(&mut b)
                .expect("general");
            assert_eq!(&a[..n], &b[..k]);
        }
        assert_eq!(encode_challenge(VERSION, REVISION, 1, 1, &mut [0u8; 20]), None, "a short buffer is refused");
    }

    /// Every length of number, each side of every power of ten, and a spread of others: the digits written in
    /// place are the ones `format!` writes, alone and inside a challenge.
    #[test]
    fn numbers_are_written_as_format_writes_them() {
        let mut values = std::vec![0, 1, 9, u32::MAX, u32::MAX - 1, 2_147_483_647];
        let mut p = 1u32;
        while let Some(next) = p.checked_mul(10) {
            values.extend([p - 1, p, p + 1, next - 1]);
            p = next;
        }
        values.extend((0..2000u32).map(|i| i.wrapping_mul(2_654_435_761)));
        for v in values {
            let mut digits = [0u8; 10];
            assert_eq!(u32_ascii(v, &mut digits), std::format!("{v}").as_bytes(), "{v}");
            let mut buf = [0u8; MAX_WIRE];
            let n = encode_challenge(3, 1, v, v ^ 0x5555, &mut buf).unwrap();
            let want = std::format!(
                "\n{{\"version\":3,\"revision\":1,\"msg_type\":\"challenge\",\"sequence\":{v},\"heartbeat_challenge\":{}}}\n",
                v ^ 0x5555
            );
            assert_eq!(&buf[..n], want.as_bytes(), "{v}");
        }
    }
}
