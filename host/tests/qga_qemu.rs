//! Agentless guests on plain QEMU (issue #22, direct mode): vigild connects to the guest agent's own chardev socket
//! (`--qga-pattern 'qga.*.sock'`) of a TCG VM that runs Debian's real `qemu-ga` and no Vigil agent, and reads the
//! VM's QMP socket (`--qmp-pattern`) for its lifecycle.
//!
//! - healthy: watched, no fault; a QMP `stop` longer than the loss bound: `paused`, no loss; `cont`: `resumed`.
//! - `qemu-ga` stopped (SIGSTOP, through a shell on the second serial port): `heartbeat_lost`, `probe: "qemu-ga"`;
//!   continued: `recovered` (vigild resynchronises with `0xFF` + `guest-sync-delimited` after the unanswered probes,
//!   skipping whatever came before the agent's `0xFF`).
//! - `qemu-ga` killed and started again: resynchronised, no false fault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::vm::*;
use common::*;

const ID: &str = "vm-qga";

/// `qemu-ga` on the port named `org.qemu.guest_agent.0` (`/usr/local/bin/start-qga` starts it again), then a shell
/// on the second serial port.
const TAIL: &str = "mkdir -p /usr/local/bin /run/qga\n\
                    printf '#!/bin/sh\\nfor p in /sys/class/virtio-ports/*; do [ \"$(cat $p/name)\" = \
                    org.qemu.guest_agent.0 ] && QGA=/dev/$(basename $p); done\\n/usr/sbin/qemu-ga -m virtio-serial \
                    -p $QGA -t /run/qga &\\n' > /usr/local/bin/start-qga\n\
                    chmod +x /usr/local/bin/start-qga\n/usr/local/bin/start-qga\necho vigil-vm: qemu-ga started\n\
                    while true; do sh </dev/ttyS1 >/dev/ttyS1 2>&1; done\n";

#[test]
fn a_plain_qemu_guest_with_only_qemu_ga_is_watched_on_its_agent_socket() {
    let _serial = heavy();
    let qemu = need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    let (kernel, kver) = kernel();
    let work = TempDir::new("qgaq");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let initramfs = build_initramfs_with(work.path(), &build_agent(), &kver, TAIL, &qemu_ga_files());
    let config = work.path().join("vigild.toml");
    std::fs::write(&config, "[qga]\ninterval_ms = 1000\n").unwrap();
    let args = ["--config", config.to_str().unwrap(), "--qga-pattern", "qga.*.sock", "--qmp-pattern", "qmp.*.sock"];
    let d = Vigild::start(&dir, work.path(), &args);
    let console = work.path().join("console.log");
    let tty = work.path().join("tty.sock");
    let ctl = work.path().join("ctl.qmp");
    let child = plain_qemu(&qemu, &kernel, &initramfs, &console, &tty)
        .arg("-chardev")
        .arg(format!("socket,id=qga0,path={},server=on,wait=off", dir.join(format!("qga.{ID}.sock")).display()))
        .args(["-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", dir.join(format!("qmp.{ID}.sock")).display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", ctl.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let _vm = Proc(child);
    wait_console(&console, "qemu-ga started", 90);
    d.wait_until(60, "watching the agent socket", |ev| !by_guest(ev, ID, "watching").is_empty());
    std::thread::sleep(Duration::from_secs(5));
    let lost = |d: &Vigild| by_guest(&d.events(), ID, "heartbeat_lost").len();
    assert_eq!(lost(&d), 0, "booting is not a fault");

    // paused through QMP longer than the loss bound: no fault
    let mut q = Qmp::connect(&ctl);
    q.cmd("stop");
    d.wait_until(20, "paused", |ev| !by_guest(ev, ID, "paused").is_empty());
    std::thread::sleep(Duration::from_secs(5));
    q.cmd("cont");
    d.wait_until(20, "resumed", |ev| !by_guest(ev, ID, "resumed").is_empty());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lost(&d), 0, "a pause is not a fault");

    // the agent stopped, then continued
    let mut shell = UnixStream::connect(&tty).unwrap();
    shell.write_all(b"\nkill -STOP $(pidof qemu-ga)\n").unwrap();
    let t = Instant::now();
    d.wait_until(30, "heartbeat_lost", |ev| !by_guest(ev, ID, "heartbeat_lost").is_empty());
    println!("qga direct: qemu-ga stopped -> heartbeat_lost in {} ms (interval 1 s)", t.elapsed().as_millis());
    let e = by_guest(&d.events(), ID, "heartbeat_lost")[0].clone();
    assert_eq!(e["probe"], "qemu-ga", "{e}");
    shell.write_all(b"kill -CONT $(pidof qemu-ga)\n").unwrap();
    d.wait_until(30, "recovered", |ev| !by_guest(ev, ID, "recovered").is_empty());

    // the agent restarted: resynchronised, no false fault
    shell.write_all(b"kill $(pidof qemu-ga); /usr/local/bin/start-qga\n").unwrap();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(lost(&d), 1, "a restarted agent is no hang");
}
