//! The operator guide, followed literally by a new operator (#24): from `dpkg -i` to a watched VM.
//!
//! The commands are not written here: they are the code blocks of `docs/operator-guide.md`, so a doc change that
//! breaks them fails this test. Followed:
//! - "Install": every line of its `sh` block, one by one, as root, in the directory holding the packages, in a
//!   private root: an overlay over this machine's `/` in a private mount namespace, so `dpkg -i` is the real one,
//!   with the package's maintainer scripts (the `vigil` user, its groups, the unit enabled), and nothing reaches
//!   the machine. systemd is not PID 1 there: `systemctl` is a stand-in (`common/systemctl-standin.sh`) that
//!   starts the service as the packaged unit says (its user, environment file, directories, `ExecStart`), hands it
//!   `NOTIFY_SOCKET`, and this test waits for `READY=1` before the next command, as `systemctl start` would.
//! - "Enabling a VM", way 1: the guide's channel XML (`INSTANCE_UUID` replaced) in a domain of a private libvirtd,
//!   the socket in the real `/var/lib/libvirt/qemu` (bound into the private root), so the packaged vigild, as the
//!   `vigil` user, needs exactly the group memberships the package gives it.
//! - The guest runs the agent of the `vigil-guest` package (its static binary, its `/etc/vigil/guest.toml`, its
//!   unit's `ExecStart`), in a busybox initramfs.
//!
//! It ends with the VM watched: its `registered` event in the packaged events file, the guide's `vigild status`
//! listing it, and the unit's watchdog fed (`WATCHDOG=1` within `WatchdogSec`); then `dpkg --purge` removes the
//! user and the state.
//! Needs root (a mount namespace, an overlay, `dpkg -i`) and the packages (`scripts/package.sh`; `scripts/test.sh`
//! builds them first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::libvirt::{vm_files_for, Libvirtd};
use common::vm::*;
use common::*;

const UUID: &str = "0ace0000-9999-4888-a777-666655554444";
const NAME: &str = "vigil-operator-guide";
/// Debian's PATH for root: the stand-in in /usr/local/sbin comes first, as a local override would.
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const STANDIN: &str = include_str!("common/systemctl-standin.sh");

/// The fenced code blocks of a Markdown page: (the `##` section they are in, the info string, the body).
fn code_blocks(md: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<(String, usize, String)> = None; // (info, indent, body)
    for line in md.lines() {
        let trimmed = line.trim_start();
        match &mut open {
            None if trimmed.starts_with("```") => {
                open = Some((trimmed[3..].trim().to_string(), line.len() - trimmed.len(), String::new()));
            }
            None => {
                if let Some(h) = line.strip_prefix("## ") {
                    section = h.trim().to_string();
                }
            }
            Some((info, indent, body)) => {
                if trimmed.starts_with("```") {
                    out.push((section.clone(), std::mem::take(info), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line.get(*indent..).unwrap_or(trimmed));
                    body.push('\n');
                }
            }
        }
    }
    out
}

fn block(blocks: &[(String, String, String)], section: &str, info: &str) -> String {
    blocks
        .iter()
        .find(|(s, i, _)| s == section && i == info)
        .map(|(_, _, b)| b.clone())
        .unwrap_or_else(|| panic!("docs/operator-guide.md has no ```{info} block under \"## {section}\""))
}

/// A unit file's last `KEY=` value.
fn unit_key(unit: &str, key: &str) -> Option<String> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).next_back().map(str::to_string)
}

/// An overlay over `/` in a private mount namespace (held by a `sleep` in it): writes land in `upper`, never on
/// the machine. Drop stops what the stand-in started in it and the holder; the mounts go with the namespace.
struct PrivateRoot {
    holder: Child,
    merged: PathBuf,
    upper: PathBuf,
}

impl PrivateRoot {
    fn new(dir: &Path, binds: &[&str]) -> PrivateRoot {
        need("unshare", which("unshare"), "util-linux");
        need("nsenter", which("nsenter"), "util-linux");
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut script = format!(
            "set -e\nmount -t overlay overlay -o lowerdir=/,upperdir={},workdir={} {m}\n",
            upper.display(),
            work.display(),
            m = merged.display()
        );
        for b in ["/proc", "/dev", "/sys"].iter().chain(binds) {
            script += &format!("mount --rbind {b} {}{b}\n", merged.display());
        }
        script += "echo up\nexec sleep 100000\n";
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "up", "the private root could not be mounted (an overlay over / needs root)");
        PrivateRoot { holder, merged, upper }
    }

    /// Runs one shell line as root inside the private root, in `cwd`; (success, stdout and stderr).
    fn sh(&self, cwd: &Path, line: &str, env: &[(&str, &str)]) -> (bool, String) {
        self.sh_in(cwd, line, env, "")
    }

    /// [`Self::sh`] with `input` on its standard input.
    fn sh_in(&self, cwd: &Path, line: &str, env: &[(&str, &str)], input: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .args(["--target", &self.holder.id().to_string(), "--mount", "--", "chroot"])
            .arg(&self.merged)
            .args(["/bin/sh", "-c", &format!("cd '{}' && {line}", cwd.display())])
            .env_clear()
            .env("PATH", ROOT_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nsenter");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// A file as written inside the private root (it is in the overlay's upper layer; read it, never write it).
    fn file(&self, path: &str) -> PathBuf {
        self.upper.join(path.trim_start_matches('/'))
    }

    /// Writes a file inside the private root (through the overlay).
    fn write(&self, path: &str, text: &str, mode: &str) {
        let line = format!("mkdir -p \"$(dirname {path})\" && cat > {path} && chmod {mode} {path}");
        let (ok, out) = self.sh_in(Path::new("/"), &line, &[], text);
        assert!(ok, "{out}");
    }
}

impl Drop for PrivateRoot {
    fn drop(&mut self) {
        if let Ok(dir) = std::fs::read_dir(self.file("/run/systemctl-standin")) {
            for e in dir.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pid")) {
                let pid = std::fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse().ok());
                if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Removes the channel socket QEMU leaves in the real `/var/lib/libvirt/qemu`.
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Datagrams from the service (its `NOTIFY_SOCKET`), read until `want` arrives or `secs` pass.
fn wait_notify(sock: &UnixDatagram, want: &str, secs: u64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == want) {
                return;
            }
        }
    }
    panic!("no {want} from the service in {secs} s; its output:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn the_operator_guide_followed_literally_ends_with_a_watched_vm() {
    let _serial = heavy();
    assert!(rustix::process::geteuid().is_root(), "this test needs root: a mount namespace, an overlay, dpkg -i");
    need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    need("dpkg", which("dpkg"), "dpkg");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let debs = target.join("debian");
    let find = |prefix: &str| {
        std::fs::read_dir(&debs)
            .ok()
            .and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            })
            .unwrap_or_else(|| {
                panic!("no {prefix}*.deb in {}: run scripts/package.sh (scripts/test.sh does)", debs.display())
            })
    };
    let (host_deb, guest_deb) = (find("vigild_"), find("vigil-guest_"));
    let guide = std::fs::read_to_string(workspace().join("docs/operator-guide.md")).unwrap();
    let blocks = code_blocks(&guide);
    let install = block(&blocks, "Install", "sh");
    let channel = block(&blocks, "Enabling a VM", "xml").replace("INSTANCE_UUID", UUID);

    let work = TempDir::new("guide");
    // the operator's directory with the packages they downloaded
    let downloads = work.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::copy(&host_deb, downloads.join(host_deb.file_name().unwrap())).unwrap();
    let lv = Libvirtd::start(&work.path().join("libvirt"));
    let qemu_dir = "/var/lib/libvirt/qemu";
    assert!(Path::new(qemu_dir).is_dir(), "{qemu_dir} missing (libvirt-daemon-system)");
    let root = PrivateRoot::new(&work.path().join("root"), &[qemu_dir]);
    root.write("/usr/local/sbin/systemctl", STANDIN, "0755");
    let notify_name = format!("vigil-guide-notify-{}", std::process::id());
    let notify = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(notify_name.as_bytes()).unwrap();
        let s = UnixDatagram::bind_addr(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s
    };
    let notify_env = format!("@{notify_name}");
    let env = [("NOTIFY_SOCKET", notify_env.as_str())];
    let service_log = root.file("/run/systemctl-standin/vigild.log");

    // "Install", line by line
    let mut status_out = String::new();
    for line in install.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
        let (ok, out) = root.sh(&downloads, line, &env);
        eprintln!("operator-guide$ {line}\n{out}");
        assert!(
            ok,
            "the guide's command `{line}` failed:\n{out}\nthe service's output:\n{}",
            std::fs::read_to_string(&service_log).unwrap_or_default()
        );
        let cmd = line.split('#').next().unwrap_or("");
        if cmd.contains("systemctl") && (cmd.contains("--now") || cmd.contains(" start ")) {
            wait_notify(&notify, "READY=1", 60, &service_log);
        }
        if cmd.trim_start().starts_with("vigild status") {
            status_out = out;
        }
    }
    assert!(!status_out.is_empty(), "the guide's Install block no longer runs `vigild status`");
    // what the package's maintainer script did
    let (_, id) = root.sh(Path::new("/"), "id vigil", &[]);
    assert!(id.contains("(libvirt-qemu)"), "the vigil user is not in libvirt-qemu: {id}");
    let pid: i32 =
        std::fs::read_to_string(root.file("/run/systemctl-standin/vigild.pid")).unwrap().trim().parse().unwrap();
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = uid.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    assert!(!uid_line.split_whitespace().skip(1).any(|u| u == "0"), "vigild runs as root: {uid_line}");

    // the guest: the vigil-guest package's agent, config and unit
    let guest_root = work.path().join("guest-pkg");
    assert!(Command::new("dpkg-deb").arg("-x").arg(&guest_deb).arg(&guest_root).status().unwrap().success());
    let guest_unit = ["lib", "usr/lib"]
        .iter()
        .map(|d| guest_root.join(d).join("systemd/system/vigil-guest.service"))
        .find(|p| p.exists())
        .expect("the vigil-guest package has no unit");
    let guest_unit = std::fs::read_to_string(guest_unit).unwrap();
    let exec_start = unit_key(&guest_unit, "ExecStart").expect("vigil-guest.service has no ExecStart");
    let runtime_dir = unit_key(&guest_unit, "RuntimeDirectory").unwrap_or_default();
    let tail = format!("mkdir -p /run/{runtime_dir}\nexec {exec_start}\n");
    let agent = guest_root.join("usr/bin/vigil-guest");
    let extra = [
        (agent.clone(), "/usr/bin/vigil-guest".to_string()),
        (guest_root.join("etc/vigil/guest.toml"), "/etc/vigil/guest.toml".to_string()),
    ];
    let vm_dir = work.path().join("vm");
    let (kernel, initramfs) = vm_files_for(work.path(), &vm_dir, &agent, &tail, &extra);
    let console = vm_dir.join("console.log");
    let socket = RemoveOnDrop(PathBuf::from(format!("{qemu_dir}/cgcs.heartbeat.{UUID}.sock")));
    let xml = format!(
        "<domain type='qemu'><name>{NAME}</name><uuid>{UUID}</uuid><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 quiet</cmdline></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <serial type='file'><source path='{}'/><target port='0'/></serial>\n{channel}\
         <memballoon model='none'/></devices></domain>",
        kernel.display(),
        initramfs.display(),
        console.display(),
    );
    let xml_path = work.path().join("domain.xml");
    std::fs::write(&xml_path, xml).unwrap();
    lv.must(&["create", xml_path.to_str().unwrap()]);

    // watched: registered in the packaged events file, listed by `vigild status`
    let events = root.file("/var/log/vigild/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(180); // TCG boot on a shared 2-core machine: wide
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| e["kind"] == "registered" && e["guest"] == UUID)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the VM was not watched in 180 s.\nevents:\n{text}\nvigild:\n{}\nconsole:\n{}\nsocket: {:?}",
            std::fs::read_to_string(&service_log).unwrap_or_default(),
            std::fs::read_to_string(&console).unwrap_or_default(),
            std::fs::metadata(&socket.0).map(|m| {
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                (m.uid(), m.gid(), format!("{:o}", m.permissions().mode()))
            })
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status_line = install.lines().find(|l| l.trim_start().starts_with("vigild status")).unwrap();
    let (ok, out) = root.sh(&downloads, status_line, &env);
    eprintln!("operator-guide$ {status_line}\n{out}");
    // (the summary line counts guests; the table lists only those not heartbeating or with a fault)
    assert!(
        ok && out.contains("1 guests: 1 heartbeating"),
        "`{status_line}` does not count the VM as heartbeating:\n{out}"
    );
    let (ok, json) = root.sh(&downloads, "vigild status --json", &[]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert!(
        ok && json["guests"].as_array().unwrap().iter().any(|g| g["id"] == UUID && g["state"] == "heartbeating"),
        "{json}"
    );
    wait_notify(&notify, "WATCHDOG=1", 40, &service_log);
    eprintln!(
        "operator guide followed: \"Install\" ({} commands), \"Enabling a VM\" way 1 (the channel XML); the VM {UUID} \
         is watched",
        install.lines().filter(|l| !l.trim().is_empty()).count()
    );

    // and the package leaves cleanly: stopped (as systemd would at `remove`), purged, its user and state gone
    let vigild = rustix::process::Pid::from_raw(pid).unwrap();
    let _ = rustix::process::kill_process(vigild, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = root.sh(Path::new("/"), "dpkg --purge vigild", &[]);
    eprintln!("$ dpkg --purge vigild\n{out}");
    assert!(ok, "dpkg --purge vigild failed:\n{out}");
    let (user_left, _) = root.sh(Path::new("/"), "id vigil", &[]);
    let (state_left, _) = root.sh(Path::new("/"), "test -e /var/lib/vigil", &[]);
    assert!(!user_left && !state_left, "after the purge: user left {user_left}, /var/lib/vigil left {state_left}");
    drop(root);
    drop(socket);
}
