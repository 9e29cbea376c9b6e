//! How the fleet describes a guest to the outside: its state word (status, metrics) and its status line.

use vigil_core::{Fault, Instant, MonitorState};

use super::{Guest, Link, Vm};
use crate::events::escape_text;
use crate::node::status::GuestStatus;

/// Every word a guest's state can be said with, for metrics that list each state even at zero.
pub const GUEST_STATES: &[&str] =
    &["heartbeating", "lost", "awaiting_init", "disconnected", "exited", "paused", "rebooting", "stopped", "crashed"];

impl Guest {
    /// Where the guest stands, in the words of the status and the metrics (one of [`GUEST_STATES`]).
    pub(super) fn state_word(&self) -> &'static str {
        match (self.link, self.monitor.state()) {
            (Link::Backoff | Link::Connecting, _) | (_, MonitorState::Disconnected) => "disconnected",
            (_, MonitorState::AwaitingInit) => "awaiting_init",
            // still challenged at the interval, but the hypervisor says why it does not answer
            _ if self.vm != Vm::Running => self.vm.word(),
            (_, MonitorState::Heartbeating) if self.monitor.fault() == Some(Fault::Lost) => "lost",
            (_, MonitorState::Heartbeating) => "heartbeating",
            (_, MonitorState::Exited) => "exited",
        }
    }
}

pub(super) fn status_of(g: &Guest, now: Instant) -> GuestStatus {
    let s = g.monitor.stats();
    GuestStatus {
        id: g.id.to_string(),
        socket: g.path.display().to_string(),
        state: g.state_word().into(),
        fault: g.monitor.fault().map(fault_word),
        name: g.monitor.registration().map(|r| escape_text(&r.init.name)),
        interval_ms: g.monitor.registration().map(|r| r.interval.as_millis()),
        vote_secs: g.monitor.registration().map(|r| r.init.vote_secs.min(g.policy.caps.notice_secs)),
        restart_secs: g.monitor.registration().map(|r| r.init.restart_secs.min(g.policy.caps.restart_secs)),
        heartbeats: s.heartbeats,
        misses: u64::from(s.misses),
        protocol_errors: u64::from(s.protocol_errors),
        last_rtt_ms: s.last_rtt.as_millis(),
        max_rtt_ms: s.max_rtt.as_millis(),
        tx_dropped: u64::from(g.tx_dropped()),
        rate_limited: u64::from(g.rate_limited()),
        connections: u64::from(g.connections),
        maintenance_reason: g.maintenance().map(|(_, r)| r.clone()),
        maintenance_left_ms: g.maintenance().map(|(until, _)| (*until - now).as_millis()),
        reporting: g.reporting,
        late_answers: u64::from(s.late_answers),
        unknown_values: u64::from(s.unknown_values),
    }
}

/// An open fault in the words of the status and the events (`heartbeat_lost`, `unhealthy:<action>`).
pub(super) fn fault_word(f: Fault) -> String {
    match f {
        Fault::Lost => "heartbeat_lost".to_string(),
        Fault::Unhealthy(a) => format!("unhealthy:{a}"),
    }
}
