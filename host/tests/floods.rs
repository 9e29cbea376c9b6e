//! Hostile tenants must not blind the monitor: 60 honest guests (30 at 1 s, 30 at 400 ms, the reference floor)
//! beside 200 guests flooding random bytes and 200 flooding valid but unsolicited messages, as fast as their
//! sockets take them, from another process at the lowest CPU priority (so they compete with vigild, not with the
//! honest guests). Before byte budgets, 200 flooders at 1 s cost 59 of 60 honest guests a false loss.
//!
//! Asserted: no honest guest is declared lost or disconnected, vigild stays up with bounded memory, and every
//! hostile guest is reported `rate_limited`. Printed (not asserted; the machine is shared): vigild's CPU during the
//! flood and the honest guests' worst round trip. Time bounds are semantic: an answer slower than two intervals
//! would be a loss, which is what the flood must never cause.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after the `)` they are the 12th and 13th
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn four_hundred_flooders_at_low_priority_cost_no_honest_guest_a_heartbeat() {
    let _serial = heavy();
    let work = TempDir::new("floods");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let _honest_1s = sim(&dir, &["--guests", "30", "--interval-ms", "1000", "--prefix", "good1000"]);
    let _honest_400 = sim(&dir, &["--guests", "30", "--interval-ms", "400", "--prefix", "good400"]);
    let sim_bin = env!("CARGO_BIN_EXE_vigil-sim");
    let hostile = Command::new("nice")
        .args(["-n", "19", sim_bin, "--dir"])
        .arg(&dir)
        .args(["--guests", "400", "--flood", "200", "--spam", "200", "--fail-after-secs", "3", "--prefix", "bad"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nice and vigil-sim");
    let _hostile = Proc(hostile);
    std::thread::sleep(Duration::from_millis(500));
    let mut d = Vigild::start(&dir, work.path(), &[]);
    d.wait_until(30, "the honest guests registered", |ev| {
        ev.iter().filter(|e| e["kind"] == "registered" && e["guest"].as_str().unwrap().starts_with("good")).count()
            >= 60
    });
    // the flood starts 3 s after the hostile simulator; measure 20 s of it
    std::thread::sleep(Duration::from_secs(4));
    let (rss_base, cpu_base) = (d.proc.rss_kib(), cpu_ticks(d.proc.pid()));
    std::thread::sleep(Duration::from_secs(20));
    let (rss_end, cpu_end) = (d.proc.rss_kib(), cpu_ticks(d.proc.pid()));
    assert!(d.proc.0.try_wait().unwrap().is_none(), "vigild is still up");
    // every hostile guest goes over its budget as soon as it gets the CPU to send 8 KiB; at the lowest priority
    // beside a busy machine (a build running) that may take a while: wait for it (bounded), do not assume it
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = admin(&d, "GET", "/v1/guests", None).1;
        let pending = v["guests"].as_array().map_or(400, |g| {
            g.iter()
                .filter(|g| g["id"].as_str().is_some_and(|i| i.starts_with("bad")) && g["rate_limited"] == 0)
                .count()
        });
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_millis(2100));
    let st = d.status();
    let ev = d.events();
    assert!(d.proc.terminate(), "vigild stops cleanly");

    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_pct = (cpu_end - cpu_base) as f64 / ticks_per_sec / 20.0 * 100.0;
    let worst_1000 = worst_rtt_ms(&st, "good1000");
    let worst_400 = worst_rtt_ms(&st, "good400");
    println!(
        "400 flooders (200 random, 200 valid unsolicited) beside 60 honest guests: vigild CPU {cpu_pct:.0} % of a core, \
         RSS {rss_base} -> {rss_end} KiB, worst honest round trip {worst_1000} ms (1 s guests), {worst_400} ms (400 ms guests)"
    );
    let honest_faults: Vec<_> = ev
        .iter()
        .filter(|e| e["guest"].as_str().unwrap().starts_with("good"))
        .filter(|e| matches!(e["kind"].as_str(), Some("heartbeat_lost" | "disconnected" | "protocol_error")))
        .filter(|e| e["reason"] != "vigild stopping")
        .collect();
    assert!(honest_faults.is_empty(), "honest guests hurt by the flood: {honest_faults:?}");
    // the semantic bound: two intervals (a slower answer would have been a loss, asserted against above)
    assert!(worst_1000 < 2000 && worst_400 < 800, "an honest answer took longer than two intervals");
    assert!(rss_end <= rss_base + 16 * 1024, "RSS {rss_base} -> {rss_end} KiB");
    let guests = st["guests"].as_array().unwrap();
    let hostile: Vec<_> = guests.iter().filter(|g| g["id"].as_str().unwrap().starts_with("bad")).collect();
    assert_eq!(hostile.len(), 400);
    let unreported: Vec<_> =
        hostile.iter().filter(|g| g["rate_limited"].as_u64().unwrap_or(0) == 0).map(|g| &g["id"]).collect();
    assert!(unreported.is_empty(), "hostile guests never rate-limited: {unreported:?}");
    let reported = ev.iter().filter(|e| e["kind"] == "protocol_error" && e["error"] == "rate_limited").count();
    assert!(reported >= 400, "each hostile guest is reported as rate_limited ({reported} events)");
}
