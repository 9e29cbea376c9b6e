//! The whole product, end to end, on a real virtio-serial port: a Linux VM (Debian's kernel under
//! `qemu-system-x86_64`, a busybox initramfs holding the static `vigil-guest`) with a `virtserialport` named
//! `cgcs.heartbeat`, exposed on the host as `cgcs.heartbeat.<id>.sock`, watched by the real `vigild`. No udev in the
//! VM: the agent finds its port through sysfs, opens the character device non-blocking, and registers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::vm::*;
use common::*;

#[test]
fn vigild_watches_a_real_linux_vm_over_virtio_serial() {
    let _serial = heavy();
    let qemu = need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    need("cpio", which("cpio"), "cpio");
    let (kernel, kver) = kernel();
    let work = TempDir::new("vm");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let initramfs = build_initramfs(work.path(), &build_agent(), &kver, AGENT_EXEC);

    let sock = dir.join("cgcs.heartbeat.vm-0001.sock");
    let d = Vigild::start(&dir, work.path(), &["--backoff-min-ms", "200", "--backoff-max-ms", "1000"]);
    let console = work.path().join("console.log");
    let child = Command::new(qemu)
        .args(["-m", "256", "-smp", "1", "-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!("socket,id=hb,path={},server=on,wait=off", sock.display()))
        .args(["-device", "virtserialport,chardev=hb,name=cgcs.heartbeat"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let mut vm = Proc(child);
    let boot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_until(120, "the VM's agent registered", |ev| by_guest(ev, "vm-0001", "registered").len() == 1);
    }));
    if boot.is_err() {
        panic!("VM console:\n{}", std::fs::read_to_string(&console).unwrap_or_default());
    }
    let ev = d.events();
    let r = by_guest(&ev, "vm-0001", "registered")[0];
    assert_eq!((r["name"].as_str(), r["interval_ms"].as_u64()), (Some("vm-test"), Some(500)));
    std::thread::sleep(Duration::from_secs(3));
    // freeze the VM: the socket stays open, the heartbeats stop
    let pid = rustix::process::Pid::from_raw(vm.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    d.wait_until(10, "heartbeat loss of the frozen VM", |ev| by_guest(ev, "vm-0001", "heartbeat_lost").len() == 1);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    d.wait_until(30, "recovery after the VM runs again", |ev| by_guest(ev, "vm-0001", "recovered").len() == 1);
    // the VM goes away: its socket disappears with QEMU, and the guest ends cleanly
    let _ = vm.0.kill();
    let _ = vm.0.wait();
    d.wait_until(10, "disconnected", |ev| by_guest(ev, "vm-0001", "disconnected").len() == 1);
    let console = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(console.contains("vigil-guest: port"), "the agent found its port itself:\n{console}");
}
