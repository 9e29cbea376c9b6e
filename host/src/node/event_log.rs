//! The local event log: [`EventSink`] numbers each record (`seq`) and hands it to its own writer thread through a
//! bounded queue, so the data plane never waits on a disk or a pipe. A full queue drops the record and counts
//! it; a failed write is counted too (the `seq` gap stays visible). The file is reopened when asked (SIGHUP) and
//! when its path no longer names the file being written (log rotation); a stop writes what is queued for at most
//! two seconds.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::events::{rfc3339, Event};
use crate::queue::{bounded, QueueRx, QueueTx};

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

/// Queue depth between the loop and the writer: room for every guest of a large node changing state at once (memory
/// is taken only for what is queued: see [`crate::queue`]).
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
    tx: Option<QueueTx<String>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    epoch: std::time::Instant,
}

impl EventSink {
    /// Starts the writer thread.
    pub fn start(target: EventsTarget, host: String) -> std::io::Result<Self> {
        let (tx, rx) = bounded::<String>(QUEUE);
        let out = Output::open(&target)?;
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            stop_by: AtomicU64::new(u64::MAX),
        });
        let epoch = std::time::Instant::now();
        let sh = Arc::clone(&shared);
        let writer = std::thread::Builder::new().name("vigild-events".into()).spawn(move || {
            crate::sys::background_thread();
            write_loop(rx, out, target, &sh, epoch)
        })?;
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

    /// Stops the writer: what is queued is written, for at most two seconds; the rest is counted as dropped.
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

fn write_loop(rx: QueueRx<String>, mut out: Output, target: EventsTarget, shared: &Shared, epoch: std::time::Instant) {
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
