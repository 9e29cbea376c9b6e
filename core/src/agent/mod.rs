//! [`Agent`]: the guest side of the protocol, as a sans-IO state machine.
//!
//! It owns the guest's registration (with retries and fresh invocation ids), the answers to challenges (with the
//! health the caller last set), re-registration when challenges stop, the bookkeeping of votes and notices (the
//! caller decides; silence accepts), and `exit`. It must never read a clock, do I/O, allocate, or panic on host
//! bytes, and it never waits for a health check: an answer always carries the health as last set.

mod config;
mod event;

use core::fmt;

use crate::codec::next_message;
use crate::error::ProtocolError;
use crate::framer::LineFramer;
use crate::msg::*;
use crate::time::{Duration, Instant};
use crate::timers::Timers;
use crate::IdSource;

pub use config::AgentConfig;
pub use event::{AgentEvent, AgentState, AgentStats, NoActionPending};

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
mod tests;
