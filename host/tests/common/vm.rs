//! Real Linux VMs for tests: Debian's kernel, a busybox initramfs holding the static agent, QEMU.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn need(what: &str, path: Option<PathBuf>, install: &str) -> PathBuf {
    path.unwrap_or_else(|| panic!("{what} not found: install Debian's {install} (scripts/test.sh does)"))
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.exists())
}

/// The static agent, built for musl in its own target dir (so the test never waits on its own build's lock).
pub fn build_agent() -> PathBuf {
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

/// The last line of an /init that runs the agent as the VM's only job.
pub const AGENT_EXEC: &str =
    "exec /sbin/vigil-guest --name vm-test --interval-ms 500 --api-socket /run/vigil/guest.sock --no-reference-api\n";

/// The last lines of an /init that runs the agent in the background and a shell on the second serial port
/// (`/dev/ttyS1`), so a test can act inside the VM (kill the agent, crash the kernel).
pub const AGENT_AND_SHELL: &str =
    "/sbin/vigil-guest --name vm-test --interval-ms 500 --api-socket /run/vigil/guest.sock --no-reference-api &\n\
     while true; do sh </dev/ttyS1 >/dev/ttyS1 2>&1; done\n";

/// Debian's `qemu-ga` and every library it loads (from `ldd`), for an initramfs: (on this machine, in the image).
pub fn qemu_ga_files() -> Vec<(PathBuf, String)> {
    let qga = need("qemu-ga", Some(PathBuf::from("/usr/sbin/qemu-ga")).filter(|p| p.exists()), "qemu-guest-agent");
    let out = Command::new("ldd").arg(&qga).output().expect("ldd (libc-bin)");
    let mut files = vec![(qga, "/usr/sbin/qemu-ga".to_string())];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line.split("=>").last().unwrap_or("").trim().split(' ').next().unwrap_or("");
        if path.starts_with('/') {
            // the real file behind a symlink, installed under the name the loader looks for
            let real = std::fs::canonicalize(path).unwrap();
            files.push((real, path.to_string()));
        }
    }
    files
}

/// Debian's kernel in /boot and its version.
pub fn kernel() -> (PathBuf, String) {
    let kernel = std::fs::read_dir("/boot").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
    });
    let kernel = need("a kernel in /boot", kernel, "linux-image-cloud-amd64");
    let kver = kernel.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    (kernel, kver)
}

/// A gzip'd cpio initramfs: busybox, the virtio (console, block; and pvpanic) modules of `kver`, the agent, and an /init that
/// loads them and ends with `tail` (see [`AGENT_EXEC`], [`AGENT_AND_SHELL`]).
pub fn build_initramfs(work: &Path, agent: &Path, kver: &str, tail: &str) -> PathBuf {
    build_initramfs_with(work, agent, kver, tail, &[])
}

/// [`build_initramfs`] with more files: (a file on this machine, its path in the image).
pub fn build_initramfs_with(work: &Path, agent: &Path, kver: &str, tail: &str, extra: &[(PathBuf, String)]) -> PathBuf {
    let root = work.join("initramfs");
    for (src, dst) in extra {
        let to = root.join(dst.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src, &to).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
    for d in ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "lib/modules"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = need("busybox", which("busybox"), "busybox-static");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::fs::copy(agent, root.join("sbin/vigil-guest")).unwrap();
    // in dependency order (modinfo -F depends)
    let modules = [
        "virtio_ring",
        "virtio",
        "virtio_pci_legacy_dev",
        "virtio_pci_modern_dev",
        "virtio_pci",
        "virtio_console",
        "virtio_blk",
        "pvpanic",
        "pvpanic-pci",
        "pvpanic-mmio",
    ];
    let mod_root = Path::new("/lib/modules").join(kver).join("kernel/drivers");
    for m in modules {
        let sub = match m {
            "virtio_console" => "char",
            "virtio_blk" => "block",
            "pvpanic" | "pvpanic-pci" | "pvpanic-mmio" => "misc/pvpanic",
            _ => "virtio",
        };
        let src = mod_root.join(sub).join(format!("{m}.ko"));
        assert!(src.exists(), "{} missing (linux-image-cloud-amd64)", src.display());
        std::fs::copy(&src, root.join("lib/modules").join(format!("{m}.ko"))).unwrap();
    }
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\nfor m in {}; do insmod /lib/modules/$m.ko; done\n\
         for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/virtio-ports ] && break; sleep 1; done\n\
         echo vigil-vm: starting agent\n{tail}",
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

/// A QMP client for the test's own monitor socket.
pub struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    pub fn connect(path: &Path) -> Qmp {
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "QMP {}: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut q = Qmp { r: BufReader::new(s.try_clone().unwrap()), w: s };
        q.line(); // greeting
        q.cmd("qmp_capabilities");
        q
    }

    pub fn line(&mut self) -> Value {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap_or(Value::Null)
    }

    /// Runs a command; events that come before its answer are skipped.
    pub fn cmd(&mut self, name: &str) {
        writeln!(self.w, "{{\"execute\":\"{name}\"}}").unwrap();
        loop {
            let v = self.line();
            if v.get("return").is_some() {
                return;
            }
            assert!(v.get("error").is_none(), "{name}: {v}");
        }
    }
}

/// A plain QEMU TCG VM booting `kernel` + `initramfs`: the console to `console` (ttyS0), a shell's serial port on
/// the UNIX socket `tty` (ttyS1), no display, a virtio-serial bus; the caller adds its ports and QMP sockets.
pub fn plain_qemu(qemu: &Path, kernel: &Path, initramfs: &Path, console: &Path, tty: &Path) -> Command {
    let mut c = Command::new(qemu);
    c.args(["-m", "256", "-smp", "1", "-display", "none", "-monitor", "none", "-nodefaults"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("unix:{},server=on,wait=off", tty.display()))
        .args(["-device", "virtio-serial-pci"]);
    c
}

/// Waits until the VM's console shows `line`, or fails after `secs` showing the console.
pub fn wait_console(console: &Path, line: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !std::fs::read_to_string(console).unwrap_or_default().contains(line) {
        if Instant::now() > deadline {
            panic!(
                "{line:?} not on the console in {secs} s:\n{}",
                std::fs::read_to_string(console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
