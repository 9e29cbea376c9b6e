//! Fault and status events: one typed record per kind ([`Event`], the schema of `docs/events.md`), and the local
//! writer that puts them on a file or stdout as JSON lines, on its own thread so the data plane never waits on a
//! disk or a pipe.
//!
//! The loop numbers each record (`seq`) and hands it to a bounded queue; a full queue drops the record and counts
//! it, never waits. The writer counts write errors too (the `seq` gap stays visible), and reopens its file when
//! asked (SIGHUP) or when the path no longer names the file it holds (log rotation).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

/// A moment given as an age (the fleet has no wall clock): written as the RFC 3339 time that many milliseconds
/// before the record is serialized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ago(pub u64);

impl Serialize for Ago {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let now = SystemTime::now();
        let t = now.checked_sub(Duration::from_millis(self.0)).unwrap_or(now);
        s.serialize_str(&rfc3339(t))
    }
}

/// Every event kind vigild writes, with its fields (`kind` is the variant's snake_case name). Texts from the
/// guest are escaped by JSON; in logs they go through [`escape_text`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// vigild connected to the guest's socket.
    Connected {
        /// The socket path.
        socket: String,
        /// Connection events of this guest not written since the last one (rate limit).
        suppressed: u64,
    },
    /// The connection ended.
    Disconnected {
        /// Why.
        reason: String,
        /// Connection events not written since the last one (rate limit).
        suppressed: u64,
    },
    /// The guest sent `init`.
    Registered {
        /// Declared name (informational).
        name: String,
        /// The invocation id.
        invocation_id: u32,
        /// Interval in force.
        interval_ms: u64,
        /// Interval asked for.
        requested_interval_ms: u32,
        /// Action asked for on loss (as sent; `unknown` is acted on as `log`).
        corrective_action: &'static str,
        /// Seconds to vote.
        vote_secs: u32,
        /// Notice before shutdown.
        shutdown_notice_secs: u32,
        /// Notice before suspend.
        suspend_notice_secs: u32,
        /// Notice before resume.
        resume_notice_secs: u32,
        /// Seconds a restart takes.
        restart_secs: u32,
        /// Registrations not written since the last one (rate limit).
        suppressed: u64,
    },
    /// Consecutive misses exceeded the threshold (once per episode; challenges go on).
    HeartbeatLost {
        /// Misses counted.
        consecutive_misses: u32,
        /// When the last valid answer came, if any in this connection.
        last_heartbeat: Option<Ago>,
        /// The guest's requested action.
        corrective_action: &'static str,
    },
    /// The guest reports itself unhealthy.
    Unhealthy {
        /// What it asks for.
        corrective_action: &'static str,
        /// Why.
        log_msg: String,
    },
    /// A valid answer after a loss, or a healthy one after an unhealthy report.
    Recovered {},
    /// The guest sent `exit`.
    Deregistered {
        /// Its reason.
        log_msg: String,
    },
    /// The answer to a vote or notice.
    VoteResult {
        /// The event.
        event_type: &'static str,
        /// Vote or notice.
        notification_type: &'static str,
        /// `accept`, `reject`, `complete`, `unknown`, `timeout`, `error`.
        result: &'static str,
        /// The guest's reason.
        log_msg: String,
    },
    /// The guest broke the protocol or its byte budget (rate-limited per guest).
    ProtocolError {
        /// A label (see `docs/events.md`).
        error: &'static str,
        /// Details.
        detail: String,
        /// Not written since the last one.
        suppressed: u64,
        /// Protocol errors of this guest so far.
        total: u64,
    },
    /// A maintenance window started, ended early, or expired (faults are withheld while it is open).
    Maintenance {
        /// `started`, `ended`, `expired`.
        state: &'static str,
        /// Its length (on `started`).
        #[serde(skip_serializing_if = "Option::is_none")]
        secs: Option<u64>,
        /// Why.
        reason: String,
    },
    /// A corrective command ran, failed, or was skipped.
    Action {
        /// `heartbeat_lost` or `unhealthy`.
        trigger: &'static str,
        /// The action.
        corrective_action: &'static str,
        /// What ran.
        argv: Vec<String>,
        /// Its exit code.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// How long it took.
        #[serde(skip_serializing_if = "Option::is_none")]
        elapsed_ms: Option<u64>,
        /// Why it did not run or finish.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Why it was not started.
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<&'static str>,
    },
}

impl Event {
    /// Every kind, as written in `kind` (the doc test checks `docs/events.md` lists exactly these).
    pub const KINDS: &'static [&'static str] = &[
        "connected",
        "disconnected",
        "registered",
        "heartbeat_lost",
        "unhealthy",
        "recovered",
        "deregistered",
        "vote_result",
        "protocol_error",
        "maintenance",
        "action",
    ];

    /// The `kind` of this record.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Connected { .. } => "connected",
            Event::Disconnected { .. } => "disconnected",
            Event::Registered { .. } => "registered",
            Event::HeartbeatLost { .. } => "heartbeat_lost",
            Event::Unhealthy { .. } => "unhealthy",
            Event::Recovered {} => "recovered",
            Event::Deregistered { .. } => "deregistered",
            Event::VoteResult { .. } => "vote_result",
            Event::ProtocolError { .. } => "protocol_error",
            Event::Maintenance { .. } => "maintenance",
            Event::Action { .. } => "action",
        }
    }
}

/// Guest text made safe for a log line: control characters (and backslashes) escaped, so a guest cannot forge
/// log lines or terminal sequences.
pub fn escape_text(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file (reopened on SIGHUP and when moved).
    File(PathBuf),
    /// Nowhere (tests that only read the status).
    Discard,
}

/// Queue depth between the loop and the writer: room for every guest of a large node changing state at once.
const QUEUE: usize = 65_536;
/// The writer gives up on what is left this long after `close` (a stalled disk must not hold up a stop).
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

struct Shared {
    dropped: AtomicU64,
    write_errors: AtomicU64,
    reopen: AtomicBool,
    stop_by: AtomicU64,
}

/// Stamps, numbers and queues events.
pub struct EventSink {
    host: String,
    seq: u64,
    tx: Option<SyncSender<String>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    epoch: std::time::Instant,
}

impl EventSink {
    /// Starts the writer thread.
    pub fn start(target: EventsTarget, host: String) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let out = Output::open(&target)?;
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            stop_by: AtomicU64::new(u64::MAX),
        });
        let epoch = std::time::Instant::now();
        let sh = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("vigild-events".into())
            .spawn(move || write_loop(rx, out, target, &sh, epoch))?;
        Ok(EventSink { host, seq: 0, tx: Some(tx), writer: Some(writer), shared, epoch })
    }

    /// Events lost: the queue was full, or the write failed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed) + self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Write errors alone.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Events emitted so far (the last `seq`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Asks the writer to reopen its file (SIGHUP, after log rotation).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
    }

    /// Emits `{"time","host","guest","kind","seq", ...fields}`.
    pub fn emit(&mut self, guest: &str, event: &Event) {
        self.seq += 1;
        let mut obj = Map::new();
        obj.insert("time".into(), json!(rfc3339(SystemTime::now())));
        obj.insert("host".into(), json!(self.host));
        obj.insert("guest".into(), json!(guest));
        obj.insert("seq".into(), json!(self.seq));
        if let Ok(Value::Object(fields)) = serde_json::to_value(event) {
            obj.extend(fields);
        }
        let line = Value::Object(obj).to_string();
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops the writer: what is queued is written, for at most [`CLOSE_LIMIT`]; the rest is counted as dropped.
    pub fn close(&mut self) {
        let deadline = self.epoch.elapsed() + CLOSE_LIMIT;
        self.shared.stop_by.store(deadline.as_millis() as u64, Ordering::Relaxed);
        self.tx = None;
        if let Some(w) = self.writer.take() {
            // the writer checks the deadline between lines; a write stuck in the kernel is not waited for
            let start = std::time::Instant::now();
            while !w.is_finished() && start.elapsed() < CLOSE_LIMIT + Duration::from_millis(500) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.close();
    }
}

enum Output {
    Stdout(std::io::Stdout),
    File { file: std::io::BufWriter<std::fs::File>, ino: u64, dev: u64 },
    Discard,
}

impl Output {
    fn open(target: &EventsTarget) -> std::io::Result<Output> {
        Ok(match target {
            EventsTarget::Stdout => Output::Stdout(std::io::stdout()),
            EventsTarget::File(p) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                let meta = file.metadata()?;
                Output::File { file: std::io::BufWriter::new(file), ino: meta.ino(), dev: meta.dev() }
            }
            EventsTarget::Discard => Output::Discard,
        })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Output::Stdout(s) => writeln!(s, "{line}"),
            Output::File { file, .. } => writeln!(file, "{line}"),
            Output::Discard => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(s) => s.flush(),
            Output::File { file, .. } => file.flush(),
            Output::Discard => Ok(()),
        }
    }

    /// The path no longer names the file held (rotated away or deleted).
    fn moved(&self, target: &EventsTarget) -> bool {
        match (self, target) {
            (Output::File { ino, dev, .. }, EventsTarget::File(p)) => {
                std::fs::metadata(p).map_or(true, |m| m.ino() != *ino || m.dev() != *dev)
            }
            _ => false,
        }
    }
}

fn write_loop(rx: Receiver<String>, mut out: Output, target: EventsTarget, shared: &Shared, epoch: std::time::Instant) {
    let mut last_check = std::time::Instant::now();
    let past_deadline = || epoch.elapsed().as_millis() as u64 > shared.stop_by.load(Ordering::Relaxed);
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let wanted = shared.reopen.swap(false, Ordering::Relaxed);
        if wanted || last_check.elapsed() >= Duration::from_secs(1) {
            last_check = std::time::Instant::now();
            if wanted || out.moved(&target) {
                let _ = out.flush();
                match Output::open(&target) {
                    Ok(o) => out = o,
                    Err(_) => {
                        shared.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let Some(first) = first else { continue };
        // batch what is already queued, then flush once
        for line in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if past_deadline() {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if out.write_line(&line).is_err() {
                shared.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if out.flush().is_err() {
            shared.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    // the channel is closed: what is left was taken above, up to the deadline
    let _ = out.flush();
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A per-guest token bucket for noisy event kinds (protocol errors, connections): `burst` at once, then one per
/// `every`.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    tokens: u32,
    last_refill_ms: u64,
    /// Events withheld since the last one let through.
    pub suppressed: u64,
}

impl RateLimit {
    /// Burst capacity.
    pub const BURST: u32 = 3;
    /// One token per this many milliseconds.
    pub const EVERY_MS: u64 = 10_000;

    /// A full bucket.
    pub fn new() -> Self {
        RateLimit { tokens: Self::BURST, last_refill_ms: 0, suppressed: 0 }
    }

    /// Whether to emit now; when not, the event is counted in `suppressed`.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        let gained = now_ms.saturating_sub(self.last_refill_ms) / Self::EVERY_MS;
        if gained > 0 {
            self.tokens = (self.tokens + gained.min(u64::from(Self::BURST)) as u32).min(Self::BURST);
            self.last_refill_ms = now_ms;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// [`allow`](Self::allow), and the count withheld before this one (reset) when allowed.
    pub fn take(&mut self, now_ms: u64) -> Option<u64> {
        self.allow(now_ms).then(|| std::mem::take(&mut self.suppressed))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_bursts_then_trickles_and_counts() {
        let mut r = RateLimit::new();
        assert!(r.allow(0) && r.allow(1) && r.allow(2));
        assert!(!r.allow(3));
        assert!(!r.allow(9_999));
        assert_eq!(r.suppressed, 2);
        assert_eq!(r.take(10_000), Some(2));
        assert!(!r.allow(10_001));
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-events-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_lines(path: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn events_are_numbered_and_written_as_json_lines() {
        let dir = tmp("lines");
        let path = dir.join("events.jsonl");
        let mut sink = EventSink::start(EventsTarget::File(path.clone()), "node-1".into()).unwrap();
        sink.emit("vm-1", &Event::Connected { socket: "/x".into(), suppressed: 0 });
        sink.emit(
            "vm-1",
            &Event::HeartbeatLost { consecutive_misses: 2, last_heartbeat: Some(Ago(1500)), corrective_action: "log" },
        );
        sink.close();
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0]["seq"].as_u64(), lines[1]["seq"].as_u64()), (Some(1), Some(2)));
        assert_eq!(lines[1]["kind"], "heartbeat_lost");
        assert_eq!(lines[1]["host"], "node-1");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        let last = humantime::parse_rfc3339(lines[1]["last_heartbeat"].as_str().unwrap()).unwrap();
        let now = humantime::parse_rfc3339(lines[1]["time"].as_str().unwrap()).unwrap();
        let ago = now.duration_since(last).unwrap_or_default();
        assert!(ago >= Duration::from_millis(1400) && ago <= Duration::from_millis(1600), "{ago:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rotated_file_is_reopened_and_nothing_after_the_rotation_is_lost() {
        let dir = tmp("rotate");
        let path = dir.join("events.jsonl");
        let mut sink = EventSink::start(EventsTarget::File(path.clone()), "n".into()).unwrap();
        sink.emit("a", &Event::Recovered {});
        std::thread::sleep(Duration::from_millis(300));
        std::fs::rename(&path, dir.join("events.jsonl.1")).unwrap();
        // the writer notices the move within about a second; SIGHUP asks at once
        sink.reopen();
        std::thread::sleep(Duration::from_millis(1500));
        sink.emit("a", &Event::Recovered {});
        sink.close();
        assert_eq!(read_lines(&dir.join("events.jsonl.1")).len(), 1);
        let after = read_lines(&path);
        assert_eq!(after.len(), 1, "the event after the rotation is in the new file");
        assert_eq!(after[0]["seq"], 2);
        assert_eq!(sink.dropped(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_errors_are_counted_and_leave_a_seq_gap() {
        // /dev/full fails every write with ENOSPC
        let mut sink = EventSink::start(EventsTarget::File("/dev/full".into()), "n".into()).unwrap();
        sink.emit("a", &Event::Recovered {});
        sink.emit("a", &Event::Recovered {});
        sink.close();
        assert!(sink.write_errors() >= 1, "failed writes are counted");
        assert_eq!(sink.seq(), 2);
    }

    #[test]
    fn the_documented_kinds_are_the_record_types() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md")).unwrap();
        let section = doc.split("## Kinds").nth(1).unwrap().split("\n## ").next().unwrap();
        let documented: Vec<&str> =
            section.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).collect();
        assert_eq!(documented, Event::KINDS, "docs/events.md and Event disagree");
        // every kind's fields are documented in its row
        let samples = [
            Event::Connected { socket: String::new(), suppressed: 0 },
            Event::Disconnected { reason: String::new(), suppressed: 0 },
            Event::HeartbeatLost { consecutive_misses: 0, last_heartbeat: None, corrective_action: "" },
            Event::Unhealthy { corrective_action: "", log_msg: String::new() },
            Event::Deregistered { log_msg: String::new() },
            Event::VoteResult { event_type: "", notification_type: "", result: "", log_msg: String::new() },
            Event::ProtocolError { error: "", detail: String::new(), suppressed: 0, total: 0 },
            Event::Maintenance { state: "", secs: Some(1), reason: String::new() },
        ];
        for e in samples {
            let row = section.lines().find(|l| l.starts_with(&format!("| `{}`", e.kind()))).unwrap();
            let Value::Object(fields) = serde_json::to_value(&e).unwrap() else { panic!() };
            for f in fields.keys().filter(|k| *k != "kind") {
                assert!(row.contains(&format!("`{f}`")), "field {f} of {} is not documented", e.kind());
            }
        }
    }

    #[test]
    fn guest_text_in_logs_is_escaped() {
        assert_eq!(escape_text("ok\n2026 FAKE LOG\u{1b}[31m"), "ok\\n2026 FAKE LOG\\u{1b}[31m");
    }
}
