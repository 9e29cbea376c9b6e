//! The spool's write cost per event: one event per durable commit (an fsync each, the worst case: events one at a
//! time) and batches of 64 (what the spool thread does when events come in bursts), on the machine's disk.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use vigil_host::upstream::spool::Spool;

fn record(i: u64) -> serde_json::Value {
    json!({"id": "0190f1d2-7c3a-7b1e-9f00-000000000000", "time": "2026-11-27T00:00:00.000Z", "host": "node-7",
           "guest": format!("6f1c0a8e-0000-4000-8000-{i:012}"), "kind": "heartbeat_lost", "consecutive_misses": 2,
           "last_heartbeat": "2026-11-27T00:00:00.000Z", "corrective_action": "reboot"})
}

fn spool(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("vigil-bench-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (s, _) = Spool::open(&dir, 1_000_000, &["sink".to_string()]).unwrap();
    let mut g = c.benchmark_group("spool append");
    for batch in [1u64, 64] {
        g.throughput(Throughput::Elements(batch));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{batch} per commit")), &batch, |b, &n| {
            let mut i = 0;
            b.iter(|| {
                let mut recs: Vec<_> = (0..n).map(|k| record(i + k)).collect();
                i += n;
                s.append(&mut recs).unwrap()
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, spool);
criterion_main!(benches);
