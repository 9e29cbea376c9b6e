//! A private libvirtd for tests: its own sockets in a temporary directory, its own virtlogd; every domain it runs
//! is destroyed and both daemons stopped on drop, even when the test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::vm::{build_agent, kernel, need, which};

/// A private libvirtd and its virtlogd.
pub struct Libvirtd {
    dir: PathBuf,
    pub uri: String,
}

impl Libvirtd {
    pub fn start(dir: &Path) -> Libvirtd {
        let libvirtd = need(
            "libvirtd",
            which("libvirtd").or_else(|| Some(PathBuf::from("/usr/sbin/libvirtd")).filter(|p| p.exists())),
            "libvirt-daemon-system",
        );
        let virtlogd = need(
            "virtlogd",
            which("virtlogd").or_else(|| Some(PathBuf::from("/usr/sbin/virtlogd")).filter(|p| p.exists())),
            "libvirt-daemon-system",
        );
        need("virsh", which("virsh"), "libvirt-clients");
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("libvirtd.conf");
        std::fs::write(
            &conf,
            format!("unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n", dir.display()),
        )
        .unwrap();
        let lv = Libvirtd {
            dir: dir.to_path_buf(),
            uri: format!("qemu+unix:///system?socket={}/libvirt-sock", dir.display()),
        };
        assert!(Command::new(virtlogd).args(["-d", "-p"]).arg(dir.join("virtlogd.pid")).status().unwrap().success());
        assert!(Command::new(libvirtd)
            .args(["-d", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("libvirtd.pid"))
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lv.virsh(&["list"]).0 {
            assert!(Instant::now() < deadline, "the private libvirtd did not answer in 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        lv
    }

    pub fn virsh(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("virsh").args(["-c", &self.uri]).args(args).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    pub fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.virsh(args);
        assert!(ok, "virsh {args:?}: {out}");
        out
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        let (_, names) = self.virsh(&["list", "--name"]);
        for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let _ = self.virsh(&["destroy", name]);
        }
        for pidfile in ["libvirtd.pid", "virtlogd.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(pidfile)) {
                if let Some(pid) = pid.trim().parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The kernel and an initramfs (busybox, the static agent, `tail` at the end of /init), readable by libvirt's
/// unprivileged QEMU user; `work` and `socket_dir` are opened to it too.
pub fn vm_files(work: &Path, socket_dir: &Path, tail: &str) -> (PathBuf, PathBuf) {
    vm_files_with(work, socket_dir, tail, &[])
}

/// [`vm_files`] with more files in the initramfs (see `build_initramfs_with`).
pub fn vm_files_with(work: &Path, socket_dir: &Path, tail: &str, extra: &[(PathBuf, String)]) -> (PathBuf, PathBuf) {
    vm_files_for(work, socket_dir, &build_agent(), tail, extra)
}

/// [`vm_files_with`] with a given agent binary (e.g. the one a package installs) as `/sbin/vigil-guest`.
pub fn vm_files_for(
    work: &Path,
    socket_dir: &Path,
    agent: &Path,
    tail: &str,
    extra: &[(PathBuf, String)],
) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (kernel, kver) = kernel();
    std::fs::create_dir_all(socket_dir).unwrap();
    for p in [work, socket_dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let k = work.join("vmlinuz");
    std::fs::copy(&kernel, &k).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    let initramfs = super::vm::build_initramfs_with(work, agent, &kver, tail, extra);
    std::fs::set_permissions(&initramfs, std::fs::Permissions::from_mode(0o644)).unwrap();
    (k, initramfs)
}
