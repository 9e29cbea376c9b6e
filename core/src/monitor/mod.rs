//! [`Monitor`]: the host side of the protocol for one guest, as a sans-IO state machine.
//!
//! It owns the session with one guest: registration, challenges, the miss count, loss, health reports, votes and
//! notices, and `nack`s for refused messages. It must never read a clock, do I/O, allocate, or panic on guest
//! bytes; the guest's identity is whatever the caller says (the socket), never what the guest declares.

mod config;
mod event;
mod nonces;
mod phase;
mod stats;
mod vote;

use core::fmt;

use crate::codec::{decode, DecodeError};
use crate::error::ProtocolError;
use crate::framer::{LineFramer, LineStorage, LINE_BUF};
use crate::msg::*;
use crate::time::{Duration, Instant};
use crate::timers::Timers;
use crate::IdSource;

pub use config::{ConfigSource, MonitorConfig};
pub use event::{EventSlot, Fault, MonitorEvent, NotifyError, Registration};
pub use nonces::ANSWER_WINDOW;
use nonces::{Echo, SentNonces};
pub use stats::MonitorStats;
use vote::{vote_result, Vote, VoteEnd};

/// What one line of input is, for [`Monitor::handle_bytes`]: a value on the stack for one step (the core has no
/// allocator to box the large variant in, and an answer, the common step, writes only its few bytes of it).
#[allow(clippy::large_enum_variant)]
enum Step {
    /// An answer whose text the monitor does not need (healthy, or health unknown), read in place: the nonce, the
    /// health, the action.
    Answer(u32, Health, CorrectiveAction),
    Message(Message),
    Error(ProtocolError),
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

#[derive(Clone, Copy, Debug)]
enum Timer {
    Challenge = 0,
    Vote = 1,
    Registration = 2,
}
const TIMERS: usize = 3;

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
///
/// One event waits at a time, in an [`EventSlot`] (input stops until it is polled); a vote that a new session or an
/// `exit` ends has its own slot (`vote_ended`), so no step needs more.
pub struct Monitor<R, S = [u8; LINE_BUF], E = Option<MonitorEvent>, C = MonitorConfig> {
    config: C,
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
    sent: SentNonces,
    /// The loss of this episode was reported (cleared by any answer or a new session).
    loss_reported: bool,
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
    events: E,
    /// A vote ended without an answer (the session ended, the guest registered anew or exited), and why: polled
    /// before the queued event, which it precedes.
    vote_ended: Option<(Vote, VoteEnd)>,
    stats: MonitorStats,
    /// Where in the interval this guest's challenges fall, if the caller chose it (see [`set_phase`](Self::set_phase)).
    phase: Option<u16>,
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
        Monitor::with_storage(config, ids, storage, None)
    }
}

impl<R: IdSource, S: LineStorage, E: EventSlot, C: ConfigSource> Monitor<R, S, E, C> {
    /// A monitor with caller-chosen storage for partial lines ([`LineStorage`]), for the waiting event
    /// ([`EventSlot`]; `events` must be empty) and for its tunables ([`ConfigSource`]).
    pub fn with_storage(config: C, ids: R, storage: S, events: E) -> Self {
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
            sent: SentNonces::default(),
            loss_reported: false,
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
            events,
            vote_ended: None,
            stats: MonitorStats::default(),
            phase: None,
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
        self.config.monitor_config()
    }

    fn cfg(&self) -> &MonitorConfig {
        self.config.monitor_config()
    }

    // ---- input ----

    /// A transport to the guest is up: wait for `init`. Any partial line of an earlier connection is forgotten;
    /// the open fault and the counters are kept.
    pub fn connected(&mut self, now: Instant) {
        self.end_session();
        self.state = MonitorState::AwaitingInit;
        self.set_timer(Timer::Registration, Some(now + self.cfg().registration_timeout));
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
        while used < input.len() && self.room() {
            let (n, line) = self.framer.push(&input[used..]);
            used += n;
            let step = match line {
                None => continue,
                Some(Err(e)) => Step::Error(ProtocolError::Frame(e)),
                // the common input, an answer whose text is not needed (not unhealthy), is read in place: no message
                // is built
                Some(Ok(line)) => match crate::fast::decode_answer(line) {
                    Some(a) if a.heartbeat_health != Health::Unhealthy => {
                        Step::Answer(a.heartbeat_response, a.heartbeat_health, a.corrective_action)
                    }
                    _ => match decode(line) {
                        Ok(msg) => Step::Message(msg),
                        Err(e) => Step::Error(ProtocolError::Decode(e)),
                    },
                },
            };
            match step {
                Step::Answer(nonce, health, action) => self.on_answer(now, nonce, health, action, LogMsg::new),
                Step::Message(msg) => self.on_message(now, msg),
                Step::Error(e) => self.on_protocol_error(now, e),
            }
        }
        self.stats.bytes_in += used as u64;
        used
    }

    /// Lets timers that are due fire. Call it when [`poll_timeout`](Self::poll_timeout) has passed; it fires what
    /// fits in the event queue, so call it again (after draining events) while `poll_timeout() <= now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.due(Timer::Vote, now) && self.room() {
            self.set_timer(Timer::Vote, None);
            if let Some(vote) = self.vote.take() {
                self.push_vote_result(vote, VoteResult::Timeout, LogMsg::new());
            }
        }
        if self.due(Timer::Challenge, now) && self.room() {
            self.on_interval_end(now);
        }
        if self.due(Timer::Registration, now) && self.room() {
            self.set_timer(Timer::Registration, None);
            self.push(MonitorEvent::RegistrationTimeout);
        }
    }

    // ---- commands ----

    /// Replaces the tunables (a reloaded configuration). The loss threshold applies at once; interval bounds at
    /// the guest's next registration.
    pub fn set_config(&mut self, config: C) {
        self.config = config;
    }

    /// Chooses where in the interval this guest's challenges fall, in 1/65,536ths of it, rounded up to the
    /// coalescing grid (with [`MonitorConfig::spread_phase`]; otherwise ignored; `None`, the default, spreads at
    /// random). Deadlines move there by at most half an interval per interval, so no interval is longer than one
    /// and a half (a guest re-registers when no challenge comes within two). A host with thousands of guests places
    /// guests that sit side by side in its memory side by side in time, so that each wake-up walks its memory in
    /// order.
    pub fn set_phase(&mut self, place: Option<u16>) {
        self.phase = place;
    }

    /// The caller knows the guest could not have answered until now (its VM was paused, and has just been
    /// resumed): counting starts over with a fresh challenge at once. An open fault stays open until an answer.
    pub fn rechallenge(&mut self, now: Instant) {
        if self.state != MonitorState::Heartbeating {
            return;
        }
        self.misses = 0;
        self.loss_reported = false;
        let interval = self.registration.as_ref().map_or(self.cfg().min_interval, |r| r.interval);
        let deadline = self.on_grid(now + interval, interval);
        self.challenge(now, deadline);
    }

    // ---- output ----

    /// Whether [`poll_event`](Self::poll_event) has an event: a caller serving many guests asks it after each input
    /// (most inputs, answers, make none) and polls only then.
    #[must_use]
    pub fn has_event(&self) -> bool {
        !self.room()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MonitorEvent> {
        if let Some((vote, why)) = self.vote_ended.take() {
            return Some(vote_result(vote, VoteResult::Error, bounded(why.reason())));
        }
        self.events.take()
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
        let wanted = self.wants_transmit();
        let n = self.transmit(now, buf);
        debug_assert_eq!(wanted, n.is_some(), "wants_transmit agrees with poll_transmit");
        n
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a message to write. A caller serving many guests asks
    /// it after an input, and visits only those that have something to send (most inputs, answers, have nothing).
    pub fn wants_transmit(&self) -> bool {
        self.tx_nack.is_some() || self.tx_init_ack || self.tx_challenge || self.vote.as_ref().is_some_and(|v| !v.sent)
    }

    fn transmit(&mut self, now: Instant, buf: &mut [u8; MAX_WIRE]) -> Option<usize> {
        let invocation_id = self.registration.as_ref().map_or(0, |r| r.init.invocation_id);
        let body = if let Some(reason) = self.tx_nack.take() {
            self.stats.nacks = self.stats.nacks.saturating_add(1);
            Body::Nack { invocation_id, log_msg: bounded(reason) }
        } else if self.tx_init_ack {
            self.tx_init_ack = false;
            Body::InitAck { invocation_id }
        } else if self.tx_challenge {
            // the common case, written without building a `Message` (identical bytes: a test compares them)
            let n = crate::fast::encode_challenge(VERSION, REVISION, self.sequence, self.nonce, buf)?;
            self.tx_challenge = false;
            self.challenged_at = now;
            self.sent.sent();
            self.sequence = self.sequence.wrapping_add(1);
            self.stats.messages_out += 1;
            return Some(n);
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
        self.end_vote(VoteEnd::Registered);
        if init.corrective_action == CorrectiveAction::Unknown {
            self.stats.unknown_values = self.stats.unknown_values.saturating_add(1);
        }
        let requested = Duration::from_millis(u64::from(init.heartbeat_interval_ms));
        let interval = requested.max(self.cfg().min_interval).min(self.cfg().max_interval);
        let registration = Registration { init, interval };
        self.registration = Some(registration.clone());
        self.state = MonitorState::Heartbeating;
        self.stats.registrations = self.stats.registrations.saturating_add(1);
        self.unhealthy_reported = None;
        self.misses = 0;
        self.loss_reported = false;
        let base = self.ids.next_id();
        self.sent.start(base);
        self.tx_init_ack = true;
        self.set_timer(Timer::Registration, None);
        let spread = match (self.cfg().spread_phase, self.phase) {
            (false, _) => Duration::ZERO,
            (true, None) => Duration::from_millis(u64::from(self.ids.next_id()) % (interval.as_millis() / 2).max(1)),
            (true, Some(_)) => self.step_to_place(now + interval, interval),
        };
        let first = self.on_grid(now + interval + spread, interval);
        self.challenge(now, first);
        self.push(MonitorEvent::Registered(registration));
    }

    fn on_response(&mut self, now: Instant, r: ChallengeResponse) {
        let ChallengeResponse { heartbeat_response, heartbeat_health, corrective_action, log_msg } = r;
        self.on_answer(now, heartbeat_response, heartbeat_health, corrective_action, move || log_msg);
    }

    /// An answer; `log_msg` gives its text, needed only when it reports the application unhealthy.
    fn on_answer(
        &mut self,
        now: Instant,
        heartbeat_response: u32,
        heartbeat_health: Health,
        corrective_action: CorrectiveAction,
        log_msg: impl FnOnce() -> LogMsg,
    ) {
        if self.state != MonitorState::Heartbeating {
            self.on_protocol_error(now, ProtocolError::Unexpected(MsgType::ChallengeResponse));
            return;
        }
        let Echo::Fresh { behind } = self.sent.answer(heartbeat_response) else {
            self.on_protocol_error(now, ProtocolError::StaleNonce { expected: self.nonce, got: heartbeat_response });
            return;
        };
        if behind == 0 && heartbeat_response == self.nonce && !self.tx_challenge {
            self.answered = true;
            let rtt = now - self.challenged_at;
            self.stats.last_rtt = rtt;
            self.stats.max_rtt = self.stats.max_rtt.max(rtt);
        } else {
            self.stats.late_answers = self.stats.late_answers.saturating_add(1);
        }
        // Proof of life, whichever of the latest challenges it answers.
        self.heard = true;
        self.misses = 0;
        self.loss_reported = false;
        self.last_heartbeat = Some(now);
        self.stats.heartbeats += 1;
        self.set_timer(Timer::Registration, None);
        if heartbeat_health == Health::Unknown || corrective_action == CorrectiveAction::Unknown {
            self.stats.unknown_values = self.stats.unknown_values.saturating_add(1);
        }
        match heartbeat_health {
            Health::Unhealthy => {
                let action = corrective_action;
                if self.unhealthy_reported.is_none_or(|prev| action > prev) {
                    self.unhealthy_reported = Some(action);
                    self.fault = Some(Fault::Unhealthy(action));
                    self.push(MonitorEvent::Unhealthy { corrective_action: action, log_msg: log_msg() });
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

    fn on_exit(&mut self, log_msg: LogMsg) {
        self.end_vote(VoteEnd::Exited);
        self.timers.clear();
        self.tx_challenge = false;
        self.state = MonitorState::Exited;
        self.fault = None;
        self.unhealthy_reported = None;
        self.push(MonitorEvent::Deregistered { log_msg });
    }

    fn on_interval_end(&mut self, now: Instant) {
        let due = self.timers.get(Timer::Challenge as usize).unwrap_or(now);
        let interval = self.registration.as_ref().map_or(self.cfg().min_interval, |r| r.interval);
        // A guest can only be blamed for an interval in which it had time to answer: a challenge that left less
        // than half an interval before this verdict was the host's lateness, not the guest's.
        let fair = due.saturating_duration_since(self.challenged_at).as_millis() * 2 >= interval.as_millis();
        if !self.heard && !fair {
            self.stats.host_late = self.stats.host_late.saturating_add(1);
        } else if !self.heard {
            self.misses = self.misses.saturating_add(1);
            self.stats.misses = self.stats.misses.saturating_add(1);
            // past the threshold and not yet reported: a threshold lowered meanwhile (a reload) still reports
            if self.misses > self.cfg().loss_threshold && !self.loss_reported {
                self.loss_reported = true;
                // Reported once per episode; challenges go on so that a guest that comes back (after a freeze,
                // a migration stun) is heard within one interval, without a new `init`. If nothing at all comes
                // back for the registration timeout, the caller is told to reconnect.
                self.stats.losses = self.stats.losses.saturating_add(1);
                self.fault = Some(Fault::Lost);
                self.unhealthy_reported = None;
                self.set_timer(Timer::Registration, Some(now + self.cfg().registration_timeout));
                self.push(MonitorEvent::HeartbeatLost {
                    consecutive_misses: self.misses,
                    last_heartbeat: self.last_heartbeat,
                });
            }
        }
        // Keep the cadence (moving towards the guest's place, if it has one and is not there yet) unless we are
        // already a whole interval late (then start a new phase, on the grid).
        let next = if due + interval > now {
            due + interval + self.step_to_place(due + interval, interval)
        } else {
            self.on_grid(now + interval, interval)
        };
        self.challenge(now, next);
    }

    fn challenge(&mut self, now: Instant, deadline: Instant) {
        self.nonce = self.sent.next_nonce();
        self.answered = false;
        self.heard = false;
        self.tx_challenge = true;
        self.challenged_at = now;
        self.set_timer(Timer::Challenge, Some(deadline));
    }

    fn on_protocol_error(&mut self, now: Instant, e: ProtocolError) {
        self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
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
        let allowed = self.last_nack.is_none_or(|t| now >= t + self.cfg().nack_interval);
        if allowed && self.tx_nack.is_none() {
            self.tx_nack = Some(reason);
            self.last_nack = Some(now);
        } else {
            self.stats.nacks_suppressed = self.stats.nacks_suppressed.saturating_add(1);
        }
    }

    /// Input and timers may go on: no event waits to be polled.
    fn room(&self) -> bool {
        self.events.is_empty() && self.vote_ended.is_none()
    }

    fn push(&mut self, e: MonitorEvent) {
        // Input stops while an event waits and each step pushes at most one, so this never overflows; if it
        // ever did, the oldest event would be kept and this one counted as an error rather than panicking.
        if !self.events.put(e) {
            self.stats.protocol_errors = self.stats.protocol_errors.saturating_add(1);
        }
    }

    fn end_session(&mut self) {
        self.end_vote(VoteEnd::Disconnected);
        self.framer.reset();
        self.timers.clear();
        self.registration = None;
        self.tx_nack = None;
        self.tx_init_ack = false;
        self.tx_challenge = false;
        self.answered = false;
        self.heard = false;
        self.sent = SentNonces::default();
        self.misses = 0;
        self.loss_reported = false;
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

impl<R, S, E, C> fmt::Debug for Monitor<R, S, E, C> {
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
mod tests;
