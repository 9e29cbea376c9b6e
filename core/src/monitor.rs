//! [`Monitor`]: the host side of the protocol for one guest, as a sans-IO state machine.
//!
//! It owns the session with one guest: registration, challenges, the miss count, loss, health reports, votes and
//! notices, and `nack`s for refused messages. It must never read a clock, do I/O, allocate, or panic on guest
//! bytes; the guest's identity is whatever the caller says (the socket), never what the guest declares.

use core::fmt;

use crate::codec::{decode, DecodeError};
use crate::framer::{FrameError, LineFramer};
use crate::msg::*;
use crate::time::{Duration, Instant};
use crate::{EventQueue, IdSource};

/// Tunables of a [`Monitor`]; `Default` gives the reference behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MonitorConfig {
    /// Loss is declared when consecutive misses exceed this (default 1: at the second miss).
    pub loss_threshold: u32,
    /// The guest's requested interval is raised to at least this (default 100 ms; StarlingX used 400 ms).
    pub min_interval: Duration,
    /// ... and lowered to at most this (default 60 s), so a guest cannot make itself unmonitored.
    pub max_interval: Duration,
    /// A connected guest that has not registered within this is reported as
    /// [`MonitorEvent::RegistrationTimeout`], so the caller can reconnect (default 120 s).
    pub registration_timeout: Duration,
    /// At most one `nack` per this span (default 1 s): a flooding guest cannot make the host write at its pace.
    pub nack_interval: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            loss_threshold: 1,
            min_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(60),
            registration_timeout: Duration::from_secs(120),
            nack_interval: Duration::from_secs(1),
        }
    }
}

/// What the monitor knows of a registered guest (from its last `init`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Registration {
    /// The `init` as the guest sent it.
    pub init: Init,
    /// The challenge interval in force (the request, clamped to the configured bounds).
    pub interval: Duration,
}

/// A guest that broke the protocol; each is counted and reported, none ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProtocolError {
    /// A line was too long.
    Frame(FrameError),
    /// A line did not decode.
    Decode(DecodeError),
    /// A response echoed a nonce that is not the current unanswered one (stale, replayed or forged).
    StaleNonce {
        /// The nonce outstanding.
        expected: u32,
        /// The nonce echoed.
        got: u32,
    },
    /// An `action_response` named another invocation.
    WrongInvocationId {
        /// The current invocation id.
        expected: u32,
        /// The id sent.
        got: u32,
    },
    /// A message that makes no sense now (a response before `init`, an answer to no vote, a host-only message).
    Unexpected(MsgType),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => write!(f, "framing: {e}"),
            ProtocolError::Decode(e) => write!(f, "decode: {e}"),
            ProtocolError::StaleNonce { expected, got } => write!(f, "stale nonce {got} (expected {expected})"),
            ProtocolError::WrongInvocationId { expected, got } => {
                write!(f, "wrong invocation id {got} (expected {expected})")
            }
            ProtocolError::Unexpected(t) => write!(f, "unexpected {t}"),
        }
    }
}

impl core::error::Error for ProtocolError {}

impl ProtocolError {
    /// A short machine-friendly label (for counters).
    pub const fn label(&self) -> &'static str {
        match self {
            ProtocolError::Frame(_) => "line_too_long",
            ProtocolError::Decode(DecodeError::UnsupportedVersion(_)) => "unsupported_version",
            ProtocolError::Decode(DecodeError::UnknownMsgType) => "unknown_msg_type",
            ProtocolError::Decode(_) => "decode",
            ProtocolError::StaleNonce { .. } => "stale_nonce",
            ProtocolError::WrongInvocationId { .. } => "wrong_invocation_id",
            ProtocolError::Unexpected(_) => "unexpected_message",
        }
    }
}

/// What the monitor tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MonitorEvent {
    /// The guest sent `init` (first time, or again: a new session either way).
    Registered(Registration),
    /// Consecutive misses exceeded the threshold; the monitor waits for a new `init`. Reported once.
    HeartbeatLost {
        /// Misses counted.
        consecutive_misses: u32,
        /// When the last valid response arrived, if any in this connection.
        last_heartbeat: Option<Instant>,
    },
    /// The guest answered but reports itself unhealthy. Reported once per episode, again if the requested action
    /// escalates, and again after the guest registers anew.
    Unhealthy {
        /// What the guest asks for.
        corrective_action: CorrectiveAction,
        /// Why.
        log_msg: LogMsg,
    },
    /// A healthy answer after a loss or an unhealthy report.
    Recovered,
    /// The guest sent `exit`: a graceful deregistration, never a fault.
    Deregistered {
        /// The guest's reason.
        log_msg: LogMsg,
    },
    /// The outcome of [`Monitor::notify`]: the guest's answer, `timeout`, or `error` when the session ended first.
    VoteResult {
        /// The event voted on or notified.
        event_type: EventType,
        /// Vote or notice.
        notification_type: NotificationType,
        /// The answer.
        result: VoteResult,
        /// The guest's reason (empty for timeout).
        log_msg: LogMsg,
    },
    /// The guest broke the protocol (counted in [`MonitorStats::protocol_errors`]).
    ProtocolError(ProtocolError),
    /// Connected for [`MonitorConfig::registration_timeout`] without a registration: reconnect.
    RegistrationTimeout,
}

/// Where the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MonitorState {
    /// No transport.
    Disconnected,
    /// Connected, waiting for `init`.
    AwaitingInit,
    /// Registered: challenging every interval.
    Heartbeating,
    /// The guest deregistered with `exit`.
    Exited,
}

/// An open fault, remembered across sessions and reconnections until a healthy heartbeat clears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Fault {
    /// Heartbeats stopped.
    Lost,
    /// The guest said it is unhealthy.
    Unhealthy(CorrectiveAction),
}

/// Why [`Monitor::notify`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NotifyError {
    /// The guest is not registered.
    NotRegistered,
    /// Another vote or notice is still open.
    Busy,
    /// The timeout does not fit the protocol's 32-bit milliseconds.
    TimeoutTooLong,
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotifyError::NotRegistered => "guest not registered",
            NotifyError::Busy => "another notification is open",
            NotifyError::TimeoutTooLong => "timeout longer than 2^32 ms",
        })
    }
}

impl core::error::Error for NotifyError {}

/// Counters of one guest, kept across sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MonitorStats {
    /// Bytes fed in.
    pub bytes_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Valid heartbeat answers.
    pub heartbeats: u64,
    /// Intervals that ended unanswered.
    pub misses: u64,
    /// Losses declared.
    pub losses: u64,
    /// Registrations (`init`s accepted).
    pub registrations: u64,
    /// Protocol errors of any kind.
    pub protocol_errors: u64,
    /// Nacks sent.
    pub nacks: u64,
    /// Nacks not sent because of the rate limit.
    pub nacks_suppressed: u64,
    /// The last round-trip time of a challenge.
    pub last_rtt: Duration,
    /// The largest round-trip time seen.
    pub max_rtt: Duration,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    Challenge = 0,
    Vote = 1,
    Registration = 2,
}
const TIMERS: usize = 3;
const EVENTS: usize = 2;

#[derive(Clone, Copy, Debug)]
struct Vote {
    notify: ActionNotify,
    sent: bool,
}

/// The host side of one guest's heartbeat session. Sans-IO: the caller moves bytes and time.
///
/// Methods come in four groups, as in quinn-proto:
/// - getters: [`state`](Self::state), [`registration`](Self::registration), [`fault`](Self::fault),
///   [`stats`](Self::stats);
/// - input: [`handle_bytes`](Self::handle_bytes), [`handle_timeout`](Self::handle_timeout),
///   [`connected`](Self::connected), [`disconnected`](Self::disconnected);
/// - commands: [`notify`](Self::notify);
/// - output: [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// After every input call, drain [`poll_event`](Self::poll_event) until `None` and
/// [`poll_transmit`](Self::poll_transmit) until `None`, then sleep until [`poll_timeout`](Self::poll_timeout).
/// `handle_bytes` stops early while an event waits to be polled and returns how much it consumed: feed it the
/// rest afterwards. `now` must never go backwards.
pub struct Monitor<R> {
    config: MonitorConfig,
    ids: R,
    framer: LineFramer,
    state: MonitorState,
    registration: Option<Registration>,
    fault: Option<Fault>,
    /// The most severe action reported unhealthy in this session (dedupes `Unhealthy`).
    unhealthy_reported: Option<CorrectiveAction>,
    nonce: u32,
    answered: bool,
    misses: u32,
    challenged_at: Instant,
    last_heartbeat: Option<Instant>,
    vote: Option<Vote>,
    timers: [Option<Instant>; TIMERS],
    tx_nack: Option<&'static str>,
    tx_init_ack: bool,
    tx_challenge: bool,
    last_nack: Option<Instant>,
    sequence: u32,
    events: EventQueue<MonitorEvent, EVENTS>,
    stats: MonitorStats,
}

impl<R: IdSource> Monitor<R> {
    /// A monitor with no transport yet; call [`connected`](Self::connected) when there is one.
    pub fn new(config: MonitorConfig, ids: R) -> Self {
        Monitor {
            config,
            ids,
            framer: LineFramer::new(),
            state: MonitorState::Disconnected,
            registration: None,
            fault: None,
            unhealthy_reported: None,
            nonce: 0,
            answered: false,
            misses: 0,
            challenged_at: Instant::ZERO,
            last_heartbeat: None,
            vote: None,
            timers: [None; TIMERS],
            tx_nack: None,
            tx_init_ack: false,
            tx_challenge: false,
            last_nack: None,
            sequence: 0,
            events: EventQueue::new(),
            stats: MonitorStats::default(),
        }
    }

    // ---- getters ----

    /// Where the session stands.
    pub fn state(&self) -> MonitorState {
        self.state
    }

    /// The guest's last registration, if it registered in this connection.
    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    /// The open fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Counters.
    pub fn stats(&self) -> &MonitorStats {
        &self.stats
    }

    /// The tunables.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    // ---- input ----

    /// A transport to the guest is up: wait for `init`. Any partial line of an earlier connection is forgotten;
    /// the open fault and the counters are kept.
    pub fn connected(&mut self, now: Instant) {
        self.end_session();
        self.state = MonitorState::AwaitingInit;
        self.set_timer(Timer::Registration, Some(now + self.config.registration_timeout));
    }

    /// The transport is gone. An open vote ends with `error`.
    pub fn disconnected(&mut self) {
        self.end_session();
        self.state = MonitorState::Disconnected;
    }

    /// Feeds bytes from the guest. Returns how many were consumed: all of them, unless an event is waiting to be
    /// polled, in which case feed the rest after draining [`poll_event`](Self::poll_event).
    #[must_use = "bytes not consumed must be fed again"]
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8]) -> usize {
        if self.state == MonitorState::Disconnected {
            return input.len();
        }
        let mut used = 0;
        while used < input.len() && self.events.is_empty() {
            let (n, item) = self.framer.push(&input[used..]);
            used += n;
            let parsed = match item {
                None => continue,
                Some(Ok(line)) => decode(line).map_err(ProtocolError::Decode),
                Some(Err(e)) => Err(ProtocolError::Frame(e)),
            };
            match parsed {
                Ok(msg) => self.on_message(now, msg),
                Err(e) => self.on_protocol_error(now, e),
            }
        }
        self.stats.bytes_in += used as u64;
        used
    }

    /// Lets timers that are due fire. Call it when [`poll_timeout`](Self::poll_timeout) has passed; it fires what
    /// fits in the event queue, so call it again (after draining events) while `poll_timeout() <= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.due(Timer::Vote, now) && self.events.len() < EVENTS {
            self.set_timer(Timer::Vote, None);
            if let Some(vote) = self.vote.take() {
                self.push_vote_result(vote, VoteResult::Timeout, LogMsg::new());
            }
        }
        if self.due(Timer::Challenge, now) && self.events.len() < EVENTS {
            self.on_interval_end(now);
        }
        if self.due(Timer::Registration, now) && self.events.len() < EVENTS {
            self.set_timer(Timer::Registration, None);
            self.push(MonitorEvent::RegistrationTimeout);
        }
    }

    // ---- commands ----

    /// Sends `action_notify` and waits `timeout` (exactly the value sent) for the answer, which arrives as
    /// [`MonitorEvent::VoteResult`] — with `timeout` if none came.
    pub fn notify(
        &mut self,
        now: Instant,
        event_type: EventType,
        notification_type: NotificationType,
        timeout: Duration,
    ) -> Result<(), NotifyError> {
        if self.state != MonitorState::Heartbeating {
            return Err(NotifyError::NotRegistered);
        }
        if self.vote.is_some() {
            return Err(NotifyError::Busy);
        }
        let timeout_ms = u32::try_from(timeout.as_millis()).map_err(|_| NotifyError::TimeoutTooLong)?;
        let invocation_id = self.registration.as_ref().map_or(0, |r| r.init.invocation_id);
        self.vote = Some(Vote {
            notify: ActionNotify { invocation_id, event_type, notification_type, timeout_ms },
            sent: false,
        });
        self.set_timer(Timer::Vote, Some(now + timeout));
        Ok(())
    }

    // ---- output ----

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MonitorEvent> {
        self.events.pop_front()
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// Writes the next message for the guest into `buf` and returns its length, or `None` if nothing is pending.
    /// `now` is when the bytes leave (round-trip times are measured from it).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_WIRE]) -> Option<usize> {
        let invocation_id = self.registration.as_ref().map_or(0, |r| r.init.invocation_id);
        let body = if let Some(reason) = self.tx_nack.take() {
            self.stats.nacks += 1;
            Body::Nack { invocation_id, log_msg: bounded(reason) }
        } else if self.tx_init_ack {
            self.tx_init_ack = false;
            Body::InitAck { invocation_id }
        } else if self.tx_challenge {
            self.tx_challenge = false;
            self.challenged_at = now;
            Body::Challenge { heartbeat_challenge: self.nonce }
        } else if let Some(vote) = self.vote.as_mut().filter(|v| !v.sent) {
            vote.sent = true;
            Body::ActionNotify(vote.notify)
        } else {
            return None;
        };
        // Every message the monitor builds fits MAX_WIRE: the longest is a nack with a short static reason.
        let n = Message::new(self.sequence, body).encode(buf).ok()?;
        self.sequence = self.sequence.wrapping_add(1);
        self.stats.messages_out += 1;
        Some(n)
    }

    // ---- internals ----

    fn on_message(&mut self, now: Instant, msg: Message) {
        match msg.body {
            Body::Init(init) => self.on_init(now, init),
            Body::ChallengeResponse(r) => self.on_response(now, r),
            Body::ActionResponse(r) => self.on_action_response(now, r),
            Body::Exit { log_msg } => self.on_exit(log_msg),
            other => {
                self.on_protocol_error(now, ProtocolError::Unexpected(other.msg_type()));
            }
        }
    }

    fn on_init(&mut self, now: Instant, init: Init) {
        if let Some(vote) = self.vote.take() {
            self.set_timer(Timer::Vote, None);
            self.push_vote_result(vote, VoteResult::Error, bounded("guest registered anew"));
        }
        let requested = Duration::from_millis(u64::from(init.heartbeat_interval_ms));
        let interval = requested.max(self.config.min_interval).min(self.config.max_interval);
        let registration = Registration { init, interval };
        self.registration = Some(registration.clone());
        self.state = MonitorState::Heartbeating;
        self.stats.registrations += 1;
        self.unhealthy_reported = None;
        self.misses = 0;
        self.tx_init_ack = true;
        self.set_timer(Timer::Registration, None);
        self.challenge(now, now + interval);
        self.push(MonitorEvent::Registered(registration));
    }

    fn on_response(&mut self, now: Instant, r: ChallengeResponse) {
        if self.state != MonitorState::Heartbeating {
            self.on_protocol_error(now, ProtocolError::Unexpected(MsgType::ChallengeResponse));
            return;
        }
        if self.answered || r.heartbeat_response != self.nonce || self.tx_challenge {
            self.on_protocol_error(
                now,
                ProtocolError::StaleNonce { expected: self.nonce, got: r.heartbeat_response },
            );
            return;
        }
        self.answered = true;
        self.misses = 0;
        self.last_heartbeat = Some(now);
        self.stats.heartbeats += 1;
        let rtt = now - self.challenged_at;
        self.stats.last_rtt = rtt;
        self.stats.max_rtt = self.stats.max_rtt.max(rtt);
        match r.heartbeat_health {
            Health::Unhealthy => {
                let action = r.corrective_action;
                if self.unhealthy_reported.is_none_or(|prev| action > prev) {
                    self.unhealthy_reported = Some(action);
                    self.fault = Some(Fault::Unhealthy(action));
                    self.push(MonitorEvent::Unhealthy { corrective_action: action, log_msg: r.log_msg });
                }
            }
            Health::Healthy => {
                self.unhealthy_reported = None;
                if self.fault.take().is_some() {
                    self.push(MonitorEvent::Recovered);
                }
            }
        }
    }

    fn on_action_response(&mut self, now: Instant, r: ActionResponse) {
        let expected = self.registration.as_ref().map_or(0, |reg| reg.init.invocation_id);
        if self.state != MonitorState::Heartbeating {
            self.on_protocol_error(now, ProtocolError::Unexpected(MsgType::ActionResponse));
            return;
        }
        if r.invocation_id != expected {
            self.nack(now, "wrong invocation_id");
            self.on_protocol_error(now, ProtocolError::WrongInvocationId { expected, got: r.invocation_id });
            return;
        }
        match self.vote {
            Some(v)
                if v.sent
                    && v.notify.event_type == r.event_type
                    && v.notify.notification_type == r.notification_type =>
            {
                self.vote = None;
                self.set_timer(Timer::Vote, None);
                self.push_vote_result(v, r.vote_result, r.log_msg);
            }
            _ => self.on_protocol_error(now, ProtocolError::Unexpected(MsgType::ActionResponse)),
        }
    }

    fn on_exit(&mut self, log_msg: LogMsg) {
        if let Some(vote) = self.vote.take() {
            self.push_vote_result(vote, VoteResult::Error, bounded("guest agent exited before answering"));
        }
        self.timers = [None; TIMERS];
        self.tx_challenge = false;
        self.state = MonitorState::Exited;
        self.fault = None;
        self.unhealthy_reported = None;
        self.push(MonitorEvent::Deregistered { log_msg });
    }

    fn on_interval_end(&mut self, now: Instant) {
        let due = self.timers[Timer::Challenge as usize].unwrap_or(now);
        let interval = self.registration.as_ref().map_or(self.config.min_interval, |r| r.interval);
        if !self.answered {
            self.misses = self.misses.saturating_add(1);
            self.stats.misses += 1;
            if self.misses > self.config.loss_threshold {
                self.stats.losses += 1;
                self.fault = Some(Fault::Lost);
                self.unhealthy_reported = None;
                self.state = MonitorState::AwaitingInit;
                self.tx_challenge = false;
                self.set_timer(Timer::Challenge, None);
                self.set_timer(Timer::Registration, Some(now + self.config.registration_timeout));
                self.push(MonitorEvent::HeartbeatLost {
                    consecutive_misses: self.misses,
                    last_heartbeat: self.last_heartbeat,
                });
                return;
            }
        }
        // Keep the cadence unless we are already a whole interval late.
        let next = if due + interval > now { due + interval } else { now + interval };
        self.challenge(now, next);
    }

    fn challenge(&mut self, now: Instant, deadline: Instant) {
        let mut nonce = self.ids.next_id() & MAX_NONCE;
        if nonce == self.nonce {
            nonce = nonce.wrapping_add(1) & MAX_NONCE;
        }
        self.nonce = nonce;
        self.answered = false;
        self.tx_challenge = true;
        self.challenged_at = now;
        self.set_timer(Timer::Challenge, Some(deadline));
    }

    fn on_protocol_error(&mut self, now: Instant, e: ProtocolError) {
        self.stats.protocol_errors += 1;
        let reason = match e {
            ProtocolError::Frame(_) => Some("message too long"),
            ProtocolError::Decode(DecodeError::UnsupportedVersion(_)) => Some("unsupported version"),
            ProtocolError::Decode(DecodeError::UnknownMsgType) => Some("unknown msg_type"),
            ProtocolError::Decode(d) => Some(d.reason()),
            ProtocolError::Unexpected(MsgType::InitAck | MsgType::Challenge | MsgType::ActionNotify | MsgType::Nack) => {
                Some("unexpected message direction")
            }
            _ => None,
        };
        if let Some(reason) = reason {
            self.nack(now, reason);
        }
        self.push(MonitorEvent::ProtocolError(e));
    }

    fn nack(&mut self, now: Instant, reason: &'static str) {
        let allowed = self.last_nack.is_none_or(|t| now >= t + self.config.nack_interval);
        if allowed && self.tx_nack.is_none() {
            self.tx_nack = Some(reason);
            self.last_nack = Some(now);
        } else {
            self.stats.nacks_suppressed += 1;
        }
    }

    fn push_vote_result(&mut self, vote: Vote, result: VoteResult, log_msg: LogMsg) {
        self.push(MonitorEvent::VoteResult {
            event_type: vote.notify.event_type,
            notification_type: vote.notify.notification_type,
            result,
            log_msg,
        });
    }

    fn push(&mut self, e: MonitorEvent) {
        // Input stops while an event waits and each step pushes at most EVENTS, so this never overflows; if it
        // ever did, the oldest event would be kept and this one counted as an error rather than panicking.
        if self.events.push_back(e).is_err() {
            self.stats.protocol_errors += 1;
        }
    }

    fn end_session(&mut self) {
        if let Some(vote) = self.vote.take() {
            self.push_vote_result(vote, VoteResult::Error, bounded("connection to guest lost"));
        }
        self.framer.reset();
        self.timers = [None; TIMERS];
        self.registration = None;
        self.tx_nack = None;
        self.tx_init_ack = false;
        self.tx_challenge = false;
        self.answered = false;
        self.misses = 0;
        self.last_heartbeat = None;
    }

    fn due(&self, t: Timer, now: Instant) -> bool {
        self.timers[t as usize].is_some_and(|d| d <= now)
    }

    fn set_timer(&mut self, t: Timer, at: Option<Instant>) {
        self.timers[t as usize] = at;
    }
}

impl<R> fmt::Debug for Monitor<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("state", &self.state)
            .field("fault", &self.fault)
            .field("misses", &self.misses)
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}
