//! Telling a pause, a reboot or a shutdown from a hang with libvirt: a private libvirtd (its own sockets in a
//! temporary directory), a transient TCG domain running the static agent in a busybox initramfs, and vigild with
//! `--libvirt`. Suspend, resume, reset and destroy produce no `heartbeat_lost` and no corrective action; a frozen
//! VM and a killed agent are still losses within the bound; a panic with `pvpanic` is `crashed`. Everything is torn
//! down even when the test fails (no orphan QEMU, daemon or socket).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::libvirt::{vm_files, Libvirtd};
use common::vm::*;
use common::*;

const UUID: &str = "0c0ffee0-1111-4222-8333-444455556666";
const NAME: &str = "vigil-lifecycle-test";

fn qemu_pid() -> Option<rustix::process::Pid> {
    let s = std::fs::read_to_string(format!("/run/libvirt/qemu/{NAME}.pid")).ok()?;
    rustix::process::Pid::from_raw(s.trim().parse().ok()?)
}

#[test]
fn libvirt_pauses_reboots_and_shutdowns_are_not_hangs_and_a_real_hang_still_is() {
    let _serial = heavy();
    need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    let work = TempDir::new("lv");
    let dir = work.path().join("qemu");
    let (k, initramfs) = vm_files(work.path(), &dir, AGENT_AND_SHELL);
    let lv = Libvirtd::start(&work.path().join("libvirt"));
    let (cfg, marker) = marker_policy(work.path());
    let d = Vigild::start(&dir, work.path(), &["--config", cfg.to_str().unwrap(), "--libvirt", &lv.uri]);
    let console = dir.join("console.log");
    let tty = dir.join("tty.sock");
    let xml = format!(
        "<domain type='qemu'><name>{NAME}</name><uuid>{UUID}</uuid><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 quiet</cmdline></os><features><acpi/></features><on_crash>preserve</on_crash>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <serial type='file'><source path='{}'/><target port='0'/></serial>\
         <serial type='unix'><source mode='bind' path='{}'/><target port='1'/></serial>\
         <channel type='unix'><source mode='bind' path='{}'/><target type='virtio' name='cgcs.heartbeat'/></channel>\
         <panic model='isa'><address type='isa' iobase='0x505'/></panic><memballoon model='none'/></devices></domain>",
        k.display(),
        initramfs.display(),
        console.display(),
        tty.display(),
        dir.join(format!("cgcs.heartbeat.{UUID}.sock")).display(),
    );
    let xml_path = work.path().join("domain.xml");
    std::fs::write(&xml_path, xml).unwrap();
    let t = Instant::now();
    lv.must(&["create", xml_path.to_str().unwrap()]);
    let boot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_until(120, "the domain's agent registered", |ev| by_guest(ev, UUID, "registered").len() == 1);
    }));
    if boot.is_err() {
        panic!("VM console:\n{}", std::fs::read_to_string(&console).unwrap_or_default());
    }
    println!("libvirt: create -> registered {} ms", t.elapsed().as_millis());
    std::thread::sleep(Duration::from_secs(2));
    let lost = |d: &Vigild| by_guest(&d.events(), UUID, "heartbeat_lost").len();
    let heartbeats =
        |d: &Vigild| admin(d, "GET", &format!("/v1/guests/{UUID}"), None).1["heartbeats"].as_u64().unwrap_or(0);

    // suspend 10 s, resume: no loss; heartbeats again within an interval
    lv.must(&["suspend", NAME]);
    d.wait_until(10, "paused", |ev| !by_guest(ev, UUID, "paused").is_empty());
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(lost(&d), 0, "a suspended domain is not lost");
    let before = heartbeats(&d);
    let t = Instant::now();
    lv.must(&["resume", NAME]);
    while heartbeats(&d) == before {
        assert!(t.elapsed() < Duration::from_secs(10), "no heartbeat after the resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("libvirt: resume -> next heartbeat {} ms", t.elapsed().as_millis());

    // reset: rebooting, registered again, no loss
    let t = Instant::now();
    lv.must(&["reset", NAME]);
    d.wait_until(10, "rebooting", |ev| !by_guest(ev, UUID, "rebooting").is_empty());
    d.wait_until(120, "registered after the reset", |ev| by_guest(ev, UUID, "registered").len() == 2);
    println!("libvirt: reset -> registered {} ms", t.elapsed().as_millis());
    assert_eq!(lost(&d), 0);
    assert!(!marker.exists(), "no corrective action for a suspend or a reset");
    std::thread::sleep(Duration::from_secs(2));

    // the VM frozen behind libvirt's back (no event): lost within the bound
    let pid = qemu_pid().expect("libvirt's pid file for the domain");
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    d.wait_until(10, "loss of the frozen VM", |ev| by_guest(ev, UUID, "heartbeat_lost").len() == 1);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let ev = d.events();
    let l = by_guest(&ev, UUID, "heartbeat_lost")[0];
    println!(
        "libvirt: hung VM lost {} ms after its last heartbeat (bound 1500 ms)",
        event_ms(&l["time"]) - event_ms(&l["last_heartbeat"])
    );
    d.wait_until(30, "recovered", |ev| by_guest(ev, UUID, "recovered").len() == 1);

    // the agent killed inside the guest: lost within the bound
    let mut shell = UnixStream::connect(&tty).unwrap();
    shell.write_all(b"\nkill -9 $(pidof vigil-guest)\n").unwrap();
    d.wait_until(15, "loss of the killed agent", |ev| by_guest(ev, UUID, "heartbeat_lost").len() == 2);
    let ev = d.events();
    let l = by_guest(&ev, UUID, "heartbeat_lost")[1];
    println!(
        "libvirt: killed agent lost {} ms after its last heartbeat (bound 1500 ms)",
        event_ms(&l["time"]) - event_ms(&l["last_heartbeat"])
    );

    // a panic with pvpanic: crashed
    shell.write_all(b"echo c > /proc/sysrq-trigger\n").unwrap();
    d.wait_until(30, "crashed", |ev| !by_guest(ev, UUID, "crashed").is_empty());

    // destroy: stopped, never a loss
    let lost_before = lost(&d);
    lv.must(&["destroy", NAME]);
    d.wait_until(10, "stopped", |ev| !by_guest(ev, UUID, "stopped").is_empty());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lost(&d), lost_before, "a destroyed domain is not lost");
    let actions = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(actions.lines().all(|l| !l.contains("stopped")), "{actions}");
}
