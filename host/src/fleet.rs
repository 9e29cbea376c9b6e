//! [`Fleet`]: every guest of the node and all host policy, as a sans-IO state machine over the core's
//! `Monitor`s — in the spirit of quinn-proto's `Endpoint` over its `Connection`s.
//!
//! It owns, per guest: the `Monitor`, the link state and reconnect backoff, the byte budget, the rate limits of
//! noisy events, and the corrective-action policy. It takes inputs with a `now` (a connection made or lost, bytes
//! read, a budget run out, timers) and yields outputs to poll: I/O requests ([`Io`]), typed events ([`Event`]),
//! corrective actions ([`ActionRequest`]), guests with bytes to send, and the next deadline. It never does I/O,
//! never reads a clock and never blocks, so every behaviour here is unit-tested on virtual time.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use slab::Slab;
use vigil_core::{
    CorrectiveAction, Duration, Fault, IdSource, Instant, Monitor, MonitorEvent, MonitorState, XorShift32, MAX_WIRE,
};

use crate::budget::ByteBudget;
use crate::config::{FileConfig, GuestSettings, Policy};
use crate::events::{escape_text, Ago, Event, RateLimit};
use crate::status::GuestStatus;
use crate::wheel::TimerWheel;

mod commands;
pub use commands::{notice_timeout_secs, Counters, Totals, VoteDone, VoteRefusal, VoteStarted, MAX_MAINTENANCE};

/// A vote or notice in flight, as the caller tracks it.
pub type Ticket = u64;

/// A guest's key: its slot in the fleet (reused after removal; the I/O layer adds a generation to its tokens).
pub type GuestKey = usize;

/// How a guest came to be watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Found in a watched directory (removed when its socket goes away).
    Watched,
    /// Named in the configuration file.
    Configured,
}

/// The state of the link to a guest's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Waiting to (re)connect at `reconnect_at`.
    Backoff,
    /// A connect was asked of the I/O layer.
    Connecting,
    /// Connected.
    Connected,
}

/// Fleet-wide tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// First reconnect delay (doubles per failure, +-20 % jitter).
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { backoff_min: Duration::from_secs(1), backoff_max: Duration::from_secs(60) }
    }
}

/// A session this long, with heartbeats and no flooding, resets the backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// What the fleet asks of the I/O layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// Connect to the guest's socket; answer with [`Fleet::handle_connected`] or [`Fleet::handle_connect_failed`].
    Connect {
        /// The guest.
        key: GuestKey,
        /// Its socket.
        path: PathBuf,
    },
    /// Close the guest's connection (the fleet has already done its bookkeeping).
    Close {
        /// The guest.
        key: GuestKey,
    },
    /// The guest has byte budget again: read it (data may have waited in its socket).
    Resume {
        /// The guest.
        key: GuestKey,
    },
}

/// A corrective command to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRequest {
    /// The guest.
    pub key: GuestKey,
    /// Its id.
    pub guest: Arc<str>,
    /// `heartbeat_lost` or `unhealthy`.
    pub trigger: &'static str,
    /// The action (as effective: `unknown` never gets here).
    pub action: CorrectiveAction,
    /// What to run.
    pub argv: Vec<String>,
}

struct Guest {
    id: Arc<str>,
    path: PathBuf,
    origin: Origin,
    monitor: Monitor<XorShift32>,
    policy: Arc<Policy>,
    link: Link,
    reconnect_at: Instant,
    backoff: Duration,
    connected_at: Instant,
    /// Heartbeats counted when this connection began.
    heartbeats_at_connect: u64,
    budget: ByteBudget,
    /// Over budget since then (not read until `resume_at`).
    throttled_since: Option<Instant>,
    resume_at: Option<Instant>,
    rate_limited: u64,
    connections: u64,
    flooded_out: bool,
    tx_dropped: u64,
    last_action: Option<Instant>,
    errors: RateLimit,
    /// Over-budget reports have their own limit, so decode errors cannot hide them.
    floods: RateLimit,
    registrations: RateLimit,
    links: RateLimit,
    dirty: bool,
    /// The vote or notice in flight, for the caller.
    vote: Option<Ticket>,
    /// An open maintenance window: until, and why.
    maintenance: Option<(Instant, String)>,
    /// Reporting of this guest's faults (the reference's per-instance "reporting" state).
    reporting: bool,
    /// A fault happened while faults were withheld (maintenance, reporting off): report it when they no longer are.
    fault_withheld: bool,
}

/// Every guest of the node. See the module documentation.
pub struct Fleet {
    cfg: FleetConfig,
    file: FileConfig,
    defaults: Arc<Policy>,
    guests: Slab<Guest>,
    by_path: HashMap<PathBuf, GuestKey>,
    wheel: TimerWheel,
    rng: XorShift32,
    io: VecDeque<Io>,
    events: VecDeque<(Arc<str>, Event)>,
    actions: VecDeque<ActionRequest>,
    dirty: Vec<GuestKey>,
    fired: Vec<GuestKey>,
    scratch: Vec<MonitorEvent>,
    next_ticket: Ticket,
    votes_done: VecDeque<VoteDone>,
    /// Reporting of faults for the whole host.
    reporting: bool,
    counters: Counters,
    /// The counters of guests no longer watched (so totals never go backwards).
    retired: Totals,
}

impl Fleet {
    /// An empty fleet; `seed` drives the backoff jitter.
    pub fn new(cfg: FleetConfig, file: FileConfig, seed: u32, now: Instant) -> Self {
        let defaults = Arc::new(Policy::resolve(&file.defaults, None));
        Fleet {
            cfg,
            file,
            defaults,
            guests: Slab::new(),
            by_path: HashMap::new(),
            wheel: TimerWheel::new(now),
            rng: XorShift32::new(seed),
            io: VecDeque::new(),
            events: VecDeque::new(),
            actions: VecDeque::new(),
            dirty: Vec::new(),
            fired: Vec::new(),
            scratch: Vec::with_capacity(4),
            next_ticket: 0,
            votes_done: VecDeque::new(),
            reporting: true,
            counters: Counters::default(),
            retired: Totals::default(),
        }
    }

    // ---- getters ----

    /// How many guests.
    pub fn len(&self) -> usize {
        self.guests.len()
    }

    /// No guests.
    pub fn is_empty(&self) -> bool {
        self.guests.is_empty()
    }

    /// The guest at `path`, if watched.
    pub fn key_of(&self, path: &Path) -> Option<GuestKey> {
        self.by_path.get(path).copied()
    }

    /// A guest's id.
    pub fn id(&self, key: GuestKey) -> Option<&Arc<str>> {
        self.guests.get(key).map(|g| &g.id)
    }

    /// A guest's link state.
    pub fn link(&self, key: GuestKey) -> Option<Link> {
        self.guests.get(key).map(|g| g.link)
    }

    /// A guest's monitor (read-only).
    pub fn monitor(&self, key: GuestKey) -> Option<&Monitor<XorShift32>> {
        self.guests.get(key).map(|g| &g.monitor)
    }

    /// Watched guests whose socket is not in `present` (for a rescan).
    pub fn watched_not_in(&self, present: &std::collections::HashSet<&Path>) -> Vec<GuestKey> {
        self.guests
            .iter()
            .filter(|(_, g)| g.origin == Origin::Watched && !present.contains(g.path.as_path()))
            .map(|(k, _)| k)
            .collect()
    }

    /// Guests in each state: (heartbeating, all).
    pub fn heartbeating(&self) -> (usize, usize) {
        let ok = self
            .guests
            .iter()
            .filter(|(_, g)| g.link == Link::Connected && g.monitor.state() == MonitorState::Heartbeating)
            .count();
        (ok, self.guests.len())
    }

    /// The earliest deadline of any guest.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.wheel.next_wakeup()
    }

    /// Bytes guest `key` may be read now (0: over budget, do not read).
    pub fn read_allowance(&mut self, key: GuestKey, now: Instant) -> usize {
        match self.guests.get_mut(key) {
            Some(g) if g.link == Link::Connected && g.resume_at.is_none() => {
                usize::try_from(g.budget.available(now)).unwrap_or(usize::MAX)
            }
            _ => 0,
        }
    }

    /// Every guest's status line.
    pub fn snapshot(&self, now: Instant) -> Vec<GuestStatus> {
        self.guests.iter().map(|(_, g)| status_of(g, now)).collect()
    }

    // ---- input ----

    /// Starts watching a guest (if its socket is not watched yet) and asks for a connection. `seed` seeds its
    /// nonces: give it fresh entropy from the OS.
    pub fn add_guest(
        &mut self,
        id: &str,
        path: PathBuf,
        origin: Origin,
        settings: Option<&GuestSettings>,
        seed: u32,
        now: Instant,
    ) -> Option<GuestKey> {
        if self.by_path.contains_key(&path) {
            return None;
        }
        let policy = match settings {
            Some(s) => Arc::new(Policy::resolve(&self.file.defaults, Some(s))),
            None => Arc::clone(&self.defaults),
        };
        let budget = ByteBudget::new(&policy.budget, Duration::from_secs(1), now);
        let key = self.guests.insert(Guest {
            id: id.into(),
            path: path.clone(),
            origin,
            monitor: Monitor::new(policy.monitor, XorShift32::new(seed)),
            policy,
            link: Link::Backoff,
            reconnect_at: now,
            backoff: self.cfg.backoff_min,
            connected_at: now,
            heartbeats_at_connect: 0,
            budget,
            throttled_since: None,
            resume_at: None,
            rate_limited: 0,
            connections: 0,
            flooded_out: false,
            tx_dropped: 0,
            last_action: None,
            errors: RateLimit::new(),
            floods: RateLimit::new(),
            registrations: RateLimit::new(),
            links: RateLimit::new(),
            dirty: false,
            vote: None,
            maintenance: None,
            reporting: true,
            fault_withheld: false,
        });
        self.by_path.insert(path.clone(), key);
        self.guests[key].link = Link::Connecting;
        self.io.push_back(Io::Connect { key, path });
        Some(key)
    }

    /// Stops watching a guest; its connection, if any, is closed.
    pub fn remove_guest(&mut self, key: GuestKey, reason: &str, now: Instant) {
        if !self.guests.contains(key) {
            return;
        }
        if self.guests[key].link == Link::Connected {
            self.close(key, reason, now);
        }
        self.wheel.set(key, None);
        let g = self.guests.remove(key);
        self.retired.add(g.monitor.stats());
        self.by_path.remove(&g.path);
    }

    /// The connection asked for is up.
    pub fn handle_connected(&mut self, key: GuestKey, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        g.link = Link::Connected;
        g.connections += 1;
        g.connected_at = now;
        g.heartbeats_at_connect = g.monitor.stats().heartbeats;
        g.throttled_since = None;
        g.resume_at = None;
        g.flooded_out = false;
        g.budget = ByteBudget::new(&g.policy.budget, Duration::from_secs(1), now);
        g.monitor.connected(now);
        if let Some(suppressed) = g.links.take(now.as_millis()) {
            let event = Event::Connected { socket: g.path.display().to_string(), suppressed };
            self.events.push_back((Arc::clone(&g.id), event));
        }
        self.after_input(key);
    }

    /// The connection asked for failed; `gone` when the socket file does not exist.
    pub fn handle_connect_failed(&mut self, key: GuestKey, gone: bool, now: Instant) {
        let Some(g) = self.guests.get(key) else { return };
        if gone && g.origin == Origin::Watched {
            self.remove_guest(key, "socket file gone", now);
        } else {
            self.schedule_reconnect(key, now);
        }
    }

    /// The I/O layer lost the connection (peer closed, read or write error).
    pub fn handle_closed(&mut self, key: GuestKey, reason: &str, now: Instant) {
        if self.guests.get(key).is_some_and(|g| g.link == Link::Connected) {
            self.close_and_retry(key, reason, now);
        }
    }

    /// Bytes read from guest `key`; they are charged to its budget.
    pub fn handle_bytes(&mut self, key: GuestKey, mut input: &[u8], now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        if g.link != Link::Connected {
            return;
        }
        g.budget.charge(input.len() as u64);
        let on_time_before = g.monitor.stats().heartbeats - g.monitor.stats().late_answers;
        while !input.is_empty() {
            let Some(g) = self.guests.get_mut(key) else { return };
            let used = g.monitor.handle_bytes(now, input);
            input = &input[used..];
            self.drain_monitor(key, now);
            if self.guests.get(key).is_none_or(|g| g.link != Link::Connected) {
                return;
            }
        }
        if let Some(g) = self.guests.get(key) {
            let s = g.monitor.stats();
            if s.heartbeats - s.late_answers > on_time_before {
                self.counters.rtt.observe(s.last_rtt.as_millis() as f64 / 1000.0);
            }
        }
        self.after_input(key);
    }

    /// The guest's socket was read until it had nothing more (`WouldBlock`): an over-budget episode, if any,
    /// has ended.
    pub fn handle_drained(&mut self, key: GuestKey) {
        if let Some(g) = self.guests.get_mut(key) {
            if g.resume_at.is_none() {
                g.throttled_since = None;
            }
        }
    }

    /// The guest used up its byte budget with data still waiting: it is not read until it has budget again.
    /// The first time in an episode it is reported (`protocol_error` `rate_limited`); kept over budget for
    /// `disconnect_after`, it is disconnected with backoff.
    pub fn handle_over_budget(&mut self, key: GuestKey, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        if g.link != Link::Connected {
            return;
        }
        if g.throttled_since.is_none() {
            *self.counters.protocol_errors.entry("rate_limited").or_default() += 1;
        }
        let resume = g.budget.ready_at(now).max(now + Duration::from_millis(1));
        g.resume_at = Some(resume);
        let since = *g.throttled_since.get_or_insert(now);
        if since == now {
            g.rate_limited += 1;
            if let Some(suppressed) = g.floods.take(now.as_millis()) {
                let b = g.policy.budget;
                let detail = format!(
                    "over its byte budget ({} bytes per interval, burst {}): not read until it has budget again \
                     ({} bytes read so far, episode {})",
                    b.bytes_per_interval,
                    b.burst,
                    g.monitor.stats().bytes_in,
                    g.rate_limited
                );
                let total = g.monitor.stats().protocol_errors + g.rate_limited;
                let event = Event::ProtocolError { error: "rate_limited", detail, suppressed, total };
                self.events.push_back((Arc::clone(&g.id), event));
            }
        }
        if now >= since + g.policy.budget.disconnect_after {
            let secs = g.policy.budget.disconnect_after.as_millis() / 1000;
            g.flooded_out = true;
            self.close_and_retry(key, &format!("over its byte budget for {secs} s"), now);
            return;
        }
        self.reschedule(key);
    }

    /// Bytes for the guest were dropped because it does not read.
    pub fn handle_tx_dropped(&mut self, key: GuestKey) {
        if let Some(g) = self.guests.get_mut(key) {
            g.tx_dropped += 1;
        }
    }

    /// Lets due timers fire: reconnects, challenges, misses and losses, budget refills.
    pub fn handle_timeouts(&mut self, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.expire(now, |_, key| fired.push(key));
        for key in fired.drain(..) {
            if self.guests.get(key).is_some_and(|g| g.maintenance.as_ref().is_some_and(|(until, _)| *until <= now)) {
                self.end_maintenance_of(key, "expired", now);
            }
            let Some(g) = self.guests.get_mut(key) else { continue };
            match g.link {
                Link::Backoff if g.reconnect_at <= now => {
                    g.link = Link::Connecting;
                    self.io.push_back(Io::Connect { key, path: g.path.clone() });
                }
                Link::Backoff | Link::Connecting => self.reschedule(key),
                Link::Connected => {
                    if g.resume_at.is_some_and(|t| t <= now) {
                        g.resume_at = None;
                        self.io.push_back(Io::Resume { key });
                    }
                    // fire everything due, draining events between calls (bounded: a monitor has three timers)
                    for _ in 0..8 {
                        let Some(g) = self.guests.get_mut(key) else { break };
                        if g.link != Link::Connected || g.monitor.poll_timeout().is_none_or(|t| t > now) {
                            break;
                        }
                        g.monitor.handle_timeout(now);
                        self.drain_monitor(key, now);
                    }
                    if self.guests.get(key).is_some_and(|g| g.link == Link::Connected) {
                        self.after_input(key);
                    }
                }
            }
        }
        self.fired = fired;
    }

    /// A corrective command finished (or could not start).
    pub fn handle_action_outcome(&mut self, guest: Arc<str>, event: Event) {
        self.events.push_back((guest, event));
    }

    /// A new configuration file: policies are re-resolved; configured guests no longer listed are removed, new
    /// ones added (`seeds` gives each new guest's nonce seed).
    pub fn reload(&mut self, file: FileConfig, mut seeds: impl FnMut() -> u32, now: Instant) {
        self.file = file;
        self.defaults = Arc::new(Policy::resolve(&self.file.defaults, None));
        let configured: HashMap<PathBuf, GuestSettings> =
            self.file.guests.iter().map(|g| (g.socket.clone(), g.settings.clone())).collect();
        let stale: Vec<GuestKey> = self
            .guests
            .iter()
            .filter(|(_, g)| g.origin == Origin::Configured && !configured.contains_key(&g.path))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            self.remove_guest(key, "removed from configuration", now);
        }
        for (_, g) in self.guests.iter_mut() {
            let policy = match configured.get(&g.path) {
                Some(s) => Arc::new(Policy::resolve(&self.file.defaults, Some(s))),
                None => Arc::clone(&self.defaults),
            };
            g.monitor.set_config(policy.monitor);
            g.policy = policy;
        }
        self.add_configured(&mut seeds, now);
    }

    /// Adds the guests the configuration file names.
    pub fn add_configured(&mut self, seeds: &mut impl FnMut() -> u32, now: Instant) {
        let guests = self.file.guests.clone();
        for g in &guests {
            self.add_guest(&g.id, g.socket.clone(), Origin::Configured, Some(&g.settings), seeds(), now);
        }
    }

    /// vigild is stopping: close every connection.
    pub fn shutdown(&mut self, now: Instant) {
        let keys: Vec<GuestKey> =
            self.guests.iter().filter(|(_, g)| g.link == Link::Connected).map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, "vigild stopping", now);
        }
    }

    // ---- output ----

    /// The next I/O request.
    pub fn poll_io(&mut self) -> Option<Io> {
        self.io.pop_front()
    }

    /// The next event, with its guest id.
    pub fn poll_event(&mut self) -> Option<(Arc<str>, Event)> {
        self.events.pop_front()
    }

    /// The next corrective action to run.
    pub fn poll_action(&mut self) -> Option<ActionRequest> {
        self.actions.pop_front()
    }

    /// A guest that may have bytes to send: drain it with [`poll_transmit`](Self::poll_transmit).
    pub fn poll_dirty(&mut self) -> Option<GuestKey> {
        let key = self.dirty.pop()?;
        if let Some(g) = self.guests.get_mut(key) {
            g.dirty = false;
        }
        Some(key)
    }

    /// The next message for guest `key`, encoded into `buf`; `now` is when it leaves.
    pub fn poll_transmit(&mut self, key: GuestKey, now: Instant, buf: &mut [u8; MAX_WIRE]) -> Option<usize> {
        let g = self.guests.get_mut(key)?;
        if g.link != Link::Connected {
            return None;
        }
        let n = g.monitor.poll_transmit(now, buf);
        if n.is_none() {
            self.reschedule(key);
        }
        n
    }

    // ---- internals ----

    fn after_input(&mut self, key: GuestKey) {
        if let Some(g) = self.guests.get_mut(key) {
            if !g.dirty {
                g.dirty = true;
                self.dirty.push(key);
            }
        }
        self.reschedule(key);
    }

    fn reschedule(&mut self, key: GuestKey) {
        let Some(g) = self.guests.get(key) else { return };
        let mut at = match g.link {
            Link::Connected => g.monitor.poll_timeout(),
            Link::Backoff => Some(g.reconnect_at),
            Link::Connecting => None,
        };
        let others = [g.resume_at.filter(|_| g.link == Link::Connected), g.maintenance.as_ref().map(|(t, _)| *t)];
        for t in others {
            at = match (at, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.wheel.set(key, at);
    }

    fn schedule_reconnect(&mut self, key: GuestKey, now: Instant) {
        let jitter = self.rng.next_id();
        let cfg = self.cfg;
        let Some(g) = self.guests.get_mut(key) else { return };
        // 1 s doubling to 60 s, +-20 % jitter so a node's guests do not reconnect in lockstep
        let base = g.backoff.as_millis();
        let spread = base / 5;
        let delay = Duration::from_millis(base - spread + u64::from(jitter) % (2 * spread + 1));
        g.backoff = (g.backoff + g.backoff).min(cfg.backoff_max);
        g.link = Link::Backoff;
        g.reconnect_at = now + delay;
        self.wheel.set(key, Some(g.reconnect_at));
    }

    /// Closes the connection: bookkeeping, `disconnected` (rate-limited), and an [`Io::Close`].
    fn close(&mut self, key: GuestKey, reason: &str, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        g.link = Link::Backoff;
        g.resume_at = None;
        g.monitor.disconnected();
        if let Some(suppressed) = g.links.take(now.as_millis()) {
            let event = Event::Disconnected { reason: reason.to_owned(), suppressed };
            self.events.push_back((Arc::clone(&g.id), event));
        }
        self.io.push_back(Io::Close { key });
        self.drain_monitor(key, now);
    }

    /// Closes and schedules a reconnect; the backoff starts over only after a session that stayed healthy (it
    /// lasted [`HEALTHY_SESSION`], heartbeated, and was not cut for flooding), so a guest that connects and
    /// closes in a loop is slowed down to one attempt a minute.
    fn close_and_retry(&mut self, key: GuestKey, reason: &str, now: Instant) {
        let backoff_min = self.cfg.backoff_min;
        if let Some(g) = self.guests.get_mut(key) {
            let lasted = now - g.connected_at;
            let heartbeated = g.monitor.stats().heartbeats > g.heartbeats_at_connect;
            let no_fault = g.monitor.fault().is_none();
            if lasted >= HEALTHY_SESSION && heartbeated && no_fault && !g.flooded_out {
                g.backoff = backoff_min;
            }
        }
        self.close(key, reason, now);
        self.schedule_reconnect(key, now);
    }

    fn drain_monitor(&mut self, key: GuestKey, now: Instant) {
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
                let Some(suppressed) = g.registrations.take(now.as_millis()) else { return };
                Event::Registered {
                    name: r.init.name.to_string(),
                    invocation_id: r.init.invocation_id,
                    interval_ms: r.interval.as_millis(),
                    requested_interval_ms: r.init.heartbeat_interval_ms,
                    corrective_action: r.init.corrective_action.as_str(),
                    vote_secs: r.init.vote_secs,
                    shutdown_notice_secs: r.init.shutdown_notice_secs,
                    suspend_notice_secs: r.init.suspend_notice_secs,
                    resume_notice_secs: r.init.resume_notice_secs,
                    restart_secs: r.init.restart_secs,
                    suppressed,
                }
            }
            MonitorEvent::HeartbeatLost { .. } | MonitorEvent::Unhealthy { .. }
                if !self.reporting || !g.reporting || g.maintenance.is_some() =>
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
            MonitorEvent::Recovered => Event::Recovered {},
            MonitorEvent::Deregistered { log_msg } => Event::Deregistered { log_msg: log_msg.to_string() },
            MonitorEvent::VoteResult { event_type, notification_type, result, log_msg } => {
                *self.counters.votes.entry(result.as_str()).or_default() += 1;
                if let Some(ticket) = g.vote.take() {
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
                let Some(suppressed) = g.errors.take(now.as_millis()) else { return };
                let total = g.monitor.stats().protocol_errors + g.rate_limited;
                Event::ProtocolError { error: pe.label(), detail: pe.to_string(), suppressed, total }
            }
            MonitorEvent::RegistrationTimeout => {
                // Connected but silent for the registration timeout: the reference reconnects; so do we, now.
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

    fn act(&mut self, key: GuestKey, trigger: &'static str, action: CorrectiveAction, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        let argv = match g.policy.command_for(action, &g.id, trigger) {
            None => return,
            Some(Ok(argv)) => argv,
            Some(Err(e)) => {
                let event = action_event(trigger, action, Vec::new(), None, Some(e));
                self.events.push_back((Arc::clone(&g.id), event));
                return;
            }
        };
        if g.last_action.is_some_and(|t| now < t + g.policy.action_min_gap) {
            let mut event = action_event(trigger, action, argv, None, None);
            if let Event::Action { skipped, .. } = &mut event {
                *skipped = Some("rate limit");
            }
            self.events.push_back((Arc::clone(&g.id), event));
            return;
        }
        g.last_action = Some(now);
        self.actions.push_back(ActionRequest {
            key,
            guest: Arc::clone(&g.id),
            trigger,
            action: action.effective(),
            argv,
        });
    }
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

fn status_of(g: &Guest, now: Instant) -> GuestStatus {
    let s = g.monitor.stats();
    GuestStatus {
        id: g.id.to_string(),
        socket: g.path.display().to_string(),
        state: match (g.link, g.monitor.state()) {
            (Link::Backoff | Link::Connecting, _) | (_, MonitorState::Disconnected) => "disconnected",
            (_, MonitorState::AwaitingInit) => "awaiting_init",
            // still challenged at the interval, but not answering
            (_, MonitorState::Heartbeating) if g.monitor.fault() == Some(Fault::Lost) => "lost",
            (_, MonitorState::Heartbeating) => "heartbeating",
            (_, MonitorState::Exited) => "exited",
        }
        .into(),
        fault: g.monitor.fault().map(|f| match f {
            Fault::Lost => "heartbeat_lost".to_string(),
            Fault::Unhealthy(a) => format!("unhealthy:{a}"),
        }),
        name: g.monitor.registration().map(|r| escape_text(&r.init.name)),
        interval_ms: g.monitor.registration().map(|r| r.interval.as_millis()),
        heartbeats: s.heartbeats,
        misses: s.misses,
        protocol_errors: s.protocol_errors,
        last_rtt_ms: s.last_rtt.as_millis(),
        max_rtt_ms: s.max_rtt.as_millis(),
        tx_dropped: g.tx_dropped,
        rate_limited: g.rate_limited,
        connections: g.connections,
        maintenance_reason: g.maintenance.as_ref().map(|(_, r)| r.clone()),
        maintenance_left_ms: g.maintenance.as_ref().map(|(until, _)| (*until - now).as_millis()),
        reporting: g.reporting,
        late_answers: s.late_answers,
        unknown_values: s.unknown_values,
    }
}

#[cfg(test)]
mod tests;
