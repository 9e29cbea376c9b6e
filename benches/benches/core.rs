//! Hot paths of the core: framing + decoding a guest line, encoding a challenge, one Monitor heartbeat cycle.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use vigil_core::*;

const RESPONSE: &[u8] = b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":846930886,\"heartbeat_health\":\"healthy\",\"corrective_action\":\"reboot\",\"log_msg\":\"\"}\n";

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("frame+decode challenge_response", |b| {
        let mut framer = LineFramer::new();
        b.iter(|| {
            let mut input = black_box(RESPONSE);
            let mut n = 0;
            while !input.is_empty() {
                let (used, item) = framer.push(input);
                if let Some(Ok(line)) = item {
                    n += usize::from(decode(line).is_ok());
                }
                input = &input[used..];
            }
            n
        })
    });
    g.bench_function("encode challenge", |b| {
        let m = Message::new(8, Body::Challenge { heartbeat_challenge: 846930886 });
        let mut buf = [0u8; MAX_WIRE];
        b.iter(|| black_box(&m).encode(&mut buf).unwrap())
    });
    g.finish();
}

fn monitor_cycle(c: &mut Criterion) {
    // One full heartbeat at the host: interval timer fires, challenge encoded, answer framed+decoded+checked.
    c.bench_function("monitor heartbeat cycle", |b| {
        let mut m = Monitor::new(MonitorConfig::default(), XorShift32::new(9));
        m.connected(Instant::ZERO);
        let init = b"{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":1,\"name\":\"vm\",\"heartbeat_interval_ms\":1000,\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":14,\"restart_secs\":601,\"corrective_action\":\"reboot\"}\n";
        let _ = m.handle_bytes(Instant::ZERO, init);
        while m.poll_event().is_some() {}
        let mut buf = [0u8; MAX_WIRE];
        let mut now = Instant::ZERO;
        let mut answer = Vec::with_capacity(256);
        b.iter(|| {
            let mut nonce = 0;
            while let Some(n) = m.poll_transmit(now, &mut buf) {
                if let Ok(Message { body: Body::Challenge { heartbeat_challenge }, .. }) = decode(&buf[1..n - 1]) {
                    nonce = heartbeat_challenge;
                }
            }
            answer.clear();
            answer.extend_from_slice(b"{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":");
            answer.extend_from_slice(nonce.to_string().as_bytes());
            answer.extend_from_slice(b",\"heartbeat_health\":\"healthy\",\"corrective_action\":\"reboot\",\"log_msg\":\"\"}\n");
            let _ = m.handle_bytes(now, &answer);
            while m.poll_event().is_some() {}
            now += Duration::from_millis(1000);
            m.handle_timeout(now);
        });
        assert_eq!(m.stats().misses, 0);
    });
}

/// Refusing hostile lines: `decode` (precheck first) beside the full parser on the same lines, in one run.
fn rejection(c: &mut Criterion) {
    // random bytes cut at newlines, as a flooding guest's stream arrives at the framer
    let mut x = XorShift32::new(0x1234_5678);
    let random: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let len = 64 + (x.next_id() % 900) as usize;
            (0..len).map(|_| (x.next_id() >> 8) as u8).filter(|&b| b != b'\n').collect()
        })
        .collect();
    // near-miss JSON: well-formed objects that are not messages
    let near_miss: Vec<Vec<u8>> = vec![
        br#"{"version":3,"revision":1,"sequence":2,"heartbeat_response":846930886,"heartbeat_health":"healthy","corrective_action":"reboot","log_msg":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#.to_vec(),
        br#"{"a":[1,2,3,{"b":"cccccccccccccccccccccccccccccccccccccccc"}],"d":true,"e":null,"f":12345678901234}"#.to_vec(),
        br#"[{"msg_type":"challenge_response"},1,2,3,4,5,6,7,8,9]"#.to_vec(),
        br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":2,"heartbeat_response":1,"heartbeat_health":"healthy","corrective_action":"reboot","log_msg":"x"} tail"#.to_vec(),
    ];
    let valid: Vec<Vec<u8>> = vec![RESPONSE[1..RESPONSE.len() - 1].to_vec()];
    let mut g = c.benchmark_group("reject");
    for (name, lines) in [("random", &random), ("near-miss", &near_miss), ("valid", &valid)] {
        g.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| lines.iter().filter(|l| decode(black_box(l)).is_ok()).count())
        });
        g.bench_function(format!("{name}/full-parser"), |b| {
            b.iter(|| lines.iter().filter(|l| decode_without_precheck(black_box(l)).is_ok()).count())
        });
    }
    g.finish();
}

criterion_group!(benches, codec, monitor_cycle, rejection);
criterion_main!(benches);
