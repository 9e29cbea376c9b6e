//! Property tests: any split of a valid stream decodes the same, encode -> decode round-trips every message, and
//! arbitrary bytes never panic any part that reads them.
#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;
use vigil_core::*;

fn text<const N: usize>() -> impl Strategy<Value = Text<N>> {
    // any chars, including quotes, backslashes and controls; cut to the limit at a char boundary
    proptest::collection::vec(any::<char>(), 0..N).prop_map(|cs| {
        let mut s = Text::<N>::new();
        for c in cs {
            if s.push(c).is_err() {
                break;
            }
        }
        s
    })
}

fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn body() -> impl Strategy<Value = Body> {
    let init = (any::<u32>(), text::<MAX_NAME>(), any::<[u32; 6]>(), pick(CorrectiveAction::ALL)).prop_map(
        |(invocation_id, name, n, corrective_action)| {
            Body::Init(Init {
                invocation_id,
                name,
                heartbeat_interval_ms: n[0],
                vote_secs: n[1],
                shutdown_notice_secs: n[2],
                suspend_notice_secs: n[3],
                resume_notice_secs: n[4],
                restart_secs: n[5],
                corrective_action,
            })
        },
    );
    let response = (any::<u32>(), pick(Health::ALL), pick(CorrectiveAction::ALL), text::<MAX_LOG_MSG>()).prop_map(
        |(heartbeat_response, heartbeat_health, corrective_action, log_msg)| {
            Body::ChallengeResponse(ChallengeResponse {
                heartbeat_response,
                heartbeat_health,
                corrective_action,
                log_msg,
            })
        },
    );
    let notify = (any::<u32>(), pick(EventType::ALL), pick(NotificationType::ALL), any::<u32>()).prop_map(
        |(invocation_id, event_type, notification_type, timeout_ms)| {
            Body::ActionNotify(ActionNotify { invocation_id, event_type, notification_type, timeout_ms })
        },
    );
    let answer =
        (any::<u32>(), pick(EventType::ALL), pick(NotificationType::ALL), pick(VoteResult::ALL), text::<MAX_LOG_MSG>())
            .prop_map(|(invocation_id, event_type, notification_type, vote_result, log_msg)| {
                Body::ActionResponse(ActionResponse {
                    invocation_id,
                    event_type,
                    notification_type,
                    vote_result,
                    log_msg,
                })
            });
    prop_oneof![
        init,
        any::<u32>().prop_map(|invocation_id| Body::InitAck { invocation_id }),
        any::<u32>().prop_map(|heartbeat_challenge| Body::Challenge { heartbeat_challenge }),
        response,
        notify,
        answer,
        text::<MAX_LOG_MSG>().prop_map(|log_msg| Body::Exit { log_msg }),
        (any::<u32>(), text::<MAX_LOG_MSG>())
            .prop_map(|(invocation_id, log_msg)| Body::Nack { invocation_id, log_msg }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (3u32.., any::<u32>(), any::<u32>(), body()).prop_map(|(version, revision, sequence, body)| Message {
        version,
        revision,
        sequence,
        body,
    })
}

/// Runs `stream` through a framer in the given chunks; returns decoded lines (or errors).
fn frame_and_decode(stream: &[u8], cuts: &[usize]) -> Vec<Result<Message, String>> {
    let mut framer = LineFramer::new();
    let mut out = Vec::new();
    let mut pieces = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        pieces.push(&stream[last..c]);
        last = c;
    }
    pieces.push(&stream[last..]);
    for piece in pieces {
        let mut input = piece;
        while !input.is_empty() {
            let (used, item) = framer.push(input);
            match item {
                Some(Ok(line)) => out.push(decode(line).map_err(|e| e.to_string())),
                Some(Err(e)) => out.push(Err(e.to_string())),
                None => {}
            }
            input = &input[used..];
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(m in message()) {
        let mut buf = [0u8; MAX_WIRE];
        match m.encode(&mut buf) {
            Ok(n) => {
                prop_assert_eq!((buf[0], buf[n - 1]), (b'\n', b'\n'));
                prop_assert!(n - 2 <= MAX_LINE);
                let back = decode(&buf[1..n - 1]).unwrap();
                prop_assert_eq!(back, m);
            }
            // only strings full of control characters (6 bytes each escaped) can overflow a line
            Err(e) => prop_assert_eq!(e, EncodeError::MessageTooLong),
        }
    }

    #[test]
    fn any_split_of_a_valid_stream_decodes_the_same(
        msgs in proptest::collection::vec(message(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        crlf in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        let mut buf = [0u8; MAX_WIRE];
        for m in &msgs {
            if let Ok(n) = m.encode(&mut buf) {
                let wire = &buf[..n];
                if crlf {
                    stream.extend_from_slice(&wire[..n - 1]);
                    stream.extend_from_slice(b"\r\n");
                } else {
                    stream.extend_from_slice(wire);
                }
            }
        }
        let whole = frame_and_decode(&stream, &[]);
        let split = frame_and_decode(&stream, &cuts);
        prop_assert_eq!(&whole, &split);
        prop_assert!(whole.iter().all(Result::is_ok));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn json_like_noise_never_panics_the_decoder(s in r#"\{("[a-z_]{1,20}":(-?[0-9]{1,12}|"[^"]{0,40}"|\[|\{|null|true|1e9),?){0,12}\}?"#) {
        let _ = decode(s.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_and_times_never_panic_the_state_machines(
        ops in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..300), 0u64..3000), 0..40)
    ) {
        let mut m = Monitor::new(MonitorConfig::default(), XorShift32::new(1));
        m.connected(Instant::ZERO);
        let mut a = Agent::new(AgentConfig::default(), XorShift32::new(2), Instant::ZERO);
        let mut now = Instant::ZERO;
        let mut buf = [0u8; MAX_WIRE];
        for (bytes, dt) in ops {
            now += Duration::from_millis(dt);
            let mut input = &bytes[..];
            while !input.is_empty() {
                let used = m.handle_bytes(now, input);
                input = &input[used..];
                while m.poll_event().is_some() {}
            }
            let mut input = &bytes[..];
            while !input.is_empty() {
                let used = a.handle_bytes(now, input);
                input = &input[used..];
                while a.poll_event().is_some() {}
            }
            for _ in 0..10 {
                if m.poll_timeout().is_some_and(|t| t <= now) { m.handle_timeout(now); }
                while m.poll_event().is_some() {}
                if a.poll_timeout().is_some_and(|t| t <= now) { a.handle_timeout(now); }
                while a.poll_event().is_some() {}
            }
            // deadlines are never in the past once everything due has fired
            prop_assert!(m.poll_timeout().is_none_or(|t| t > now));
            prop_assert!(a.poll_timeout().is_none_or(|t| t > now));
            let mut out = 0;
            while m.poll_transmit(now, &mut buf).is_some() { out += 1; }
            while a.poll_transmit(now, &mut buf).is_some() { out += 1; }
            prop_assert!(out <= 8, "bounded output per step: {}", out);
        }
    }
}
