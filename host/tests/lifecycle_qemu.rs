//! Telling a pause, a reboot or a crash from a hang, on a real VM under plain QEMU: vigild reads the VM's QMP
//! socket (`--qmp-pattern`), the test drives QEMU through a second QMP socket and acts inside the VM through a
//! shell on its second serial port. Pauses and resets produce no `heartbeat_lost` and no corrective action; a hang
//! the hypervisor did not cause (QEMU frozen, the agent killed) is still a loss within the bound; a kernel panic
//! (`pvpanic`) is `crashed` at once. Time bounds are wide (a TCG VM on a shared machine); the times are printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::vm::*;
use common::*;

fn heartbeats(d: &Vigild) -> u64 {
    admin(d, "GET", "/v1/guests/vm-0002", None).1["heartbeats"].as_u64().unwrap_or(0)
}

#[test]
fn pauses_resets_and_crashes_are_not_hangs_and_a_real_hang_still_is() {
    let _serial = heavy();
    let qemu = need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    let (kernel, kver) = kernel();
    let work = TempDir::new("lc");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let initramfs = build_initramfs(work.path(), &build_agent(), &kver, AGENT_AND_SHELL);
    let (cfg, marker) = marker_policy(work.path());
    let d = Vigild::start(
        &dir,
        work.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--qmp-pattern",
            "qmp.*.sock",
            "--backoff-min-ms",
            "200",
            "--backoff-max-ms",
            "1000",
        ],
    );
    let console = work.path().join("console.log");
    let tty = work.path().join("tty.sock");
    let ctl = work.path().join("ctl.qmp");
    let child = plain_qemu(&qemu, &kernel, &initramfs, &console, &tty)
        .args(["-device", "pvpanic-pci"])
        .arg("-chardev")
        .arg(format!("socket,id=hb,path={},server=on,wait=off", dir.join("cgcs.heartbeat.vm-0002.sock").display()))
        .args(["-device", "virtserialport,chardev=hb,name=cgcs.heartbeat"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", dir.join("qmp.vm-0002.sock").display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", ctl.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let mut vm = Proc(child);
    let t_boot = Instant::now();
    let boot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_until(120, "the VM's agent registered", |ev| by_guest(ev, "vm-0002", "registered").len() == 1);
    }));
    if boot.is_err() {
        panic!("VM console:\n{}", std::fs::read_to_string(&console).unwrap_or_default());
    }
    println!("boot to registered: {} ms", t_boot.elapsed().as_millis());
    let mut q = Qmp::connect(&ctl);
    std::thread::sleep(Duration::from_secs(2));
    let lost = |d: &Vigild| by_guest(&d.events(), "vm-0002", "heartbeat_lost").len();

    // 1. paused for 5 s (the loss bound is 1.5 s): no loss; heartbeats again soon after the resume
    q.cmd("stop");
    d.wait_until(10, "paused", |ev| !by_guest(ev, "vm-0002", "paused").is_empty());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lost(&d), 0, "a paused VM is not lost");
    let before = heartbeats(&d);
    let t = Instant::now();
    q.cmd("cont");
    while heartbeats(&d) == before {
        assert!(t.elapsed() < Duration::from_secs(10), "no heartbeat after the resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("resume -> next heartbeat: {} ms", t.elapsed().as_millis());
    d.wait_until(10, "resumed", |ev| !by_guest(ev, "vm-0002", "resumed").is_empty());

    // 2. reset: rebooting, then registered again, no loss
    let t = Instant::now();
    q.cmd("system_reset");
    d.wait_until(10, "rebooting", |ev| !by_guest(ev, "vm-0002", "rebooting").is_empty());
    d.wait_until(120, "registered after the reset", |ev| by_guest(ev, "vm-0002", "registered").len() == 2);
    println!("reset -> registered: {} ms", t.elapsed().as_millis());
    assert_eq!(lost(&d), 0, "a rebooting VM is not lost");
    assert!(!marker.exists(), "no corrective action for a pause or a reset");
    std::thread::sleep(Duration::from_secs(2));

    // 3. a hang the hypervisor did not cause (QEMU itself frozen: no QMP event): lost within the bound
    let pid = rustix::process::Pid::from_raw(vm.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    d.wait_until(10, "loss of the frozen VM", |ev| by_guest(ev, "vm-0002", "heartbeat_lost").len() == 1);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let ev = d.events();
    let l = by_guest(&ev, "vm-0002", "heartbeat_lost")[0];
    println!(
        "hung VM: loss {} ms after the last heartbeat (bound 1500 ms)",
        event_ms(&l["time"]) - event_ms(&l["last_heartbeat"])
    );
    d.wait_until(30, "recovered", |ev| by_guest(ev, "vm-0002", "recovered").len() == 1);

    // 4. the agent killed inside the guest: lost within the bound
    let mut shell = UnixStream::connect(&tty).unwrap();
    shell.write_all(b"\nkill -9 $(pidof vigil-guest)\n").unwrap();
    d.wait_until(15, "loss of the killed agent", |ev| by_guest(ev, "vm-0002", "heartbeat_lost").len() == 2);
    let ev = d.events();
    let l = by_guest(&ev, "vm-0002", "heartbeat_lost")[1];
    println!(
        "killed agent: loss {} ms after the last heartbeat (bound 1500 ms)",
        event_ms(&l["time"]) - event_ms(&l["last_heartbeat"])
    );
    // the command runs on a worker thread after the event is written: wait (bounded) for its line
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut actions = String::new();
    while Instant::now() < deadline {
        actions = std::fs::read_to_string(&marker).unwrap_or_default();
        if actions.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(actions.lines().count(), 2, "one corrective action per real loss: {actions}");

    // 5. a kernel panic with pvpanic: crashed at once
    shell.write_all(b"echo c > /proc/sysrq-trigger\n").unwrap();
    let t = Instant::now();
    d.wait_until(20, "crashed", |ev| !by_guest(ev, "vm-0002", "crashed").is_empty());
    println!("panic -> crashed: {} ms", t.elapsed().as_millis());
    let _ = vm.0.kill();
    let _ = vm.0.wait();
}
