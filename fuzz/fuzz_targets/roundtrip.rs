//! encode -> decode is the identity for every message (when the encoding fits a line).
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vigil_core::*;

#[derive(Arbitrary, Debug)]
enum B {
    Init(u32, String, [u32; 6], u8),
    InitAck(u32),
    Challenge(u32),
    Response(u32, bool, u8, String),
    Notify(u32, u8, bool, u32),
    Answer(u32, u8, bool, u8, String),
    Exit(String),
    Nack(u32, String),
}

fn text<const N: usize>(s: &str) -> Text<N> {
    let mut t = Text::new();
    for c in s.chars() {
        if t.push(c).is_err() {
            break;
        }
    }
    t
}

fn pick<T: Copy>(all: &[T], i: u8) -> T {
    all[usize::from(i) % all.len()]
}

fuzz_target!(|input: (u32, u32, u32, B)| {
    let (version, revision, sequence, b) = input;
    let nt = |r: bool| if r { NotificationType::Revocable } else { NotificationType::Irrevocable };
    let body = match b {
        B::Init(id, name, n, a) => Body::Init(Init {
            invocation_id: id,
            name: text(&name),
            heartbeat_interval_ms: n[0],
            vote_secs: n[1],
            shutdown_notice_secs: n[2],
            suspend_notice_secs: n[3],
            resume_notice_secs: n[4],
            restart_secs: n[5],
            corrective_action: pick(CorrectiveAction::ALL, a),
        }),
        B::InitAck(id) => Body::InitAck { invocation_id: id },
        B::Challenge(c) => Body::Challenge { heartbeat_challenge: c },
        B::Response(r, h, a, m) => Body::ChallengeResponse(ChallengeResponse {
            heartbeat_response: r,
            heartbeat_health: if h { Health::Healthy } else { Health::Unhealthy },
            corrective_action: pick(CorrectiveAction::ALL, a),
            log_msg: text(&m),
        }),
        B::Notify(id, e, r, t) => Body::ActionNotify(ActionNotify {
            invocation_id: id,
            event_type: pick(EventType::ALL, e),
            notification_type: nt(r),
            timeout_ms: t,
        }),
        B::Answer(id, e, r, v, m) => Body::ActionResponse(ActionResponse {
            invocation_id: id,
            event_type: pick(EventType::ALL, e),
            notification_type: nt(r),
            vote_result: pick(VoteResult::ALL, v),
            log_msg: text(&m),
        }),
        B::Exit(m) => Body::Exit { log_msg: text(&m) },
        B::Nack(id, m) => Body::Nack { invocation_id: id, log_msg: text(&m) },
    };
    let m = Message { version: version.max(3), revision, sequence, body };
    let mut buf = [0u8; MAX_WIRE];
    match m.encode(&mut buf) {
        Ok(n) => assert_eq!(decode(&buf[1..n - 1]).expect("decodes"), m),
        Err(e) => assert_eq!(e, EncodeError::MessageTooLong),
    }
});
