//! A drop-in for the reference guest: an application written to the reference library's binary protocol (the
//! client below encodes records by hand from the published header: 20-byte header, magic "FDFDA5A5", version 2,
//! revision 1, a 228-byte record, host byte order) registers with the real `vigil-guest`, and its health reaches
//! a real vigild's events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const RECORD: usize = 228;

struct App {
    s: UnixStream,
    seq: u32,
}

fn record(msg_type: u16, seq: u32, body: &[u8], version: u8) -> Vec<u8> {
    let mut r = vec![0u8; RECORD];
    r[..8].copy_from_slice(b"FDFDA5A5");
    r[8] = version;
    r[9] = 1;
    r[10..12].copy_from_slice(&msg_type.to_ne_bytes());
    r[12..16].copy_from_slice(&seq.to_ne_bytes());
    r[16..20].copy_from_slice(&(RECORD as u32).to_ne_bytes());
    r[20..20 + body.len()].copy_from_slice(body);
    r
}

fn u32s(vals: &[u32]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn cstr(s: &str, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

fn at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes(b[i..i + 4].try_into().unwrap())
}

impl App {
    fn connect(path: &Path) -> App {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        App { s, seq: 0 }
    }

    fn send(&mut self, msg_type: u16, body: &[u8]) {
        self.seq += 1;
        self.s.write_all(&record(msg_type, self.seq, body, 2)).unwrap();
    }

    /// INIT: name[40], interval, vote, shutdown, suspend, resume, action (2 = reboot).
    fn init(&mut self, name: &str, interval_ms: u32) {
        let mut body = cstr(name, 40);
        body.extend(u32s(&[interval_ms, 8, 5, 5, 5, 2]));
        self.send(0, &body);
    }

    /// The next record: (msg_type, body); `None` at end of stream.
    fn recv(&mut self) -> Option<(u16, Vec<u8>)> {
        let mut r = vec![0u8; RECORD];
        self.s.read_exact(&mut r).ok()?;
        assert_eq!(&r[..8], b"FDFDA5A5");
        assert_eq!((r[8], r[9]), (2, 1));
        assert_eq!(at(&r, 16), RECORD as u32);
        Some((u16::from_ne_bytes([r[10], r[11]]), r[20..].to_vec()))
    }

    fn recv_type(&mut self, t: u16) -> Vec<u8> {
        loop {
            let (got, body) = self.recv().expect("the agent closed the connection");
            if got == t {
                return body;
            }
        }
    }

    /// CHALLENGE_RESPONSE: response, health (1 healthy, 0 unhealthy), action, log_msg[192].
    fn answer(&mut self, nonce: u32, healthy: bool, log: &str) {
        let mut body = u32s(&[nonce, u32::from(healthy), 2]);
        body.extend(cstr(log, 192));
        self.send(4, &body);
    }
}

/// Answers every challenge for `secs` seconds.
fn answer_for(app: &mut App, secs: u64, healthy: bool, log: &str) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let c = app.recv_type(3);
        app.answer(at(&c, 0), healthy, log);
    }
}

#[test]
fn an_application_of_the_reference_library_registers_and_its_health_reaches_vigild() {
    let work = TempDir::new("refapi");
    let dir = work.path().join("qemu");
    let ports = work.path().join("ports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&ports).unwrap();
    let relay = Relay::start(&dir, &ports, "vm");
    let api = work.path().join("guest_heartbeat_api");
    let _agent =
        real_agent_with(&relay, work.path(), "vm", "exit 0", &["--reference-api-socket", api.to_str().unwrap()]);
    let d = Vigild::start(&dir, work.path(), &[]);
    d.wait_until(20, "the agent registered", |ev| count(ev, "registered") >= 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !api.exists() {
        assert!(Instant::now() < deadline, "no reference API socket");
        std::thread::sleep(Duration::from_millis(50));
    }

    // registration, after garbage before the magic
    let mut app = App::connect(&api);
    app.s.write_all(b"\x00\x01garbage FDFD").unwrap();
    app.init("db", 1000);
    let ack = app.recv_type(1);
    assert_eq!(at(&ack, 0), 1, "accepted");
    // challenged at its own interval (1 s; wide bounds for a shared machine)
    let c1 = app.recv_type(3);
    let t1 = Instant::now();
    app.answer(at(&c1, 0), true, "");
    // a record of another version is refused and does not derail the stream
    app.s.write_all(&record(4, 99, &u32s(&[1, 1, 2]), 1)).unwrap();
    let c2 = app.recv_type(3);
    let gap = t1.elapsed();
    assert!(gap >= Duration::from_millis(700) && gap <= Duration::from_millis(2500), "challenge gap {gap:?}");
    app.answer(at(&c2, 0), true, "");
    std::thread::sleep(Duration::from_secs(1));
    assert!(by_guest(&d.events(), "vm", "unhealthy").is_empty());

    // a reported failure reaches vigild with the application's reason and action
    answer_for(&mut app, 2, false, "db replica lag");
    d.wait_until(10, "unhealthy", |ev| !by_guest(ev, "vm", "unhealthy").is_empty());
    let ev = d.events();
    let u = by_guest(&ev, "vm", "unhealthy")[0].clone();
    assert!(u["log_msg"].as_str().unwrap().contains("db replica lag"), "{u}");
    assert_eq!(u["corrective_action"], "reboot");
    // recovery
    answer_for(&mut app, 2, true, "");
    d.wait_until(10, "recovered", |ev| !by_guest(ev, "vm", "recovered").is_empty());

    // a missed answer: after two intervals the reference's reason
    std::thread::sleep(Duration::from_millis(3500));
    d.wait_until(10, "unhealthy again", |ev| by_guest(ev, "vm", "unhealthy").len() >= 2);
    let ev = d.events();
    let u = by_guest(&ev, "vm", "unhealthy")[1].clone();
    assert!(u["log_msg"].as_str().unwrap().contains("Application db heartbeat timeout 2000 ms."), "{u}");
    answer_for(&mut app, 2, true, "");
    d.wait_until(10, "recovered again", |ev| by_guest(ev, "vm", "recovered").len() >= 2);

    // a vote reaches the application; its reject wins
    let socket = d.admin.clone();
    let voter = std::thread::spawn(move || {
        vigil_host::control::client::request(
            &socket,
            "POST",
            "/v1/guests/vm/vote",
            Some(r#"{"event_type":"live_migrate_begin"}"#),
            Duration::from_secs(60),
        )
    });
    let notify = loop {
        let (t, body) = app.recv().unwrap();
        match t {
            3 => app.answer(at(&body, 0), true, ""),
            5 => break body,
            other => panic!("unexpected record type {other}"),
        }
    };
    assert_eq!((at(&notify, 4), at(&notify, 8)), (9, 1), "live_migrate_begin (9), revocable (1)");
    let mut resp = u32s(&[at(&notify, 0), 9, 1, 2]);
    resp.extend(cstr("replication in progress", 192));
    app.send(6, &resp);
    let (code, body) = voter.join().unwrap().unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], "reject", "{v}");
    assert!(v["log_msg"].as_str().unwrap().contains("replication in progress"), "{v}");

    // FINAL: gone, without a fault
    app.send(2, &cstr("bye", 192));
    std::thread::sleep(Duration::from_secs(3));
    let unhealthy_before = by_guest(&d.events(), "vm", "unhealthy").len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(by_guest(&d.events(), "vm", "unhealthy").len(), unhealthy_before, "no fault after FINAL");

    // 16 applications at most: the 17th is refused cleanly
    let mut apps: Vec<App> = (0..16)
        .map(|i| {
            let mut a = App::connect(&api);
            a.init(&format!("app-{i}"), 5000);
            assert_eq!(at(&a.recv_type(1), 0), 1, "app {i} accepted");
            a
        })
        .collect();
    let mut extra = App::connect(&api);
    extra.init("app-16", 5000);
    assert_eq!(at(&extra.recv_type(1), 0), 0, "the 17th is refused");
    assert!(extra.recv().is_none(), "and its connection closed");
    apps.truncate(0);
}
