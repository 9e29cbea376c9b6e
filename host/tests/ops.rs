//! vigild operations end to end: corrective commands, SIGHUP reload, systemd notification, `vigild status`.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn corrective_command_runs_for_a_lost_guest_with_its_exit_status_reported() {
    let work = TempDir::new("act");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = work.path().join("actions.txt");
    let cfg = work.path().join("vigild.toml");
    std::fs::write(
        &cfg,
        format!(
            "[defaults]\npolicy = \"command\"\ncommands = {{ reboot = [\"sh\", \"-c\", \"echo $0 $1 >> {}\", \"{{guest}}\", \"{{kind}}\"] }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let _s = sim(&dir, &["--guests", "2", "--hang", "1", "--interval-ms", "300", "--fail-after-secs", "2"]);
    std::thread::sleep(Duration::from_millis(200));
    let d = Vigild::start(&dir, work.path(), &["--config", cfg.to_str().unwrap()]);
    d.wait_until(15, "action finished", |ev| count(ev, "action") >= 1);
    let a = &d.events_of("action")[0];
    assert_eq!(a["guest"], "sim-hang-00000");
    assert_eq!(a["trigger"], "heartbeat_lost");
    assert_eq!(a["exit_code"], 0);
    let argv: Vec<&str> = a["argv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(argv[3..], ["sim-hang-00000", "heartbeat_lost"], "placeholders filled, no shell string built");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "sim-hang-00000 heartbeat_lost");
}

#[test]
fn sighup_reloads_the_configuration() {
    let work = TempDir::new("hup");
    let dir = work.path().join("qemu");
    let other = work.path().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let cfg = work.path().join("vigild.toml");
    std::fs::write(&cfg, "").unwrap();
    let extra = ScriptedGuest::start(&other, "named-in-config", 300);
    let d = Vigild::start(&dir, work.path(), &["--config", cfg.to_str().unwrap()]);
    d.wait_ready();
    assert_eq!(count(&d.events(), "registered"), 0);
    std::fs::write(&cfg, format!("[[guest]]\nid = \"db-1\"\nsocket = \"{}\"\n", extra.path.display())).unwrap();
    let pid = rustix::process::Pid::from_raw(d.proc.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    d.wait_until(10, "configured guest registered", |ev| by_guest(ev, "db-1", "registered").len() == 1);
}

#[test]
fn tells_systemd_ready_and_pings_the_watchdog() {
    let work = TempDir::new("sd");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = work.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(["run", "--log", "error", "--events", "-", "--watch"])
        .arg(&dir)
        .arg("--admin-socket")
        .arg(work.path().join("admin.sock"))
        .arg("--status-file")
        .arg(work.path().join("status.json"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _p = Proc(child);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.iter().filter(|m: &&String| m.as_str() == "WATCHDOG=1").count() < 3 {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got.iter().find(|m| m.starts_with("READY")).map(String::as_str), Some("READY=1"), "{got:?}");
}

#[test]
fn status_command_summarises_a_running_daemon() {
    let work = TempDir::new("st");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let _s = sim(&dir, &["--guests", "4", "--hang", "1", "--interval-ms", "300", "--fail-after-secs", "1"]);
    std::thread::sleep(Duration::from_millis(200));
    let d = Vigild::start(&dir, work.path(), &[]);
    d.wait_until(10, "loss", |ev| count(ev, "heartbeat_lost") == 1);
    std::thread::sleep(Duration::from_millis(2200));
    let out =
        Command::new(env!("CARGO_BIN_EXE_vigild")).args(["status", "--status-file"]).arg(&d.status).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 guests: 3 heartbeating, 1 lost, 0 awaiting init"), "{text}");
    assert!(text.contains("sim-hang-00000") && text.contains("heartbeat_lost"), "{text}");
    let missing = Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(["status", "--status-file", "/nonexistent/s.json"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("is vigild running?"));
}
