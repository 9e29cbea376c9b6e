//! The loop's timer structure at 10^3, 10^4 and 10^5 deadlines: the hashed timing wheel against a binary heap
//! with lazy deletion (the usual alternative). Workload per iteration, as in vigild: every key's deadline is
//! re-armed one interval later when it fires, and 1 % of keys are moved (a guest answered, a reconnect).
#![allow(missing_docs, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_core::Instant;
use vigil_host::fleet::wheel::TimerWheel;

const INTERVAL: u64 = 1000;
const STEP: u64 = 10;

struct Heap {
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    current: Vec<u64>,
}

impl Heap {
    fn set(&mut self, key: usize, at: u64) {
        self.current[key] = at;
        self.heap.push(Reverse((at, key as u32)));
    }
    fn expire(&mut self, now: u64, mut fire: impl FnMut(&mut Self, usize)) {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.current[key as usize] == at {
                self.current[key as usize] = u64::MAX;
                fire(self, key as usize);
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers: 1 s of 10 ms steps");
    for n in [1_000usize, 10_000, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("wheel", n), &n, |b, &n| {
            let mut w = TimerWheel::new(Instant::ZERO);
            for k in 0..n {
                w.set(k, Some(Instant::from_millis((k as u64 * 7919) % INTERVAL)));
            }
            let mut now = 0;
            let mut moved = 0usize;
            b.iter(|| {
                for _ in 0..INTERVAL / STEP {
                    now += STEP;
                    w.expire(Instant::from_millis(now), |w, k| w.set(k, Some(Instant::from_millis(now + INTERVAL))));
                    for _ in 0..n / 100 / (INTERVAL / STEP) as usize {
                        moved = (moved + 7919) % n;
                        w.set(moved, Some(Instant::from_millis(now + INTERVAL / 2)));
                    }
                }
            });
        });
        g.bench_with_input(BenchmarkId::new("binary heap", n), &n, |b, &n| {
            let mut h = Heap { heap: BinaryHeap::new(), current: vec![u64::MAX; n] };
            for k in 0..n {
                h.set(k, (k as u64 * 7919) % INTERVAL);
            }
            let mut now = 0;
            let mut moved = 0usize;
            b.iter(|| {
                for _ in 0..INTERVAL / STEP {
                    now += STEP;
                    h.expire(now, |h, k| h.set(k, now + INTERVAL));
                    for _ in 0..n / 100 / (INTERVAL / STEP) as usize {
                        moved = (moved + 7919) % n;
                        h.set(moved, now + INTERVAL / 2);
                    }
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
