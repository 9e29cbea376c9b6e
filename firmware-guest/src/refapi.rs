//! The reference guest's binary application protocol (StarlingX `libguest_heartbeat_api`, version 2 revision 1),
//! sans-IO: a framer that finds records in a byte stream (resynchronising on the magic), a decoder and an encoder.
//! No allocation, no panic on any input; every refusal is a typed [`RefError`].
//!
//! Every message is one fixed-size record in the host's byte order and natural C alignment: a 20-byte header
//! (`magic` "FDFDA5A5", `version` u8 = 2, `revision` u8 = 1, `msg_type` u16, `sequence` u32, `size` u32 = the
//! whole record) and the union of the bodies (the largest, `ACTION_RESPONSE`, is 208 bytes): [`RECORD`] = 228.

use vigil_core::Text;

/// The magic at the start of every record.
pub const MAGIC: &[u8; 8] = b"FDFDA5A5";
/// The protocol version spoken.
pub const VERSION: u8 = 2;
/// The revision spoken.
pub const REVISION: u8 = 1;
/// Header size.
pub const HEADER: usize = 20;
/// Size of every record (header + the union of bodies).
pub const RECORD: usize = HEADER + 208;
/// Longest application name (with its NUL).
pub const NAME: usize = 40;
/// Longest log message (with its NUL).
pub const LOG: usize = 192;

/// A message of the reference application protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefMsg {
    /// application -> daemon: register.
    Init {
        /// The application's name.
        name: Text<NAME>,
        /// How often it wants to be challenged.
        heartbeat_interval_ms: u32,
        /// Seconds it needs to vote.
        vote_secs: u32,
        /// Seconds of notice before shutdown.
        shutdown_notice_secs: u32,
        /// Seconds of notice before suspend.
        suspend_notice_secs: u32,
        /// Seconds of notice before resume.
        resume_notice_secs: u32,
        /// Action ordinal: 0 unknown, 1 none, 2 reboot, 3 stop, 4 log.
        corrective_action: u32,
    },
    /// daemon -> application: registration accepted (1) or refused (0).
    InitAck {
        /// 1 or 0.
        accepted: u32,
    },
    /// application -> daemon: deregister (never a fault).
    Final {
        /// Why.
        log_msg: Text<LOG>,
    },
    /// daemon -> application: prove you are alive.
    Challenge {
        /// The nonce.
        heartbeat_challenge: u32,
    },
    /// application -> daemon: the nonce echoed, with its health.
    ChallengeResponse {
        /// The nonce.
        heartbeat_response: u32,
        /// 1 healthy, 0 unhealthy.
        health: u32,
        /// Action ordinal.
        corrective_action: u32,
        /// Why.
        log_msg: Text<LOG>,
    },
    /// daemon -> application: a vote or notice.
    ActionNotify {
        /// Which.
        invocation_id: u32,
        /// Event ordinal: 0 unknown, 1 stop, 2 reboot, 3 suspend, 4 pause, 5 unpause, 6 resume, 7 resize_begin,
        /// 8 resize_end, 9 live_migrate_begin, 10 live_migrate_end, 11 cold_migrate_begin, 12 cold_migrate_end.
        event_type: u32,
        /// 0 unknown, 1 revocable, 2 irrevocable.
        notification_type: u32,
    },
    /// application -> daemon: its answer.
    ActionResponse {
        /// Which.
        invocation_id: u32,
        /// Event ordinal.
        event_type: u32,
        /// Notification ordinal.
        notification_type: u32,
        /// 0 unknown, 1 accept, 2 reject, 3 complete.
        vote_result: u32,
        /// Why.
        log_msg: Text<LOG>,
    },
}

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefError {
    /// A version other than 2.
    Version(u8),
    /// `size` is not the record size.
    Size(u32),
    /// An unknown `msg_type`.
    MsgType(u16),
}

impl core::fmt::Display for RefError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RefError::Version(v) => write!(f, "unsupported version {v}"),
            RefError::Size(s) => write!(f, "record size {s}, not {RECORD}"),
            RefError::MsgType(t) => write!(f, "unknown msg_type {t}"),
        }
    }
}

impl core::error::Error for RefError {}

fn u16_at(b: &[u8], i: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(i..i + 2) {
        a.copy_from_slice(s);
    }
    u16::from_ne_bytes(a)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(i..i + 4) {
        a.copy_from_slice(s);
    }
    u32::from_ne_bytes(a)
}

/// A C string field: the bytes up to the first NUL, at most `len - 1` of them (a C string of `char[len]` always has
/// room for its NUL; a field without one is cut there, as the encoder writes), as its valid UTF-8 prefix.
fn text_at<const N: usize>(b: &[u8], i: usize, len: usize) -> Text<N> {
    let field = b.get(i..i + len.saturating_sub(1)).unwrap_or_default();
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    let bytes = &field[..end];
    let s = match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    vigil_core::bounded(s)
}

fn put_u32(out: &mut [u8], i: usize, v: u32) {
    if let Some(s) = out.get_mut(i..i + 4) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

fn put_text(out: &mut [u8], i: usize, len: usize, s: &str) {
    if let Some(field) = out.get_mut(i..i + len) {
        let n = s.len().min(len - 1);
        field[..n].copy_from_slice(&s.as_bytes()[..n]);
    }
}

/// Decodes one whole record (`rec` starts with the magic and holds [`RECORD`] bytes).
pub fn decode(rec: &[u8]) -> Result<(u32, RefMsg), RefError> {
    let version = rec.get(8).copied().unwrap_or(0);
    if version != VERSION {
        return Err(RefError::Version(version));
    }
    let size = u32_at(rec, 16);
    if size as usize != RECORD {
        return Err(RefError::Size(size));
    }
    let seq = u32_at(rec, 12);
    let b = HEADER;
    let msg = match u16_at(rec, 10) {
        0 => RefMsg::Init {
            name: text_at(rec, b, NAME),
            heartbeat_interval_ms: u32_at(rec, b + 40),
            vote_secs: u32_at(rec, b + 44),
            shutdown_notice_secs: u32_at(rec, b + 48),
            suspend_notice_secs: u32_at(rec, b + 52),
            resume_notice_secs: u32_at(rec, b + 56),
            corrective_action: u32_at(rec, b + 60),
        },
        1 => RefMsg::InitAck { accepted: u32_at(rec, b) },
        2 => RefMsg::Final { log_msg: text_at(rec, b, LOG) },
        3 => RefMsg::Challenge { heartbeat_challenge: u32_at(rec, b) },
        4 => RefMsg::ChallengeResponse {
            heartbeat_response: u32_at(rec, b),
            health: u32_at(rec, b + 4),
            corrective_action: u32_at(rec, b + 8),
            log_msg: text_at(rec, b + 12, LOG),
        },
        5 => RefMsg::ActionNotify {
            invocation_id: u32_at(rec, b),
            event_type: u32_at(rec, b + 4),
            notification_type: u32_at(rec, b + 8),
        },
        6 => RefMsg::ActionResponse {
            invocation_id: u32_at(rec, b),
            event_type: u32_at(rec, b + 4),
            notification_type: u32_at(rec, b + 8),
            vote_result: u32_at(rec, b + 12),
            log_msg: text_at(rec, b + 16, LOG),
        },
        t => return Err(RefError::MsgType(t)),
    };
    Ok((seq, msg))
}

/// Encodes `msg` with sequence number `seq` into a whole record.
pub fn encode(msg: &RefMsg, seq: u32, out: &mut [u8; RECORD]) {
    out.fill(0);
    out[..8].copy_from_slice(MAGIC);
    out[8] = VERSION;
    out[9] = REVISION;
    let t: u16 = match msg {
        RefMsg::Init { .. } => 0,
        RefMsg::InitAck { .. } => 1,
        RefMsg::Final { .. } => 2,
        RefMsg::Challenge { .. } => 3,
        RefMsg::ChallengeResponse { .. } => 4,
        RefMsg::ActionNotify { .. } => 5,
        RefMsg::ActionResponse { .. } => 6,
    };
    out[10..12].copy_from_slice(&t.to_ne_bytes());
    put_u32(out, 12, seq);
    put_u32(out, 16, RECORD as u32);
    let b = HEADER;
    match msg {
        RefMsg::Init {
            name,
            heartbeat_interval_ms,
            vote_secs,
            shutdown_notice_secs,
            suspend_notice_secs,
            resume_notice_secs,
            corrective_action,
        } => {
            put_text(out, b, NAME, name);
            for (k, v) in [
                heartbeat_interval_ms,
                vote_secs,
                shutdown_notice_secs,
                suspend_notice_secs,
                resume_notice_secs,
                corrective_action,
            ]
            .into_iter()
            .enumerate()
            {
                put_u32(out, b + 40 + 4 * k, *v);
            }
        }
        RefMsg::InitAck { accepted } => put_u32(out, b, *accepted),
        RefMsg::Final { log_msg } => put_text(out, b, LOG, log_msg),
        RefMsg::Challenge { heartbeat_challenge } => put_u32(out, b, *heartbeat_challenge),
        RefMsg::ChallengeResponse { heartbeat_response, health, corrective_action, log_msg } => {
            put_u32(out, b, *heartbeat_response);
            put_u32(out, b + 4, *health);
            put_u32(out, b + 8, *corrective_action);
            put_text(out, b + 12, LOG, log_msg);
        }
        RefMsg::ActionNotify { invocation_id, event_type, notification_type } => {
            put_u32(out, b, *invocation_id);
            put_u32(out, b + 4, *event_type);
            put_u32(out, b + 8, *notification_type);
        }
        RefMsg::ActionResponse { invocation_id, event_type, notification_type, vote_result, log_msg } => {
            put_u32(out, b, *invocation_id);
            put_u32(out, b + 4, *event_type);
            put_u32(out, b + 8, *notification_type);
            put_u32(out, b + 12, *vote_result);
            put_text(out, b + 16, LOG, log_msg);
        }
    }
}

/// A record found: its sequence number and message, or why it was refused.
pub type Found = Result<(u32, RefMsg), RefError>;

/// Finds records in a byte stream, across any split, resynchronising on the magic: bytes before a magic are
/// skipped and counted, and a header it refuses costs only its magic (what follows is scanned again), so a bad
/// record never swallows a good one.
#[derive(Clone, Debug)]
pub struct RefFramer {
    buf: [u8; RECORD],
    len: usize,
    /// Bytes skipped while looking for a magic.
    pub skipped: u64,
}

impl Default for RefFramer {
    fn default() -> Self {
        RefFramer { buf: [0; RECORD], len: 0, skipped: 0 }
    }
}

impl RefFramer {
    /// Takes bytes from `input` up to the end of the next record: how many were consumed and, if a record (or a
    /// refused header) ended, the message or why it was refused. Call again with the rest.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Found>) {
        let mut used = 0;
        loop {
            let n = (RECORD - self.len).min(input.len() - used);
            self.buf[self.len..self.len + n].copy_from_slice(&input[used..used + n]);
            self.len += n;
            used += n;
            // the buffer must start with (a prefix of) the magic
            let have = self.len.min(MAGIC.len());
            if self.buf[..have] != MAGIC[..have] {
                let shift = (1..self.len)
                    .find(|&p| {
                        let k = (self.len - p).min(MAGIC.len());
                        self.buf[p..p + k] == MAGIC[..k]
                    })
                    .unwrap_or(self.len);
                self.buf.copy_within(shift..self.len, 0);
                self.len -= shift;
                self.skipped += shift as u64;
                continue;
            }
            if self.len >= HEADER {
                let version = self.buf[8];
                let size = u32_at(&self.buf, 16);
                let refused = if version != VERSION {
                    Some(RefError::Version(version))
                } else if size as usize != RECORD {
                    Some(RefError::Size(size))
                } else {
                    None
                };
                if let Some(e) = refused {
                    // drop the magic only: what follows is scanned again
                    self.buf.copy_within(MAGIC.len()..self.len, 0);
                    self.len -= MAGIC.len();
                    return (used, Some(Err(e)));
                }
            }
            if self.len == RECORD {
                self.len = 0;
                return (used, Some(decode(&self.buf)));
            }
            if used == input.len() {
                return (used, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn rec(msg: &RefMsg, seq: u32) -> [u8; RECORD] {
        let mut out = [0u8; RECORD];
        encode(msg, seq, &mut out);
        out
    }

    fn all(f: &mut RefFramer, mut input: &[u8]) -> Vec<Found> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (n, item) = f.push(input);
            input = &input[n..];
            out.extend(item);
        }
        out
    }

    #[test]
    fn the_layout_is_the_c_structs() {
        let init = RefMsg::Init {
            name: vigil_core::bounded("db"),
            heartbeat_interval_ms: 1000,
            vote_secs: 8,
            shutdown_notice_secs: 5,
            suspend_notice_secs: 6,
            resume_notice_secs: 7,
            corrective_action: 2,
        };
        let r = rec(&init, 9);
        assert_eq!(&r[..8], b"FDFDA5A5");
        assert_eq!((r[8], r[9]), (2, 1));
        assert_eq!(u16_at(&r, 10), 0);
        assert_eq!((u32_at(&r, 12), u32_at(&r, 16)), (9, 228));
        assert_eq!(&r[20..23], b"db\0");
        assert_eq!(u32_at(&r, 60), 1000, "interval right after the 40-byte name");
        assert_eq!(u32_at(&r, 80), 2, "corrective_action last");
        assert_eq!(decode(&r), Ok((9, init)));
    }

    #[test]
    fn any_split_garbage_before_the_magic_and_a_wrong_version_are_survived() {
        let resp = RefMsg::ChallengeResponse {
            heartbeat_response: 77,
            health: 0,
            corrective_action: 2,
            log_msg: vigil_core::bounded("db down"),
        };
        let mut stream = Vec::new();
        stream.extend_from_slice(b"garbage FDFD noise");
        let mut bad = rec(&resp, 1);
        bad[8] = 1; // version 1
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&rec(&resp, 2));
        stream.extend_from_slice(&rec(&RefMsg::Final { log_msg: vigil_core::bounded("bye") }, 3));
        for chunk in [1, 3, 7, 64, 228, 1000] {
            let mut f = RefFramer::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                got.extend(all(&mut f, piece));
            }
            assert_eq!(got.len(), 3, "chunk {chunk}: {got:?}");
            assert_eq!(got[0], Err(RefError::Version(1)));
            assert_eq!(got[1], Ok((2, resp.clone())));
            assert!(matches!(&got[2], Ok((3, RefMsg::Final { log_msg })) if log_msg == "bye"));
            assert!(f.skipped >= 18, "the garbage was skipped and counted");
        }
    }

    #[test]
    fn texts_are_bounded_and_invalid_utf8_is_cut() {
        let mut r = rec(&RefMsg::Final { log_msg: vigil_core::bounded("") }, 1);
        for b in &mut r[20..] {
            *b = b'x'; // no NUL at all
        }
        r[30] = 0xFF;
        let Ok((_, RefMsg::Final { log_msg })) = decode(&r) else { panic!() };
        assert_eq!(log_msg.as_str(), "xxxxxxxxxx");
        // a field with no NUL at all is cut at len - 1, as the encoder writes it (found by the fuzzer)
        let mut r = rec(&RefMsg::Final { log_msg: vigil_core::bounded("") }, 1);
        for b in &mut r[20..] {
            *b = b'y';
        }
        let Ok((seq, msg)) = decode(&r) else { panic!() };
        let RefMsg::Final { log_msg } = &msg else { panic!() };
        assert_eq!(log_msg.len(), LOG - 1);
        assert_eq!(decode(&rec(&msg, seq)), Ok((seq, msg.clone())), "decode(encode(x)) == x");
        let mut r = rec(&RefMsg::Challenge { heartbeat_challenge: 1 }, 1);
        r[10] = 99;
        assert_eq!(decode(&r), Err(RefError::MsgType(99)));
    }
}
