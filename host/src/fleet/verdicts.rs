//! Verdicts: what the fleet does with each of a `Monitor`'s events — typed event records, withheld faults
//! (maintenance, reporting off), counters, and corrective actions under the guest's policy.

use std::sync::Arc;

use vigil_core::{CorrectiveAction, Instant, MonitorEvent};

use super::recovery::Refusal;
use super::{ActionRequest, Fleet, GuestKey, LibvirtAction, LibvirtOp, Via, VoteDone};
use crate::config::{ActionPolicy, Policy, RebootAs, RecoveryPolicy};
use crate::events::{Ago, Event};

impl Fleet {
    pub(super) fn drain_monitor(&mut self, key: GuestKey, now: Instant) {
        if !self.guests.get(key).is_some_and(|g| g.monitor.has_event()) {
            return; // the common case: an answer or a challenge made no event
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some(g) = self.guests.get_mut(key) {
            while let Some(e) = g.monitor.poll_event() {
                scratch.push(e);
            }
        }
        for e in scratch.drain(..) {
            self.on_monitor_event(key, e, now);
        }
        self.scratch = scratch;
    }

    fn on_monitor_event(&mut self, key: GuestKey, e: MonitorEvent, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        let id = Arc::clone(&g.id);
        let event = match e {
            MonitorEvent::Registered(r) => {
                g.budget.set_interval(&g.policy.budget, r.interval);
                g.not_established_reported = false;
                g.requested = r.init.corrective_action;
                if g.vm != super::Vm::Running {
                    // a rebooted (or restarted) guest is back: its VM runs
                    g.vm = super::Vm::Running;
                }
                let Some(suppressed) = g.registrations.take(now.as_millis()) else { return };
                Event::Registered {
                    name: r.init.name.to_string(),
                    invocation_id: r.init.invocation_id,
                    interval_ms: r.interval.as_millis(),
                    requested_interval_ms: r.init.heartbeat_interval_ms,
                    corrective_action: r.init.corrective_action.as_str(),
                    // as the host will use them: capped (the guest's own values are guest input)
                    vote_secs: r.init.vote_secs.min(g.policy.caps.notice_secs),
                    shutdown_notice_secs: r.init.shutdown_notice_secs.min(g.policy.caps.notice_secs),
                    suspend_notice_secs: r.init.suspend_notice_secs.min(g.policy.caps.notice_secs),
                    resume_notice_secs: r.init.resume_notice_secs.min(g.policy.caps.notice_secs),
                    restart_secs: r.init.restart_secs.min(g.policy.caps.restart_secs),
                    suppressed,
                }
            }
            MonitorEvent::HeartbeatLost { .. } | MonitorEvent::Unhealthy { .. }
                if !self.reporting || !g.reporting || g.maintenance().is_some() || g.vm != super::Vm::Running =>
            {
                g.fault_withheld = true;
                self.counters.withheld_faults += 1;
                return;
            }
            MonitorEvent::HeartbeatLost { consecutive_misses, last_heartbeat } => {
                let action = g.monitor.registration().map_or(CorrectiveAction::None, |r| r.init.corrective_action);
                self.events.push_back((
                    Arc::clone(&id),
                    Event::HeartbeatLost {
                        consecutive_misses,
                        last_heartbeat: last_heartbeat.map(|t| Ago((now - t).as_millis())),
                        corrective_action: action.as_str(),
                        reason: None,
                        probe: None,
                    },
                ));
                self.act(key, "heartbeat_lost", action, now);
                return;
            }
            MonitorEvent::Unhealthy { corrective_action, log_msg } => {
                self.counters.unhealthy_reports += 1;
                self.events.push_back((
                    Arc::clone(&id),
                    Event::Unhealthy { corrective_action: corrective_action.as_str(), log_msg: log_msg.to_string() },
                ));
                self.act(key, "unhealthy", corrective_action, now);
                return;
            }
            // a recovery from a fault nobody was told of (it was withheld) is no news either
            MonitorEvent::Recovered if g.fault_withheld => {
                g.fault_withheld = false;
                return;
            }
            MonitorEvent::Recovered => Event::Recovered {},
            MonitorEvent::Deregistered { log_msg } => Event::Deregistered { log_msg: log_msg.to_string() },
            MonitorEvent::VoteResult { event_type, notification_type, result, log_msg } => {
                *self.counters.votes.entry(result.as_str()).or_default() += 1;
                if let Some(ticket) = g.seldom.as_deref_mut().and_then(|s| s.vote.take()) {
                    self.votes_done.push_back(VoteDone {
                        ticket,
                        guest: Arc::clone(&id),
                        event_type,
                        notification_type,
                        result,
                        log_msg: log_msg.to_string(),
                    });
                }
                Event::VoteResult {
                    event_type: event_type.as_str(),
                    notification_type: notification_type.as_str(),
                    result: result.as_str(),
                    log_msg: log_msg.to_string(),
                }
            }
            MonitorEvent::ProtocolError(pe) => {
                *self.counters.protocol_errors.entry(pe.label()).or_default() += 1;
                let Some(suppressed) = g.seldom().errors.take(now.as_millis()) else { return };
                let total = u64::from(g.monitor.stats().protocol_errors) + u64::from(g.rate_limited());
                Event::ProtocolError { error: pe.label(), detail: pe.to_string(), suppressed, total }
            }
            MonitorEvent::RegistrationTimeout => {
                // Connected but silent for the registration timeout: the reference's "heartbeat not established"
                // (once per episode, and only for a running VM), then it reconnects; so do we, now.
                if !g.not_established_reported && g.vm == super::Vm::Running && g.monitor.registration().is_none() {
                    g.not_established_reported = true;
                    let secs = g.monitor.config().registration_timeout.as_millis() / 1000;
                    self.events.push_back((Arc::clone(&id), Event::NotEstablished { secs }));
                }
                self.close(key, "no registration within the registration timeout", now);
                if let Some(g) = self.guests.get_mut(key) {
                    g.reconnect_at = now;
                    self.wheel.set(key, Some(now));
                }
                return;
            }
        };
        self.events.push_back((id, event));
    }

    pub(super) fn act(&mut self, key: GuestKey, trigger: &'static str, action: CorrectiveAction, now: Instant) {
        let Some(g) = self.guests.get(key) else { return };
        let (id, policy, last) = (Arc::clone(&g.id), Arc::clone(&g.policy), g.last_action());
        if self.act_under(&id, &policy, last, trigger, action, now) {
            if let Some(g) = self.guests.get_mut(key) {
                g.seldom().last_action = Some(now);
            }
        }
    }

    /// Carries out `action` for guest `id` under `policy` (its last command at `last`); `true` if one was queued.
    pub(super) fn act_under(
        &mut self,
        id: &Arc<str>,
        policy: &Policy,
        last: Option<Instant>,
        trigger: &'static str,
        action: CorrectiveAction,
        now: Instant,
    ) -> bool {
        let via = match policy.policy {
            ActionPolicy::Log => return false,
            ActionPolicy::Command => match policy.command_for(action, id, trigger) {
                None => return false,
                Some(Ok(argv)) => Via::Command(argv),
                Some(Err(e)) => {
                    let event = action_event(trigger, action, Vec::new(), None, Some(e));
                    self.events.push_back((Arc::clone(id), event));
                    return false;
                }
            },
            ActionPolicy::Libvirt => match libvirt_via(&policy.recovery, action) {
                Some(via) => via,
                None => return false, // log, none: the fault event is all
            },
        };
        if let Via::Command(argv) = &via {
            if last.is_some_and(|t| now < t + policy.action_min_gap) {
                let mut event = action_event(trigger, action, argv.clone(), None, None);
                if let Event::Action { skipped, .. } = &mut event {
                    *skipped = Some("rate limit");
                }
                self.events.push_back((Arc::clone(id), event));
                return false;
            }
        }
        self.budgeted(id, policy.recovery, trigger, action, via, now)
    }

    /// Queues a corrective action for guest `id` if its budget allows it now (else says why, once per episode);
    /// `true` if queued.
    pub(super) fn budgeted(
        &mut self,
        id: &Arc<str>,
        recovery: RecoveryPolicy,
        trigger: &'static str,
        action: CorrectiveAction,
        via: Via,
        now: Instant,
    ) -> bool {
        if let Err((refusal, first)) = self.ledger.check(id, &recovery, now) {
            if first {
                let (why, until) = match refusal {
                    Refusal::Budget { refills_at } => ("budget", refills_at),
                    Refusal::Uptime { at } => ("min_uptime", Some(at)),
                };
                let event = Event::ActionSuppressed {
                    trigger,
                    corrective_action: action.effective().as_str(),
                    why,
                    budget: format!("{} per {} s", recovery.budget, recovery.window.as_millis() / 1000),
                    min_uptime_secs: recovery.min_uptime.as_millis() / 1000,
                    allowed_in_secs: until.map(|t| t.saturating_duration_since(now).as_millis().div_ceil(1000)),
                };
                self.events.push_back((Arc::clone(id), event));
            }
            return false;
        }
        self.ledger.record(id, now);
        self.actions.push_back(ActionRequest { guest: Arc::clone(id), trigger, action: action.effective(), via });
        true
    }
}

/// How `policy = "libvirt"` carries out `action` (`None`: log or none, nothing to do).
pub fn libvirt_via(r: &RecoveryPolicy, action: CorrectiveAction) -> Option<Via> {
    let op = match action.effective() {
        CorrectiveAction::Reboot if r.reboot_as == RebootAs::Reboot => LibvirtOp::Reboot,
        CorrectiveAction::Reboot => LibvirtOp::Reset,
        CorrectiveAction::Stop => LibvirtOp::Stop,
        _ => return None,
    };
    Some(Via::Libvirt(LibvirtAction {
        op,
        second_opinion: r.second_opinion.map(|d| std::time::Duration::from_millis(d.as_millis())),
        evidence: r.evidence,
    }))
}

/// An `action` event.
pub fn action_event(
    trigger: &'static str,
    action: CorrectiveAction,
    argv: Vec<String>,
    exit_code: Option<i32>,
    error: Option<String>,
) -> Event {
    Event::Action {
        trigger,
        corrective_action: action.effective().as_str(),
        argv,
        exit_code,
        elapsed_ms: None,
        error,
        skipped: None,
    }
}
