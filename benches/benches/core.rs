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

/// One heartbeat through both state machines: the Monitor encodes a challenge, the Agent decodes it and encodes
/// its answer, the Monitor decodes and checks it. Beside it, the obvious std way: serde_json into owned structs
/// with `String` fields, the same messages both ways. Same run; the ratio is printed at the end.
mod std_way {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Challenge {
        pub version: u32,
        pub revision: u32,
        pub msg_type: String,
        pub sequence: u32,
        pub heartbeat_challenge: u32,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Response {
        pub version: u32,
        pub revision: u32,
        pub msg_type: String,
        pub sequence: u32,
        pub heartbeat_response: u32,
        pub heartbeat_health: String,
        pub corrective_action: String,
        pub log_msg: String,
    }

    /// Host encodes, guest decodes and answers, host decodes and checks: true if the nonce matched.
    pub fn round_trip(nonce: u32) -> bool {
        let c = Challenge {
            version: 3,
            revision: 1,
            msg_type: "challenge".into(),
            sequence: 8,
            heartbeat_challenge: nonce,
        };
        let wire = serde_json::to_string(&c).unwrap();
        let got: Challenge = serde_json::from_str(&wire).unwrap();
        let r = Response {
            version: 3,
            revision: 1,
            msg_type: "challenge_response".into(),
            sequence: 2,
            heartbeat_response: got.heartbeat_challenge,
            heartbeat_health: "healthy".into(),
            corrective_action: "reboot".into(),
            log_msg: String::new(),
        };
        let wire = serde_json::to_string(&r).unwrap();
        let back: Response = serde_json::from_str(&wire).unwrap();
        back.msg_type == "challenge_response" && back.heartbeat_response == nonce && back.heartbeat_health == "healthy"
    }
}

struct Pair {
    m: Monitor<XorShift32>,
    a: Agent<XorShift32>,
    now: Instant,
    buf: [u8; MAX_WIRE],
}

impl Pair {
    fn new() -> Self {
        let mut p = Pair {
            m: Monitor::new(MonitorConfig::default(), XorShift32::new(3)),
            a: Agent::new(AgentConfig::default(), XorShift32::new(4), Instant::ZERO),
            now: Instant::ZERO,
            buf: [0; MAX_WIRE],
        };
        p.m.connected(Instant::ZERO);
        for _ in 0..3 {
            p.exchange();
        }
        p
    }

    /// Moves everything each side has to send to the other.
    fn exchange(&mut self) {
        while let Some(n) = self.a.poll_transmit(self.now, &mut self.buf) {
            let _ = self.m.handle_bytes(self.now, &self.buf[..n]);
            while self.m.poll_event().is_some() {}
        }
        while let Some(n) = self.m.poll_transmit(self.now, &mut self.buf) {
            let _ = self.a.handle_bytes(self.now, &self.buf[..n]);
            while self.a.poll_event().is_some() {}
        }
        while let Some(n) = self.a.poll_transmit(self.now, &mut self.buf) {
            let _ = self.m.handle_bytes(self.now, &self.buf[..n]);
            while self.m.poll_event().is_some() {}
        }
    }

    /// One heartbeat: the interval ends, a challenge goes out, the answer comes back and is checked.
    fn heartbeat(&mut self) {
        self.now += Duration::from_millis(1000);
        self.m.handle_timeout(self.now);
        while self.m.poll_event().is_some() {}
        self.exchange();
    }
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round trip");
    g.bench_function("vigil-core Monitor + Agent", |b| {
        let mut p = Pair::new();
        b.iter(|| p.heartbeat());
        assert_eq!(p.m.stats().misses, 0);
    });
    g.bench_function("std way (serde_json, owned structs)", |b| {
        let mut n = 0u32;
        b.iter(|| {
            n = n.wrapping_add(7919);
            assert!(std_way::round_trip(black_box(n)));
        })
    });
    g.finish();
    // the ratio, timed side by side here (criterion's own numbers are above)
    let iters = 200_000;
    let mut p = Pair::new();
    let t = std::time::Instant::now();
    for _ in 0..iters {
        p.heartbeat();
    }
    let ours = t.elapsed().as_nanos() as f64 / f64::from(iters);
    let t = std::time::Instant::now();
    for i in 0..iters {
        assert!(std_way::round_trip(black_box(i as u32)));
    }
    let theirs = t.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("round trip: vigil-core {ours:.0} ns, std way {theirs:.0} ns, std/vigil = {:.2}", theirs / ours);
}

criterion_group!(benches, codec, monitor_cycle, rejection, round_trip);
criterion_main!(benches);
