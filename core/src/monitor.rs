//! [`Monitor`]: the host side of the protocol for one guest, as a sans-IO state machine.
//!
//! It owns the session with one guest: registration, challenges, the miss count, loss, health reports, votes and
//! notices, and `nack`s for refused messages. It must never read a clock, do I/O, allocate, or panic on guest
//! bytes; the guest's identity is whatever the caller says (the socket), never what the guest declares.

use core::fmt;

use crate::codec::{next_message, DecodeError};
use crate::framer::{FrameError, LineFramer, LineStorage, LINE_BUF};
use crate::msg::*;
use crate::time::{Duration, Instant};
use crate::timers::Timers;
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
    /// After a registration, delay the second challenge by a random part (up to half) of the interval, so that
    /// guests registering at once (a restart of the host daemon) do not keep challenge phases aligned forever.
    /// Within the protocol: a guest expects a challenge within max(2 x interval, 5 s). Default off (exact
    /// timing); the host daemon turns it on.
    pub spread_phase: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            loss_threshold: 1,
            min_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(60),
            registration_timeout: Duration::from_secs(120),
            nack_interval: Duration::from_secs(1),
            spread_phase: false,
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
            ProtocolError::StaleNonce { expected, got } => {
                write!(f, "stale nonce {got} (expected {expected})")
            }
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
#[allow(clippy::large_enum_variant)] // no heap in the core: texts are carried inline
pub enum MonitorEvent {
    /// The guest sent `init` (first time, or again: a new session either way).
    Registered(Registration),
    /// Consecutive misses exceeded the threshold. Reported once per episode; the monitor keeps challenging at the
    /// interval, and any valid answer (or a new `init`) ends the episode with [`MonitorEvent::Recovered`].
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
    /// A valid answer after a loss (any health but `unhealthy`), or a healthy one after an unhealthy report.
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
    /// The guest is registered but its heartbeat is lost: it would not answer.
    NotHeartbeating,
    /// Another vote or notice is still open.
    Busy,
    /// The timeout does not fit the protocol's 32-bit milliseconds.
    TimeoutTooLong,
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotifyError::NotRegistered => "guest not registered",
            NotifyError::NotHeartbeating => "guest heartbeat lost",
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
    /// Valid heartbeat answers (the current challenge's or, late, one of the last [`RECENT_NONCES`]).
    pub heartbeats: u64,
    /// Of those, answers to an earlier challenge than the current one (a guest catching up after a freeze).
    pub late_answers: u64,
    /// Values the reference sends as fallbacks (`unknown` action, event or notification type, an unknown health
    /// string), accepted and mapped to a safe meaning.
    pub unknown_values: u64,
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

/// How many of the latest challenges an answer may echo (the reference host accepts the last 6): after a freeze a
/// guest answers the challenges that queued up, each of which proves it is alive again.
pub const RECENT_NONCES: usize = 6;

/// The nonces of the latest challenges sent, and which were answered.
#[derive(Clone, Copy, Debug, Default)]
struct RecentNonces {
    nonces: [u32; RECENT_NONCES],
    answered: [bool; RECENT_NONCES],
    len: usize,
    next: usize,
}

impl RecentNonces {
    fn push(&mut self, nonce: u32) {
        self.nonces[self.next] = nonce;
        self.answered[self.next] = false;
        self.next = (self.next + 1) % RECENT_NONCES;
        self.len = (self.len + 1).min(RECENT_NONCES);
    }

    /// Marks `nonce` answered; `false` if it was never sent (of the latest) or already answered.
    fn answer(&mut self, nonce: u32) -> bool {
        let slot = (0..self.len)
            .map(|i| (self.next + RECENT_NONCES - 1 - i) % RECENT_NONCES)
            .find(|&i| self.nonces[i] == nonce);
        match slot {
            Some(i) if !self.answered[i] => {
                self.answered[i] = true;
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        *self = RecentNonces::default();
    }
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
pub struct Monitor<R, S = [u8; LINE_BUF]> {
    config: MonitorConfig,
    ids: R,
    framer: LineFramer<S>,
    state: MonitorState,
    registration: Option<Registration>,
    fault: Option<Fault>,
    /// The most severe action reported unhealthy in this session (dedupes `Unhealthy`).
    unhealthy_reported: Option<CorrectiveAction>,
    nonce: u32,
    /// The current challenge was answered.
    answered: bool,
    /// Some valid answer arrived during the current interval (proof of life).
    heard: bool,
    recent: RecentNonces,
    misses: u32,
    challenged_at: Instant,
    last_heartbeat: Option<Instant>,
    vote: Option<Vote>,
    timers: Timers<TIMERS>,
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
        Monitor::with_line_storage(config, ids, [0; LINE_BUF])
    }
}

impl<R: IdSource, S: LineStorage> Monitor<R, S> {
    /// A monitor that keeps a line arriving in parts in `storage` (see [`LineStorage`]: a host with thousands of
    /// guests can give each one storage that exists only while a partial line is held).
    pub fn with_line_storage(config: MonitorConfig, ids: R, storage: S) -> Self {
        Monitor {
            config,
            ids,
            framer: LineFramer::with_storage(storage),
            state: MonitorState::Disconnected,
            registration: None,
            fault: None,
            unhealthy_reported: None,
            nonce: 0,
            answered: false,
            heard: false,
            recent: RecentNonces::default(),
            misses: 0,
            challenged_at: Instant::ZERO,
            last_heartbeat: None,
            vote: None,
            timers: Timers::new(),
            tx_nack: None,
            tx_init_ack: false,
            tx_challenge: false,
            last_nack: None,
            sequence: 1,
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
            let (n, parsed) = next_message(&mut self.framer, &input[used..]);
            used += n;
            match parsed {
                None => {}
                Some(Ok(msg)) => self.on_message(now, msg),
                Some(Err(e)) => self.on_protocol_error(now, e),
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

    /// Replaces the tunables (a reloaded configuration). The loss threshold applies at once; interval bounds at
    /// the guest's next registration.
    pub fn set_config(&mut self, config: MonitorConfig) {
        self.config = config;
    }

    /// The caller knows the guest could not have answered until now (its VM was paused, and has just been
    /// resumed): counting starts over with a fresh challenge at once. An open fault stays open until an answer.
    pub fn rechallenge(&mut self, now: Instant) {
        if self.state != MonitorState::Heartbeating {
            return;
        }
        self.misses = 0;
        let interval = self.registration.as_ref().map_or(self.config.min_interval, |r| r.interval);
        self.challenge(now, now + interval);
    }

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
        if self.fault == Some(Fault::Lost) {
            return Err(NotifyError::NotHeartbeating);
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
        self.timers.next()
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
            self.recent.push(self.nonce);
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
        if init.corrective_action == CorrectiveAction::Unknown {
            self.stats.unknown_values += 1;
        }
        let requested = Duration::from_millis(u64::from(init.heartbeat_interval_ms));
        let interval = requested.max(self.config.min_interval).min(self.config.max_interval);
        let registration = Registration { init, interval };
        self.registration = Some(registration.clone());
        self.state = MonitorState::Heartbeating;
        self.stats.registrations += 1;
        self.unhealthy_reported = None;
        self.misses = 0;
        self.recent.clear();
        self.tx_init_ack = true;
        self.set_timer(Timer::Registration, None);
        let spread = if self.config.spread_phase {
            Duration::from_millis(u64::from(self.ids.next_id()) % (interval.as_millis() / 2).max(1))
        } else {
            Duration::ZERO
        };
        self.challenge(now, now + interval + spread);
        self.push(MonitorEvent::Registered(registration));
    }

    fn on_response(&mut self, now: Instant, r: ChallengeResponse) {
        if self.state != MonitorState::Heartbeating {
            self.on_protocol_error(now, ProtocolError::Unexpected(MsgType::ChallengeResponse));
            return;
        }
        if !self.recent.answer(r.heartbeat_response) {
            self.on_protocol_error(now, ProtocolError::StaleNonce { expected: self.nonce, got: r.heartbeat_response });
            return;
        }
        if r.heartbeat_response == self.nonce && !self.tx_challenge {
            self.answered = true;
            let rtt = now - self.challenged_at;
            self.stats.last_rtt = rtt;
            self.stats.max_rtt = self.stats.max_rtt.max(rtt);
        } else {
            self.stats.late_answers += 1;
        }
        // Proof of life, whichever of the latest challenges it answers.
        self.heard = true;
        self.misses = 0;
        self.last_heartbeat = Some(now);
        self.stats.heartbeats += 1;
        self.set_timer(Timer::Registration, None);
        if r.heartbeat_health == Health::Unknown || r.corrective_action == CorrectiveAction::Unknown {
            self.stats.unknown_values += 1;
        }
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
            // Alive, but no word on health: it ends a loss and leaves an unhealthy report standing.
            Health::Unknown => {
                if self.fault == Some(Fault::Lost) {
                    self.fault = None;
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
        if r.event_type == EventType::Unknown || r.notification_type == NotificationType::Unknown {
            self.stats.unknown_values += 1;
        }
        // The reference's `unknown` members match the open vote: it sends them when it could not parse ours.
        match self.vote {
            Some(v)
                if v.sent
                    && (v.notify.event_type == r.event_type || r.event_type == EventType::Unknown)
                    && (v.notify.notification_type == r.notification_type
                        || r.notification_type == NotificationType::Unknown) =>
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
        self.timers.clear();
        self.tx_challenge = false;
        self.state = MonitorState::Exited;
        self.fault = None;
        self.unhealthy_reported = None;
        self.push(MonitorEvent::Deregistered { log_msg });
    }

    fn on_interval_end(&mut self, now: Instant) {
        let due = self.timers.get(Timer::Challenge as usize).unwrap_or(now);
        let interval = self.registration.as_ref().map_or(self.config.min_interval, |r| r.interval);
        if !self.heard {
            self.misses = self.misses.saturating_add(1);
            self.stats.misses += 1;
            if self.misses == self.config.loss_threshold.saturating_add(1) {
                // Reported once per episode; challenges go on so that a guest that comes back (after a freeze,
                // a migration stun) is heard within one interval, without a new `init`. If nothing at all comes
                // back for the registration timeout, the caller is told to reconnect.
                self.stats.losses += 1;
                self.fault = Some(Fault::Lost);
                self.unhealthy_reported = None;
                self.set_timer(Timer::Registration, Some(now + self.config.registration_timeout));
                self.push(MonitorEvent::HeartbeatLost {
                    consecutive_misses: self.misses,
                    last_heartbeat: self.last_heartbeat,
                });
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
        self.heard = false;
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
            ProtocolError::Unexpected(
                MsgType::InitAck | MsgType::Challenge | MsgType::ActionNotify | MsgType::Nack,
            ) => Some("unexpected message direction"),
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
        self.timers.clear();
        self.registration = None;
        self.tx_nack = None;
        self.tx_init_ack = false;
        self.tx_challenge = false;
        self.answered = false;
        self.heard = false;
        self.recent.clear();
        self.misses = 0;
        self.last_heartbeat = None;
    }

    fn due(&self, t: Timer, now: Instant) -> bool {
        self.timers.is_due(t as usize, now)
    }

    fn set_timer(&mut self, t: Timer, at: Option<Instant>) {
        match at {
            Some(at) => self.timers.set(t as usize, at),
            None => self.timers.stop(t as usize),
        }
    }
}

impl<R, S> fmt::Debug for Monitor<R, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("state", &self.state)
            .field("fault", &self.fault)
            .field("misses", &self.misses)
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::vec::Vec;

    /// A monitor with a counter for nonces (1, 2, 3, ...), connected at t=0.
    struct Script {
        m: Monitor<fn() -> u32>,
    }

    fn counter() -> u32 {
        use core::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(100);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    impl Script {
        fn new(config: MonitorConfig) -> Self {
            let mut m = Monitor::new(config, counter as fn() -> u32);
            m.connected(at(0));
            Script { m }
        }

        /// Feeds `line` at `t`; returns the events it caused.
        fn feed(&mut self, t: u64, bytes: &str) -> Vec<MonitorEvent> {
            let mut input = bytes.as_bytes();
            let mut events = Vec::new();
            while !input.is_empty() {
                let n = self.m.handle_bytes(at(t), input);
                input = &input[n..];
                while let Some(e) = self.m.poll_event() {
                    events.push(e);
                }
            }
            events
        }

        /// Runs timers up to `t`; returns the events.
        fn advance(&mut self, t: u64) -> Vec<MonitorEvent> {
            let mut events = Vec::new();
            for _ in 0..100 {
                match self.m.poll_timeout() {
                    Some(d) if d <= at(t) => self.m.handle_timeout(d),
                    _ => break,
                }
                while let Some(e) = self.m.poll_event() {
                    events.push(e);
                }
            }
            events
        }

        /// Everything the monitor wants to send at `t`, decoded.
        fn sent(&mut self, t: u64) -> Vec<Body> {
            let mut out = Vec::new();
            let mut buf = [0u8; MAX_WIRE];
            while let Some(n) = self.m.poll_transmit(at(t), &mut buf) {
                assert_eq!((buf[0], buf[n - 1]), (b'\n', b'\n'));
                out.push(crate::decode(&buf[1..n - 1]).unwrap().body);
            }
            out
        }

        fn nonce(&self) -> u32 {
            self.m.nonce
        }

        fn register(&mut self, t: u64, interval_ms: u32) -> u32 {
            let ev = self.feed(t, &init_line(77, interval_ms, "reboot"));
            assert!(matches!(ev.as_slice(), [MonitorEvent::Registered(_)]), "{ev:?}");
            let sent = self.sent(t);
            assert_eq!(sent[0], Body::InitAck { invocation_id: 77 });
            let Body::Challenge { heartbeat_challenge } = sent[1] else { panic!("{sent:?}") };
            heartbeat_challenge
        }
    }

    fn init_line(id: u32, interval: u32, action: &str) -> std::string::String {
        format!(
            "\n{{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":{id},\"name\":\"vm-1\",\"heartbeat_interval_ms\":{interval},\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":14,\"restart_secs\":601,\"corrective_action\":\"{action}\"}}\n"
        )
    }

    fn response(nonce: u32, health: &str, action: &str, msg: &str) -> std::string::String {
        format!(
            "\n{{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":{nonce},\"heartbeat_health\":\"{health}\",\"corrective_action\":\"{action}\",\"log_msg\":\"{msg}\"}}\n"
        )
    }

    fn ok(nonce: u32) -> std::string::String {
        response(nonce, "healthy", "reboot", "")
    }

    #[test]
    fn init_gets_ack_and_first_challenge_at_once_then_one_per_interval() {
        let mut s = Script::new(MonitorConfig::default());
        assert_eq!(s.m.state(), MonitorState::AwaitingInit);
        let n1 = s.register(0, 1000);
        assert!(n1 <= MAX_NONCE);
        assert_eq!(s.m.state(), MonitorState::Heartbeating);
        assert_eq!(s.m.poll_timeout(), Some(at(1000)));
        assert!(s.feed(40, &ok(n1)).is_empty());
        assert_eq!(s.m.stats().last_rtt, Duration::from_millis(40));
        assert!(s.advance(999).is_empty());
        assert!(s.sent(999).is_empty(), "no challenge before the interval ends");
        assert!(s.advance(1000).is_empty());
        let sent = s.sent(1000);
        assert!(matches!(sent.as_slice(), [Body::Challenge { heartbeat_challenge }] if *heartbeat_challenge != n1));
        assert_eq!(s.m.poll_timeout(), Some(at(2000)));
    }

    #[test]
    fn interval_is_clamped_to_the_configured_floor_and_ceiling() {
        let mut s = Script::new(MonitorConfig::default());
        let ev = s.feed(0, &init_line(1, 0, "log"));
        let [MonitorEvent::Registered(r)] = ev.as_slice() else { panic!() };
        assert_eq!(r.interval, Duration::from_millis(100));
        let ev = s.feed(0, &init_line(1, u32::MAX, "log"));
        let [MonitorEvent::Registered(r)] = ev.as_slice() else { panic!() };
        assert_eq!(r.interval, Duration::from_secs(60));
    }

    #[test]
    fn loss_at_the_second_miss_then_challenges_go_on() {
        let mut s = Script::new(MonitorConfig::default());
        let n = s.register(0, 1000);
        s.feed(10, &ok(n));
        s.advance(1000);
        s.sent(1000);
        // the challenge of t=1000 goes unanswered
        assert!(s.advance(2000).is_empty(), "first miss is not a loss");
        assert_eq!(s.sent(2000).len(), 1, "a miss sends a new challenge");
        let ev = s.advance(3000);
        assert_eq!(ev, [MonitorEvent::HeartbeatLost { consecutive_misses: 2, last_heartbeat: Some(at(10)) }]);
        assert_eq!(s.m.state(), MonitorState::Heartbeating);
        assert_eq!(s.m.fault(), Some(Fault::Lost));
        assert_eq!(s.sent(3000).len(), 1, "challenges go on after a loss, at the interval");
        assert!(s.advance(4000).is_empty(), "loss is reported once");
        assert!(matches!(s.sent(4000).as_slice(), [Body::Challenge { .. }]));
        // a vote is refused at once while the heartbeat is lost
        assert_eq!(
            s.m.notify(at(4000), EventType::Stop, NotificationType::Revocable, Duration::from_secs(9)),
            Err(NotifyError::NotHeartbeating)
        );
        // the current challenge answered: recovered at once, no init needed
        let n = s.nonce();
        assert_eq!(s.feed(4500, &ok(n)), [MonitorEvent::Recovered]);
        assert_eq!(s.m.fault(), None);
        assert_eq!(s.m.stats().registrations, 1);
        // a new registration works as well
        let n = s.register(70_000, 1000);
        assert!(s.feed(70_010, &ok(n)).is_empty());
    }

    #[test]
    fn a_guest_back_from_a_freeze_answers_its_queued_challenges_without_errors() {
        // What the reference guest does after SIGSTOP / a paused VM: it answers every challenge that queued up,
        // each echoing its own nonce.
        let mut s = Script::new(MonitorConfig::default());
        let first = s.register(0, 1000);
        s.feed(10, &ok(first));
        let mut queued = Vec::new();
        for t in [1000, 2000, 3000, 4000] {
            let ev = s.advance(t);
            if t == 3000 {
                assert!(matches!(ev.as_slice(), [MonitorEvent::HeartbeatLost { .. }]), "{ev:?}");
            }
            let sent = s.sent(t);
            let [Body::Challenge { heartbeat_challenge }] = sent.as_slice() else { panic!("{sent:?}") };
            queued.push(*heartbeat_challenge);
        }
        // thawed at 4300: the four answers arrive at once, oldest first
        let mut events = Vec::new();
        for n in &queued {
            events.extend(s.feed(4300, &ok(*n)));
        }
        assert_eq!(events, [MonitorEvent::Recovered], "proof of life, no protocol error");
        assert_eq!(s.m.stats().protocol_errors, 0);
        assert_eq!(s.m.stats().late_answers, 3);
        assert_eq!(s.m.fault(), None);
        // the same answer twice is a replay
        assert!(matches!(s.feed(4301, &ok(queued[3])).as_slice(), [MonitorEvent::ProtocolError(_)]));
        // an answer older than the last RECENT_NONCES challenges is not accepted
        let mut s = Script::new(MonitorConfig { loss_threshold: 100, ..MonitorConfig::default() });
        let n0 = s.register(0, 1000);
        for t in 1..=RECENT_NONCES as u64 {
            s.advance(t * 1000);
            s.sent(t * 1000);
        }
        assert!(matches!(
            s.feed(7000, &ok(n0)).as_slice(),
            [MonitorEvent::ProtocolError(ProtocolError::StaleNonce { .. })]
        ));
    }

    #[test]
    fn the_references_unknown_values_are_accepted_and_counted() {
        let mut s = Script::new(MonitorConfig::default());
        // init with corrective_action "unknown": registered, not nacked
        let ev = s.feed(0, &init_line(5, 1000, "unknown"));
        let [MonitorEvent::Registered(r)] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(r.init.corrective_action, CorrectiveAction::Unknown);
        assert_eq!(r.init.corrective_action.effective(), CorrectiveAction::Log);
        let sent = s.sent(0);
        assert!(matches!(sent.as_slice(), [Body::InitAck { .. }, Body::Challenge { .. }]), "{sent:?}");
        // an answer with an unknown health string and action: a heartbeat, no fault
        assert!(s.feed(10, &response(s.nonce(), "unknown", "unknown", "")).is_empty());
        s.advance(1000);
        s.sent(1000);
        assert!(s.feed(1010, &response(s.nonce(), "degraded", "none", "")).is_empty());
        assert_eq!(s.m.stats().heartbeats, 2);
        assert_eq!(s.m.stats().protocol_errors, 0);
        assert_eq!(s.m.stats().unknown_values, 3);
        assert_eq!(s.m.fault(), None);
        // unhealthy with action unknown: reported as such (the host acts on it as log)
        s.advance(2000);
        s.sent(2000);
        let ev = s.feed(2010, &response(s.nonce(), "unhealthy", "unknown", "x"));
        assert!(matches!(
            ev.as_slice(),
            [MonitorEvent::Unhealthy { corrective_action: CorrectiveAction::Unknown, .. }]
        ));
        // a vote answered with unknown event and notification types matches the open vote
        s.m.notify(at(2100), EventType::LiveMigrateBegin, NotificationType::Revocable, Duration::from_secs(9)).unwrap();
        s.sent(2100);
        let ev = s.feed(2200, concat!(r#"{"version":3,"revision":1,"msg_type":"action_response","sequence":3,"invocation_id":5,"event_type":"unknown","notification_type":"unknown","vote_result":"unknown","log_msg":""}"#, "\n"));
        assert!(
            matches!(
                ev.as_slice(),
                [MonitorEvent::VoteResult { event_type: EventType::LiveMigrateBegin, result: VoteResult::Unknown, .. }]
            ),
            "{ev:?}"
        );
        assert_eq!(s.m.stats().unknown_values, 5);
    }

    #[test]
    fn spread_phase_delays_the_second_challenge_by_at_most_half_an_interval() {
        let mut s = Script::new(MonitorConfig { spread_phase: true, ..MonitorConfig::default() });
        let n = s.register(0, 1000);
        s.feed(5, &ok(n));
        let second = s.m.poll_timeout().unwrap();
        assert!(second >= at(1000) && second < at(1500), "{second:?}");
        // then the cadence is the interval
        s.advance(second.as_millis());
        s.sent(second.as_millis());
        assert_eq!(s.m.poll_timeout(), Some(second + Duration::from_millis(1000)));
    }

    #[test]
    fn rechallenge_starts_counting_over() {
        let mut s = Script::new(MonitorConfig::default());
        let n = s.register(0, 1000);
        s.feed(5, &ok(n));
        s.advance(2000); // one miss
        s.sent(2000);
        s.m.rechallenge(at(2500));
        let sent = s.sent(2500);
        assert!(matches!(sent.as_slice(), [Body::Challenge { .. }]), "{sent:?}");
        assert!(s.advance(3500).is_empty(), "the miss before counts no more: one miss is not a loss");
        assert!(s.advance(4499).is_empty());
        assert_eq!(s.advance(4500).len(), 1, "two fresh misses are");
    }

    #[test]
    fn the_first_message_has_sequence_one() {
        let mut s = Script::new(MonitorConfig::default());
        s.feed(0, &init_line(5, 1000, "log"));
        let mut buf = [0u8; MAX_WIRE];
        let n = s.m.poll_transmit(at(0), &mut buf).unwrap();
        assert_eq!(crate::decode(&buf[1..n - 1]).unwrap().sequence, 1);
        let n = s.m.poll_transmit(at(0), &mut buf).unwrap();
        assert_eq!(crate::decode(&buf[1..n - 1]).unwrap().sequence, 2);
    }

    #[test]
    fn configurable_loss_threshold() {
        let mut s = Script::new(MonitorConfig { loss_threshold: 3, ..MonitorConfig::default() });
        s.register(0, 500);
        assert!(s.advance(1500).is_empty());
        assert!(matches!(s.advance(2000).as_slice(), [MonitorEvent::HeartbeatLost { consecutive_misses: 4, .. }]));
    }

    #[test]
    fn stale_and_replayed_nonces_are_ignored_and_reported() {
        let mut s = Script::new(MonitorConfig::default());
        let n = s.register(0, 1000);
        let ev = s.feed(5, &ok(n ^ 1));
        assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::StaleNonce { expected: n, got: n ^ 1 })]);
        assert!(s.sent(5).is_empty(), "a stale nonce gets no nack");
        assert!(s.feed(6, &ok(n)).is_empty());
        // a replay of the nonce just answered
        assert!(matches!(
            s.feed(7, &ok(n)).as_slice(),
            [MonitorEvent::ProtocolError(ProtocolError::StaleNonce { .. })]
        ));
        s.advance(1000);
        s.sent(1000);
        // the old nonce does not count for the new challenge: two misses later, loss
        s.feed(1001, &ok(n));
        s.advance(2000);
        assert!(matches!(s.advance(3000).as_slice(), [MonitorEvent::HeartbeatLost { .. }]));
        assert_eq!(s.m.stats().protocol_errors, 3);
    }

    #[test]
    fn unhealthy_is_reported_once_per_episode_and_on_escalation() {
        let mut s = Script::new(MonitorConfig::default());
        let mut n = s.register(0, 1000);
        let ev = s.feed(1, &response(n, "unhealthy", "log", "db \\\"down\\\""));
        assert_eq!(
            ev,
            [MonitorEvent::Unhealthy { corrective_action: CorrectiveAction::Log, log_msg: bounded("db \"down\"") }]
        );
        assert_eq!(s.m.fault(), Some(Fault::Unhealthy(CorrectiveAction::Log)));
        let next = |s: &mut Script, t: u64| {
            s.advance(t);
            s.sent(t);
            s.nonce()
        };
        n = next(&mut s, 1000);
        assert!(s.feed(1001, &response(n, "unhealthy", "log", "still")).is_empty(), "counts as heartbeat, no repeat");
        n = next(&mut s, 2000);
        assert!(s.feed(2001, &response(n, "unhealthy", "none", "holdoff")).is_empty());
        n = next(&mut s, 3000);
        let ev = s.feed(3001, &response(n, "unhealthy", "reboot", "worse"));
        assert!(matches!(ev.as_slice(), [MonitorEvent::Unhealthy { corrective_action: CorrectiveAction::Reboot, .. }]));
        n = next(&mut s, 4000);
        assert_eq!(s.feed(4001, &ok(n)), [MonitorEvent::Recovered]);
        n = next(&mut s, 5000);
        assert!(s.feed(5001, &ok(n)).is_empty(), "recovered once");
        assert_eq!(s.m.stats().misses, 0, "unhealthy answers are heartbeats");
    }

    #[test]
    fn a_new_init_in_any_state_resets_the_session() {
        let mut s = Script::new(MonitorConfig::default());
        let n = s.register(0, 1000);
        s.feed(1, &response(n, "unhealthy", "stop", ""));
        s.advance(1000);
        s.sent(1000);
        // the guest rebooted: fresh init mid-session
        let ev = s.feed(1500, &init_line(99, 2000, "log"));
        assert!(matches!(ev.as_slice(), [MonitorEvent::Registered(r)] if r.init.invocation_id == 99));
        let sent = s.sent(1500);
        assert_eq!(sent[0], Body::InitAck { invocation_id: 99 });
        assert_eq!(s.m.poll_timeout(), Some(at(3500)));
        // still unhealthy after the repair: reported again
        let ev = s.feed(1600, &response(s.nonce(), "unhealthy", "stop", ""));
        assert!(matches!(ev.as_slice(), [MonitorEvent::Unhealthy { .. }]));
    }

    #[test]
    fn registration_timeout_after_120s_without_init() {
        let mut s = Script::new(MonitorConfig::default());
        assert!(s.advance(119_999).is_empty());
        assert_eq!(s.advance(120_000), [MonitorEvent::RegistrationTimeout]);
        assert_eq!(s.m.poll_timeout(), None);
    }

    #[test]
    fn exit_is_a_graceful_deregistration_not_a_fault() {
        let mut s = Script::new(MonitorConfig::default());
        s.register(0, 1000);
        let ev = s.feed(
            10,
            "{\"version\":3,\"revision\":1,\"msg_type\":\"exit\",\"sequence\":4,\"log_msg\":\"Exiting...\"}\n",
        );
        assert_eq!(ev, [MonitorEvent::Deregistered { log_msg: bounded("Exiting...") }]);
        assert_eq!(s.m.state(), MonitorState::Exited);
        assert_eq!(s.m.poll_timeout(), None);
        assert!(s.advance(1_000_000).is_empty(), "no loss after exit");
        assert_eq!(s.m.fault(), None);
    }

    #[test]
    fn refused_messages_get_a_rate_limited_nack() {
        let mut s = Script::new(MonitorConfig::default());
        s.register(0, 1000);
        let ev = s.feed(1, "{broken\n");
        assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::Decode(DecodeError::Syntax))]);
        assert_eq!(s.sent(1), [Body::Nack { invocation_id: 77, log_msg: bounded("malformed JSON") }]);
        // within a second: counted, not nacked
        s.feed(2, "{\"version\":2,\"revision\":0,\"msg_type\":\"init\",\"sequence\":1}\n");
        assert!(s.sent(2).is_empty());
        assert_eq!(s.m.stats().nacks_suppressed, 1);
        let ev = s.feed(1002, "{\"version\":2,\"revision\":0,\"msg_type\":\"init\",\"sequence\":1}\n");
        assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::Decode(DecodeError::UnsupportedVersion(2)))]);
        assert_eq!(s.sent(1002), [Body::Nack { invocation_id: 77, log_msg: bounded("unsupported version") }]);
        s.feed(2002, "{\"version\":3,\"revision\":1,\"msg_type\":\"bogus\",\"sequence\":1}\n");
        assert_eq!(s.sent(2002), [Body::Nack { invocation_id: 77, log_msg: bounded("unknown msg_type") }]);
        s.feed(3002, "{\"version\":3,\"revision\":1,\"msg_type\":\"action_response\",\"sequence\":3,\"invocation_id\":5,\"event_type\":\"stop\",\"notification_type\":\"revocable\",\"vote_result\":\"accept\",\"log_msg\":\"\"}\n");
        assert_eq!(s.sent(3002), [Body::Nack { invocation_id: 77, log_msg: bounded("wrong invocation_id") }]);
        assert_eq!(s.m.state(), MonitorState::Heartbeating, "nothing ends the session");
    }

    fn vote_answer(result: &str, msg: &str) -> std::string::String {
        format!("{{\"version\":3,\"revision\":1,\"msg_type\":\"action_response\",\"sequence\":3,\"invocation_id\":77,\"event_type\":\"stop\",\"notification_type\":\"revocable\",\"vote_result\":\"{result}\",\"log_msg\":\"{msg}\"}}\n")
    }

    #[test]
    fn votes_use_the_timeout_that_was_sent_and_report_timeout_as_such() {
        let mut s = Script::new(MonitorConfig::default());
        let n = s.register(0, 1000);
        assert_eq!(s.m.notify(at(100), EventType::Stop, NotificationType::Revocable, Duration::from_secs(20)), Ok(()));
        assert_eq!(
            s.m.notify(at(100), EventType::Stop, NotificationType::Revocable, Duration::from_secs(1)),
            Err(NotifyError::Busy)
        );
        let sent = s.sent(100);
        let [Body::ActionNotify(a)] = sent.as_slice() else { panic!("{sent:?}") };
        assert_eq!((a.invocation_id, a.timeout_ms), (77, 20_000), "not vote_secs (9 s)");
        // heartbeats go on while the vote is open; 9 s (vote_secs) pass without a verdict
        let mut nonce = n;
        for t in (1000..=19_000).step_by(1000) {
            s.feed(t - 999, &ok(nonce));
            assert!(s.advance(t).is_empty(), "no verdict at {t}");
            s.sent(t);
            nonce = s.nonce();
        }
        s.feed(19_001, &ok(nonce));
        assert!(s.advance(20_099).iter().all(|e| !matches!(e, MonitorEvent::VoteResult { .. })));
        let ev = s.advance(20_100);
        assert_eq!(
            ev,
            [MonitorEvent::VoteResult {
                event_type: EventType::Stop,
                notification_type: NotificationType::Revocable,
                result: VoteResult::Timeout,
                log_msg: LogMsg::new()
            }]
        );
        // a late answer is unexpected, not a verdict
        assert!(matches!(s.feed(20_001, &vote_answer("accept", "")).as_slice(), [MonitorEvent::ProtocolError(_)]));
        // the next vote: answered
        s.m.notify(at(21_000), EventType::Stop, NotificationType::Revocable, Duration::from_secs(3)).unwrap();
        s.sent(21_000);
        let ev = s.feed(21_500, &vote_answer("reject", "standby not synced"));
        assert!(
            matches!(ev.as_slice(), [MonitorEvent::VoteResult { result: VoteResult::Reject, log_msg, .. }] if log_msg == "standby not synced")
        );
        assert_eq!(
            s.m.notify(at(0), EventType::Stop, NotificationType::Revocable, Duration::from_millis(1 << 33)),
            Err(NotifyError::TimeoutTooLong)
        );
    }

    #[test]
    fn a_reject_that_arrives_with_a_heartbeat_in_one_read_is_not_lost() {
        let mut s = Script::new(MonitorConfig::default());
        let n = s.register(0, 1000);
        s.m.notify(at(1), EventType::Stop, NotificationType::Revocable, Duration::from_secs(3)).unwrap();
        s.sent(1);
        let both = format!("{}{}", ok(n), vote_answer("reject", "no"));
        let ev = s.feed(2, &both);
        assert!(matches!(ev.as_slice(), [MonitorEvent::VoteResult { result: VoteResult::Reject, .. }]));
        assert_eq!(s.m.stats().heartbeats, 1);
    }

    #[test]
    fn disconnect_pauses_everything_and_keeps_the_fault() {
        let mut s = Script::new(MonitorConfig::default());
        s.register(0, 1000);
        s.advance(2000);
        s.advance(3000);
        assert_eq!(s.m.fault(), Some(Fault::Lost));
        s.m.disconnected();
        assert_eq!(s.m.poll_timeout(), None);
        assert_eq!(s.m.handle_bytes(at(3001), b"{partial"), 8, "bytes while disconnected are dropped");
        s.m.connected(at(5000));
        let n = s.register(5000, 1000);
        assert_eq!(s.feed(5001, &ok(n)), [MonitorEvent::Recovered]);
    }

    #[test]
    fn guest_sending_host_messages_is_refused() {
        let mut s = Script::new(MonitorConfig::default());
        let ev = s.feed(
            0,
            "{\"version\":3,\"revision\":1,\"msg_type\":\"challenge\",\"sequence\":8,\"heartbeat_challenge\":1}\n",
        );
        assert_eq!(ev, [MonitorEvent::ProtocolError(ProtocolError::Unexpected(MsgType::Challenge))]);
        assert_eq!(s.sent(0).len(), 1);
    }

    #[test]
    fn sizes_fit_the_budget() {
        let size = core::mem::size_of::<Monitor<crate::XorShift32>>();
        std::println!("size_of::<Monitor<XorShift32>>() = {size}");
        assert!(size < 2048, "Monitor is {size} bytes");
    }
}
