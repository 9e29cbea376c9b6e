//! Agentless guests with the real libvirt and Debian's real `qemu-ga` (issue #22): a TCG domain whose busybox
//! initramfs runs only `qemu-ga` (with its libraries), no Vigil agent; vigild with `--libvirt` and `[qga]`.
//!
//! - vigild finds the domain by its agent channel and watches it (`watching`); the agent still booting is no fault.
//! - `virsh suspend` for longer than the loss bound: `paused`, no `heartbeat_lost`; `virsh resume`: `resumed`.
//! - `qemu-ga` stopped in the guest (SIGSTOP, through a shell on the second serial port): `heartbeat_lost` with
//!   `probe: "qemu-ga"` at the second missed probe; continued (SIGCONT): `recovered`.
//! - `qemu-ga` killed and started again at once: libvirt resynchronises with it, no false fault.
//! - the opt-in health command (`[qga.health]`, `guest-exec`) starts failing: `unhealthy` with its first output line
//!   after the failure threshold; passes again: `recovered`.
//! - beside it, a domain running Vigil's agent (with the guest agent's channel too) is watched by its heartbeat
//!   alone, by the same vigild.
//! - the domain destroyed: `stopped`, and no loss.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::libvirt::{vm_files_with, Libvirtd};
use common::vm::*;
use common::*;

const UUID: &str = "0c0ffee0-9a9a-4222-8333-444455556666";
const NAME: &str = "vigil-qga";
const UUID_HB: &str = "0c0ffee0-9b9b-4222-8333-444455556666";
const NAME_HB: &str = "vigil-qga-hb";

/// The end of /init: with `vigil.mode=heartbeat` Vigil's agent; otherwise `qemu-ga` on the port named
/// `org.qemu.guest_agent.0` (`/usr/local/bin/start-qga` starts it again); then a shell on the second serial port.
const TAIL: &str = "case \"$(cat /proc/cmdline)\" in\n\
                    *vigil.mode=heartbeat*) /sbin/vigil-guest --name hb --interval-ms 500 --api-socket \
                    /run/vigil/guest.sock --no-reference-api & ;;\n\
                    *) mkdir -p /usr/local/bin /run/qga\n\
                    printf '#!/bin/sh\\nfor p in /sys/class/virtio-ports/*; do [ \"$(cat $p/name)\" = \
                    org.qemu.guest_agent.0 ] && QGA=/dev/$(basename $p); done\\n/usr/sbin/qemu-ga -m virtio-serial \
                    -p $QGA -t /run/qga &\\n' > /usr/local/bin/start-qga\n\
                    chmod +x /usr/local/bin/start-qga\n/usr/local/bin/start-qga\n\
                    echo vigil-vm: qemu-ga started ;;\nesac\n\
                    while true; do sh </dev/ttyS1 >/dev/ttyS1 2>&1; done\n";

fn domain_xml(name: &str, uuid: &str, k: &Path, initrd: &Path, console: &Path, tty: &Path, extra: &str) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>192</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 quiet {extra}</cmdline></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <serial type='file'><source path='{}'/><target port='0'/></serial>\
         <serial type='unix'><source mode='bind' path='{}'/><target port='1'/></serial>\
         <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>{}\
         <memballoon model='none'/></devices></domain>",
        k.display(),
        initrd.display(),
        console.display(),
        tty.display(),
        if extra.is_empty() {
            String::new()
        } else {
            let sock = tty.parent().unwrap().join(format!("cgcs.heartbeat.{uuid}.sock"));
            format!(
                "<channel type='unix'><source mode='bind' path='{}'/><target type='virtio' name='cgcs.heartbeat'/>\
                 </channel>",
                sock.display()
            )
        }
    )
}

#[test]
fn a_guest_with_only_qemu_ga_is_watched_through_libvirt_and_pauses_are_not_faults() {
    let _serial = heavy();
    need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    let work = TempDir::new("qga");
    let dir = work.path().join("qemu");
    let (k, initrd) = vm_files_with(work.path(), &dir, TAIL, &qemu_ga_files());
    let lv = Libvirtd::start(&work.path().join("libvirt"));
    let config = work.path().join("vigild.toml");
    std::fs::write(
        &config,
        "[qga]\ninterval_ms = 1000\ntimeout_ms = 500\n[qga.health]\n\
         command = [\"/bin/sh\", \"-c\", \"test ! -e /tmp/sick || { echo db down; exit 1; }\"]\n\
         interval_secs = 2\ntimeout_secs = 2\nfailure_threshold = 2\n",
    )
    .unwrap();
    let run = work.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let d = Vigild::start(&dir, &run, &["--config", config.to_str().unwrap(), "--libvirt", &lv.uri]);
    d.wait_ready();

    let console = work.path().join("console.log");
    let tty = dir.join("tty1.sock");
    let xml_path = work.path().join("q.xml");
    std::fs::write(&xml_path, domain_xml(NAME, UUID, &k, &initrd, &console, &tty, "")).unwrap();
    lv.must(&["create", xml_path.to_str().unwrap()]);
    let console_hb = work.path().join("console-hb.log");
    let xml_hb = work.path().join("hb.xml");
    let tty_hb = dir.join("tty1-hb.sock");
    std::fs::write(&xml_hb, domain_xml(NAME_HB, UUID_HB, &k, &initrd, &console_hb, &tty_hb, "vigil.mode=heartbeat"))
        .unwrap();
    lv.must(&["create", xml_hb.to_str().unwrap()]);
    wait_console(&console, "qemu-ga started", 90);
    d.wait_until(60, "watching the domain", |ev| !by_guest(ev, UUID, "watching").is_empty());
    let watching = &by_guest(&d.events(), UUID, "watching")[0].clone();
    assert_eq!((watching["protocol"].as_str(), watching["domain"].as_str()), (Some("qga"), Some(NAME)));
    // a few answered probes (1 s apart) before anything else
    std::thread::sleep(Duration::from_secs(6));
    assert!(by_guest(&d.events(), UUID, "heartbeat_lost").is_empty(), "booting is not a fault");

    // paused for longer than the loss bound (two missed probes, ~2.5 s): no fault
    lv.must(&["suspend", NAME]);
    d.wait_until(20, "paused", |ev| !by_guest(ev, UUID, "paused").is_empty());
    std::thread::sleep(Duration::from_secs(10));
    lv.must(&["resume", NAME]);
    d.wait_until(20, "resumed", |ev| !by_guest(ev, UUID, "resumed").is_empty());
    std::thread::sleep(Duration::from_secs(4));
    assert!(by_guest(&d.events(), UUID, "heartbeat_lost").is_empty(), "a pause is not a fault");

    // qemu-ga stopped inside the guest: lost at the second missed probe
    let mut shell = UnixStream::connect(&tty).unwrap();
    shell.write_all(b"\nkill -STOP $(pidof qemu-ga)\n").unwrap();
    let stopped = Instant::now();

    d.wait_until(60, "heartbeat_lost through qemu-ga", |ev| !by_guest(ev, UUID, "heartbeat_lost").is_empty());
    let detected = stopped.elapsed();
    let lost = by_guest(&d.events(), UUID, "heartbeat_lost")[0].clone();
    assert_eq!(lost["probe"], "qemu-ga", "{lost}");
    assert!(lost["consecutive_misses"].as_u64().unwrap() >= 2, "{lost}");
    println!("qga: {lost}");
    println!("qga: qemu-ga stopped -> heartbeat_lost in {} ms (interval 1 s, timeout 0.5 s)", detected.as_millis());
    // the bound: the second missed probe after the last answer, at most ~2.5 s; wide for a shared machine
    assert!(detected < Duration::from_secs(15), "{detected:?}");
    shell.write_all(b"kill -CONT $(pidof qemu-ga)\n").unwrap();
    d.wait_until(60, "recovered", |ev| !by_guest(ev, UUID, "recovered").is_empty());

    // qemu-ga killed and started again: libvirt resynchronises, no false fault
    let lost_so_far = by_guest(&d.events(), UUID, "heartbeat_lost").len();
    shell.write_all(b"kill $(pidof qemu-ga); /usr/local/bin/start-qga\n").unwrap();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(by_guest(&d.events(), UUID, "heartbeat_lost").len(), lost_so_far, "a restarted agent is no hang");

    // the health command fails from now: unhealthy after two failures, with its output; passes again: recovered
    let recovered_so_far = by_guest(&d.events(), UUID, "recovered").len();
    shell.write_all(b"touch /tmp/sick\n").unwrap();
    d.wait_until(60, "unhealthy", |ev| !by_guest(ev, UUID, "unhealthy").is_empty());
    let sick = by_guest(&d.events(), UUID, "unhealthy")[0].clone();
    assert_eq!(sick["log_msg"], "exit 1: db down", "{sick}");
    shell.write_all(b"rm /tmp/sick\n").unwrap();
    d.wait_until(60, "recovered from unhealthy", |ev| by_guest(ev, UUID, "recovered").len() > recovered_so_far);

    // side by side: the domain with Vigil's agent heartbeats, and is not watched through its guest agent
    let ev = d.events();
    assert!(!by_guest(&ev, UUID_HB, "registered").is_empty(), "the heartbeat guest registered");
    assert!(by_guest(&ev, UUID_HB, "watching").is_empty(), "Vigil's agent is the one watched");
    assert!(by_guest(&ev, UUID_HB, "heartbeat_lost").is_empty());

    // destroyed: stopped, never a loss
    lv.must(&["destroy", NAME]);
    d.wait_until(30, "stopped", |ev| !by_guest(ev, UUID, "stopped").is_empty());
    std::thread::sleep(Duration::from_secs(4));
    let ev = d.events();
    let timeline: Vec<String> = ev
        .iter()
        .filter(|e| e["guest"] == UUID)
        .map(|e| format!("{} {} {}", e["time"], e["kind"], e["reason"]))
        .collect();
    assert_eq!(by_guest(&ev, UUID, "heartbeat_lost").len(), 1, "only the real hang: {timeline:#?}");
}
