//! Guests watched without Vigil's agent, through the stock QEMU guest agent (issue #22): OS-level liveness where
//! the guest only runs `qemu-ga`. The control plane probes each such domain through libvirt (a typed agent call,
//! one per interval, each with its own timeout) and tells the fleet how each probe went; the verdicts are here, on
//! virtual time, under the same rules as heartbeat guests: a miss counts only while the VM runs as far as the
//! hypervisor said (never while paused, rebooting or stopped), loss when consecutive misses exceed the threshold,
//! reported once per episode as `heartbeat_lost` (with `probe: "qemu-ga"`; Masakari gets
//! `QEMU_GUEST_AGENT_ERROR`, as from masakari-monitors), and any answer ends the episode (`recovered`).
//!
//! Misses count only once the agent has answered since the VM (re)started: an agent still booting is not a hang.
//! One that never answers is reported once as `not_established` after [`AGENT_ESTABLISH`].
//!
//! An answer is any reply from the agent, an error reply included: an agent that refuses a command while the
//! guest's file systems are frozen is alive. Only no answer (the probe's timeout, or libvirt's "agent
//! unresponsive") is a miss.
//!
//! A loss is held for [`AGENT_LOSS_HOLD`] before it is reported: a domain being destroyed or shut down stops
//! answering before the hypervisor's `stopped` event is read, and that event (or an answer, or any other word of
//! the hypervisor on the VM) within the hold means there was no hang to report.

use std::sync::Arc;

use vigil_core::{Duration, Instant};

use super::{Fleet, Lifecycle, Vm};
use crate::events::{Ago, Event};

/// How one probe went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The agent answered (possibly with an error: it is alive).
    Answered,
    /// No answer: why (a timeout, libvirt's words).
    NoAnswer(String),
    /// The domain is not running (libvirt said so): not a miss.
    NotRunning,
}

/// One domain watched through its guest agent.
#[derive(Clone, Debug)]
pub struct AgentGuest {
    id: Arc<str>,
    /// The libvirt domain's name.
    pub domain: String,
    vm: Vm,
    misses: u32,
    lost: bool,
    /// A loss waiting out [`AGENT_LOSS_HOLD`]: until when, and what it will report.
    held: Option<HeldLoss>,
    last_answer: Option<Instant>,
    /// Since when an answer is awaited (watch start, VM start or reboot), until the first one.
    waiting_since: Option<Instant>,
    said_not_established: bool,
    /// Health-command failures in a row.
    health_failures: u32,
    unhealthy: bool,
    /// Probes answered.
    pub answers: u64,
    /// Probes missed.
    pub missed: u64,
}

impl AgentGuest {
    /// Its state in the words of the status and the metrics (`fleet::GUEST_STATES`).
    pub fn state_word(&self) -> &'static str {
        match self.vm {
            Vm::Running if self.lost => "lost",
            Vm::Running if self.waiting_since.is_some() => "awaiting_init",
            Vm::Running => "heartbeating",
            other => other.word(),
        }
    }

    /// Its status line (the fields that apply; `socket` names the domain: `qemu-ga:<domain>`).
    pub fn status(&self) -> crate::node::status::GuestStatus {
        crate::node::status::GuestStatus {
            id: self.id.to_string(),
            socket: format!("qemu-ga:{}", self.domain),
            state: self.state_word().into(),
            fault: if self.lost {
                Some("heartbeat_lost".into())
            } else {
                self.unhealthy.then(|| "unhealthy:none".into())
            },
            name: None,
            interval_ms: None,
            vote_secs: None,
            restart_secs: None,
            heartbeats: self.answers,
            misses: self.missed,
            protocol_errors: 0,
            last_rtt_ms: 0,
            max_rtt_ms: 0,
            tx_dropped: 0,
            maintenance_reason: None,
            maintenance_left_ms: None,
            reporting: true,
            connections: 0,
            rate_limited: 0,
            late_answers: 0,
            unknown_values: 0,
        }
    }
}

/// A loss not yet reported: it waits out [`AGENT_LOSS_HOLD`].
#[derive(Clone, Debug)]
struct HeldLoss {
    /// When the loss was found (what `last_heartbeat` is measured from).
    found: Instant,
    until: Instant,
    misses: u32,
    last_answer: Option<Instant>,
    reason: String,
}

/// How long a loss is held for a word from the hypervisor that explains it (the VM stopped, paused, rebooted)
/// before it is reported. `virsh destroy` leaves a domain unanswering some milliseconds before its `stopped`
/// event is read; two seconds cover that with a wide margin and add little to a detection that takes two probe
/// intervals.
pub const AGENT_LOSS_HOLD: Duration = Duration::from_secs(2);

/// How long a rebooting agentless guest may go without an answer before misses count again.
pub const AGENT_REBOOT_GRACE: Duration = Duration::from_secs(600);
/// How long an agent may take to answer for the first time before it is reported `not_established`.
pub const AGENT_ESTABLISH: Duration = Duration::from_secs(120);

impl Fleet {
    /// Starts watching domain `domain` (guest id `id`, its UUID) through its guest agent; `false` if it already is,
    /// or if a heartbeat guest has that id (Vigil's own agent says more: it is the one watched).
    pub fn watch_agent(&mut self, id: &str, domain: &str, now: Instant) -> bool {
        if self.find(id).is_some() || self.agents.contains_key(id) {
            return false;
        }
        let id: Arc<str> = Arc::from(id);
        let guest = AgentGuest {
            id: Arc::clone(&id),
            domain: domain.to_string(),
            vm: Vm::Running,
            misses: 0,
            lost: false,
            held: None,
            last_answer: None,
            waiting_since: Some(now),
            said_not_established: false,
            health_failures: 0,
            unhealthy: false,
            answers: 0,
            missed: 0,
        };
        self.agents.insert(Arc::clone(&id), guest);
        self.events.push_back((id, Event::Watching { protocol: "qga", domain: domain.to_string() }));
        true
    }

    /// Stops watching a domain (it is gone); a loss still open is closed upstream (`removed`). The hypervisor's
    /// word on it may come after this (a destroyed domain leaves the list before its `stopped` event is read):
    /// it is still reported, as for a heartbeat guest whose socket went away first.
    pub fn unwatch_agent(&mut self, id: &str, now: Instant) {
        if let Some((id, g)) = self.agents.remove_entry(id) {
            let open_fault = g.lost.then(|| "heartbeat_lost".to_string());
            self.events.push_back((Arc::clone(&id), Event::Removed { open_fault }));
            self.remember_removed(id, now);
        }
    }

    /// Guests watched through their guest agent.
    pub fn agents(&self) -> impl Iterator<Item = (&Arc<str>, &AgentGuest)> {
        self.agents.iter()
    }

    /// The outcome of one probe of guest `id`.
    pub fn handle_agent_probe(&mut self, id: &str, probe: Probe, now: Instant, loss_threshold: u32) {
        let Some(g) = self.agents.get_mut(id) else { return };
        let id = &g.id;
        match probe {
            Probe::Answered => {
                self.counters.agent_answers += 1;
                g.answers += 1;
                g.misses = 0;
                g.last_answer = Some(now);
                g.waiting_since = None;
                g.said_not_established = false;
                g.held = None;
                if matches!(g.vm, Vm::Rebooting { .. }) {
                    g.vm = Vm::Running;
                }
                if g.lost {
                    g.lost = false;
                    self.events.push_back((Arc::clone(id), Event::Recovered {}));
                }
            }
            Probe::NotRunning => {}
            Probe::NoAnswer(reason) => {
                let counts = match g.vm {
                    Vm::Running => true,
                    Vm::Rebooting { until } if now >= until => {
                        g.vm = Vm::Running;
                        true
                    }
                    _ => false,
                };
                if !counts {
                    return;
                }
                if let Some(since) = g.waiting_since {
                    // not answered since it (re)started: booting, or no agent in it
                    if now.saturating_duration_since(since) >= AGENT_ESTABLISH && !g.said_not_established {
                        g.said_not_established = true;
                        let secs = AGENT_ESTABLISH.as_millis() / 1000;
                        self.events.push_back((Arc::clone(id), Event::NotEstablished { secs }));
                    }
                    return;
                }
                self.counters.agent_misses += 1;
                g.missed += 1;
                g.misses += 1;
                if g.misses > loss_threshold && !g.lost && g.held.is_none() {
                    if !self.reporting {
                        self.counters.withheld_faults += 1;
                        return;
                    }
                    let until = now + AGENT_LOSS_HOLD;
                    g.held = Some(HeldLoss { found: now, until, misses: g.misses, last_answer: g.last_answer, reason });
                    self.agent_hold_at = super::earliest(self.agent_hold_at, Some(until));
                }
            }
        }
    }

    /// Reports the held losses whose hold is over (nothing explained them), and finds the next one's end.
    pub(super) fn release_agent_holds(&mut self, now: Instant) {
        let action = self.agent_action();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, g) in &mut self.agents {
            match &g.held {
                Some(h) if h.until <= now => {
                    if let Some(h) = g.held.take() {
                        g.lost = true;
                        due.push((Arc::clone(id), h));
                    }
                }
                Some(h) => next = super::earliest(next, Some(h.until)),
                None => {}
            }
        }
        self.agent_hold_at = next;
        for (id, h) in due {
            let e = Event::HeartbeatLost {
                consecutive_misses: h.misses,
                last_heartbeat: h.last_answer.map(|t| Ago((h.found - t).as_millis())),
                corrective_action: action.as_str(),
                reason: Some(format!("qemu-ga: {}", h.reason)),
                probe: Some("qemu-ga"),
            };
            self.events.push_back((Arc::clone(&id), e));
            let policy = Arc::clone(&self.defaults);
            self.act_under(&id, &policy, None, "heartbeat_lost", action, now);
        }
    }

    /// The corrective action for a lost agentless guest (`[qga] corrective_action`; none by default).
    fn agent_action(&self) -> vigil_core::CorrectiveAction {
        self.file
            .qga
            .as_ref()
            .and_then(|q| q.corrective_action.as_deref())
            .and_then(vigil_core::CorrectiveAction::from_wire)
            .unwrap_or(vigil_core::CorrectiveAction::None)
    }

    /// How one run of the health command went (`Err`: why it failed, the command's first output line); unhealthy
    /// after `threshold` failures in a row, once per episode; the next success recovers. Not while the VM is not
    /// running or the agent is lost (the liveness verdict says more).
    pub fn handle_agent_health(&mut self, id: &str, result: Result<(), String>, threshold: u32) {
        let Some(g) = self.agents.get_mut(id) else { return };
        match result {
            Ok(()) => {
                g.health_failures = 0;
                if g.unhealthy {
                    g.unhealthy = false;
                    self.events.push_back((Arc::clone(&g.id), Event::Recovered {}));
                }
            }
            Err(reason) => {
                if g.vm != Vm::Running || g.lost {
                    return;
                }
                g.health_failures += 1;
                if g.health_failures >= threshold && !g.unhealthy {
                    if !self.reporting {
                        self.counters.withheld_faults += 1;
                        return;
                    }
                    g.unhealthy = true;
                    let e = Event::Unhealthy { corrective_action: "none", log_msg: reason };
                    self.events.push_back((Arc::clone(&g.id), e));
                }
            }
        }
    }

    /// What the hypervisor did to an agentless guest's VM; `false` if no such guest.
    pub(super) fn agent_lifecycle(&mut self, id: &str, event: Lifecycle, now: Instant) -> bool {
        let Some(g) = self.agents.get_mut(id) else { return false };
        let id = Arc::clone(&g.id);
        // the hypervisor's word explains a loss still held: it is not reported
        g.held = None;
        let said = match event {
            Lifecycle::Paused => {
                g.vm = Vm::Paused;
                Some(Event::Paused {})
            }
            Lifecycle::Resumed => {
                g.vm = Vm::Running;
                g.misses = 0; // it could not answer while paused: count from now
                Some(Event::Resumed {})
            }
            Lifecycle::Started => {
                g.vm = Vm::Running;
                g.misses = 0;
                g.waiting_since = Some(now); // a new boot: its agent starts later
                None
            }
            Lifecycle::Rebooting => {
                g.vm = Vm::Rebooting { until: now + AGENT_REBOOT_GRACE };
                g.misses = 0;
                g.waiting_since = Some(now);
                Some(Event::Rebooting {})
            }
            Lifecycle::Stopped => {
                g.vm = Vm::Stopped;
                Some(Event::Stopped {})
            }
            Lifecycle::Crashed => {
                g.vm = Vm::Crashed;
                Some(Event::Crashed {})
            }
        };
        if let Some(e) = said {
            self.events.push_back((id, e));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use crate::fleet::FleetConfig;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn kinds(f: &mut Fleet) -> Vec<&'static str> {
        std::iter::from_fn(|| f.poll_event()).map(|(_, e)| e.kind()).collect()
    }

    fn miss() -> Probe {
        Probe::NoAnswer("no answer in 3000 ms".into())
    }

    #[test]
    fn loss_at_the_second_miss_once_and_any_answer_recovers() {
        let mut f = Fleet::new(FleetConfig::default(), FileConfig::default(), 1, at(0));
        assert!(f.watch_agent("u1", "vm-1", at(0)));
        assert!(!f.watch_agent("u1", "vm-1", at(0)), "once");
        f.handle_agent_probe("u1", miss(), at(1_000), 1);
        f.handle_agent_probe("u1", miss(), at(3_000), 1);
        assert_eq!(kinds(&mut f), ["watching"], "an agent still booting is not lost");
        f.handle_agent_probe("u1", Probe::Answered, at(5_000), 1);
        f.handle_agent_probe("u1", miss(), at(10_000), 1);
        assert!(kinds(&mut f).is_empty(), "one miss is not a loss");
        f.handle_agent_probe("u1", miss(), at(15_000), 1);
        assert!(kinds(&mut f).is_empty(), "the loss is held for a word from the hypervisor");
        assert_eq!(f.next_timeout(), Some(at(15_000) + AGENT_LOSS_HOLD), "the loop wakes when the hold ends");
        f.handle_timeouts(at(16_999));
        assert!(kinds(&mut f).is_empty());
        f.handle_timeouts(at(17_000));
        assert_eq!(f.next_timeout(), None);
        let lost: Vec<_> = std::iter::from_fn(|| f.poll_event()).collect();
        assert_eq!(lost.len(), 1);
        match &lost[0].1 {
            Event::HeartbeatLost { consecutive_misses, last_heartbeat, probe, reason, .. } => {
                assert_eq!((*consecutive_misses, *last_heartbeat, *probe), (2, Some(Ago(10_000)), Some("qemu-ga")));
                assert_eq!(reason.as_deref(), Some("qemu-ga: no answer in 3000 ms"));
            }
            e => panic!("{e:?}"),
        }
        f.handle_agent_probe("u1", miss(), at(20_000), 1);
        assert!(kinds(&mut f).is_empty(), "once per episode");
        // an agent that answers with an error (frozen file systems) is alive
        assert_eq!(
            f.status("u1", at(22_000)).map(|s| (s.state, s.fault)),
            Some(("lost".into(), Some("heartbeat_lost".into())))
        );
        f.handle_agent_probe("u1", Probe::Answered, at(25_000), 1);
        assert_eq!(kinds(&mut f), ["recovered"]);
        let st = f.status("u1", at(25_000)).unwrap();
        assert_eq!(
            (st.state.as_str(), st.socket.as_str(), st.heartbeats, st.misses),
            ("heartbeating", "qemu-ga:vm-1", 2, 3)
        );
        assert_eq!(f.state_counts().0.iter().find(|(s, _)| *s == "heartbeating").map(|e| e.1), Some(1));
        f.unwatch_agent("u1", at(30_000));
        assert_eq!(kinds(&mut f), ["removed"]);
    }

    #[test]
    fn a_domain_that_left_the_list_before_its_stopped_event_is_still_reported_stopped() {
        // `virsh destroy`: the domain list no longer has it (unwatched) before the lifecycle event is read
        let mut f = Fleet::new(FleetConfig::default(), FileConfig::default(), 1, at(0));
        f.watch_agent("u1", "vm-1", at(0));
        assert_eq!(kinds(&mut f), ["watching"]);
        f.unwatch_agent("u1", at(10_000));
        assert_eq!(kinds(&mut f), ["removed"]);
        assert!(!f.handle_lifecycle("u1", Lifecycle::Stopped, at(10_500)), "no guest has that id any more");
        assert_eq!(kinds(&mut f), ["stopped"]);
        // only lately removed ones: a minute on, the word on an id is nobody's
        f.watch_agent("u2", "vm-2", at(10_000));
        f.unwatch_agent("u2", at(10_000));
        let _ = kinds(&mut f);
        f.handle_lifecycle("u2", Lifecycle::Stopped, at(71_000));
        assert!(kinds(&mut f).is_empty());
    }

    #[test]
    fn a_held_loss_that_the_hypervisor_explains_is_never_reported() {
        // CI saw it: `virsh destroy` stopped the answers, the second miss came 7 ms before the `stopped` event
        for word in [Lifecycle::Stopped, Lifecycle::Crashed, Lifecycle::Paused, Lifecycle::Rebooting] {
            let mut f = Fleet::new(FleetConfig::default(), FileConfig::default(), 1, at(0));
            f.watch_agent("u1", "vm-1", at(0));
            f.handle_agent_probe("u1", Probe::Answered, at(1_000), 1);
            f.handle_agent_probe("u1", miss(), at(6_000), 1);
            f.handle_agent_probe("u1", miss(), at(11_000), 1);
            assert!(f.handle_lifecycle("u1", word, at(11_007)));
            f.handle_timeouts(at(11_000) + AGENT_LOSS_HOLD);
            f.handle_timeouts(at(60_000));
            let k = kinds(&mut f);
            assert!(!k.contains(&"heartbeat_lost"), "{word:?}: {k:?}");
            assert!(f.poll_action().is_none());
            assert_ne!(f.status("u1", at(60_000)).map(|s| s.state), Some("lost".into()));
        }
        // an answer within the hold ends it too; a domain that left the list takes its hold with it
        let mut f = Fleet::new(FleetConfig::default(), FileConfig::default(), 1, at(0));
        for id in ["u1", "u2"] {
            f.watch_agent(id, id, at(0));
            f.handle_agent_probe(id, Probe::Answered, at(1_000), 1);
            f.handle_agent_probe(id, miss(), at(6_000), 1);
            f.handle_agent_probe(id, miss(), at(11_000), 1);
        }
        f.handle_agent_probe("u1", Probe::Answered, at(12_000), 1);
        f.unwatch_agent("u2", at(12_000));
        f.handle_timeouts(at(20_000));
        assert_eq!(kinds(&mut f), ["watching", "watching", "removed"]);
    }

    #[test]
    fn paused_rebooting_and_stopped_vms_are_never_lost() {
        let mut f = Fleet::new(FleetConfig::default(), FileConfig::default(), 1, at(0));
        f.watch_agent("u1", "vm-1", at(0));
        f.handle_agent_probe("u1", Probe::Answered, at(500), 1);
        f.handle_lifecycle("u1", Lifecycle::Paused, at(1_000));
        for t in 1..10 {
            f.handle_agent_probe("u1", miss(), at(t * 5_000), 1);
        }
        assert_eq!(kinds(&mut f), ["watching", "paused"]);
        f.handle_lifecycle("u1", Lifecycle::Resumed, at(50_000));
        f.handle_agent_probe("u1", miss(), at(55_000), 1);
        assert_eq!(kinds(&mut f), ["resumed"], "counting starts over after a resume");
        f.handle_lifecycle("u1", Lifecycle::Rebooting, at(56_000));
        for t in 12..30 {
            f.handle_agent_probe("u1", miss(), at(t * 5_000), 1);
        }
        assert_eq!(kinds(&mut f), ["rebooting"], "a reboot has its grace");
        f.handle_agent_probe("u1", Probe::Answered, at(200_000), 1);
        f.handle_lifecycle("u1", Lifecycle::Stopped, at(201_000));
        f.handle_agent_probe("u1", miss(), at(205_000), 1);
        f.handle_agent_probe("u1", miss(), at(210_000), 1);
        assert_eq!(kinds(&mut f), ["stopped"]);
        // a heartbeat guest with the same id is the one watched
        assert!(!f.watch_agent("u1", "vm-1", at(0)));
    }

    #[test]
    fn a_failing_health_command_is_unhealthy_after_the_threshold_once_then_recovered() {
        let mut f = Fleet::new(FleetConfig::default(), FileConfig::default(), 1, at(0));
        f.watch_agent("u1", "vm-1", at(0));
        f.handle_agent_probe("u1", Probe::Answered, at(1_000), 1);
        f.handle_agent_health("u1", Err("exit 1: db down".into()), 3);
        f.handle_agent_health("u1", Err("exit 1: db down".into()), 3);
        assert_eq!(kinds(&mut f), ["watching"]);
        f.handle_agent_health("u1", Err("exit 1: db down".into()), 3);
        let ev: Vec<_> = std::iter::from_fn(|| f.poll_event()).collect();
        assert!(matches!(&ev[..], [(_, Event::Unhealthy { log_msg, .. })] if log_msg == "exit 1: db down"), "{ev:?}");
        f.handle_agent_health("u1", Err("exit 1: db down".into()), 3);
        assert!(kinds(&mut f).is_empty(), "once per episode");
        f.handle_agent_health("u1", Ok(()), 3);
        assert_eq!(kinds(&mut f), ["recovered"]);
    }

    #[test]
    fn a_lost_agentless_guest_gets_the_configured_action_under_the_defaults_budget() {
        let file = FileConfig {
            defaults: crate::config::GuestSettings {
                policy: Some(crate::config::ActionPolicy::Libvirt),
                min_uptime_secs: Some(0),
                action_budget: Some(1),
                ..Default::default()
            },
            qga: Some(crate::config::QgaSettings { corrective_action: Some("reboot".into()), ..Default::default() }),
            ..FileConfig::default()
        };
        let mut f = Fleet::new(FleetConfig::default(), file, 1, at(0));
        f.watch_agent("u1", "vm-1", at(0));
        for round in 0..2u64 {
            let t = round * 100_000;
            f.handle_agent_probe("u1", Probe::Answered, at(t + 1_000), 1);
            f.handle_agent_probe("u1", miss(), at(t + 2_000), 1);
            f.handle_agent_probe("u1", miss(), at(t + 3_000), 1);
            f.handle_timeouts(at(t + 3_000) + AGENT_LOSS_HOLD);
        }
        let a = f.poll_action().expect("a reset for the first loss");
        assert_eq!((&*a.guest, a.trigger), ("u1", "heartbeat_lost"));
        assert!(matches!(a.via, crate::fleet::Via::Libvirt(l) if l.op == crate::fleet::LibvirtOp::Reset));
        assert!(f.poll_action().is_none(), "a budget of one");
        let k = kinds(&mut f);
        assert_eq!(k.iter().filter(|k| **k == "action_suppressed").count(), 1, "{k:?}");
    }

    #[test]
    fn an_agent_that_never_answers_is_not_established_once() {
        let mut f = Fleet::new(FleetConfig::default(), FileConfig::default(), 1, at(0));
        f.watch_agent("u1", "vm-1", at(0));
        for t in 1..60 {
            f.handle_agent_probe("u1", miss(), at(t * 5_000), 1);
        }
        assert_eq!(kinds(&mut f), ["watching", "not_established"]);
    }
}
