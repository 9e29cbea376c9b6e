//! The core's QEMU guest agent liveness machine against the real `qemu-ga` (Debian's qemu-guest-agent), run on the
//! host with `-m unix-listen` on a private socket (the wire is the one it speaks over virtio-serial): it syncs and
//! pings; a stopped agent (SIGSTOP) is lost within the bound and recovers when continued (its late answers are
//! discarded by the resynchronisation); a restarted agent is resynchronised with no false fault. The agent is
//! stopped (SIGKILL) at the end even when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration as StdDuration;

use vigil_core::qga::{QgaConfig, QgaEvent, QgaMonitor, QGA_MAX_REQUEST};
use vigil_core::{Duration, StdClock, XorShift32};

const INTERVAL_MS: u64 = 300;

struct Agent {
    child: Child,
}

impl Agent {
    fn start(sock: &Path, state: &Path) -> Agent {
        let bin = ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("qemu-ga not found: install Debian's qemu-guest-agent (scripts/test.sh does)");
        let _ = std::fs::remove_file(sock);
        std::fs::create_dir_all(state).unwrap();
        let child = Command::new(bin)
            .args(["-m", "unix-listen", "-p"])
            .arg(sock)
            .arg("-t")
            .arg(state)
            .arg("-f")
            .arg(state.join("qemu-ga.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
        while UnixStream::connect(sock).is_err() {
            assert!(std::time::Instant::now() < deadline, "qemu-ga did not listen within 10 s");
            std::thread::sleep(StdDuration::from_millis(20));
        }
        Agent { child }
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drives the machine over a real socket for `secs`, returning the events with their times (ms).
struct Driver {
    q: QgaMonitor<XorShift32>,
    clock: StdClock,
    stream: Option<UnixStream>,
    sock: PathBuf,
}

impl Driver {
    fn connect(&mut self) {
        if let Ok(s) = UnixStream::connect(&self.sock) {
            self.q.connected(self.clock.now());
            self.stream = Some(s);
        }
    }

    fn run(&mut self, ms: u64) -> Vec<(u64, QgaEvent)> {
        let end = self.clock.now() + Duration::from_millis(ms);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut req = [0u8; QGA_MAX_REQUEST];
        while self.clock.now() < end {
            if self.stream.is_none() {
                self.connect();
                if self.stream.is_none() {
                    std::thread::sleep(StdDuration::from_millis(20));
                }
            }
            let now = self.clock.now();
            self.q.handle_timeout(now);
            out.extend(self.q.poll_event().map(|e| (now.as_millis(), e)));
            while let Some(n) = self.q.poll_transmit(&mut req) {
                if let Some(s) = self.stream.as_mut() {
                    let _ = s.write_all(&req[..n]);
                }
            }
            let Some(s) = self.stream.as_mut() else { continue };
            let wait = self.q.poll_timeout().map_or(20, |t| t.as_millis().saturating_sub(now.as_millis())).clamp(1, 20);
            s.set_read_timeout(Some(StdDuration::from_millis(wait))).unwrap();
            match s.read(&mut buf) {
                Ok(0) => {
                    self.q.disconnected();
                    self.stream = None;
                }
                Ok(n) => {
                    let mut input = &buf[..n];
                    while !input.is_empty() {
                        let now = self.clock.now();
                        let k = self.q.handle_bytes(now, input);
                        input = &input[k..];
                        out.extend(self.q.poll_event().map(|e| (now.as_millis(), e)));
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    self.q.disconnected();
                    self.stream = None;
                }
            }
        }
        out
    }
}

fn kinds(ev: &[(u64, QgaEvent)]) -> Vec<&'static str> {
    ev.iter()
        .map(|(_, e)| match e {
            QgaEvent::Synced => "synced",
            QgaEvent::HeartbeatLost { .. } => "lost",
            QgaEvent::Recovered => "recovered",
            QgaEvent::ProtocolError(_) => "error",
        })
        .collect()
}

#[test]
fn the_real_qemu_guest_agent_is_pinged_lost_when_stopped_and_resynchronised_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("vigil-qga-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("qga.sock");
    let agent = Agent::start(&sock, &dir.join("state"));
    let config = QgaConfig { interval: Duration::from_millis(INTERVAL_MS), loss_threshold: 1 };
    let mut d = Driver { q: QgaMonitor::new(config, XorShift32::new(5)), clock: StdClock::new(), stream: None, sock };

    // healthy: in sync, then a ping answered every interval
    let ev = d.run(2000);
    assert_eq!(kinds(&ev), ["synced"], "{ev:?}");
    let answers = d.q.stats().answers;
    assert!(answers >= 4, "{answers} answers in 2 s at {INTERVAL_MS} ms");

    // stopped: lost within the bound (3 intervals after the last answer; wide slack for a loaded machine)
    let last = d.clock.now().as_millis();
    agent.signal("-STOP");
    let ev = d.run(4 * INTERVAL_MS + 1500);
    assert_eq!(kinds(&ev), ["lost"], "{ev:?}");
    let QgaEvent::HeartbeatLost { last_heartbeat: Some(h), .. } = ev[0].1 else { panic!("{ev:?}") };
    assert!(h.as_millis() <= last + INTERVAL_MS);
    assert!(
        ev[0].0 - h.as_millis() <= 3 * INTERVAL_MS + 100,
        "lost {} ms after the last answer",
        ev[0].0 - h.as_millis()
    );

    // continued: the queued requests are answered at once; the stale ones are discarded before the sentinel
    agent.signal("-CONT");
    let ev = d.run(3 * INTERVAL_MS);
    assert_eq!(kinds(&ev), ["recovered"], "{ev:?}");
    assert!(d.q.stats().discarded > 0, "the late answers before the agent's sentinel were dropped");

    // restarted: a new connection, in sync again, never lost
    drop(agent);
    let agent = Agent::start(&d.sock.clone(), &dir.join("state"));
    let ev = d.run(2000);
    assert!(kinds(&ev).iter().all(|k| *k == "synced"), "{ev:?}");
    assert!(!d.q.is_lost());
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
