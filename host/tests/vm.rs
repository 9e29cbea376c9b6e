//! The whole product, end to end, on a real virtio-serial port: a Linux VM (Debian's kernel under
//! `qemu-system-x86_64`, a busybox initramfs holding the static `vigil-guest`) with a `virtserialport` named
//! `cgcs.heartbeat`, exposed on the host as `cgcs.heartbeat.<id>.sock`, watched by the real `vigild`. No udev in the
//! VM: the agent finds its port through sysfs, opens the character device non-blocking, and registers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn need(what: &str, path: Option<PathBuf>, install: &str) -> PathBuf {
    path.unwrap_or_else(|| panic!("{what} not found: install Debian's {install} (scripts/test.sh does)"))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.exists())
}

/// The static agent, built for musl in its own target dir (so the test never waits on its own build's lock).
fn build_agent() -> PathBuf {
    let target_dir = workspace().join("target").join("vm-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "-p", "vigil-guest", "--bin", "vigil-guest", "--profile", "small"])
        .args(["--target", "x86_64-unknown-linux-musl"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the static agent failed (`rustup target add x86_64-unknown-linux-musl`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("x86_64-unknown-linux-musl/small/vigil-guest")
}

/// A gzip'd cpio initramfs: busybox, the virtio modules of `kver`, the agent, and an /init that starts it.
fn build_initramfs(work: &Path, agent: &Path, kver: &str) -> PathBuf {
    let root = work.join("initramfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "lib/modules"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = need("busybox", which("busybox"), "busybox-static");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::fs::copy(agent, root.join("sbin/vigil-guest")).unwrap();
    // in dependency order (modinfo -F depends)
    let modules =
        ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_console"];
    let mod_root = Path::new("/lib/modules").join(kver).join("kernel/drivers");
    for m in modules {
        let sub = if m == "virtio_console" { "char" } else { "virtio" };
        let src = mod_root.join(sub).join(format!("{m}.ko"));
        assert!(src.exists(), "{} missing (linux-image-cloud-amd64)", src.display());
        std::fs::copy(&src, root.join("lib/modules").join(format!("{m}.ko"))).unwrap();
    }
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\nfor m in {}; do insmod /lib/modules/$m.ko; done\n\
         for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/virtio-ports ] && break; sleep 1; done\n\
         echo vigil-vm: starting agent\nexec /sbin/vigil-guest --name vm-test --interval-ms 500 --api-socket /run/vigil/guest.sock\n",
        modules.join(" ")
    );
    std::fs::write(root.join("init"), init).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = work.join("initramfs.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}", root.display(), image.display()))
        .status()
        .unwrap();
    assert!(status.success(), "cpio/gzip failed (Debian's cpio)");
    image
}

#[test]
fn vigild_watches_a_real_linux_vm_over_virtio_serial() {
    let _serial = heavy();
    let qemu = need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    need("cpio", which("cpio"), "cpio");
    let kernel = std::fs::read_dir("/boot").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
    });
    let kernel = need("a kernel in /boot", kernel, "linux-image-cloud-amd64");
    let kver = kernel.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    let work = TempDir::new("vm");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let initramfs = build_initramfs(work.path(), &build_agent(), &kver);

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
