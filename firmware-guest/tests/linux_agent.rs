//! The Linux agent (`vigil-guest`, a real process) against a host harness: a core Monitor over a UNIX socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_core::*;

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Guest(Child);
impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn start_guest(port: &Path, api: &Path, extra: &[&str]) -> Guest {
    let child = Command::new(env!("CARGO_BIN_EXE_vigil-guest"))
        .arg("--port")
        .arg(port)
        .arg("--api-socket")
        .arg(api)
        .args(["--name", "test-vm", "--interval-ms", "200", "--no-reference-api"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil-guest binary");
    Guest(child)
}

/// The host side: accepts the agent's connection and runs a Monitor on it.
struct Host {
    listener: UnixListener,
    conn: Option<UnixStream>,
    monitor: Monitor<XorShift32>,
    clock: StdClock,
    events: Vec<MonitorEvent>,
}

impl Host {
    fn new(path: &Path) -> Self {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        Host {
            listener,
            conn: None,
            monitor: Monitor::new(MonitorConfig::default(), XorShift32::new(5)),
            clock: StdClock::new(),
            events: Vec::new(),
        }
    }

    fn step(&mut self) {
        let now = self.clock.now();
        if self.conn.is_none() {
            if let Ok((s, _)) = self.listener.accept() {
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                self.conn = Some(s);
                self.monitor.connected(now);
            } else {
                std::thread::sleep(Duration::from_millis(10));
                return;
            }
        }
        let mut buf = [0u8; 4096];
        let conn = self.conn.as_mut().unwrap();
        match conn.read(&mut buf) {
            Ok(0) => {
                self.conn = None;
                self.monitor.disconnected();
            }
            Ok(n) => {
                let mut input = &buf[..n];
                while !input.is_empty() {
                    let used = self.monitor.handle_bytes(now, input);
                    input = &input[used..];
                    while let Some(e) = self.monitor.poll_event() {
                        self.events.push(e);
                    }
                }
            }
            Err(_) => {}
        }
        while self.monitor.poll_timeout().is_some_and(|t| t <= now) {
            self.monitor.handle_timeout(now);
            while let Some(e) = self.monitor.poll_event() {
                self.events.push(e);
            }
        }
        let mut wire = [0u8; MAX_WIRE];
        while let Some(n) = self.monitor.poll_transmit(now, &mut wire) {
            if let Some(c) = self.conn.as_mut() {
                let _ = c.write_all(&wire[..n]);
            }
        }
    }

    fn wait_for(&mut self, secs: u64, what: &str, f: impl Fn(&[MonitorEvent]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(&self.events) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", self.events);
            self.step();
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.step();
        }
    }

    fn drop_connection(&mut self) {
        self.conn = None;
        self.monitor.disconnected();
    }
}

fn registered(ev: &[MonitorEvent]) -> usize {
    ev.iter().filter(|e| matches!(e, MonitorEvent::Registered(_))).count()
}

#[test]
fn registers_heartbeats_and_reports_a_failing_health_check_with_its_reason() {
    let t = TempDir::new("hc");
    let flag = t.0.join("broken");
    let check =
        script(&t.0, "check.sh", &format!("if [ -e {} ]; then echo disk full; exit 1; fi; echo ok", flag.display()));
    let mut host = Host::new(&t.0.join("port.sock"));
    let _g = start_guest(
        &t.0.join("port.sock"),
        &t.0.join("api.sock"),
        &["--health-cmd", check.to_str().unwrap(), "--health-interval-secs", "1", "--health-action", "stop"],
    );
    host.wait_for(10, "registration", |ev| registered(ev) == 1);
    let MonitorEvent::Registered(r) = &host.events[0] else { panic!() };
    assert_eq!((r.init.name.as_str(), r.init.heartbeat_interval_ms), ("test-vm", 200));
    host.run_for(Duration::from_millis(1200));
    assert!(host.monitor.stats().heartbeats >= 4, "{:?}", host.monitor.stats());
    std::fs::write(&flag, "").unwrap();
    host.wait_for(5, "unhealthy", |ev| ev.iter().any(|e| matches!(e, MonitorEvent::Unhealthy { .. })));
    let u = host.events.iter().find(|e| matches!(e, MonitorEvent::Unhealthy { .. })).unwrap();
    assert_eq!(
        u,
        &MonitorEvent::Unhealthy { corrective_action: CorrectiveAction::Stop, log_msg: bounded("disk full") }
    );
    std::fs::remove_file(&flag).unwrap();
    host.wait_for(5, "recovered", |ev| ev.iter().any(|e| matches!(e, MonitorEvent::Recovered)));
    assert_eq!(host.monitor.stats().misses, 0, "health checks never delayed an answer");
}

#[test]
fn an_application_that_stops_answering_makes_the_vm_unhealthy() {
    let t = TempDir::new("app");
    let api = t.0.join("api.sock");
    let mut host = Host::new(&t.0.join("port.sock"));
    let _g = start_guest(&t.0.join("port.sock"), &api, &[]);
    host.wait_for(10, "registration", |ev| registered(ev) == 1);
    let app = UnixStream::connect(&api).unwrap();
    app.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut w = app.try_clone().unwrap();
    w.write_all(b"{\"op\":\"register\",\"name\":\"db\",\"interval_ms\":200,\"corrective_action\":\"reboot\"}\n")
        .unwrap();
    let mut r = BufReader::new(app);
    // answer challenges for a while
    let answer_until = Instant::now() + Duration::from_millis(1500);
    let mut answered = 0;
    while Instant::now() < answer_until {
        host.step();
        let mut line = String::new();
        if r.read_line(&mut line).is_ok() && line.contains("\"challenge\"") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let reply = format!("{{\"op\":\"response\",\"nonce\":{},\"health\":\"healthy\"}}\n", v["nonce"]);
            w.write_all(reply.as_bytes()).unwrap();
            answered += 1;
        }
    }
    assert!(answered >= 5);
    assert!(!host.events.iter().any(|e| matches!(e, MonitorEvent::Unhealthy { .. })), "{:?}", host.events);
    // silence: unhealthy within two of its intervals (plus one heartbeat)
    host.wait_for(3, "unhealthy", |ev| ev.iter().any(|e| matches!(e, MonitorEvent::Unhealthy { .. })));
    let u = host.events.iter().find(|e| matches!(e, MonitorEvent::Unhealthy { .. })).unwrap();
    assert_eq!(
        u,
        &MonitorEvent::Unhealthy {
            corrective_action: CorrectiveAction::Reboot,
            log_msg: bounded("db: stopped answering")
        }
    );
    // a bad line gets an error reply, not a crash
    w.write_all(b"{\"op\":\"explode\"}\n").unwrap();
    let mut saw_error = false;
    for _ in 0..50 {
        let mut line = String::new();
        if r.read_line(&mut line).is_ok() && line.contains("\"error\"") {
            saw_error = true;
            break;
        }
        host.step();
    }
    assert!(saw_error);
}

#[test]
fn the_notification_command_rejects_a_vote_with_its_reason() {
    let t = TempDir::new("vote");
    let notify = script(
        &t.0,
        "notify.sh",
        "if [ \"$1\" = revocable ] && [ \"$2\" = stop ]; then echo standby not synced; exit 1; fi; exit 0",
    );
    let mut host = Host::new(&t.0.join("port.sock"));
    let _g = start_guest(&t.0.join("port.sock"), &t.0.join("api.sock"), &["--notify-cmd", notify.to_str().unwrap()]);
    host.wait_for(10, "registration", |ev| registered(ev) == 1);
    host.run_for(Duration::from_millis(300));
    let now = host.clock.now();
    host.monitor.notify(now, EventType::Stop, NotificationType::Revocable, vigil_core::Duration::from_secs(3)).unwrap();
    host.wait_for(5, "vote", |ev| ev.iter().any(|e| matches!(e, MonitorEvent::VoteResult { .. })));
    let v = host.events.iter().find(|e| matches!(e, MonitorEvent::VoteResult { .. })).unwrap();
    assert_eq!(
        v,
        &MonitorEvent::VoteResult {
            event_type: EventType::Stop,
            notification_type: NotificationType::Revocable,
            result: VoteResult::Reject,
            log_msg: bounded("standby not synced")
        }
    );
    // a notice: the same command exits 0 -> complete
    let now = host.clock.now();
    host.monitor
        .notify(now, EventType::LiveMigrateEnd, NotificationType::Irrevocable, vigil_core::Duration::from_secs(3))
        .unwrap();
    host.wait_for(5, "notice", |ev| ev.iter().filter(|e| matches!(e, MonitorEvent::VoteResult { .. })).count() == 2);
    assert!(matches!(
        host.events.iter().rev().find(|e| matches!(e, MonitorEvent::VoteResult { .. })),
        Some(MonitorEvent::VoteResult { result: VoteResult::Complete, .. })
    ));
}

#[test]
fn survives_host_disconnects_and_sends_exit_on_sigterm() {
    let t = TempDir::new("exit");
    let api = t.0.join("api.sock");
    let mut host = Host::new(&t.0.join("port.sock"));
    let mut g = start_guest(&t.0.join("port.sock"), &api, &[]);
    host.wait_for(10, "registration", |ev| registered(ev) == 1);
    host.drop_connection();
    // while no host is connected the agent is not blocked: its API still answers at once
    let mut app = UnixStream::connect(&api).unwrap();
    app.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    app.write_all(b"{\"op\":\"register\",\"name\":\"web\",\"interval_ms\":1000}\n").unwrap();
    let mut line = String::new();
    BufReader::new(app.try_clone().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("\"registered\""), "{line}");
    drop(app);
    host.wait_for(10, "re-registration after reconnect", |ev| registered(ev) == 2);
    host.run_for(Duration::from_millis(500));
    let pid = rustix::process::Pid::from_raw(g.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    host.wait_for(5, "exit", |ev| ev.iter().any(|e| matches!(e, MonitorEvent::Deregistered { .. })));
    assert!(host.events.iter().any(|e| e == &MonitorEvent::Deregistered { log_msg: bounded("Exiting...") }));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = g.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "agent did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}
