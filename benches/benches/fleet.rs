//! The fleet's own work per heartbeat, with no I/O: at 10^3, 10^4 and 10^5 guests, one interval of 10 ms steps in
//! which every guest's timer fires, its challenge is encoded, and its answer is decoded and judged, as vigild's loop
//! drives them (`handle_timeouts`, `poll_dirty` + `poll_transmit`, `read_allowance` + `handle_bytes` +
//! `handle_drained`, events drained). The per-heartbeat cost should not grow with the number of guests; where it
//! does, the guests' state no longer fits the cache.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_core::{Instant, MAX_WIRE};
use vigil_host::config::{FileConfig, GuestSettings};
use vigil_host::fleet::{Fleet, FleetConfig, GuestKey, Io, Origin};

const INTERVAL: u64 = 1000;
const STEP: u64 = 10;

/// The nonce of a challenge line.
fn nonce(line: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"\"heartbeat_challenge\":";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits]).ok()?.parse().ok()
}

fn answer(nonce: u32, seq: u32) -> Vec<u8> {
    format!("{{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":{seq},\"heartbeat_response\":{nonce},\"heartbeat_health\":\"healthy\",\"corrective_action\":\"none\",\"log_msg\":\"\"}}\n").into_bytes()
}

struct Rig {
    fleet: Fleet,
    keys: Vec<GuestKey>,
    now: u64,
    seq: u32,
    wire: Box<[u8; MAX_WIRE]>,
    answers: Vec<(GuestKey, Vec<u8>)>,
}

impl Rig {
    fn new(n: usize) -> Rig {
        let settings = GuestSettings { coalesce_ms: Some(10), ..GuestSettings::default() };
        let file = FileConfig { defaults: settings, ..FileConfig::default() };
        let mut fleet = Fleet::new(FleetConfig::default(), file, 7, Instant::ZERO);
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let path = std::path::PathBuf::from(format!("/nonexistent/g{i}.sock"));
            keys.push(
                fleet.add_guest(&format!("g{i}"), path, Origin::Configured, None, i as u32 | 1, Instant::ZERO).unwrap(),
            );
        }
        let mut rig = Rig { fleet, keys, now: 0, seq: 1, wire: Box::new([0; MAX_WIRE]), answers: Vec::new() };
        while let Some(io) = rig.fleet.poll_io() {
            if let Io::Connect { key, .. } = io {
                rig.fleet.handle_connected(key, Instant::ZERO);
            }
        }
        let init = "{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":1,\"name\":\"g\",\"heartbeat_interval_ms\":1000,\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":9,\"restart_secs\":60,\"corrective_action\":\"log\"}\n";
        for k in rig.keys.clone() {
            rig.fleet.handle_bytes(k, init.as_bytes(), Instant::ZERO);
        }
        rig.out();
        // settle: a few intervals, so phases are spread and every guest is heartbeating
        for _ in 0..3 * INTERVAL / STEP {
            rig.step();
        }
        rig
    }

    fn misses(&self) -> u64 {
        self.fleet.snapshot(Instant::from_millis(self.now)).iter().map(|g| g.misses).sum()
    }

    /// Everything the fleet has to send: challenges are answered (next step).
    fn out(&mut self) {
        let now = Instant::from_millis(self.now);
        while let Some(key) = self.fleet.poll_dirty() {
            while let Some(n) = self.fleet.poll_transmit(key, now, &mut self.wire) {
                if let Some(nonce) = nonce(&self.wire[..n]) {
                    self.seq = self.seq.wrapping_add(1);
                    self.answers.push((key, answer(nonce, self.seq)));
                }
            }
        }
        while self.fleet.poll_event().is_some() {}
        while self.fleet.poll_io().is_some() {}
    }

    /// One 10 ms step: last step's answers arrive (1 ms later), then the timers due fire.
    fn step(&mut self) {
        self.now += 1;
        let now = Instant::from_millis(self.now);
        for (key, bytes) in std::mem::take(&mut self.answers) {
            let _ = self.fleet.read_allowance(key, now);
            self.fleet.handle_bytes(key, &bytes, now);
            self.fleet.handle_drained(key);
        }
        self.out();
        self.now += STEP - 1;
        self.fleet.handle_timeouts(Instant::from_millis(self.now));
        self.out();
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fleet: one heartbeat per guest");
    g.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut rig = Rig::new(n);
            assert_eq!(rig.misses(), 0, "every challenge was answered in time");
            b.iter(|| {
                for _ in 0..INTERVAL / STEP {
                    rig.step();
                }
            });
            assert_eq!(rig.misses(), 0, "every challenge was answered in time");
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
