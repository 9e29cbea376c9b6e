//! Harness for vigild end-to-end tests: temp directories, real vigild and vigil-sim processes, scripted guests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod libvirt;
pub mod vm;
use vigil_core::{bounded, Agent, AgentConfig, CorrectiveAction, Health, Instant as CoreInstant, XorShift32, MAX_WIRE};

/// Tests that load the machine (hundreds of guests, floods) take this, so they do not overlap each other.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p =
            std::env::temp_dir().join(format!("vt-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    /// SIGTERM, then wait; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    /// Descriptors open in the process: its data-plane thread (the main one) has a table of its own
    /// (`private_descriptor_table`), every other thread shares the other. Each table is read once, the main thread's
    /// and one other thread's (reading the shared table through every thread counted a descriptor closed and its
    /// number reused between two reads twice: CI saw 86 for 64), and a descriptor in both tables (opened before they
    /// parted) counts once.
    pub fn open_fds(&self) -> usize {
        let pid = self.pid();
        let other = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|t| t.file_name())
            .find(|t| t.to_str() != Some(pid.to_string().as_str()));
        let mut seen = std::collections::HashSet::new();
        for task in std::iter::once(std::ffi::OsString::from(pid.to_string())).chain(other) {
            let dir = std::path::Path::new("/proc").join(pid.to_string()).join("task").join(task).join("fd");
            for fd in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    seen.insert((fd.file_name(), target));
                }
            }
        }
        seen.len()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Vigild {
    pub proc: Proc,
    pub events: PathBuf,
    pub status: PathBuf,
    pub admin: PathBuf,
}

impl Vigild {
    pub fn start(dir: &Path, work: &Path, extra: &[&str]) -> Self {
        let events = work.join("events.jsonl");
        let status = work.join("status.json");
        let admin = work.join("admin.sock");
        // the state (spool, action ledger) stays in the test's directory unless the test names one
        let state = work.join("state");
        let state_args: Vec<&std::ffi::OsStr> =
            if extra.contains(&"--state-dir") { Vec::new() } else { vec!["--state-dir".as_ref(), state.as_os_str()] };
        let child = Command::new(env!("CARGO_BIN_EXE_vigild"))
            .args(["run", "--watch"])
            .arg(dir)
            .args(state_args)
            .arg("--admin-socket")
            .arg(&admin)
            .arg("--events")
            .arg(&events)
            .arg("--status-file")
            .arg(&status)
            .args(["--log", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vigild binary");
        Vigild { proc: Proc(child), events, status, admin }
    }

    /// Waits until vigild is running (its signal handlers are installed before it writes its first status),
    /// instead of guessing with a sleep.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.status.exists() {
            assert!(Instant::now() < deadline, "vigild wrote no status file within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 10 s) until vigild holds at most `n` descriptors; returns the count last seen. The status
    /// writer opens a file for a moment every 2 s, so a single reading may be one high.
    pub fn fds_settle_to(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.proc.open_fds();
            if now <= n || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.events).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["kind"] == kind).collect()
    }

    pub fn status(&self) -> Value {
        std::fs::read_to_string(&self.status).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
    }

    /// Waits until `f(events)` holds; panics with the events seen after `secs`.
    pub fn wait_until(&self, secs: u64, what: &str, f: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = self.events();
            if f(&ev) {
                return;
            }
            if Instant::now() > deadline {
                let kinds: Vec<String> = ev.iter().map(|e| format!("{}:{}", e["guest"], e["kind"])).collect();
                panic!("timed out waiting for {what}; events: {kinds:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The worst `max_rtt_ms` in a status snapshot among the guests whose id contains `marker`.
pub fn worst_rtt_ms(status: &Value, marker: &str) -> u64 {
    status["guests"]
        .as_array()
        .expect("a status snapshot")
        .iter()
        .filter(|g| g["id"].as_str().unwrap_or("").contains(marker))
        .map(|g| g["max_rtt_ms"].as_u64().unwrap_or(0))
        .max()
        .expect("guests with that marker")
}

pub fn sim(dir: &Path, args: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_vigil-sim"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil-sim binary");
    Proc(child)
}

pub fn count(ev: &[Value], kind: &str) -> usize {
    ev.iter().filter(|e| e["kind"] == kind).count()
}

pub fn by_guest<'a>(ev: &'a [Value], guest: &str, kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["kind"] == kind && e["guest"] == guest).collect()
}

/// Commands for a scripted guest.
pub enum Cmd {
    Health(Health, CorrectiveAction, &'static str),
    Exit,
}

/// One guest driven by a test: a UNIX socket named like QEMU's, an Agent behind it, blocking I/O in a thread.
pub struct ScriptedGuest {
    pub tx: Sender<Cmd>,
    pub path: PathBuf,
    /// While set, the guest's answers are swallowed (as if it hung); cleared, it answers again.
    pub frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ScriptedGuest {
    pub fn start(dir: &Path, id: &str, interval_ms: u32) -> Self {
        let path = dir.join(format!("cgcs.heartbeat.{id}.sock"));
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = channel();
        let name = id.to_string();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = std::sync::Arc::clone(&frozen);
        std::thread::spawn(move || guest_thread(listener, &name, interval_ms, rx, f));
        ScriptedGuest { tx, path, frozen }
    }

    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::Relaxed);
    }
}

fn guest_thread(
    listener: UnixListener,
    name: &str,
    interval_ms: u32,
    rx: Receiver<Cmd>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let Ok((s, _)) = listener.accept() else { return };
    run_agent(
        s,
        name,
        interval_ms,
        |agent| match rx.try_recv() {
            Ok(Cmd::Health(h, a, m)) => {
                agent.set_health(h, a, m);
                true
            }
            Ok(Cmd::Exit) => {
                agent.shutdown("Exiting...");
                true
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => false,
            Err(_) => true,
        },
        |s, bytes| if frozen.load(Ordering::Relaxed) { Ok(()) } else { s.write_all(bytes) },
    );
}

/// Runs a core Agent over a blocking stream until `tick` says stop or the stream ends; every message goes out
/// through `write` (so tests can slow it down, repeat it, ...).
pub fn run_agent(
    mut s: UnixStream,
    name: &str,
    interval_ms: u32,
    mut tick: impl FnMut(&mut Agent<XorShift32>) -> bool,
    mut write: impl FnMut(&mut UnixStream, &[u8]) -> std::io::Result<()>,
) {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let start = Instant::now();
    let now = || CoreInstant::from_millis(start.elapsed().as_millis() as u64);
    let cfg = AgentConfig { name: bounded(name), heartbeat_interval_ms: interval_ms, ..AgentConfig::default() };
    let mut agent = Agent::new(cfg, XorShift32::new(7), now());
    let mut buf = [0u8; 4096];
    let mut wire = [0u8; MAX_WIRE];
    while tick(&mut agent) {
        while let Some(n) = agent.poll_transmit(now(), &mut wire) {
            if write(&mut s, &wire[..n]).is_err() {
                return;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut input = &buf[..n];
                while !input.is_empty() {
                    let used = agent.handle_bytes(now(), input);
                    input = &input[used..];
                    while agent.poll_event().is_some() {}
                }
            }
            Err(_) => {}
        }
        if agent.poll_timeout().is_some_and(|t| t <= now()) {
            agent.handle_timeout(now());
            while agent.poll_event().is_some() {}
        }
    }
}

/// A QEMU-like virtio-serial channel in user space: vigild connects to `host` (`cgcs.heartbeat.<id>.sock`), the
/// guest agent connects to `guest` (its `--port`), and bytes are copied both ways. `cut()` closes the host side,
/// as QEMU does when the VM goes away.
pub struct Relay {
    pub guest: PathBuf,
    host_conn: std::sync::Arc<std::sync::Mutex<Option<UnixStream>>>,
}

impl Relay {
    pub fn start(dir: &Path, port_dir: &Path, id: &str) -> Self {
        let host_path = dir.join(format!("cgcs.heartbeat.{id}.sock"));
        let guest_path = port_dir.join(format!("{id}.port"));
        let hl = UnixListener::bind(&host_path).unwrap();
        let gl = UnixListener::bind(&guest_path).unwrap();
        let host_conn = std::sync::Arc::new(std::sync::Mutex::new(None::<UnixStream>));
        let hc = std::sync::Arc::clone(&host_conn);
        std::thread::spawn(move || {
            let Ok((g, _)) = gl.accept() else { return };
            loop {
                let Ok((h, _)) = hl.accept() else { return };
                *hc.lock().unwrap() = Some(h.try_clone().unwrap());
                let (mut g_r, mut h_w) = (g.try_clone().unwrap(), h.try_clone().unwrap());
                let (mut h_r, mut g_w) = (h, g.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut g_r, &mut h_w);
                });
                let _ = std::io::copy(&mut h_r, &mut g_w);
                drop(up);
            }
        });
        Relay { guest: guest_path, host_conn }
    }

    /// Closes vigild's side of the channel.
    pub fn cut(&self) {
        if let Some(h) = self.host_conn.lock().unwrap().take() {
            let _ = h.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The `vigil-guest` binary beside `vigild` in the target directory, built if missing (only `cargo test` of the
/// whole workspace builds it for us).
pub fn vigil_guest_binary() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_vigild")).with_file_name("vigil-guest");
    if exe.exists() {
        return exe;
    }
    let target = Path::new(env!("CARGO_BIN_EXE_vigild")).parent().unwrap().parent().unwrap().join("agent-for-tests");
    let out = Command::new(env!("CARGO"))
        .args(["build", "-p", "vigil-guest", "--bin", "vigil-guest", "--target-dir"])
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "building vigil-guest failed:\n{}", String::from_utf8_lossy(&out.stderr));
    target.join("debug/vigil-guest")
}

/// A real guest agent on `relay`, with a notification command (`/bin/sh -c SCRIPT`).
pub fn real_agent(relay: &Relay, work: &Path, name: &str, notify_script: &str) -> Proc {
    real_agent_with(relay, work, name, notify_script, &["--no-reference-api"])
}

/// [`real_agent`] with extra flags.
pub fn real_agent_with(relay: &Relay, work: &Path, name: &str, notify_script: &str, extra: &[&str]) -> Proc {
    use std::os::unix::fs::PermissionsExt;
    let cmd = work.join(format!("{name}-notify.sh"));
    std::fs::write(&cmd, format!("#!/bin/sh\n{notify_script}\n")).unwrap();
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = Command::new(vigil_guest_binary())
        .arg("--port")
        .arg(&relay.guest)
        .arg("--api-socket")
        .arg(work.join(format!("{name}-api.sock")))
        .args(["--name", name, "--interval-ms", "500", "--notify-cmd"])
        .arg(&cmd)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil-guest binary");
    Proc(child)
}

/// `curl` over vigild's admin socket: (HTTP status, body).
pub fn admin(d: &Vigild, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (code, text) = vigil_host::control::client::request(&d.admin, method, path, body, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A free loopback TCP port (bound, then released: a tiny race, fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request over TCP with `Connection: close`: (status, body).
pub fn http(method: &str, port: u16, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, rest.to_string()))
}

/// A request a [`Receiver`] got.
#[derive(Clone, Debug)]
pub struct Got {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// An HTTP receiver on a loopback port: records every request and answers with `respond(request, how many
/// requests came before)` -> (status, extra headers, body). Status 0: close the connection without writing a byte
/// (what a Python `BaseHTTPRequestHandler` does when its handler sends no headers, or raises).
pub struct HttpReceiver {
    pub port: u16,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Got>>>,
}

type Respond = dyn Fn(&Got, usize) -> (u16, Vec<(String, String)>, String) + Send + Sync;

impl HttpReceiver {
    pub fn start(
        respond: impl Fn(&Got, usize) -> (u16, Vec<(String, String)>, String) + Send + Sync + 'static,
    ) -> Self {
        Self::start_on(0, respond)
    }

    pub fn start_on(
        port: u16,
        respond: impl Fn(&Got, usize) -> (u16, Vec<(String, String)>, String) + Send + Sync + 'static,
    ) -> Self {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = l.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = std::sync::Arc::clone(&got);
        let respond: std::sync::Arc<Respond> = std::sync::Arc::new(respond);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.lines();
                let first: Vec<String> = lines.next().unwrap_or("").split_whitespace().map(String::from).collect();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = buf[head_end + 4..].to_vec();
                while body.len() < len {
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = Got {
                    method: first.first().cloned().unwrap_or_default(),
                    path: first.get(1).cloned().unwrap_or_default(),
                    headers,
                    body: String::from_utf8_lossy(&body).to_string(),
                };
                let n = {
                    let mut v = g.lock().unwrap();
                    v.push(req.clone());
                    v.len() - 1
                };
                let (code, extra, out) = respond(&req, n);
                if code == 0 {
                    continue; // dropped: closed with no reply
                }
                let mut resp = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\nContent-Type: application/json\r\n", out.len());
                for (k, v) in extra {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&out);
                let _ = c.write_all(resp.as_bytes());
            }
        });
        HttpReceiver { port, got }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

/// An RFC 3339 time of an event field, in Unix milliseconds (0 if absent).
pub fn event_ms(v: &Value) -> u64 {
    humantime::parse_rfc3339_weak(v.as_str().unwrap_or(""))
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
        .unwrap_or(0)
}

/// A vigild config whose `reboot` action appends `GUEST KIND` to a marker file: (config, marker).
pub fn marker_policy(work: &Path) -> (PathBuf, PathBuf) {
    let marker = work.join("actions.log");
    let cfg = work.join("vigild.toml");
    std::fs::write(
        &cfg,
        format!(
            // every loss acts: these tests are about verdicts, not budgets (tests of budgets set their own)
            "[defaults]\npolicy = \"command\"\naction_min_gap_secs = 0\nmin_uptime_secs = 0\naction_budget = 1000\n\
             commands = {{ reboot = [\"sh\", \"-c\", \"echo {{guest}} {{kind}} >> {}\"] }}\n",
            marker.display()
        ),
    )
    .unwrap();
    (cfg, marker)
}

/// What the StarlingX VIM made of one PATCH, applying its own rules.
#[derive(Clone, Debug, PartialEq)]
pub enum VimSaw {
    /// `service`: per service (name, admin state, oper state, restart timeout).
    Service(Vec<(String, &'static str, &'static str, Option<i64>)>),
    /// `alarm`: (avail status, recovery action), as the VIM maps them.
    Alarm(String, String),
    /// `action`: (action type, action state, reason).
    Action(&'static str, &'static str, String),
}

/// A stand-in for the StarlingX VIM's guest REST API (`PATCH /nfvi-plugins/v1/instances/<uuid>`) that applies the
/// rules of its handler, `guest_services_rest_api_patch_handler` in starlingx/nfv
/// `nfv/nfv-plugins/nfv_plugins/nfvi_plugins/nfvi_guest_api.py`, with the callbacks of
/// `nfv/nfv-vim/nfv_vim/vim_nfvi_events.py` and the constants of `.../openstack/guest.py`:
/// - `uuid`, `event-type` and `event-data` are required; a reply is written only when there is a payload, so a
///   `service` or `action` PATCH is answered by a closed connection, and so is anything the handler rejects;
/// - `service`: each service needs `service`, `state` and `status` (a missing key raises: no reply);
///   `restart-timeout` is `int()`-ed; admin state UNLOCKED only for `state: enabled`, oper state ENABLED only for
///   `status: enabled`;
/// - `alarm`: for an instance the VIM knows, 200 with `{uuid, hostname, services}`; for one it does not, the
///   callback returns a bare `False` that the handler unpacks: it raises, no reply;
/// - `action`: the action through `instance_get_action_type` (GUEST_EVENT names, underscores: anything else is
///   UNKNOWN), `guest-response` reject/allow/proceed (anything else defaults to proceed).
pub fn vim_stand_in(known: Vec<String>, saw: std::sync::Arc<std::sync::Mutex<Vec<(String, VimSaw)>>>) -> HttpReceiver {
    HttpReceiver::start(move |req, _| {
        const NO_REPLY: (u16, Vec<(String, String)>, String) = (0, Vec::new(), String::new());
        let Some(uuid) = req.path.strip_prefix("/nfvi-plugins/v1/instances/") else {
            return (404, vec![], String::new());
        };
        if req.method != "PATCH" {
            return (405, vec![], String::new());
        }
        let v = req.json();
        let (Some(id), Some(event_type), Some(data)) =
            (v["uuid"].as_str(), v["event-type"].as_str(), v.get("event-data"))
        else {
            return NO_REPLY; // 400 without a payload: nothing is written
        };
        assert_eq!(id, uuid, "the body's uuid is the path's");
        let services = data["services"].as_array().cloned().unwrap_or_default();
        match event_type {
            "service" => {
                let mut parsed = Vec::new();
                for s in &services {
                    let (Some(name), Some(state), Some(status)) = (s.get("service"), s.get("state"), s.get("status"))
                    else {
                        return NO_REPLY; // KeyError
                    };
                    let restart = match s.get("restart-timeout") {
                        None | Some(Value::Null) => None,
                        Some(t) => match t.as_str().map(str::parse::<i64>).or(t.as_i64().map(Ok)) {
                            Some(Ok(n)) => Some(n),
                            _ => return NO_REPLY, // int() raised
                        },
                    };
                    parsed.push((
                        if name == "heartbeat" { "heartbeat".to_string() } else { "unknown".to_string() },
                        if state == "enabled" { "unlocked" } else { "locked" },
                        if status == "enabled" { "enabled" } else { "disabled" },
                        restart,
                    ));
                }
                saw.lock().unwrap().push((uuid.to_string(), VimSaw::Service(parsed)));
                NO_REPLY // the callback returns nothing: no payload
            }
            "alarm" => {
                for s in services.iter().filter(|s| s["service"] == "heartbeat") {
                    if !known.iter().any(|k| k == uuid) {
                        return NO_REPLY; // `success, result = False` raises
                    }
                    let avail = s["state"].as_str().unwrap_or("").to_string();
                    let action = s["repair-action"].as_str().unwrap_or("").to_string();
                    saw.lock().unwrap().push((uuid.to_string(), VimSaw::Alarm(avail, action)));
                }
                let body = json!({ "uuid": uuid, "hostname": v["hostname"], "services": [] }).to_string();
                (200, vec![], body)
            }
            "action" => {
                const EVENTS: [&str; 14] = [
                    "unknown",
                    "stop",
                    "reboot",
                    "suspend",
                    "pause",
                    "unpause",
                    "resume",
                    "live_migrate_begin",
                    "live_migrate_end",
                    "cold_migrate_begin",
                    "cold_migrate_end",
                    "resize_begin",
                    "resize_end",
                    "downscale",
                ];
                let action = data["action"].as_str().unwrap_or("");
                let action_type = match action {
                    "pause" => "pause",
                    "unpause" => "unpause",
                    "suspend" => "suspend",
                    "resume" => "resume",
                    "reboot" => "reboot",
                    "stop" => "stop",
                    "live_migrate_begin" | "live_migrate_end" => "live-migrate",
                    "cold_migrate_begin" | "cold_migrate_end" => "cold-migrate",
                    "resize_begin" | "resize_end" => "resize",
                    _ => "unknown",
                };
                debug_assert!(EVENTS.contains(&action) || action_type == "unknown");
                let state = match data["guest-response"].as_str() {
                    Some("reject") => "rejected",
                    Some("allow") => "allowed",
                    _ => "proceed",
                };
                if known.iter().any(|k| k == uuid) {
                    let reason = data["reason"].as_str().unwrap_or("").to_string();
                    saw.lock().unwrap().push((uuid.to_string(), VimSaw::Action(action_type, state, reason)));
                }
                NO_REPLY
            }
            _ => NO_REPLY,
        }
    })
}
