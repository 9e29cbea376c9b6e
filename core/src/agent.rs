//! [`Agent`]: the guest side of the protocol, as a sans-IO state machine.
//!
//! It owns the guest's registration (with retries and fresh invocation ids), the answers to challenges (with the
//! health the caller last set), re-registration when challenges stop, the bookkeeping of votes and notices (the
//! caller decides; silence accepts), and `exit`. It must never read a clock, do I/O, allocate, or panic on host
//! bytes, and it never waits for a health check: an answer always carries the health as last set.

use core::fmt;

use crate::codec::next_message;
use crate::error::ProtocolError;
use crate::framer::LineFramer;
use crate::msg::*;
use crate::time::{Duration, Instant};
use crate::timers::Timers;
use crate::IdSource;

/// What the agent declares in `init`, and its own timing; `Default` matches the reference guest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AgentConfig {
    /// Declared name (informational for the host).
    pub name: Name,
    /// Requested challenge interval.
    pub heartbeat_interval_ms: u32,
    /// Seconds needed to vote.
    pub vote_secs: u32,
    /// Seconds of notice wanted before shutdown.
    pub shutdown_notice_secs: u32,
    /// Seconds of notice wanted before suspend.
    pub suspend_notice_secs: u32,
    /// Seconds of notice wanted before resume.
    pub resume_notice_secs: u32,
    /// Seconds a restart takes.
    pub restart_secs: u32,
    /// Action requested on heartbeat loss; also sent with healthy answers, as the reference guest does.
    pub corrective_action: CorrectiveAction,
    /// Delay between `init` attempts (5 s).
    pub init_retry: Duration,
    /// Re-register when no challenge came for max(2 x interval, this) (5 s).
    pub min_silence: Duration,
    /// The same unhealthy action is not requested again within this (60 s); `none` is sent instead.
    pub action_holdoff: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: Name::new(),
            heartbeat_interval_ms: 1000,
            vote_secs: 9,
            shutdown_notice_secs: 9,
            suspend_notice_secs: 9,
            resume_notice_secs: 14,
            restart_secs: 601,
            corrective_action: CorrectiveAction::Reboot,
            init_retry: Duration::from_secs(5),
            min_silence: Duration::from_secs(5),
            action_holdoff: Duration::from_secs(60),
        }
    }
}

/// Where the agent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AgentState {
    /// Sending `init` until one is acknowledged.
    Registering,
    /// Answering challenges.
    Registered,
    /// `exit` was queued; the agent answers nothing more.
    Exited,
}

/// What the agent tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(clippy::large_enum_variant)] // no heap in the core: texts are carried inline
pub enum AgentEvent {
    /// The host acknowledged a registration.
    Registered {
        /// The invocation id the host acknowledged.
        invocation_id: u32,
    },
    /// Challenges stopped; the agent registers again.
    RegistrationLost,
    /// The host asks for a vote or gives notice: answer with [`Agent::answer_action`] before `deadline`, or the
    /// agent answers `timeout` for you at `deadline` — one second before the host gives up, as the reference guest
    /// does — so that the host sees that nobody decided (never a silent "proceed"; the host's policy decides).
    ActionRequest {
        /// What the host sent.
        notify: ActionNotify,
        /// When the agent will answer `timeout` on its own.
        deadline: Instant,
    },
    /// The host refused one of our messages.
    Nacked {
        /// The host's reason.
        log_msg: LogMsg,
    },
    /// The host broke the protocol.
    ProtocolError(ProtocolError),
}

/// Counters of the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AgentStats {
    /// `init`s sent.
    pub inits: u64,
    /// Challenges answered.
    pub answers: u64,
    /// Votes and notices answered (by the caller or by default).
    pub actions: u64,
    /// Nacks received.
    pub nacks: u64,
    /// Protocol errors of the host.
    pub protocol_errors: u64,
}

/// Why [`Agent::answer_action`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoActionPending;

impl fmt::Display for NoActionPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no vote or notice is waiting for an answer")
    }
}

impl core::error::Error for NoActionPending {}

#[derive(Clone, Copy, Debug)]
enum Timer {
    Retry = 0,
    Silence = 1,
    Action = 2,
}
const TIMERS: usize = 3;

#[derive(Clone, Debug)]
struct Answer {
    notify: ActionNotify,
    result: VoteResult,
    log_msg: LogMsg,
}

/// The guest side of the heartbeat protocol. Sans-IO, in the same four groups as [`crate::Monitor`]:
/// getters ([`state`](Self::state), [`stats`](Self::stats)); input ([`handle_bytes`](Self::handle_bytes),
/// [`handle_timeout`](Self::handle_timeout), [`reconnected`](Self::reconnected)); commands
/// ([`set_health`](Self::set_health), [`answer_action`](Self::answer_action), [`shutdown`](Self::shutdown));
/// output ([`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
/// [`poll_timeout`](Self::poll_timeout)). Drain events and transmits after every input or command.
pub struct Agent<R> {
    config: AgentConfig,
    ids: R,
    framer: LineFramer,
    state: AgentState,
    invocation_id: u32,
    previous_id: Option<u32>,
    health: Health,
    action: CorrectiveAction,
    health_msg: LogMsg,
    last_request: Option<(CorrectiveAction, Instant)>,
    pending_action: Option<ActionNotify>,
    timers: Timers<TIMERS>,
    tx_init: bool,
    tx_response: Option<u32>,
    tx_answer: Option<Answer>,
    tx_exit: Option<&'static str>,
    sequence: u32,
    /// At most one undelivered event: input stops while it waits.
    event: Option<AgentEvent>,
    stats: AgentStats,
}

impl<R: IdSource> Agent<R> {
    /// An agent that starts registering at `now`.
    pub fn new(config: AgentConfig, mut ids: R, now: Instant) -> Self {
        let invocation_id = ids.next_id() & MAX_NONCE;
        let mut agent = Agent {
            config,
            ids,
            framer: LineFramer::new(),
            state: AgentState::Registering,
            invocation_id,
            previous_id: None,
            health: Health::Healthy,
            action: CorrectiveAction::None,
            health_msg: LogMsg::new(),
            last_request: None,
            pending_action: None,
            timers: Timers::new(),
            tx_init: false,
            tx_response: None,
            tx_answer: None,
            tx_exit: None,
            sequence: 1,
            event: None,
            stats: AgentStats::default(),
        };
        agent.send_init(now);
        agent
    }

    // ---- getters ----

    /// Where the agent stands.
    pub fn state(&self) -> AgentState {
        self.state
    }

    /// The current invocation id.
    pub fn invocation_id(&self) -> u32 {
        self.invocation_id
    }

    /// Counters.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// The health answers carry now.
    pub fn health(&self) -> (Health, CorrectiveAction, &str) {
        (self.health, self.action, &self.health_msg)
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    // ---- input ----

    /// Feeds bytes from the host; returns how many were consumed (all, unless an event waits to be polled).
    #[must_use = "bytes not consumed must be fed again"]
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8]) -> usize {
        if self.state == AgentState::Exited {
            return input.len();
        }
        let mut used = 0;
        while used < input.len() && self.event.is_none() {
            let (n, parsed) = next_message(&mut self.framer, &input[used..]);
            used += n;
            match parsed {
                None => {}
                Some(Ok(msg)) => self.on_message(now, msg),
                Some(Err(e)) => self.protocol_error(e),
            }
        }
        used
    }

    /// Lets due timers fire; call again (after draining events) while `poll_timeout() <= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.due(Timer::Action, now) {
            self.timers.stop(Timer::Action as usize);
            if let Some(notify) = self.pending_action.take() {
                self.queue_answer(notify, VoteResult::Timeout, "no answer before the deadline");
            }
        }
        if self.due(Timer::Retry, now) {
            if self.state == AgentState::Registering {
                self.previous_id = Some(self.invocation_id);
                self.invocation_id = self.fresh_id();
                self.send_init(now);
            } else {
                self.timers.stop(Timer::Retry as usize);
            }
        }
        if self.due(Timer::Silence, now) && self.event.is_none() {
            self.timers.stop(Timer::Silence as usize);
            self.previous_id = Some(self.invocation_id);
            self.invocation_id = self.fresh_id();
            self.state = AgentState::Registering;
            self.tx_response = None;
            self.send_init(now);
            self.push(AgentEvent::RegistrationLost);
        }
    }

    /// The transport came back (a socket reconnected): forget partial input and register again.
    pub fn reconnected(&mut self, now: Instant) {
        if self.state == AgentState::Exited {
            return;
        }
        self.framer.reset();
        self.tx_response = None;
        self.timers.stop(Timer::Silence as usize);
        self.previous_id = Some(self.invocation_id);
        self.invocation_id = self.fresh_id();
        self.state = AgentState::Registering;
        self.send_init(now);
    }

    // ---- commands ----

    /// Sets the health that answers carry from now on. `log_msg` is cut to 224 bytes; control characters become
    /// spaces.
    pub fn set_health(&mut self, health: Health, corrective_action: CorrectiveAction, log_msg: &str) {
        if health != Health::Unhealthy {
            // a healthy spell ends the episode: the next unhealthy answer asks for its action again
            self.last_request = None;
        }
        self.health = health;
        self.action = corrective_action;
        self.health_msg = bounded(log_msg);
    }

    /// Answers the open vote or notice.
    pub fn answer_action(&mut self, result: VoteResult, log_msg: &str) -> Result<(), NoActionPending> {
        let notify = self.pending_action.take().ok_or(NoActionPending)?;
        self.timers.stop(Timer::Action as usize);
        self.queue_answer(notify, result, log_msg);
        Ok(())
    }

    /// Queues `exit` (a graceful deregistration): the agent answers nothing afterwards.
    pub fn shutdown(&mut self, log_msg: &'static str) {
        self.state = AgentState::Exited;
        self.timers.clear();
        self.tx_init = false;
        self.tx_response = None;
        self.tx_exit = Some(log_msg);
    }

    // ---- output ----

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.event.take()
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Writes the next message for the host into `buf`; `None` if nothing is pending.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_WIRE]) -> Option<usize> {
        let body = if let Some(answer) = self.tx_answer.take() {
            self.stats.actions += 1;
            Body::ActionResponse(ActionResponse {
                invocation_id: answer.notify.invocation_id,
                event_type: answer.notify.event_type,
                notification_type: answer.notify.notification_type,
                vote_result: answer.result,
                log_msg: answer.log_msg,
            })
        } else if let Some(nonce) = self.tx_response.take() {
            self.stats.answers += 1;
            Body::ChallengeResponse(self.response(now, nonce))
        } else if self.tx_init {
            self.tx_init = false;
            self.stats.inits += 1;
            Body::Init(Init {
                invocation_id: self.invocation_id,
                name: self.config.name.clone(),
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                vote_secs: self.config.vote_secs,
                shutdown_notice_secs: self.config.shutdown_notice_secs,
                suspend_notice_secs: self.config.suspend_notice_secs,
                resume_notice_secs: self.config.resume_notice_secs,
                restart_secs: self.config.restart_secs,
                corrective_action: self.config.corrective_action,
            })
        } else if let Some(log_msg) = self.tx_exit.take() {
            Body::Exit { log_msg: bounded(log_msg) }
        } else {
            return None;
        };
        // Strings are bounded and free of control characters, so every message fits MAX_WIRE.
        let n = Message::new(self.sequence, body).encode(buf).ok()?;
        self.sequence = self.sequence.wrapping_add(1);
        Some(n)
    }

    // ---- internals ----

    fn response(&mut self, now: Instant, nonce: u32) -> ChallengeResponse {
        let corrective_action = match self.health {
            Health::Healthy | Health::Unknown => {
                self.last_request = None;
                self.config.corrective_action
            }
            Health::Unhealthy => match self.last_request {
                Some((a, at)) if a == self.action && now < at + self.config.action_holdoff => CorrectiveAction::None,
                _ => {
                    self.last_request = Some((self.action, now));
                    self.action
                }
            },
        };
        ChallengeResponse {
            heartbeat_response: nonce,
            heartbeat_health: self.health,
            corrective_action,
            log_msg: self.health_msg.clone(),
        }
    }

    fn on_message(&mut self, now: Instant, msg: Message) {
        match msg.body {
            Body::InitAck { invocation_id } => {
                let ours = invocation_id == self.invocation_id || Some(invocation_id) == self.previous_id;
                match self.state {
                    AgentState::Registering if ours => {
                        if invocation_id != self.invocation_id {
                            self.previous_id = Some(self.invocation_id);
                            self.invocation_id = invocation_id;
                        }
                        self.state = AgentState::Registered;
                        self.timers.stop(Timer::Retry as usize);
                        self.arm_silence(now);
                        self.push(AgentEvent::Registered { invocation_id });
                    }
                    AgentState::Registered if invocation_id == self.invocation_id => {}
                    // A late ack of the other attempt: the host now holds that id (its last `init`), and its
                    // notifications will carry it, so adopt it.
                    AgentState::Registered if Some(invocation_id) == self.previous_id => {
                        self.previous_id = Some(self.invocation_id);
                        self.invocation_id = invocation_id;
                    }
                    _ => self.protocol_error(ProtocolError::WrongInvocationId {
                        expected: self.invocation_id,
                        got: invocation_id,
                    }),
                }
            }
            Body::Challenge { heartbeat_challenge } => {
                if self.state == AgentState::Registered {
                    self.tx_response = Some(heartbeat_challenge);
                    self.arm_silence(now);
                } else {
                    self.protocol_error(ProtocolError::Unexpected(MsgType::Challenge));
                }
            }
            Body::ActionNotify(notify) => {
                if self.state != AgentState::Registered {
                    self.protocol_error(ProtocolError::Unexpected(MsgType::ActionNotify));
                } else if notify.invocation_id != self.invocation_id && Some(notify.invocation_id) != self.previous_id {
                    self.protocol_error(ProtocolError::WrongInvocationId {
                        expected: self.invocation_id,
                        got: notify.invocation_id,
                    });
                } else {
                    // Answer `timeout` on our own one second before the host gives up (half the time when the
                    // host gives less than two seconds), as the reference guest does.
                    let timeout = u64::from(notify.timeout_ms);
                    let deadline = now + Duration::from_millis(timeout - (timeout / 2).min(1000));
                    self.pending_action = Some(notify);
                    self.timers.set(Timer::Action as usize, deadline);
                    self.push(AgentEvent::ActionRequest { notify, deadline });
                }
            }
            Body::Nack { log_msg, .. } => {
                self.stats.nacks += 1;
                self.push(AgentEvent::Nacked { log_msg });
            }
            other => self.protocol_error(ProtocolError::Unexpected(other.msg_type())),
        }
    }

    fn queue_answer(&mut self, notify: ActionNotify, result: VoteResult, log_msg: &str) {
        self.tx_answer = Some(Answer { notify, result, log_msg: bounded(log_msg) });
    }

    fn send_init(&mut self, now: Instant) {
        self.tx_init = true;
        self.timers.set(Timer::Retry as usize, now + self.config.init_retry);
    }

    fn arm_silence(&mut self, now: Instant) {
        let twice = Duration::from_millis(u64::from(self.config.heartbeat_interval_ms)).saturating_mul(2);
        self.timers.set(Timer::Silence as usize, now + twice.max(self.config.min_silence));
    }

    fn fresh_id(&mut self) -> u32 {
        let id = self.ids.next_id() & MAX_NONCE;
        if id == self.invocation_id {
            id.wrapping_add(1) & MAX_NONCE
        } else {
            id
        }
    }

    fn protocol_error(&mut self, e: ProtocolError) {
        self.stats.protocol_errors += 1;
        self.push(AgentEvent::ProtocolError(e));
    }

    fn push(&mut self, e: AgentEvent) {
        // Input and timers stop while an event waits, so this slot is free; were it not, the waiting event is
        // kept and this one counted rather than overwriting it.
        if self.event.is_some() {
            self.stats.protocol_errors += 1;
        } else {
            self.event = Some(e);
        }
    }

    fn due(&self, t: Timer, now: Instant) -> bool {
        self.timers.is_due(t as usize, now)
    }
}

impl<R> fmt::Debug for Agent<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("state", &self.state)
            .field("invocation_id", &self.invocation_id)
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    struct Ids(u32);
    impl IdSource for Ids {
        fn next_id(&mut self) -> u32 {
            self.0 += 1;
            self.0
        }
    }

    struct Script {
        a: Agent<Ids>,
    }

    impl Script {
        fn new() -> Self {
            let config = AgentConfig { name: bounded("vm-1"), ..AgentConfig::default() };
            Script { a: Agent::new(config, Ids(1000), at(0)) }
        }
        fn feed(&mut self, t: u64, s: &str) -> Vec<AgentEvent> {
            let mut input = s.as_bytes();
            let mut ev = Vec::new();
            while !input.is_empty() {
                let n = self.a.handle_bytes(at(t), input);
                input = &input[n..];
                while let Some(e) = self.a.poll_event() {
                    ev.push(e);
                }
            }
            ev
        }
        fn advance(&mut self, t: u64) -> Vec<AgentEvent> {
            let mut ev = Vec::new();
            for _ in 0..100 {
                match self.a.poll_timeout() {
                    Some(d) if d <= at(t) => self.a.handle_timeout(d),
                    _ => break,
                }
                while let Some(e) = self.a.poll_event() {
                    ev.push(e);
                }
            }
            ev
        }
        fn sent(&mut self, t: u64) -> Vec<Body> {
            let mut out = Vec::new();
            let mut buf = [0u8; MAX_WIRE];
            while let Some(n) = self.a.poll_transmit(at(t), &mut buf) {
                out.push(crate::decode(&buf[1..n - 1]).unwrap().body);
            }
            out
        }
        fn registered(&mut self) -> u32 {
            let Body::Init(init) = &self.sent(0)[0] else { panic!() };
            let id = init.invocation_id;
            assert_eq!(self.feed(1, &ack(id)), [AgentEvent::Registered { invocation_id: id }]);
            id
        }
    }

    fn ack(id: u32) -> String {
        format!("\n{{\"version\": 3, \"revision\": 1, \"sequence\": 1, \"msg_type\": \"init_ack\", \"invocation_id\": {id}}}\n")
    }
    fn challenge(n: u32) -> String {
        format!("\n{{\"version\": 3, \"revision\": 1, \"sequence\": 1, \"msg_type\": \"challenge\", \"heartbeat_challenge\": {n}}}\n")
    }
    fn notify(id: u32, event: &str, kind: &str, timeout: u32) -> String {
        format!("{{\"version\":3,\"revision\":1,\"sequence\":9,\"msg_type\":\"action_notify\",\"invocation_id\":{id},\"event_type\":\"{event}\",\"notification_type\":\"{kind}\",\"timeout_ms\":{timeout}}}\n")
    }

    #[test]
    fn registers_at_once_then_every_5s_with_a_new_id_and_accepts_the_previous_ids_ack() {
        let mut s = Script::new();
        let sent = s.sent(0);
        let [Body::Init(first)] = sent.as_slice() else { panic!("{sent:?}") };
        assert_eq!(first.name.as_str(), "vm-1");
        assert_eq!(first.corrective_action, CorrectiveAction::Reboot);
        assert!(s.advance(4999).is_empty());
        assert!(s.sent(4999).is_empty());
        s.advance(5000);
        let sent = s.sent(5000);
        let [Body::Init(second)] = sent.as_slice() else { panic!() };
        assert_ne!(second.invocation_id, first.invocation_id);
        // a stranger's ack is refused
        assert!(matches!(s.feed(5001, &ack(1)).as_slice(), [AgentEvent::ProtocolError(_)]));
        // the ack of the previous attempt arrives late: accepted
        assert_eq!(
            s.feed(5002, &ack(first.invocation_id)),
            [AgentEvent::Registered { invocation_id: first.invocation_id }]
        );
        assert_eq!(s.a.state(), AgentState::Registered);
        assert_eq!(s.a.invocation_id(), first.invocation_id);
    }

    #[test]
    fn a_healthy_spell_ends_the_holdoff() {
        let mut s = Script::new();
        s.registered();
        let answer = |s: &mut Script, t: u64, n: u32| {
            s.feed(t, &challenge(n));
            let sent = s.sent(t);
            let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
            (r.heartbeat_health, r.corrective_action)
        };
        s.a.set_health(Health::Unhealthy, CorrectiveAction::Reboot, "down");
        assert_eq!(answer(&mut s, 100, 1), (Health::Unhealthy, CorrectiveAction::Reboot));
        assert_eq!(answer(&mut s, 1100, 2), (Health::Unhealthy, CorrectiveAction::None), "holdoff");
        s.a.set_health(Health::Healthy, CorrectiveAction::None, "");
        assert_eq!(answer(&mut s, 2100, 3).0, Health::Healthy);
        // a second episode within 60 s asks for its action again
        s.a.set_health(Health::Unhealthy, CorrectiveAction::Reboot, "down again");
        assert_eq!(answer(&mut s, 3100, 4), (Health::Unhealthy, CorrectiveAction::Reboot));
    }

    #[test]
    fn a_late_ack_of_the_other_attempt_is_adopted_and_its_notifications_answered() {
        let mut s = Script::new();
        let Some(Body::Init(first)) = s.sent(0).pop() else { panic!() };
        s.advance(5000);
        let Some(Body::Init(second)) = s.sent(5000).pop() else { panic!() };
        // the host acks the first init, then (a new session) the second one
        assert_eq!(s.feed(5001, &ack(first.invocation_id)).len(), 1);
        assert!(s.feed(5002, &ack(second.invocation_id)).is_empty(), "the host's newer ack is no error");
        assert_eq!(s.a.invocation_id(), second.invocation_id);
        // the host's vote carries the id of the init it acknowledged last: answered, not ignored
        let ev = s.feed(5003, &notify(second.invocation_id, "stop", "revocable", 9000));
        assert!(matches!(ev.as_slice(), [AgentEvent::ActionRequest { .. }]), "{ev:?}");
        s.a.answer_action(VoteResult::Accept, "").unwrap();
        let sent = s.sent(5004);
        let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!(r.invocation_id, second.invocation_id);
        // and a notification still carrying the first id is answered with that id
        s.feed(5005, &notify(first.invocation_id, "stop", "revocable", 9000));
        s.a.answer_action(VoteResult::Accept, "").unwrap();
        let sent = s.sent(5006);
        let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!(r.invocation_id, first.invocation_id);
    }

    #[test]
    fn answers_every_challenge_with_the_current_health() {
        let mut s = Script::new();
        s.registered();
        s.feed(100, &challenge(846930886));
        let sent = s.sent(100);
        let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!((r.heartbeat_response, r.heartbeat_health), (846930886, Health::Healthy));
        assert_eq!(r.corrective_action, CorrectiveAction::Reboot, "healthy answers carry the configured action");
        s.a.set_health(Health::Unhealthy, CorrectiveAction::Stop, "app \"x\" dead");
        s.feed(1100, &challenge(5));
        let sent = s.sent(1100);
        let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!(
            (r.heartbeat_health, r.corrective_action, r.log_msg.as_str()),
            (Health::Unhealthy, CorrectiveAction::Stop, "app \"x\" dead")
        );
        // the same action is not requested again within 60 s
        s.feed(2100, &challenge(6));
        let sent = s.sent(2100);
        let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!((r.heartbeat_health, r.corrective_action), (Health::Unhealthy, CorrectiveAction::None));
        s.feed(61_100, &challenge(7));
        let sent = s.sent(61_100);
        let [Body::ChallengeResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!(r.corrective_action, CorrectiveAction::Stop);
    }

    #[test]
    fn registers_again_when_challenges_stop() {
        let mut s = Script::new();
        let id = s.registered();
        s.feed(1000, &challenge(1));
        s.sent(1000);
        // interval 1 s: silence limit max(2 s, 5 s) = 5 s after the last challenge
        assert!(s.advance(5999).is_empty());
        assert_eq!(s.advance(6000), [AgentEvent::RegistrationLost]);
        let sent = s.sent(6000);
        let [Body::Init(init)] = sent.as_slice() else { panic!() };
        assert_ne!(init.invocation_id, id);
        assert_eq!(s.a.state(), AgentState::Registering);
        // challenges while registering are not answered
        assert!(matches!(s.feed(6001, &challenge(2)).as_slice(), [AgentEvent::ProtocolError(_)]));
        assert!(s.sent(6001).is_empty());
    }

    #[test]
    fn votes_are_the_callers_and_silence_is_a_timeout() {
        let mut s = Script::new();
        let id = s.registered();
        let ev = s.feed(10, &notify(id, "stop", "revocable", 3000));
        let [AgentEvent::ActionRequest { notify: n, deadline }] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!((n.event_type, n.timeout_ms), (EventType::Stop, 3000));
        assert_eq!(*deadline, at(10 + 2000), "one second before the host's deadline");
        s.a.answer_action(VoteResult::Reject, "standby not synced").unwrap();
        assert_eq!(s.a.answer_action(VoteResult::Accept, ""), Err(NoActionPending));
        let sent = s.sent(20);
        let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!(
            (r.invocation_id, r.vote_result, r.log_msg.as_str()),
            (id, VoteResult::Reject, "standby not synced")
        );
        // nobody answers: `timeout`, one second before the host gives up; the host's policy decides
        s.feed(100, &notify(id, "live_migrate_begin", "revocable", 4000));
        assert!(s.advance(3099).is_empty() && s.sent(3099).is_empty());
        s.advance(3100);
        let sent = s.sent(3100);
        let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!(r.vote_result, VoteResult::Timeout);
        // a notice too (with less than two seconds, half the time)
        s.feed(3200, &notify(id, "live_migrate_end", "irrevocable", 1000));
        s.advance(3700);
        let sent = s.sent(3700);
        let [Body::ActionResponse(r)] = sent.as_slice() else { panic!() };
        assert_eq!(r.vote_result, VoteResult::Timeout);
        // wrong invocation: refused
        assert!(matches!(
            s.feed(4000, &notify(id + 1, "stop", "revocable", 1000)).as_slice(),
            [AgentEvent::ProtocolError(ProtocolError::WrongInvocationId { .. })]
        ));
    }

    #[test]
    fn exit_then_silence() {
        let mut s = Script::new();
        s.registered();
        s.a.shutdown("Exiting...");
        assert_eq!(s.sent(10), [Body::Exit { log_msg: bounded("Exiting...") }]);
        assert_eq!(s.a.poll_timeout(), None);
        assert_eq!(s.a.handle_bytes(at(11), challenge(1).as_bytes()), challenge(1).len());
        assert!(s.sent(11).is_empty());
    }

    #[test]
    fn nack_is_reported() {
        let mut s = Script::new();
        let ev = s.feed(0, "{\"version\":3,\"revision\":1,\"msg_type\":\"nack\",\"sequence\":10,\"invocation_id\":1,\"log_msg\":\"failed to parse vote_result\"}\n");
        assert_eq!(ev, [AgentEvent::Nacked { log_msg: bounded("failed to parse vote_result") }]);
        assert_eq!(s.a.stats().nacks, 1);
    }

    #[test]
    fn reconnect_registers_anew() {
        let mut s = Script::new();
        s.registered();
        s.a.reconnected(at(50));
        assert!(matches!(s.sent(50).as_slice(), [Body::Init(_)]));
        assert_eq!(s.a.state(), AgentState::Registering);
    }

    #[test]
    fn size_fits_the_budget() {
        let size = core::mem::size_of::<Agent<crate::XorShift32>>();
        std::println!("size_of::<Agent<XorShift32>>() = {size}");
        assert!(size < 2048, "Agent is {size} bytes");
    }
}
