//! `vigil-bench`: the data-plane benchmark. Runs vigild's real loop (the release `vigild` beside this binary)
//! against N simulated guests over real UNIX sockets (`vigil-sim`, in its own processes), and in the same run a
//! naive floor host, then prints one table. See BENCHMARKS.md.
//!
//! The floor: the cheapest honest host (issue #20): one mio loop that wakes in 10 ms ticks, writes a fixed
//! challenge line to every guest due in that tick (once per interval, one write each), reads each ready socket
//! until `WouldBlock` and counts answers by their closing brace, with no protocol work. Until a guest is
//! registered, its `init` is answered with an `init_ack` carrying the id found by a substring search (so that real
//! agents answer its challenges); after that its bytes are only counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

/// Benchmark vigild against a naive floor host.
#[derive(Parser, Debug, Clone)]
struct Cli {
    /// Guest counts to run (one row each).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    guests: Vec<usize>,
    /// Challenge interval.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u32,
    /// Measurement window per run.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Guests (of each run) that hang after the warm-up, to measure detection latency.
    #[arg(long, default_value_t = 20)]
    hang: usize,
    /// Count system calls with strace over a short window (slows the process while it runs).
    #[arg(long)]
    syscalls: bool,
    /// A quick run that only checks the binaries work (CI): 50 guests, 3 s.
    #[arg(long)]
    smoke: bool,
    /// Run vigild only (no floor row): for the rate search.
    #[arg(long)]
    vigild_only: bool,
    /// Pin the host (vigild, or this process for the floor) to CPU 0 and the simulators to CPU 1 (`taskset`), so
    /// that the guests do not steal the host's core.
    #[arg(long)]
    pin: bool,
    /// A configuration file for vigild (`vigild run --config`), to compare settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// After the table's pair, this many more floor/vigild pairs per guest count (CPU only: no strace; vigild
    /// first in every other pair), and one line with the ratio's spread: on a shared machine one pair moves by
    /// +-10 %. The median of an even number of pairs is the upper middle one.
    #[arg(long, default_value_t = 0)]
    repeat: usize,
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    std::env::current_exe().unwrap().with_file_name(name)
}

/// CPU seconds a process used, in user space and in the kernel (`/proc/PID/stat`, 10 ms ticks: over a 20 s window
/// at 10,000 heartbeats/s, one tick is 0.05 µs per heartbeat).
#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    sys: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.sys
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu { user: self.user - o.user, sys: self.sys - o.sys }
    }
}

impl std::iter::Sum for Cpu {
    fn sum<I: Iterator<Item = Cpu>>(it: I) -> Cpu {
        it.fold(Cpu::default(), |a, b| Cpu { user: a.user + b.user, sys: a.sys + b.sys })
    }
}

fn cpu_secs(pid: u32) -> Cpu {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    Cpu { user: field(11), sys: field(12) }
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status` (0 when absent).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Simulators for `n` guests (5,000 per process: two descriptors each under a 20,000 fd limit).
fn sims(dir: &Path, n: usize, hang: usize, interval: u32, fail_after: u64, pin: bool) -> Vec<Proc> {
    let mut out = Vec::new();
    let mut left = n;
    let mut shard = 0;
    while left > 0 {
        let k = left.min(5000);
        let h = if shard == 0 { hang.min(k) } else { 0 };
        let child = pinned(pin, "1", bin("vigil-sim"))
            .arg("--dir")
            .arg(dir)
            .args(["--guests", &k.to_string(), "--interval-ms", &interval.to_string(), "--hang", &h.to_string()])
            .args(["--fail-after-secs", &fail_after.to_string(), "--prefix", &format!("s{shard}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vigil-sim beside vigil-bench");
        out.push(Proc(child));
        left -= k;
        shard += 1;
    }
    out
}

/// `program`, under `taskset -c cpu` when `pin`.
fn pinned(pin: bool, cpu: &str, program: PathBuf) -> Command {
    if !pin {
        return Command::new(program);
    }
    let mut c = Command::new("taskset");
    c.args(["-c", cpu]).arg(program);
    c
}

/// The CPU seconds of all of `procs`.
fn cpu_of(procs: &[Proc]) -> Cpu {
    procs.iter().map(|p| cpu_secs(p.0.id())).sum()
}

fn wait_sockets(dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(dir).map_or(0, |d| d.count()) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// System calls of `pid` per second, counted by strace over `secs`.
fn syscalls_per_sec(pid: u32, secs: u64) -> Option<f64> {
    let out = Command::new("timeout")
        .args([&format!("{secs}s"), "strace", "-c", "-f", "-p", &pid.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let total = text.lines().rev().find(|l| l.contains("total"))?;
    let calls: f64 = total.split_whitespace().nth(3)?.parse().ok()?;
    Some(calls / secs as f64)
}

struct Row {
    who: &'static str,
    guests: usize,
    hb_per_sec: f64,
    cpu_us_per_hb: f64,
    /// Of `cpu_us_per_hb`, user space (the rest is the kernel's, mostly the sockets').
    user_us_per_hb: f64,
    syscalls_per_hb: Option<f64>,
    wakes_per_sec: f64,
    /// The simulators' CPU per heartbeat (a slow simulator makes every host look good).
    sim_us_per_hb: f64,
    rss_kib: u64,
    /// Of `rss_kib`, anonymous memory (heap, tables, stacks): what is the process's own.
    rss_anon_kib: u64,
    rtt: (f64, f64, f64),
    detect: Option<(f64, f64)>,
    false_faults: usize,
}

fn admin(sock: &Path, path: &str) -> Option<String> {
    vigil_host::control::client::request(sock, "GET", path, None, Duration::from_secs(30)).ok().map(|(_, b)| b)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// p-th percentile (upper bucket bound, seconds) of a Prometheus histogram over the window between two scrapes
/// (`before`, `after`): the buckets are cumulative since start, and the registration storm is not the window.
fn quantile(before: &str, after: &str, name: &str, p: f64) -> f64 {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{le=\"")))
            .filter_map(|l| {
                let le = l.split('"').nth(1)?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let window: Vec<(f64, f64)> =
        b1.iter().map(|&(le, c)| (le, c - b0.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1))).collect();
    let total = window.last().map_or(0.0, |b| b.1);
    window.iter().find(|(_, c)| *c >= p * total).map_or(0.0, |b| b.0)
}

fn run_vigild(cli: &Cli, n: usize, work: &Path) -> Row {
    let dir = work.join(format!("vigild-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let warm = 5 + n as u64 / 2000;
    let sims = sims(&dir, n, cli.hang, cli.interval_ms, warm + 3, cli.pin);
    wait_sockets(&dir, n);
    let events = work.join(format!("events-{n}.jsonl"));
    let admin_sock = work.join(format!("admin-{n}.sock"));
    let d = Proc(
        pinned(cli.pin, "0", bin("vigild"))
            .args(["run", "--log", "error", "--watch"])
            .arg(&dir)
            .args(cli.config.iter().flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]))
            .arg("--events")
            .arg(&events)
            .arg("--admin-socket")
            .arg(&admin_sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vigild beside vigil-bench"),
    );
    let pid = d.0.id();
    std::thread::sleep(Duration::from_secs(warm));
    let m0 = admin(&admin_sock, "/metrics").unwrap_or_default();
    let (c0, s0, t0) = (cpu_secs(pid), cpu_of(&sims), Instant::now());
    let window_start = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_secs(cli.secs));
    let m1 = admin(&admin_sock, "/metrics").unwrap_or_default();
    let (c1, s1, t1) = (cpu_secs(pid), cpu_of(&sims), t0.elapsed().as_secs_f64());
    let window_end = std::time::SystemTime::now();
    let hb = metric(&m1, "vigil_heartbeats_total ") - metric(&m0, "vigil_heartbeats_total ");
    let passes = "vigil_loop_pass_seconds_count ";
    let wakes = metric(&m1, passes) - metric(&m0, passes);
    let late = "vigil_host_late_intervals_total ";
    let misses = "vigil_missed_intervals_total ";
    eprintln!(
        "window (N = {n}): missed intervals {}, not counted because vigild was late {}",
        metric(&m1, misses) - metric(&m0, misses),
        metric(&m1, late) - metric(&m0, late)
    );
    // system calls over their own window (strace slows the process: heartbeats are counted over the same window)
    let sys = if cli.syscalls {
        let before = metric(&admin(&admin_sock, "/metrics").unwrap_or_default(), "vigil_heartbeats_total ");
        let calls = syscalls_per_sec(pid, 5).map(|per_sec| per_sec * 5.0);
        let after = metric(&admin(&admin_sock, "/metrics").unwrap_or_default(), "vigil_heartbeats_total ");
        calls.map(|c| c / (after - before).max(1.0))
    } else {
        None
    };
    let rss = rss_kib(pid);
    // what of it is vigild's own memory, and what is file-backed (its text and libraries: page cache, shared, and
    // resident as far as the page cache holds the file)
    let rss_anon = status_kib(pid, "RssAnon:");
    let guests: Value =
        admin(&admin_sock, "/v1/guests").and_then(|b| serde_json::from_str(&b).ok()).unwrap_or(Value::Null);
    let max_rtt =
        guests["guests"].as_array().map_or(0, |g| g.iter().filter_map(|g| g["max_rtt_ms"].as_u64()).max().unwrap_or(0));
    if std::env::var_os("VIGIL_BENCH_RTT").is_some() {
        // where the slow round trips are: guests whose worst round trip passed 100 ms, by simulator process
        let mut slow = std::collections::BTreeMap::<String, (usize, usize)>::new();
        for g in guests["guests"].as_array().into_iter().flatten() {
            let shard = g["id"].as_str().unwrap_or("").split('-').next().unwrap_or("").to_string();
            let e = slow.entry(shard).or_default();
            e.1 += 1;
            if g["max_rtt_ms"].as_u64().unwrap_or(0) > 100 {
                e.0 += 1;
            }
        }
        eprintln!("guests with a round trip over 100 ms, by simulator (slow, all): {slow:?}");
    }
    let name = "vigil_heartbeat_round_trip_seconds";
    let rtt = (quantile(&m0, &m1, name, 0.5) * 1000.0, quantile(&m0, &m1, name, 0.99) * 1000.0, max_rtt as f64);
    // detection: a hung guest's loss, minus the bound (3 intervals after its last answer, threshold 1)
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let ev: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let ms = |v: &Value| humantime::parse_rfc3339_weak(v.as_str().unwrap_or("")).ok();
    let bound = 3.0 * f64::from(cli.interval_ms);
    let mut detect: Vec<f64> = ev
        .iter()
        .filter(|e| e["kind"] == "heartbeat_lost" && e["guest"].as_str().unwrap_or("").contains("-hang-"))
        .filter_map(|e| {
            let d = ms(&e["time"])?.duration_since(ms(&e["last_heartbeat"])?).ok()?;
            Some(d.as_secs_f64() * 1000.0 - bound)
        })
        .collect();
    detect.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    // false faults over the whole run: the registration storm of the warm-up included (printed apart)
    let false_faults = ev
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("heartbeat_lost" | "protocol_error")))
        .filter(|e| !e["guest"].as_str().unwrap_or("").contains("-hang-"))
        .count();
    let in_warm_up = ev
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("heartbeat_lost" | "protocol_error")))
        .filter(|e| !e["guest"].as_str().unwrap_or("").contains("-hang-"))
        .filter(|e| ms(&e["time"]).is_some_and(|t| t < window_start))
        .count();
    let after = ev
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("heartbeat_lost" | "protocol_error")))
        .filter(|e| !e["guest"].as_str().unwrap_or("").contains("-hang-"))
        .filter(|e| ms(&e["time"]).is_some_and(|t| t > window_end))
        .count();
    eprintln!(
        "false faults (N = {n}): {false_faults}, of which during the warm-up (registration storm): {in_warm_up}, \
         after the window (strace, the status of every guest): {after}"
    );
    if false_faults > 0 {
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for e in ev.iter().filter(|e| !e["guest"].as_str().unwrap_or("").contains("-hang-")) {
            if matches!(e["kind"].as_str(), Some("heartbeat_lost" | "protocol_error")) {
                let what = format!("{} {}", e["kind"].as_str().unwrap_or(""), e["error"].as_str().unwrap_or(""));
                *kinds.entry(what).or_default() += 1;
            }
        }
        eprintln!("false faults by kind (N = {n}): {kinds:?}");
    }
    drop(d);
    Row {
        who: "vigild",
        guests: n,
        hb_per_sec: hb / t1,
        cpu_us_per_hb: (c1 - c0).total() / hb.max(1.0) * 1e6,
        user_us_per_hb: (c1 - c0).user / hb.max(1.0) * 1e6,
        syscalls_per_hb: sys,
        wakes_per_sec: wakes / t1,
        sim_us_per_hb: (s1 - s0).total() / hb.max(1.0) * 1e6,
        rss_kib: rss,
        rss_anon_kib: rss_anon,
        rtt,
        detect: (!detect.is_empty()).then(|| (pct(&detect, 0.5), pct(&detect, 0.99))),
        false_faults,
    }
}

/// The naive floor host, in this process.
fn run_floor(cli: &Cli, n: usize, work: &Path) -> Row {
    let dir = work.join(format!("floor-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sims = sims(&dir, n, 0, cli.interval_ms, 3600, cli.pin);
    wait_sockets(&dir, n);
    let _ = vigil_host::sys::raise_fd_limit();
    let me = std::process::id();
    if cli.pin {
        let _ = Command::new("taskset").args(["-p", "-c", "0", &me.to_string()]).stdout(Stdio::null()).status();
    }
    let mut poll = Poll::new().unwrap();
    let mut conns: Vec<UnixStream> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if let Ok(mut s) = UnixStream::connect(e.path()) {
            poll.registry().register(&mut s, Token(conns.len()), Interest::READABLE).unwrap();
            conns.push(s);
        }
    }
    let challenge =
        b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"challenge\",\"sequence\":1,\"heartbeat_challenge\":12345}\n";
    let interval = Duration::from_millis(u64::from(cli.interval_ms));
    // challenge phases spread over the interval, like guests registering over time
    let start = Instant::now();
    let mut next: Vec<Instant> =
        (0..conns.len()).map(|i| start + interval.mul_f64(i as f64 / conns.len().max(1) as f64)).collect();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let warm = Duration::from_secs(5 + n as u64 / 2000);
    // the CPU window, then (with --syscalls) strace over its own window after it, as for vigild: strace slows
    // the process it traces
    let window_end = start + warm + Duration::from_secs(cli.secs);
    let end = window_end + if cli.syscalls { Duration::from_secs(7) } else { Duration::ZERO };
    let mut measured: Option<(Cpu, Cpu, f64, u64, u64)> = None;
    let mut lines = 0u64;
    let mut measuring: Option<(Cpu, Cpu, Instant, u64)> = None;
    // system calls over 5 s of the window, counted by strace from a thread, with the answers of that span
    let mut strace: Option<(std::thread::JoinHandle<Option<f64>>, u64)> = None;
    let mut sys = None;
    let mut cursor = 0usize;
    let mut order: Vec<usize> = (0..conns.len()).collect();
    order.sort_by_key(|&i| next[i]);
    let mut registered = vec![false; conns.len()];
    let tick = Duration::from_millis(10);
    let mut next_tick = start;
    let mut wakes = 0u64;
    let mut wakes_at_start = 0u64;
    while Instant::now() < end {
        let now = Instant::now();
        if measuring.is_none() && now >= start + warm {
            measuring = Some((cpu_secs(me), cpu_of(&sims), now, lines));
            wakes_at_start = wakes;
        }
        if let (None, Some((_, _, t0, _))) = (&measured, &measuring) {
            if now >= window_end {
                measured = Some((cpu_secs(me), cpu_of(&sims), t0.elapsed().as_secs_f64(), lines, wakes));
                if cli.syscalls {
                    strace = Some((std::thread::spawn(move || syscalls_per_sec(me, 5).map(|s| s * 5.0)), lines));
                }
            }
        }
        if strace.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            if let Some((h, l0)) = strace.take() {
                sys = h.join().ok().flatten().map(|calls| calls / (lines - l0).max(1) as f64);
            }
        }
        // at each tick: every challenge due by the end of it, in phase order (each guest's deadline moves by one
        // interval: the order never changes)
        if now >= next_tick {
            let horizon = now + tick;
            while let Some(&i) = order.get(cursor) {
                if next[i] > horizon {
                    break;
                }
                let _ = conns[i].write(challenge);
                next[i] += interval;
                cursor = (cursor + 1) % order.len();
            }
            next_tick = horizon;
        }
        let _ = poll.poll(&mut events, Some(next_tick.saturating_duration_since(Instant::now())));
        wakes += 1;
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match conns[i].read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        let data = &buf[..k];
                        lines += data.iter().filter(|&&b| b == b'}').count() as u64;
                        if registered[i] {
                            continue;
                        }
                        if let Some(p) = find(data, b"\"invocation_id\":") {
                            registered[i] = true;
                            let digits: String =
                                data[p + 16..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
                            let ack = format!(
                                "\n{{\"version\":3,\"revision\":1,\"msg_type\":\"init_ack\",\"sequence\":1,\"invocation_id\":{digits}}}\n"
                            );
                            let _ = conns[i].write(ack.as_bytes());
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
    let (c0, s0, t0, l0) = measuring.unwrap_or((Cpu::default(), Cpu::default(), start, 0));
    let (c1, s1, secs, l1, w1) =
        measured.unwrap_or_else(|| (cpu_secs(me), cpu_of(&sims), t0.elapsed().as_secs_f64(), lines, wakes));
    let hb = (l1 - l0) as f64;
    if let Some((h, l0)) = strace.take() {
        sys = h.join().ok().flatten().map(|calls| calls / (lines - l0).max(1) as f64);
    }
    if cli.pin {
        let _ = Command::new("taskset").args(["-p", "-c", "0-1", &me.to_string()]).stdout(Stdio::null()).status();
    }
    Row {
        who: "floor",
        guests: n,
        hb_per_sec: hb / secs,
        cpu_us_per_hb: (c1 - c0).total() / hb.max(1.0) * 1e6,
        user_us_per_hb: (c1 - c0).user / hb.max(1.0) * 1e6,
        syscalls_per_hb: sys,
        wakes_per_sec: (w1 - wakes_at_start) as f64 / secs.max(1e-9),
        sim_us_per_hb: (s1 - s0).total() / hb.max(1.0) * 1e6,
        rss_kib: 0,
        rss_anon_kib: 0,
        rtt: (0.0, 0.0, 0.0),
        detect: None,
        false_faults: 0,
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn main() {
    let mut cli = Cli::parse();
    if cli.smoke {
        cli.guests = vec![50];
        cli.secs = 3;
        cli.hang = 2;
    }
    let work = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    println!(
        "| host | guests | interval | heartbeats/s | CPU per heartbeat | wake-ups/s | syscalls per heartbeat | RSS | RSS per guest | RTT p50 / p99 / max (whole run) | detection p50 / p99 (beyond the bound) | false faults | simulators' CPU per heartbeat |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &cli.guests.clone() {
        let floor = (!cli.vigild_only).then(|| run_floor(&cli, n, &work));
        let v = run_vigild(&cli, n, &work);
        for r in floor.iter().chain([&v]) {
            let rss = if r.rss_kib > 0 {
                format!("{:.1} MiB | {:.2} KiB", r.rss_kib as f64 / 1024.0, r.rss_kib as f64 / r.guests as f64)
            } else {
                "- | -".into()
            };
            let rtt = if r.who == "vigild" {
                format!("{:.1} / {:.1} / {:.0} ms", r.rtt.0, r.rtt.1, r.rtt.2)
            } else {
                "-".into()
            };
            let det = r.detect.map_or("-".into(), |(a, b)| format!("{a:.0} / {b:.0} ms"));
            let sys = r.syscalls_per_hb.map_or("-".into(), |s| format!("{s:.2}"));
            println!(
                "| {} | {} | {} ms | {:.0} | {:.2} µs | {:.0} | {} | {} | {} | {} | {} | {:.2} µs |",
                r.who,
                r.guests,
                cli.interval_ms,
                r.hb_per_sec,
                r.cpu_us_per_hb,
                r.wakes_per_sec,
                sys,
                rss,
                rtt,
                det,
                r.false_faults,
                r.sim_us_per_hb
            );
        }
        if v.rss_kib > 0 {
            println!(
                "memory (N = {n}): RSS {:.1} MiB = anonymous {:.1} MiB ({:.2} KiB per guest) + file-backed {:.1} MiB (text and libraries)",
                v.rss_kib as f64 / 1024.0,
                v.rss_anon_kib as f64 / 1024.0,
                v.rss_anon_kib as f64 / n as f64,
                v.rss_kib.saturating_sub(v.rss_anon_kib) as f64 / 1024.0
            );
        }
        if let Some(floor) = &floor {
            let ratio = v.cpu_us_per_hb / floor.cpu_us_per_hb.max(1e-9);
            println!("vigild/floor CPU per heartbeat: {ratio:.2} (N = {n})");
            println!(
                "CPU per heartbeat, user + kernel (N = {n}): floor {:.2} + {:.2} µs, vigild {:.2} + {:.2} µs",
                floor.user_us_per_hb,
                floor.cpu_us_per_hb - floor.user_us_per_hb,
                v.user_us_per_hb,
                v.cpu_us_per_hb - v.user_us_per_hb
            );
            if ratio < 1.0 {
                println!("note: the floor cost more than vigild here: the floor is not the cheapest honest host");
            }
            if cli.repeat > 0 {
                let quiet = Cli { syscalls: false, ..cli.clone() };
                let mut ratios = vec![ratio];
                for i in 0..cli.repeat {
                    // a directory of its own: the killed simulators' socket files stay behind
                    let again = work.join(format!("repeat-{i}"));
                    std::fs::create_dir_all(&again).unwrap();
                    // the order alternates, so that neither host always runs on a machine the other just warmed
                    let (f, v) = if i % 2 == 0 {
                        let v = run_vigild(&quiet, n, &again);
                        (run_floor(&quiet, n, &again), v)
                    } else {
                        let f = run_floor(&quiet, n, &again);
                        (f, run_vigild(&quiet, n, &again))
                    };
                    ratios.push(v.cpu_us_per_hb / f.cpu_us_per_hb.max(1e-9));
                }
                let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                ratios.sort_by(f64::total_cmp);
                println!(
                    "vigild/floor CPU per heartbeat over {} pairs (N = {n}): median {:.2}, min {:.2}, max {:.2} (in run order: {})",
                    ratios.len(),
                    ratios[ratios.len() / 2],
                    ratios[0],
                    ratios[ratios.len() - 1],
                    each.join(", ")
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}
