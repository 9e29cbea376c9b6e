//! Fault and status events: one typed record per kind ([`Event`], the schema of `docs/events.md`), their log
//! lines (guest text escaped), and the per-guest rate limit of noisy kinds. The local writer is `event_log`.

use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use tracing::{debug, info, warn};

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
        /// Why, when it is not the usual missed challenges (a reboot without a new `init` in time).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// What was not answered when it is not Vigil's heartbeat: `qemu-ga` (an agentless guest).
        #[serde(skip_serializing_if = "Option::is_none")]
        probe: Option<&'static str>,
    },
    /// The hypervisor paused the VM: loss detection is suspended.
    Paused {},
    /// The hypervisor resumed it: counting starts over.
    Resumed {},
    /// The hypervisor rebooted (or reset) it: a new `init` is expected within its `restart_secs`.
    Rebooting {},
    /// It shut down or was destroyed: never a loss.
    Stopped {},
    /// Its kernel panicked (`pvpanic`): reported at once, with its corrective action.
    Crashed {},
    /// Its socket is gone (the VM was deleted, or moved away): vigild stops watching it, and a fault still open is
    /// closed upstream (an alert would otherwise fire forever for a VM that no longer exists).
    Removed {
        /// The fault that was open (`heartbeat_lost`, `unhealthy:<action>`), if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        open_fault: Option<String>,
    },
    /// The guest's port has been open for the registration timeout without any `init` (the reference's "heartbeat
    /// not established"); once per episode.
    NotEstablished {
        /// How long it has been.
        secs: u64,
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
    /// The upstream spool had to drop events, or was unreadable at start and was started afresh (host-wide:
    /// `guest` is empty). Goes upstream only.
    Spool {
        /// `dropped` or `reset`.
        state: &'static str,
        /// Events dropped.
        dropped: u64,
        /// What happened.
        detail: String,
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
    /// vigild started watching a domain without Vigil's agent (issue #22).
    Watching {
        /// How: `qga` (the stock QEMU guest agent, through libvirt).
        protocol: &'static str,
        /// The libvirt domain.
        domain: String,
    },
    /// A corrective action through libvirt ended (issue #23).
    ActionResult {
        /// `heartbeat_lost`, `unhealthy` or `crashed`.
        trigger: &'static str,
        /// The guest's corrective action.
        corrective_action: &'static str,
        /// What vigild did to the domain (`reset`, `reboot`, `stop`, `start`).
        operation: &'static str,
        /// `ok`, `failed`, `timed_out`, or `held` (the second opinion saw the OS alive).
        result: &'static str,
        /// libvirt's reason for a failure, or what was seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// From the verdict to libvirt's answer.
        elapsed_ms: u64,
        /// The second opinion: whether the domain's block or network counters moved.
        #[serde(skip_serializing_if = "Option::is_none")]
        os_activity: Option<bool>,
        /// The counters' movement over the second opinion's window.
        #[serde(skip_serializing_if = "Option::is_none")]
        activity: Option<crate::events::Activity>,
        /// Files saved before the action (screenshot, console tail).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        evidence: Vec<String>,
    },
    /// A corrective action was not carried out: the guest's budget is spent or its VM has not run long enough
    /// (reported once until an action is allowed again).
    ActionSuppressed {
        /// What caused it.
        trigger: &'static str,
        /// The guest's corrective action.
        corrective_action: &'static str,
        /// `budget` or `min_uptime`.
        why: &'static str,
        /// The budget (`3 per 3600 s`).
        budget: String,
        /// The minimum uptime.
        min_uptime_secs: u64,
        /// When an action is allowed again (none: a budget of 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        allowed_in_secs: Option<u64>,
    },
    /// vigild plugged the heartbeat channel into a running domain that its hot-plug policy selects (issue #21).
    ChannelAttached {
        /// The libvirt domain.
        domain: String,
        /// The host socket of the channel.
        socket: String,
        /// What selected it: `domain`, `flavor`, `metadata` or `extra_spec`.
        selected_by: &'static str,
    },
    /// The policy selects the domain, but the channel could not be attached.
    ChannelRefused {
        /// The libvirt domain.
        domain: String,
        /// libvirt's reason, as it said it.
        reason: String,
        /// What would make it work.
        fix: String,
    },
    /// vigild unplugged a channel it had attached, from a domain the policy no longer selects (opt-in).
    ChannelDetached {
        /// The libvirt domain.
        domain: String,
        /// The host socket the channel had.
        socket: String,
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
        "paused",
        "resumed",
        "rebooting",
        "stopped",
        "crashed",
        "removed",
        "not_established",
        "maintenance",
        "spool",
        "action",
        "action_result",
        "action_suppressed",
        "watching",
        "channel_attached",
        "channel_refused",
        "channel_detached",
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
            Event::Paused {} => "paused",
            Event::Resumed {} => "resumed",
            Event::Rebooting {} => "rebooting",
            Event::Stopped {} => "stopped",
            Event::Crashed {} => "crashed",
            Event::Removed { .. } => "removed",
            Event::NotEstablished { .. } => "not_established",
            Event::Spool { .. } => "spool",
            Event::Action { .. } => "action",
            Event::ActionResult { .. } => "action_result",
            Event::Watching { .. } => "watching",
            Event::ActionSuppressed { .. } => "action_suppressed",
            Event::ChannelAttached { .. } => "channel_attached",
            Event::ChannelRefused { .. } => "channel_refused",
            Event::ChannelDetached { .. } => "channel_detached",
        }
    }
}

/// How much a domain's counters moved over the second opinion's window.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Activity {
    /// The window, milliseconds.
    pub window_ms: u64,
    /// vCPU time used, nanoseconds (reported, not decisive: a hung kernel may spin).
    pub cpu_ns: u64,
    /// Bytes read and written on every disk.
    pub block_bytes: u64,
    /// Block requests.
    pub block_requests: u64,
    /// Bytes received and sent on every interface.
    pub net_bytes: u64,
}

/// Guest text made safe for a log line: control characters (and backslashes) escaped, so a guest cannot forge
/// log lines or terminal sequences.
pub fn escape_text(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

/// One log line per event; guest text is escaped (a guest must not forge log lines).
pub fn log_event(guest: &str, e: &Event) {
    match e {
        Event::HeartbeatLost { consecutive_misses, .. } => warn!(guest, consecutive_misses, "heartbeat lost"),
        Event::Unhealthy { corrective_action, log_msg } => {
            warn!(guest, action = corrective_action, log_msg = %escape_text(log_msg), "unhealthy")
        }
        Event::Registered { name, interval_ms, .. } => {
            info!(guest, name = %escape_text(name), interval_ms, "registered")
        }
        Event::Deregistered { log_msg } => info!(guest, log_msg = %escape_text(log_msg), "deregistered"),
        Event::ProtocolError { error, .. } => debug!(guest, error, "protocol error"),
        other => info!(guest, kind = other.kind(), "event"),
    }
}

pub use crate::node::event_log::{EventSink, EventsTarget};

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A per-guest token bucket for noisy event kinds (protocol errors, connections): `burst` at once, then one per
/// `every`.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    tokens: u32,
    /// Events withheld since the last one let through (saturating; 16 bytes in all, four per guest).
    pub suppressed: u32,
    last_refill_ms: u64,
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
            self.suppressed = self.suppressed.saturating_add(1);
            false
        }
    }

    /// [`allow`](Self::allow), and the count withheld before this one (reset) when allowed.
    pub fn take(&mut self, now_ms: u64) -> Option<u64> {
        self.allow(now_ms).then(|| u64::from(std::mem::take(&mut self.suppressed)))
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
    use serde_json::Value;
    use std::path::PathBuf;

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
            &Event::HeartbeatLost {
                consecutive_misses: 2,
                last_heartbeat: Some(Ago(1500)),
                corrective_action: "log",
                reason: None,
                probe: None,
            },
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
            Event::HeartbeatLost {
                consecutive_misses: 0,
                last_heartbeat: None,
                corrective_action: "",
                reason: Some(String::new()),
                probe: Some("qemu-ga"),
            },
            Event::Watching { protocol: "qga", domain: String::new() },
            Event::ActionSuppressed {
                trigger: "",
                corrective_action: "",
                why: "",
                budget: String::new(),
                min_uptime_secs: 0,
                allowed_in_secs: Some(1),
            },
            Event::ActionResult {
                trigger: "",
                corrective_action: "",
                operation: "",
                result: "",
                reason: Some(String::new()),
                elapsed_ms: 0,
                os_activity: Some(true),
                activity: Some(Activity::default()),
                evidence: vec![String::new()],
            },
            Event::NotEstablished { secs: 1 },
            Event::Unhealthy { corrective_action: "", log_msg: String::new() },
            Event::Deregistered { log_msg: String::new() },
            Event::VoteResult { event_type: "", notification_type: "", result: "", log_msg: String::new() },
            Event::ProtocolError { error: "", detail: String::new(), suppressed: 0, total: 0 },
            Event::Maintenance { state: "", secs: Some(1), reason: String::new() },
            Event::Spool { state: "", dropped: 0, detail: String::new() },
            Event::Removed { open_fault: Some(String::new()) },
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
