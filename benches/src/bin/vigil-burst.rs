//! `vigil-burst`: the upstream path under a burst. N simulated guests (`vigil-sim`) hang at the same moment; vigild
//! (release, beside this binary) writes N `heartbeat_lost` events into its spool and delivers them to a local
//! CloudEvents webhook; meanwhile `/healthz` is asked on the admin socket every 10 ms. Prints one table: the time
//! from the first loss in the local log to the last loss delivered, and `/healthz` latency during the drain.
//!
//! The receiver is the cheapest honest one: a thread per connection, keep-alive, bodies read and matched, 200 at
//! once. Goals (issue #18): drained in <= 10 s, `/healthz` p99 <= 50 ms, at 10,000 faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

/// Options.
#[derive(Parser, Debug)]
#[command(name = "vigil-burst")]
struct Cli {
    /// Guests that hang at once.
    #[arg(long, default_value_t = 10_000)]
    guests: usize,
    /// Seconds before they hang (registration of all of them must be done by then).
    #[arg(long, default_value_t = 30)]
    fail_after_secs: u64,
}

fn bin(name: &str) -> PathBuf {
    std::env::current_exe().unwrap().with_file_name(name)
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves one keep-alive connection: counts CloudEvents of type `io.vigil.heartbeat_lost`.
fn serve(c: TcpStream, lost: Arc<AtomicU64>) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if body.windows(24).any(|w| w == b"io.vigil.heartbeat_lost\"") {
            lost.fetch_add(1, Relaxed);
        }
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

fn count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path).map(|t| t.matches(needle).count()).unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let cli = Cli::parse();
    let _ = vigil_host::sys::raise_fd_limit();
    let work = std::env::temp_dir().join(format!("vigil-burst-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let dir = work.join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let lost = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let l2 = Arc::clone(&lost);
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            let lost = Arc::clone(&l2);
            std::thread::spawn(move || serve(c, lost));
        }
    });
    let n = cli.guests.to_string();
    let fail = cli.fail_after_secs.to_string();
    let _sim = Kill(
        Command::new(bin("vigil-sim"))
            .args(["--dir", dir.to_str().unwrap(), "--guests", &n, "--hang", &n, "--fail-after-secs", &fail])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vigil-sim beside vigil-burst (cargo build --release -p vigil-host -p vigil-benches)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let events = work.join("events.jsonl");
    let admin = work.join("admin.sock");
    let _vigild = Kill(
        Command::new(bin("vigild"))
            .args(["run", "--watch", dir.to_str().unwrap(), "--log", "error", "--webhook", &url])
            .arg("--events")
            .arg(&events)
            .arg("--admin-socket")
            .arg(&admin)
            .arg("--state-dir")
            .arg(work.join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vigild beside vigil-burst"),
    );
    // registration: wait until nearly every guest is registered (a few may still be in their reconnect backoff)
    let started = Instant::now();
    loop {
        let n = count(&events, "\"kind\":\"registered\"");
        if n * 100 >= cli.guests * 99 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(cli.fail_after_secs),
            "{n} of {} guests registered before they were to hang: give them more time (--fail-after-secs)",
            cli.guests
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // the burst: wait for the first loss in the local log, then ask /healthz every 10 ms until every loss written
    // locally (counted every 500 ms, settled for 3 s) has been delivered
    while count(&events, "\"kind\":\"heartbeat_lost\"") == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_loss = Instant::now();
    let mut lat = Vec::new();
    let (mut written, mut changed_at, mut counted_at) = (0, Instant::now(), Instant::now() - Duration::from_secs(1));
    let mut last_delivery = first_loss;
    let mut delivered_before = 0;
    loop {
        if counted_at.elapsed() >= Duration::from_millis(500) {
            let n = count(&events, "\"kind\":\"heartbeat_lost\"");
            if n != written {
                (written, changed_at) = (n, Instant::now());
            }
            counted_at = Instant::now();
        }
        let delivered = lost.load(Relaxed) as usize;
        if delivered != delivered_before {
            (delivered_before, last_delivery) = (delivered, Instant::now());
        }
        if delivered >= written && changed_at.elapsed() >= Duration::from_secs(3) {
            break;
        }
        if first_loss.elapsed() > Duration::from_secs(300) {
            break;
        }
        let t = Instant::now();
        let ok = vigil_host::control::client::request(&admin, "GET", "/healthz", None, Duration::from_secs(10))
            .is_ok_and(|(c, _)| c == 200);
        lat.push(if ok { t.elapsed() } else { Duration::from_secs(10) });
        std::thread::sleep(Duration::from_millis(10));
    }
    let drain = last_delivery - first_loss;
    lat.sort();
    println!("| faults (guests hung at once) | written locally | delivered to the webhook | drain (first loss written -> last delivered) | /healthz p50 | p99 | max | samples |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {written} | {} | {:.2} s | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
        cli.guests,
        lost.load(Relaxed),
        drain.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lat.len()
    );
    drop(_vigild);
    let _ = std::fs::remove_dir_all(&work);
}
