//! The guest-image author guide's clients, as a reader would use them: extracted from `docs/guest-guide.md`, the
//! Python one run with python3 and the C one built with cc, each against a real `vigil-guest` and a real vigild
//! (through a user-space relay standing in for the virtio-serial channel). Each registers, answers healthy, then
//! unhealthy with "database down": vigild reports `unhealthy` with that reason for the guest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::vm::which;
use common::*;

/// The code block after `<!-- test: NAME -->` in the guide.
fn snippet(name: &str) -> String {
    let guide =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guest-guide.md"))
            .unwrap();
    let marker = format!("<!-- test: {name} -->");
    let after = &guide[guide.find(&marker).unwrap_or_else(|| panic!("{marker} missing")) + marker.len()..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("\n```").unwrap() + 1].to_string()
}

fn run_client(program: &std::path::Path, args: &[&str], label: &str) {
    let _serial = heavy();
    let work = TempDir::new(label);
    let dir = work.path().join("sockets");
    let ports = work.path().join("ports");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&ports).unwrap();
    let d = Vigild::start(&dir, work.path(), &[]);
    let relay = Relay::start(&dir, &ports, "guide-vm");
    let _agent = real_agent(&relay, work.path(), "guide", "exit 0");
    d.wait_until(30, "the VM registered", |ev| count(ev, "registered") == 1);
    let api = work.path().join("guide-api.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !api.exists() {
        assert!(std::time::Instant::now() < deadline, "the agent's API socket did not appear");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut cmd = Command::new(program);
    cmd.args(args).arg(&api).args(["db", "2"]).stdout(Stdio::null()).stderr(Stdio::null());
    let _client = Proc(cmd.spawn().unwrap());
    d.wait_until(30, "unhealthy with the application's reason", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "unhealthy" && e["log_msg"].as_str().is_some_and(|m| m.contains("database down")))
    });
    let ev = d.events();
    let u = ev.iter().find(|e| e["kind"] == "unhealthy").unwrap();
    assert_eq!(u["corrective_action"], "reboot", "{u}");
    assert_eq!(count(&ev, "heartbeat_lost"), 0);
}

#[test]
fn the_python_client_of_the_guide_works_as_written() {
    let python = which("python3").expect("python3 not found");
    let work = TempDir::new("py");
    let file = work.path().join("client.py");
    std::fs::write(&file, snippet("client.py")).unwrap();
    run_client(&python, &[file.to_str().unwrap()], "guide-py");
}

#[test]
fn the_c_client_of_the_guide_builds_and_works_as_written() {
    let cc = which("cc").expect("cc not found: install Debian's gcc");
    let work = TempDir::new("c");
    let src = work.path().join("client.c");
    std::fs::write(&src, snippet("client.c")).unwrap();
    let bin = work.path().join("client");
    let out = Command::new(cc).args(["-O2", "-Wall", "-Werror", "-o"]).arg(&bin).arg(&src).output().unwrap();
    assert!(out.status.success(), "cc:\n{}", String::from_utf8_lossy(&out.stderr));
    run_client(&bin, &[], "guide-c");
}
