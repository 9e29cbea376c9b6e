//! Commands to the fleet from the control plane: votes and notices, maintenance windows, reporting on/off, and the
//! counters behind the metrics. Still sans-IO: a vote is a [`Ticket`] the caller maps to its reply.

use std::collections::BTreeMap;
use std::sync::Arc;

use vigil_core::{Duration, EventType, Fault, Init, Instant, MonitorStats, NotificationType, NotifyError, VoteResult};

use super::{Fleet, GuestKey, Ticket};
use crate::events::Event;
use crate::metrics::Buckets;

/// The longest maintenance window (24 h): a forgotten window must not blind the monitor for good.
pub const MAX_MAINTENANCE: Duration = Duration::from_secs(24 * 3600);

/// Why a vote or notice could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteRefusal {
    /// No guest has that id.
    UnknownGuest,
    /// The guest is not heartbeating (not connected, not registered, lost, or exited): it would not answer.
    NotHeartbeating {
        /// Where it stands.
        state: &'static str,
    },
    /// Another vote or notice is still open for this guest.
    Busy,
}

/// A vote or notice that went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteStarted {
    /// Its ticket; the answer comes back as a [`VoteDone`] with it.
    pub ticket: Ticket,
    /// How long the guest has.
    pub timeout: Duration,
    /// Vote or notice.
    pub notification_type: NotificationType,
}

/// The end of a vote or notice: the guest's answer, `timeout`, or `error` (the session ended first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteDone {
    /// The ticket of [`VoteStarted`].
    pub ticket: Ticket,
    /// The guest.
    pub guest: Arc<str>,
    /// The event.
    pub event_type: EventType,
    /// Vote or notice.
    pub notification_type: NotificationType,
    /// The answer.
    pub result: VoteResult,
    /// The guest's reason.
    pub log_msg: String,
}

/// Monotonic totals of the per-guest counters (live guests plus those no longer watched).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages sent to guests.
    pub messages_out: u64,
    /// Valid answers.
    pub heartbeats: u64,
    /// Intervals that ended unanswered.
    pub misses: u64,
    /// Unanswered intervals not counted because the challenge left late (the host was behind).
    pub host_late: u64,
    /// Losses declared.
    pub losses: u64,
    /// Registrations.
    pub registrations: u64,
    /// Bytes read from guests.
    pub bytes_in: u64,
}

impl Totals {
    /// Adds one guest's counters.
    pub fn add(&mut self, s: &MonitorStats) {
        self.messages_out += s.messages_out;
        self.heartbeats += s.heartbeats;
        self.misses += u64::from(s.misses);
        self.host_late += u64::from(s.host_late);
        self.losses += u64::from(s.losses);
        self.registrations += u64::from(s.registrations);
        self.bytes_in += s.bytes_in;
    }
}

/// Fleet-wide counters kept as things happen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// `unhealthy` reports.
    pub unhealthy_reports: u64,
    /// Protocol errors by label (before any event rate limit), `rate_limited` episodes included.
    pub protocol_errors: BTreeMap<&'static str, u64>,
    /// Votes and notices by result.
    pub votes: BTreeMap<&'static str, u64>,
    /// Faults not reported because of maintenance or reporting off.
    pub withheld_faults: u64,
    /// Probes of agentless guests (through the QEMU guest agent) answered.
    pub agent_answers: u64,
    /// Probes of agentless guests not answered.
    pub agent_misses: u64,
    /// Round trips of answers to the current challenge, in seconds.
    pub rtt: Buckets,
}

/// The seconds a guest gets to answer, from its registration, as the reference host used them: a vote waits
/// `vote_secs`; the notice of `stop`/`reboot` waits `shutdown_notice_secs`, of `suspend`/`pause` (and, Vigil's
/// choice, of the other `*_begin` events, which also take the VM away) `suspend_notice_secs`, of
/// `resume`/`unpause` and the `*_end` events `resume_notice_secs`. The caller caps what the guest chose.
pub fn notice_timeout_secs(init: &Init, event: EventType, kind: NotificationType) -> u32 {
    if kind == NotificationType::Revocable {
        return init.vote_secs;
    }
    match event {
        EventType::Stop | EventType::Reboot => init.shutdown_notice_secs,
        EventType::Suspend
        | EventType::Pause
        | EventType::ResizeBegin
        | EventType::LiveMigrateBegin
        | EventType::ColdMigrateBegin => init.suspend_notice_secs,
        EventType::Resume
        | EventType::Unpause
        | EventType::ResizeEnd
        | EventType::LiveMigrateEnd
        | EventType::ColdMigrateEnd
        | EventType::Unknown => init.resume_notice_secs,
    }
}

impl Fleet {
    /// The guest with id `id` (ids come from socket names or the config).
    pub fn find(&self, id: &str) -> Option<GuestKey> {
        self.by_id.get(id).copied()
    }

    /// Where a guest stands, in the words of the status (`heartbeating`, `lost`, `awaiting_init`, ...).
    fn state_word(&self, key: GuestKey) -> &'static str {
        self.guests.get(key).map_or("unknown", |g| g.state_word())
    }

    /// Starts a vote (`revocable`) or notice (`irrevocable`) for guest `id`. The kind defaults as the reference's:
    /// events that can be refused get a vote. The answer comes back through [`poll_vote_done`](Self::poll_vote_done)
    /// — the guest's answer, `timeout`, or `error` — and as a `vote_result` event.
    pub fn start_vote(
        &mut self,
        id: &str,
        event_type: EventType,
        notification_type: Option<NotificationType>,
        now: Instant,
    ) -> Result<VoteStarted, VoteRefusal> {
        let key = self.find(id).ok_or(VoteRefusal::UnknownGuest)?;
        let state = self.state_word(key);
        let g = &mut self.guests[key];
        let kind = notification_type.unwrap_or(if event_type.is_voted() {
            NotificationType::Revocable
        } else {
            NotificationType::Irrevocable
        });
        let Some(reg) = g.monitor.registration().filter(|_| state == "heartbeating") else {
            return Err(VoteRefusal::NotHeartbeating { state });
        };
        let secs = notice_timeout_secs(&reg.init, event_type, kind).min(g.policy.caps.notice_secs);
        let timeout = Duration::from_secs(u64::from(secs));
        match g.monitor.notify(now, event_type, kind, timeout) {
            Ok(()) => {}
            Err(NotifyError::Busy) => return Err(VoteRefusal::Busy),
            Err(_) => return Err(VoteRefusal::NotHeartbeating { state }),
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        g.seldom().vote = Some(ticket);
        self.after_input(key);
        Ok(VoteStarted { ticket, timeout, notification_type: kind })
    }

    /// The next finished vote or notice.
    pub fn poll_vote_done(&mut self) -> Option<VoteDone> {
        self.votes_done.pop_front()
    }

    /// Opens (or moves) a maintenance window of `secs` (at most [`MAX_MAINTENANCE`]) for guest `id`: its faults
    /// are not reported, nor acted on, until it ends; one still open then is reported then. Returns the window's
    /// length in force.
    pub fn set_maintenance(&mut self, id: &str, secs: u64, reason: &str, now: Instant) -> Option<Duration> {
        let key = self.find(id)?;
        let len = Duration::from_secs(secs).min(MAX_MAINTENANCE);
        let g = &mut self.guests[key];
        g.seldom().maintenance = Some((now + len, reason.to_owned()));
        let event = Event::Maintenance { state: "started", secs: Some(len.as_millis() / 1000), reason: reason.into() };
        self.events.push_back((Arc::clone(&g.id), event));
        self.reschedule(key);
        Some(len)
    }

    /// Ends guest `id`'s maintenance window early; `false` if there is no such guest.
    pub fn end_maintenance(&mut self, id: &str, now: Instant) -> bool {
        let Some(key) = self.find(id) else { return false };
        self.end_maintenance_of(key, "ended", now);
        true
    }

    pub(super) fn end_maintenance_of(&mut self, key: GuestKey, how: &'static str, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        let Some((_, reason)) = g.seldom.as_deref_mut().and_then(|s| s.maintenance.take()) else { return };
        let event = Event::Maintenance { state: how, secs: None, reason };
        self.events.push_back((Arc::clone(&g.id), event));
        self.release(key, now);
        self.reschedule(key);
    }

    /// Turns the reporting of faults on or off, for the whole host (`id` = `None`) or one guest. Turned back on,
    /// faults still open are reported. `false` if there is no such guest.
    pub fn set_reporting(&mut self, id: Option<&str>, on: bool, now: Instant) -> bool {
        let keys: Vec<GuestKey> = match id {
            None => {
                self.reporting = on;
                self.guests.iter().map(|(k, _)| k).collect()
            }
            Some(id) => match self.find(id) {
                Some(key) => {
                    self.guests[key].reporting = on;
                    vec![key]
                }
                None => return false,
            },
        };
        if on {
            for key in keys {
                self.release(key, now);
            }
        }
        true
    }

    /// Whether faults are reported for the whole host.
    pub fn reporting(&self) -> bool {
        self.reporting
    }

    /// Reports a fault that was withheld, if it is still open and nothing withholds it any more.
    fn release(&mut self, key: GuestKey, now: Instant) {
        let reporting = self.reporting;
        let Some(g) = self.guests.get_mut(key) else { return };
        if !g.fault_withheld || !reporting || !g.reporting || g.maintenance().is_some() || g.vm != super::Vm::Running {
            return;
        }
        g.fault_withheld = false;
        let action = g.monitor.registration().map_or(vigil_core::CorrectiveAction::None, |r| r.init.corrective_action);
        let id = Arc::clone(&g.id);
        match g.monitor.fault() {
            Some(Fault::Lost) => {
                // when the last answer came is not kept past the loss itself
                let event = Event::HeartbeatLost {
                    consecutive_misses: g.monitor_misses(),
                    last_heartbeat: None,
                    corrective_action: action.as_str(),
                    reason: None,
                    probe: None,
                };
                self.events.push_back((id, event));
                self.act(key, "heartbeat_lost", action, now);
            }
            Some(Fault::Unhealthy(a)) => {
                self.counters.unhealthy_reports += 1;
                let event =
                    Event::Unhealthy { corrective_action: a.as_str(), log_msg: "reported after maintenance".into() };
                self.events.push_back((id, event));
                self.act(key, "unhealthy", a, now);
            }
            None => {}
        }
    }

    /// Guests by state word (every word of [`GUEST_STATES`](super::GUEST_STATES), zeros included), and how many
    /// have a maintenance window open: what the metrics need, without a status line per guest.
    pub fn state_counts(&self) -> (Vec<(&'static str, u64)>, u64) {
        let mut by_state: Vec<(&'static str, u64)> = super::GUEST_STATES.iter().map(|&s| (s, 0)).collect();
        let mut in_maintenance = 0;
        let mut count = |word: &'static str| match by_state.iter_mut().find(|(s, _)| *s == word) {
            Some(e) => e.1 += 1,
            None => by_state.push((word, 1)),
        };
        for (_, g) in self.guests.iter() {
            count(g.state_word());
            in_maintenance += u64::from(g.maintenance().is_some());
        }
        for g in self.agents.values() {
            count(g.state_word());
        }
        (by_state, in_maintenance)
    }

    /// Fleet-wide counters and monotonic totals.
    pub fn counters(&self) -> (Counters, Totals) {
        let mut totals = self.retired;
        for (_, g) in self.guests.iter() {
            totals.add(g.monitor.stats());
        }
        (self.counters.clone(), totals)
    }
}

impl super::Guest {
    fn monitor_misses(&self) -> u32 {
        // consecutive misses are not exposed by the core; the loss threshold + 1 is what declared it
        self.monitor.config().loss_threshold.saturating_add(1)
    }
}
