//! Fault and status events: one JSON object per line, written by a dedicated thread so the data plane never
//! waits on a disk or a pipe. The schema is a public interface, documented in `docs/events.md`.
//!
//! The loop builds each record (events are rare: faults and state changes, never per heartbeat) and hands it to a
//! bounded queue; when the queue is full the record is dropped and counted, never waited for.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Nowhere (tests that only read the status).
    Discard,
}

/// Queue depth between the loop and the writer.
const QUEUE: usize = 65_536;

/// Stamps, numbers and queues events.
pub struct EventSink {
    host: String,
    seq: u64,
    tx: Option<SyncSender<String>>,
    writer: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Starts the writer thread.
    pub fn start(target: EventsTarget, host: String) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let mut out: Box<dyn Write + Send> = match &target {
            EventsTarget::Stdout => Box::new(std::io::stdout()),
            EventsTarget::File(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
            EventsTarget::Discard => Box::new(std::io::sink()),
        };
        let writer =
            std::thread::Builder::new().name("vigild-events".into()).spawn(move || write_loop(rx, &mut out))?;
        Ok(EventSink { host, seq: 0, tx: Some(tx), writer: Some(writer), dropped: Arc::new(AtomicU64::new(0)) })
    }

    /// Events lost because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events emitted so far (the last `seq`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Emits `{"time","host","guest","kind","seq", ...fields}`.
    pub fn emit(&mut self, guest: &str, kind: &str, fields: Value) {
        self.seq += 1;
        let mut obj = Map::new();
        obj.insert("time".into(), json!(rfc3339(SystemTime::now())));
        obj.insert("host".into(), json!(self.host));
        obj.insert("guest".into(), json!(guest));
        obj.insert("kind".into(), json!(kind));
        obj.insert("seq".into(), json!(self.seq));
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        let line = Value::Object(obj).to_string();
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Flushes and stops the writer.
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(rx: Receiver<String>, out: &mut dyn Write) {
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        // batch what is already queued, then flush once
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A per-guest token bucket for noisy event kinds (protocol errors): `burst` at once, then one per `every`.
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
        assert!(r.allow(10_000));
        assert!(!r.allow(10_001));
    }

    #[test]
    fn events_are_numbered_and_written_as_json_lines() {
        let dir = std::env::temp_dir().join(format!("vigil-events-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut sink = EventSink::start(EventsTarget::File(path.clone()), "node-1".into()).unwrap();
        sink.emit("vm-1", "connected", json!({"socket": "/x"}));
        sink.emit("vm-1", "heartbeat_lost", json!({"consecutive_misses": 2}));
        sink.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["seq"], 1);
        assert_eq!(lines[1]["seq"], 2);
        assert_eq!(lines[1]["kind"], "heartbeat_lost");
        assert_eq!(lines[1]["host"], "node-1");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
