//! [`Fleet`]: every guest of the node and all host policy, as a sans-IO state machine over the core's
//! `Monitor`s — in the spirit of quinn-proto's `Endpoint` over its `Connection`s.
//!
//! It owns, per guest: the `Monitor`, the link state and reconnect backoff, the byte budget, the rate limits of
//! noisy events, and the corrective-action policy. It takes inputs with a `now` (a connection made or lost, bytes
//! read, a budget run out, timers) and yields outputs to poll: I/O requests ([`Io`]), typed events ([`Event`]),
//! corrective actions ([`ActionRequest`]), guests with bytes to send, and the next deadline. It never does I/O,
//! never reads a clock and never blocks, so every behaviour here is unit-tested on virtual time.
//!
//! This file holds the [`Fleet`] type, its guests and its inputs and outputs; each concept of its policy has a file
//! beside it: `links` (connections, backoff), `bucket` (a guest's byte token bucket) and `budgets` (what running
//! out of it leads to), `verdicts` (what each Monitor event leads to), `commands` (votes, maintenance, reporting,
//! counters, the id index), `lifecycle` (paused, rebooting, stopped, crashed), `status` (state words, status
//! lines), `wheel` (every guest's next deadline), `seldom` (what only some guests need, made on first use),
//! `types`; and `tests`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use slab::Slab;
use vigil_core::{Duration, Instant, Monitor, MonitorEvent, MonitorState, XorShift32, MAX_WIRE};

use crate::backoff::Backoff;
use crate::config::{FileConfig, GuestSettings, Policy};
use crate::events::{Event, RateLimit};
use crate::fleet::bucket::ByteBudget;
use crate::fleet::wheel::TimerWheel;
use crate::node::status::GuestStatus;

pub mod agentless;
pub mod bucket;
mod budgets;
mod commands;
mod lifecycle;
mod links;
pub mod recovery;
mod seldom;
mod status;
mod types;
mod verdicts;
pub mod wheel;
pub use commands::{notice_timeout_secs, Counters, Totals, VoteDone, VoteRefusal, VoteStarted, MAX_MAINTENANCE};
pub use lifecycle::{Lifecycle, Vm};
use status::status_of;
pub use status::GUEST_STATES;
pub use types::*;
pub use verdicts::action_event;

struct Guest {
    id: Arc<str>,
    /// Shared with `by_path`: one copy of each socket path.
    path: Arc<Path>,
    origin: Origin,
    monitor: GuestMonitor,
    policy: Arc<Policy>,
    link: Link,
    reconnect_at: Instant,
    backoff: Backoff,
    connected_at: Instant,
    /// Heartbeats counted when this connection began.
    heartbeats_at_connect: u64,
    budget: ByteBudget,
    connections: u32,
    flooded_out: bool,
    registrations: RateLimit,
    links: RateLimit,
    dirty: bool,
    /// What only some guests ever need (an over-budget episode, a vote, a maintenance window...), made on first use.
    seldom: Option<Box<seldom::Seldom>>,
    /// Reporting of this guest's faults (the reference's per-instance "reporting" state).
    reporting: bool,
    /// A fault happened while faults were withheld (maintenance, reporting off): report it when they no longer are.
    fault_withheld: bool,
    /// What the hypervisor says of the VM.
    vm: Vm,
    /// `not_established` was reported for this episode.
    not_established_reported: bool,
    /// The corrective action of its last registration (kept across reconnections).
    requested: vigil_core::CorrectiveAction,
}

/// Every guest of the node. See the module documentation.
pub struct Fleet {
    cfg: FleetConfig,
    file: FileConfig,
    defaults: Arc<Policy>,
    guests: Slab<Guest>,
    by_path: HashMap<Arc<Path>, GuestKey>,
    /// Guests by id (the first one added, where two sockets give one id).
    by_id: HashMap<Arc<str>, GuestKey>,
    wheel: TimerWheel,
    rng: XorShift32,
    io: VecDeque<Io>,
    events: VecDeque<(Arc<str>, Event)>,
    actions: VecDeque<ActionRequest>,
    /// Guests that may have bytes to send, in the order they got them (a pass's run is sent front to back).
    dirty: VecDeque<GuestKey>,
    fired: Vec<GuestKey>,
    scratch: Vec<MonitorEvent>,
    next_ticket: Ticket,
    votes_done: VecDeque<VoteDone>,
    /// Reporting of faults for the whole host.
    reporting: bool,
    counters: Counters,
    /// The counters of guests no longer watched (so totals never go backwards).
    retired: Totals,
    /// Guests removed lately (the hypervisor's word on them may come after their socket went away).
    removed: VecDeque<(Arc<str>, Instant)>,
    /// Corrective actions by guest id, for their budgets.
    ledger: recovery::Ledger,
    /// Guests watched through the stock QEMU guest agent, by id.
    agents: HashMap<Arc<str>, agentless::AgentGuest>,
    /// The earliest end of a held agentless loss (see `agentless::AGENT_LOSS_HOLD`).
    agent_hold_at: Option<Instant>,
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
            by_id: HashMap::new(),
            wheel: TimerWheel::new(now),
            rng: XorShift32::new(seed),
            io: VecDeque::new(),
            events: VecDeque::new(),
            actions: VecDeque::new(),
            dirty: VecDeque::new(),
            fired: Vec::new(),
            scratch: Vec::with_capacity(4),
            next_ticket: 0,
            votes_done: VecDeque::new(),
            reporting: true,
            counters: Counters::default(),
            retired: Totals::default(),
            removed: VecDeque::new(),
            ledger: recovery::Ledger::default(),
            agents: HashMap::new(),
            agent_hold_at: None,
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
    pub fn monitor(&self, key: GuestKey) -> Option<&GuestMonitor> {
        self.guests.get(key).map(|g| &g.monitor)
    }

    /// Watched guests not in `present`, the guests a rescan found (their sockets are gone).
    pub fn watched_not_in(&self, present: &std::collections::HashSet<GuestKey>) -> Vec<GuestKey> {
        self.guests
            .iter()
            .filter(|(k, g)| g.origin == Origin::Watched && !present.contains(k))
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

    /// Guest `key`'s next deadline.
    pub fn deadline(&self, key: GuestKey) -> Option<Instant> {
        self.wheel.get(key)
    }

    /// The earliest deadline of any guest.
    pub fn next_timeout(&self) -> Option<Instant> {
        earliest(self.wheel.next_wakeup(), self.agent_hold_at)
    }

    /// Every guest's status line.
    pub fn snapshot(&self, now: Instant) -> Vec<GuestStatus> {
        let agents = self.agents.values().map(agentless::AgentGuest::status);
        self.guests.iter().map(|(_, g)| status_of(g, now)).chain(agents).collect()
    }

    /// One guest's status line, by id (no walk over the fleet).
    pub fn status(&self, id: &str, now: Instant) -> Option<GuestStatus> {
        match self.find(id).and_then(|k| self.guests.get(k)) {
            Some(g) => Some(status_of(g, now)),
            None => self.agents.get(id).map(agentless::AgentGuest::status),
        }
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
        if self.by_path.contains_key(path.as_path()) {
            return None;
        }
        let path: Arc<Path> = Arc::from(path.into_boxed_path());
        let policy = match settings {
            Some(s) => Arc::new(Policy::resolve(&self.file.defaults, Some(s))),
            None => Arc::clone(&self.defaults),
        };
        let budget = ByteBudget::new(&policy.budget, Duration::from_secs(1), now);
        let key = self.guests.insert(Guest {
            id: id.into(),
            path: Arc::clone(&path),
            origin,
            monitor: Monitor::with_storage(
                PolicyConfig(Arc::clone(&policy)),
                XorShift32::new(seed),
                LineOnDemand::default(),
                EventOnDemand::default(),
            ),
            policy,
            link: Link::Backoff,
            reconnect_at: now,
            backoff: Backoff::starting_at(self.cfg.backoff_min),
            connected_at: now,
            heartbeats_at_connect: 0,
            budget,
            connections: 0,
            flooded_out: false,
            registrations: RateLimit::new(),
            links: RateLimit::new(),
            dirty: false,
            seldom: None,
            reporting: true,
            fault_withheld: false,
            vm: Vm::Running,
            not_established_reported: false,
            requested: vigil_core::CorrectiveAction::None,
        });
        // Where in the interval its challenges fall: runs of neighbours in the slab share a place, and successive
        // runs are spread over the interval by the golden ratio (2^16 / phi), whatever the number of guests.
        if let Some(run) = std::num::NonZeroUsize::new(self.cfg.phase_run) {
            let place = ((key / run) as u32).wrapping_mul(40_503) as u16;
            self.guests[key].monitor.set_phase(Some(place));
        }
        self.by_path.insert(Arc::clone(&path), key);
        let id = Arc::clone(&self.guests[key].id);
        self.by_id.entry(id).or_insert(key);
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
        let open_fault = g.monitor.fault().map(status::fault_word);
        self.events.push_back((Arc::clone(&g.id), Event::Removed { open_fault }));
        self.retired.add(g.monitor.stats());
        self.remember_removed(Arc::clone(&g.id), now);
        self.by_path.remove(&g.path);
        if self.by_id.get(&g.id) == Some(&key) {
            self.by_id.remove(&g.id);
            // another socket with the same id (rare: two watched directories) takes its place
            if let Some((other, _)) = self.guests.iter().find(|(_, o)| o.id == g.id) {
                self.by_id.insert(Arc::clone(&g.id), other);
            }
        }
    }

    /// Bytes read from guest `key`; they are charged to its budget.
    pub fn handle_bytes(&mut self, key: GuestKey, mut input: &[u8], now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        if g.link != Link::Connected {
            return;
        }
        g.budget.charge(input.len() as u64);
        let on_time_before = g.monitor.stats().heartbeats - u64::from(g.monitor.stats().late_answers);
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
            if s.heartbeats - u64::from(s.late_answers) > on_time_before {
                self.counters.rtt.observe(s.last_rtt.as_millis() as f64 / 1000.0);
            }
        }
        self.after_input(key);
    }

    /// Bytes for the guest were dropped because it does not read.
    pub fn handle_tx_dropped(&mut self, key: GuestKey) {
        if let Some(g) = self.guests.get_mut(key) {
            let s = g.seldom();
            s.tx_dropped = s.tx_dropped.saturating_add(1);
        }
    }

    /// Lets due timers fire: reconnects, challenges, misses and losses, budget refills.
    pub fn handle_timeouts(&mut self, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.expire(now, |_, key| fired.push(key));
        // in the order of the slab (and of the connection table): a run of neighbours is walked front to back
        fired.sort_unstable();
        for key in fired.drain(..) {
            if self.guests.get(key).is_some_and(|g| g.maintenance().is_some_and(|(until, _)| *until <= now)) {
                self.end_maintenance_of(key, "expired", now);
            }
            if self.guests.get(key).is_some_and(|g| matches!(g.vm, Vm::Rebooting { until } if until <= now)) {
                self.reboot_overdue(key, now);
            }
            let Some(g) = self.guests.get_mut(key) else { continue };
            match g.link {
                Link::Backoff if g.reconnect_at <= now => {
                    g.link = Link::Connecting;
                    self.io.push_back(Io::Connect { key, path: Arc::clone(&g.path) });
                }
                Link::Backoff | Link::Connecting => self.reschedule(key),
                Link::Connected => {
                    if g.resume_at().is_some_and(|t| t <= now) {
                        g.seldom().resume_at = None;
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
        if self.agent_hold_at.is_some_and(|t| t <= now) {
            self.release_agent_holds(now);
        }
    }

    /// A corrective command finished (or could not start).
    pub fn handle_action_outcome(&mut self, guest: Arc<str>, event: Event) {
        self.events.push_back((guest, event));
    }

    /// The result of a libvirt action; `refund`: it was held (the second opinion saw the OS alive), so it does not
    /// count against the guest's budget.
    pub fn handle_action_result(&mut self, guest: &str, event: Event, refund: bool) {
        if refund {
            self.ledger.refund(guest);
        }
        let id = self.find(guest).map_or_else(|| Arc::from(guest), |k| Arc::clone(&self.guests[k].id));
        self.events.push_back((id, event));
    }

    /// The action ledger (budgets), for saving and restoring across restarts.
    pub fn ledger(&mut self) -> &mut recovery::Ledger {
        &mut self.ledger
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
            .filter(|(_, g)| g.origin == Origin::Configured && !configured.contains_key(&*g.path))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            self.remove_guest(key, "removed from configuration", now);
        }
        for (_, g) in self.guests.iter_mut() {
            let policy = match configured.get(&*g.path) {
                Some(s) => Arc::new(Policy::resolve(&self.file.defaults, Some(s))),
                None => Arc::clone(&self.defaults),
            };
            g.monitor.set_config(PolicyConfig(Arc::clone(&policy)));
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
        pop_settling(&mut self.io)
    }

    /// The next event, with its guest id.
    pub fn poll_event(&mut self) -> Option<(Arc<str>, Event)> {
        pop_settling(&mut self.events)
    }

    /// The next corrective action to run.
    pub fn poll_action(&mut self) -> Option<ActionRequest> {
        pop_settling(&mut self.actions)
    }

    /// A guest that may have bytes to send: drain it with [`poll_transmit`](Self::poll_transmit).
    pub fn poll_dirty(&mut self) -> Option<GuestKey> {
        let key = self.dirty.pop_front()?;
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

    /// Guest `id` is no longer watched since `now`: the hypervisor's word on it may still come (see `removed`).
    fn remember_removed(&mut self, id: Arc<str>, now: Instant) {
        if self.removed.len() >= 1024 {
            self.removed.pop_front();
        }
        self.removed.push_back((id, now));
    }

    fn after_input(&mut self, key: GuestKey) {
        if let Some(g) = self.guests.get_mut(key) {
            // only guests with something to send are visited (an answer, the common input, leaves nothing)
            if !g.dirty && g.monitor.wants_transmit() {
                g.dirty = true;
                self.dirty.push_back(key);
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
        let rebooting = if let Vm::Rebooting { until } = g.vm { Some(until) } else { None };
        let others = [g.resume_at().filter(|_| g.link == Link::Connected), g.maintenance().map(|(t, _)| *t), rebooting];
        for t in others {
            at = earliest(at, t);
        }
        self.wheel.set(key, at);
    }
}

/// The earlier of two moments, either of which may be absent.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Pops the front; once drained, a queue that a storm grew (every guest registering at once: 10,000 events of
/// 192 bytes) gives its memory back instead of keeping the storm's capacity for the life of the process.
fn pop_settling<T>(q: &mut VecDeque<T>) -> Option<T> {
    const KEEP: usize = 256;
    let item = q.pop_front();
    if item.is_none() && q.capacity() > KEEP {
        q.shrink_to(KEEP);
    }
    item
}

#[cfg(test)]
mod tests;
