//! The control plane end to end: a real vigild, real guest agents (`vigil-guest`, with notification commands)
//! behind QEMU-like relays, simulated guests, and the admin API over its UNIX socket. Time bounds are wide and
//! semantic (a vote ends by its own timeout; a maintenance window by its length).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn votes_and_notices_reach_real_guests_and_come_back_with_their_answers() {
    let work = TempDir::new("votes");
    let dir = work.path().join("qemu");
    let ports = work.path().join("ports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&ports).unwrap();
    let r_yes = Relay::start(&dir, &ports, "yes");
    let r_no = Relay::start(&dir, &ports, "no");
    let r_slow = Relay::start(&dir, &ports, "slow");
    let r_gone = Relay::start(&dir, &ports, "gone");
    let _a = real_agent(&r_yes, work.path(), "yes", "exit 0");
    let _b = real_agent(&r_no, work.path(), "no", "echo standby not synced; exit 1");
    let _c = real_agent(&r_slow, work.path(), "slow", "sleep 100");
    let _d = real_agent(&r_gone, work.path(), "gone", "sleep 100");
    let d = Vigild::start(&dir, work.path(), &[]);
    d.wait_until(30, "four agents registered", |ev| count(ev, "registered") >= 4);

    // accepted, with the round trip printed
    let t = Instant::now();
    let (code, v) = admin(&d, "POST", "/v1/guests/yes/vote", Some(r#"{"event_type":"stop"}"#));
    let rtt = t.elapsed();
    assert_eq!(code, 200, "{v}");
    assert_eq!((v["guest"].as_str(), v["result"].as_str()), (Some("yes"), Some("accept")), "{v}");
    assert_eq!(v["notification_type"], "revocable", "stop can be refused: a vote by default");
    println!("vote round trip through a real agent and its notification command: {} ms", rtt.as_millis());

    // rejected by the guest's notification command, with its reason
    let (code, v) = admin(&d, "POST", "/v1/guests/no/vote", Some(r#"{"event_type":"live_migrate_begin"}"#));
    assert_eq!(code, 200, "{v}");
    assert_eq!((v["result"].as_str(), v["log_msg"].as_str()), (Some("reject"), Some("standby not synced")), "{v}");

    // a notice the guest's command never answers: the agent says `timeout` one second before the host's
    // deadline (resume_notice_secs: 14 s by default); never a silent proceed
    let (code, v) = admin(
        &d,
        "POST",
        "/v1/guests/slow/notify",
        Some(r#"{"event_type":"unpause","notification_type":"irrevocable"}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["result"], "timeout", "{v}");

    // the connection to the guest ends while it decides: `error`
    let socket = d.admin.clone();
    let voter = std::thread::spawn(move || {
        vigil_host::control::client::request(
            &socket,
            "POST",
            "/v1/guests/gone/vote",
            Some(r#"{"event_type":"reboot"}"#),
            Duration::from_secs(60),
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    r_gone.cut();
    let (code, body) = voter.join().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, v["result"].as_str()), (200, Some("error")), "{v}");

    // refusals: unknown guest, malformed body, unknown event, a busy guest's second vote
    assert_eq!(admin(&d, "POST", "/v1/guests/nobody/vote", Some(r#"{"event_type":"stop"}"#)).0, 404);
    let (code, v) = admin(&d, "POST", "/v1/guests/yes/vote", Some("{not json"));
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("bad request body"), "{v}");
    assert_eq!(admin(&d, "POST", "/v1/guests/yes/vote", Some(r#"{"event_type":"explode"}"#)).0, 400);
    assert_eq!(admin(&d, "GET", "/v1/nothing", None).0, 404);

    // the vote_result events were written too
    let results: Vec<String> =
        d.events_of("vote_result").iter().map(|e| format!("{}:{}", e["guest"], e["result"])).collect();
    for want in ["\"yes\":\"accept\"", "\"no\":\"reject\"", "\"slow\":\"timeout\"", "\"gone\":\"error\""] {
        assert!(results.iter().any(|r| r == want), "{want} missing from {results:?}");
    }

    // the CLI speaks the same API
    let out = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(["vote", "yes", "reboot", "--admin-socket"])
        .arg(&d.admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"result\":\"accept\""));
}

#[test]
fn a_guest_that_is_not_heartbeating_gets_an_immediate_answer_and_maintenance_withholds_its_loss() {
    let work = TempDir::new("maint");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    // two simulated guests at 500 ms; one stops answering 4 s after the simulator starts
    let _s = sim(&dir, &["--guests", "2", "--hang", "1", "--interval-ms", "500", "--fail-after-secs", "4"]);
    std::thread::sleep(Duration::from_millis(300));
    let d = Vigild::start(&dir, work.path(), &[]);
    d.wait_until(15, "registered", |ev| count(ev, "registered") >= 2);
    let (code, v) =
        admin(&d, "POST", "/v1/guests/sim-hang-00000/maintenance", Some(r#"{"secs": 20, "reason": "kernel upgrade"}"#));
    assert_eq!(code, 200, "{v}");
    let (code, g) = admin(&d, "GET", "/v1/guests/sim-hang-00000", None);
    assert_eq!((code, g["maintenance_reason"].as_str()), (200, Some("kernel upgrade")), "{g}");
    assert_eq!(admin(&d, "POST", "/v1/guests/sim-hang-00000/maintenance", Some(r#"{"secs": 0}"#)).0, 400);
    assert_eq!(admin(&d, "POST", "/v1/guests/nobody/maintenance", Some(r#"{"secs": 5}"#)).0, 404);

    // it hangs inside the window (wait until vigild sees it lost: a loaded machine may take a while): no loss
    // reported, and a vote is answered at once with why
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin(&d, "GET", "/v1/guests/sim-hang-00000", None).1["state"] != "lost" {
        assert!(Instant::now() < deadline, "the hung guest was never seen lost");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(by_guest(&d.events(), "sim-hang-00000", "heartbeat_lost").is_empty(), "withheld during maintenance");
    let t = Instant::now();
    let (code, v) = admin(&d, "POST", "/v1/guests/sim-hang-00000/vote", Some(r#"{"event_type":"stop"}"#));
    assert_eq!((code, v["result"].as_str(), v["state"].as_str()), (409, Some("not_heartbeating"), Some("lost")), "{v}");
    assert!(t.elapsed() < Duration::from_secs(5), "answered at once, not after a timeout");

    // the window expires with the guest still lost: reported then
    d.wait_until(30, "the loss reported after the window", |ev| {
        !by_guest(ev, "sim-hang-00000", "heartbeat_lost").is_empty()
    });
    let ev = d.events();
    let m: Vec<&str> =
        by_guest(&ev, "sim-hang-00000", "maintenance").iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(m, ["started", "expired"]);
    assert!(by_guest(&ev, "sim-ok-00001", "heartbeat_lost").is_empty());
}

#[test]
fn metrics_pass_promtool_and_the_socket_refuses_other_users() {
    let work = TempDir::new("metrics");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let _s = sim(&dir, &["--guests", "3", "--interval-ms", "200", "--garbage", "1", "--fail-after-secs", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let d = Vigild::start(&dir, work.path(), &[]);
    d.wait_until(15, "registered", |ev| count(ev, "registered") >= 3);
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = admin(&d, "POST", "/v1/guests/sim-ok-00001/vote", Some(r#"{"event_type":"pause"}"#));
    assert_eq!(code, 200);
    let (code, text) =
        vigil_host::control::client::request(&d.admin, "GET", "/metrics", None, Duration::from_secs(30)).unwrap();
    assert_eq!(code, 200);
    for name in [
        "vigil_guests{state=\"heartbeating\"} 3",
        "vigil_heartbeats_total",
        "vigil_votes_total{result=\"accept\"} 1",
        "vigil_protocol_errors_total{kind=\"decode\"}",
        "vigil_heartbeat_round_trip_seconds_bucket",
        "vigil_loop_pass_seconds_count",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let promtool = which("promtool").expect("promtool not found: install Debian's prometheus (scripts/test.sh does)");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // mode 0660, owned by root: another user cannot even connect
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    use std::os::unix::process::CommandExt;
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket"])
        .arg(&d.admin)
        .arg("http://localhost/v1/guests")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("curl");
    assert!(!out.status.success(), "nobody must not reach the admin API: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000", "refused at connect");
}

#[test]
fn thousands_of_idle_tcp_connections_neither_slow_the_unix_socket_nor_the_guests_and_are_closed() {
    let _serial = heavy();
    let work = TempDir::new("idle");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, "a-long-enough-admin-token\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _s = sim(&dir, &["--guests", "50", "--interval-ms", "300"]);
    std::thread::sleep(Duration::from_millis(300));
    let args = ["--admin-tcp", &addr, "--admin-token-file", token.to_str().unwrap()];
    let d = Vigild::start(&dir, work.path(), &args);
    d.wait_until(15, "registered", |ev| count(ev, "registered") >= 50);
    let fds_base = d.fds_settle_to(0);
    // a local user opens 3,000 connections to the TCP port and sends nothing
    let mut idle = Vec::new();
    let mut refused_in_a_row = 0;
    while idle.len() < 3000 && refused_in_a_row < 20 {
        match std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(50)) {
            Ok(c) => {
                idle.push(c);
                refused_in_a_row = 0;
            }
            Err(_) => refused_in_a_row += 1, // the kernel's backlog is full
        }
    }
    let opened = idle.len();
    // held for 20 s: the UNIX socket answers at once all along, and vigild's descriptors stay bounded
    let (mut worst, mut fds_max) = (Duration::ZERO, 0);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let t = Instant::now();
        let (code, _) =
            vigil_host::control::client::request(&d.admin, "GET", "/healthz", None, Duration::from_secs(10)).unwrap();
        assert_eq!(code, 200);
        worst = worst.max(t.elapsed());
        fds_max = fds_max.max(d.proc.open_fds());
        std::thread::sleep(Duration::from_millis(250));
    }
    // accepted idle connections were closed by vigild (EOF on our side)
    use std::io::Read;
    let mut closed = 0;
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        if matches!(c.read(&mut [0u8; 1]), Ok(0)) {
            closed += 1;
        }
    }
    println!(
        "{opened} idle TCP connections opened; /healthz on the UNIX socket: worst {} ms; vigild descriptors: {fds_base} \
         before, at most {fds_max} during; {closed} closed by vigild within 20 s",
        worst.as_millis()
    );
    assert!(worst < Duration::from_secs(2), "/healthz took {worst:?}");
    assert!(fds_max <= fds_base + 64 + 8, "descriptors bounded by the TCP cap (64): {fds_base} -> {fds_max}");
    assert!(closed >= 64, "idle connections are closed (at least the first 64 accepted): {closed}");
    assert_eq!(count(&d.events(), "heartbeat_lost"), 0, "no guest lost");
    drop(idle);
    assert!(d.fds_settle_to(fds_base + 2) <= fds_base + 2, "back to where it was");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(name)).find(|p| p.exists())
}
