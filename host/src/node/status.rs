//! The status snapshot: what `vigild status` shows. The loop takes a snapshot every few seconds and a writer
//! thread serialises it to a file atomically (write, then rename), so readers never see half a file and the loop
//! never waits on the disk.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

/// One guest in the snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestStatus {
    /// Guest id.
    pub id: String,
    /// Socket path.
    pub socket: String,
    /// `disconnected`, `awaiting_init`, `heartbeating`, `lost` (challenged, not answering), `exited`.
    pub state: String,
    /// Open fault, if any.
    pub fault: Option<String>,
    /// Declared name.
    pub name: Option<String>,
    /// Interval in force.
    pub interval_ms: Option<u64>,
    /// The longest a vote on this guest waits: its `vote_secs`, capped by the host (`max_notice_secs`).
    #[serde(default)]
    pub vote_secs: Option<u32>,
    /// The longest a reboot of this guest may take: its `restart_secs`, capped by the host (`max_restart_secs`).
    #[serde(default)]
    pub restart_secs: Option<u32>,
    /// Valid heartbeats.
    pub heartbeats: u64,
    /// Missed intervals.
    pub misses: u64,
    /// Protocol errors.
    pub protocol_errors: u64,
    /// Last round trip.
    pub last_rtt_ms: u64,
    /// Worst round trip.
    pub max_rtt_ms: u64,
    /// Messages dropped because the guest did not read.
    pub tx_dropped: u64,
    /// The reason of an open maintenance window (faults are not reported while it is open).
    #[serde(default)]
    pub maintenance_reason: Option<String>,
    /// Milliseconds left in the maintenance window.
    #[serde(default)]
    pub maintenance_left_ms: Option<u64>,
    /// Whether this guest's faults are reported.
    #[serde(default = "yes")]
    pub reporting: bool,
    /// Connections made to the guest's socket.
    #[serde(default)]
    pub connections: u64,
    /// Episodes over the byte budget.
    #[serde(default)]
    pub rate_limited: u64,
    /// Answers to an earlier challenge (a guest catching up after a freeze).
    #[serde(default)]
    pub late_answers: u64,
    /// The reference's fallback values seen (`unknown` action, health, event or notification type).
    #[serde(default)]
    pub unknown_values: u64,
}

fn yes() -> bool {
    true
}

/// The whole snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// When taken.
    pub time: String,
    /// vigild's pid.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// File-descriptor limit in force.
    pub fd_limit: u64,
    /// Events emitted.
    pub events_emitted: u64,
    /// Events dropped (writer too slow).
    pub events_dropped: u64,
    /// Every guest.
    pub guests: Vec<GuestStatus>,
}

impl Snapshot {
    /// Reads a status file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e} (is vigild running?)", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A human summary: counts by state, then every guest with a fault or not heartbeating.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let count = |st: &str| self.guests.iter().filter(|g| g.state == st).count();
        let _ = writeln!(
            out,
            "vigild{} on {} at {}: {} guests: {} heartbeating, {} lost, {} awaiting init, {} disconnected, {} exited; {} faults",
            if self.pid == 0 { String::new() } else { format!(" pid {}", self.pid) },
            self.host,
            self.time,
            self.guests.len(),
            count("heartbeating"),
            count("lost"),
            count("awaiting_init"),
            count("disconnected"),
            count("exited"),
            self.guests.iter().filter(|g| g.fault.is_some()).count()
        );
        let mut shown: Vec<&GuestStatus> =
            self.guests.iter().filter(|g| g.fault.is_some() || g.state != "heartbeating").collect();
        shown.sort_by(|a, b| a.id.cmp(&b.id));
        if !shown.is_empty() {
            let _ = writeln!(
                out,
                "{:<40} {:<14} {:<18} {:>10} {:>7} {:>8}",
                "GUEST", "STATE", "FAULT", "HEARTBEATS", "MISSES", "PROTO_ERR"
            );
        }
        for g in shown {
            let _ = writeln!(
                out,
                "{:<40} {:<14} {:<18} {:>10} {:>7} {:>8}",
                g.id,
                g.state,
                g.fault.as_deref().unwrap_or("-"),
                g.heartbeats,
                g.misses,
                g.protocol_errors
            );
        }
        out
    }
}

/// Background writer of snapshots.
pub struct StatusWriter {
    tx: Option<SyncSender<Snapshot>>,
    thread: Option<JoinHandle<()>>,
}

impl StatusWriter {
    /// Starts the writer for `path`.
    pub fn start(path: PathBuf) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let (tx, rx) = sync_channel::<Snapshot>(1);
        let thread = std::thread::Builder::new().name("vigild-status".into()).spawn(move || {
            crate::sys::background_thread();
            while let Ok(snap) = rx.recv() {
                let tmp = path.with_extension("tmp");
                let ok = serde_json::to_vec(&snap).ok().and_then(|bytes| std::fs::write(&tmp, bytes).ok()).is_some();
                if ok {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        })?;
        Ok(StatusWriter { tx: Some(tx), thread: Some(thread) })
    }

    /// Hands over a snapshot; skipped if the previous one is still being written.
    pub fn submit(&self, snap: Snapshot) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(snap);
        }
    }

    /// Writes what is queued and stops.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.stop();
    }
}
