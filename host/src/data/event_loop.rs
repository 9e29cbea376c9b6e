//! The data plane: one mio loop that moves bytes between guest sockets and the [`Fleet`], and nothing else. All
//! policy (what a verdict is, what to do about it, backoff, budgets) lives in the fleet, which is sans-IO.
//!
//! Shape (as mio's own examples): one `Events` buffer reused forever; a table of connections indexed by the
//! fleet's guest key, each with a generation carried in its `Token`, so a stale readiness event can never land on
//! a new guest in a reused slot. Each pass: readiness is collected; ready guests are read **within their byte
//! budget** and within a per-pass bound (what is left waits for the next pass, which does not sleep); then due
//! timers fire; then what the fleet wants sent, closed, connected, reported or run is done. A guest over budget
//! is not read until the fleet says it has budget again.
//!
//! It must never block: not on a guest, not on the event writer, not on a corrective command, not on a log.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{info, warn};
use vigil_core::{Duration, Instant, StdClock};

use crate::config::FileConfig;
use crate::control::{Control, ControlConfig, LoopSide};
use crate::node::actions::{outcome_channel, ActionOutcome, ActionRunner};
use crate::node::ledger_file;
mod actions;
mod commands;

use crate::data::conns::Conns;
use crate::data::discovery::{Change, Discovery};
use crate::events::{Event, EventSink, EventsTarget};
use crate::fleet::{Fleet, FleetConfig, Io, Origin, Ticket, VoteDone, VoteRefusal};
use crate::glob::Pattern;
use crate::metrics::{Buckets, PASS_BOUNDS};
use crate::node::sdnotify::Notifier;
use crate::node::status::{Snapshot, StatusWriter};
pub use crate::sys::{os_random, raise_fd_limit};

const SIGNALS: Token = Token(usize::MAX - 1);
const INOTIFY: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
/// Readiness events taken from the kernel per wait.
const EVENTS: usize = 1024;
/// Waits without sleeping, at most, before verdicts (each returns up to [`EVENTS`]): more than enough for every
/// guest this process can hold descriptors for.
const DRAIN_ROUNDS: usize = 64;

/// Default first reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Default largest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How vigild runs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Directories to watch (from the command line; the config file's are added).
    pub watch: Vec<PathBuf>,
    /// Socket file-name pattern from the command line (else the config file's, else the default).
    pub pattern: Option<String>,
    /// Optional TOML file.
    pub config_file: Option<PathBuf>,
    /// Where events go.
    pub events: EventsTarget,
    /// Where the status snapshot goes.
    pub status_file: Option<PathBuf>,
    /// Safety-net rescan period.
    pub rescan: Duration,
    /// Host name in events.
    pub hostname: String,
    /// First reconnect delay (doubles per failure).
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// The admin API.
    pub control: ControlConfig,
}

impl DaemonConfig {
    /// The directories and pattern in force with `file`: the command line's, then the file's.
    pub fn discovery(&self, file: &FileConfig) -> Result<(Vec<PathBuf>, Pattern), String> {
        let mut dirs = self.watch.clone();
        for d in &file.watch {
            if !dirs.contains(d) {
                dirs.push(d.clone());
            }
        }
        let pattern =
            self.pattern.clone().or_else(|| file.pattern.clone()).unwrap_or_else(|| "cgcs.heartbeat.*.sock".into());
        Ok((dirs, Pattern::new(&pattern)?))
    }
}

/// The daemon.
pub struct Daemon {
    cfg: DaemonConfig,
    poll: Poll,
    clock: StdClock,
    fleet: Fleet,
    conns: Conns,
    discovery: Discovery,
    signals: signal_hook_mio::v1_0::Signals,
    sink: EventSink,
    actions: ActionRunner,
    outcomes: Receiver<ActionOutcome>,
    status: Option<StatusWriter>,
    notifier: Notifier,
    next_rescan: Instant,
    next_status: Instant,
    next_watchdog: Instant,
    stopping: bool,
    fd_limit: u64,
    control: Control,
    links: LoopSide,
    votes: std::collections::HashMap<Ticket, tokio::sync::oneshot::Sender<Result<VoteDone, VoteRefusal>>>,
    control_dropped: u64,
    pass: Buckets,
    /// The action ledger's writer (with a state directory).
    ledger: Option<ledger_file::LedgerWriter>,
    /// The ledger changed and is not saved yet.
    ledger_pending: bool,
}

/// How far back the action ledger is kept (longer than any budget's window should be).
pub const LEDGER_KEEP: Duration = Duration::from_secs(30 * 86_400);

impl Daemon {
    /// Sets everything up (no guest is contacted yet).
    pub fn new(cfg: DaemonConfig) -> io::Result<Self> {
        let file = match &cfg.config_file {
            Some(p) => FileConfig::load(p).map_err(io::Error::other)?,
            None => FileConfig::default(),
        };
        let (dirs, pattern) = cfg.discovery(&file).map_err(io::Error::other)?;
        let (soft, fd_limit) = raise_fd_limit();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, outcomes) = outcome_channel();
        let wake_fn: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = waker.wake();
        });
        let actions = ActionRunner::start(4, tx, Arc::clone(&wake_fn), soft);
        let (control, links) = Control::start(cfg.control.clone(), wake_fn)?;
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let sink = EventSink::start(cfg.events.clone(), cfg.hostname.clone())?;
        let status = cfg.status_file.clone().map(StatusWriter::start).transpose()?;
        // the epoch lies in the past, so that a previous run's actions (the ledger) are instants on this clock
        let clock = StdClock::with_past(LEDGER_KEEP);
        let now = clock.now();
        let fleet_cfg =
            FleetConfig { backoff_min: cfg.backoff_min, backoff_max: cfg.backoff_max, ..FleetConfig::default() };
        let mut fleet = Fleet::new(fleet_cfg, file, os_random(), now);
        let ledger = match &cfg.control.upstream {
            Some(up) => {
                let path = up.state_dir.join(ledger_file::FILE);
                fleet.ledger().import(ledger_file::load(&path, now, std::time::SystemTime::now()));
                Some(ledger_file::LedgerWriter::start(path)?)
            }
            None => None,
        };
        Ok(Daemon {
            fleet,
            ledger,
            ledger_pending: false,
            discovery: Discovery::new(dirs, pattern),
            cfg,
            poll,
            clock,
            conns: Conns::default(),
            signals,
            sink,
            actions,
            outcomes,
            status,
            notifier: Notifier::from_env(),
            next_rescan: now,
            next_status: now,
            next_watchdog: now,
            stopping: false,
            fd_limit,
            control,
            links,
            votes: std::collections::HashMap::new(),
            control_dropped: 0,
            pass: Buckets::new(PASS_BOUNDS),
        })
    }

    /// Runs until SIGTERM/SIGINT.
    pub fn run(mut self) -> io::Result<()> {
        // before the first guest socket: every guest descriptor lives in this thread's table alone, and system
        // calls on them skip the shared table's reference counting (see `private_descriptor_table` for the rule)
        let private = crate::sys::private_descriptor_table();
        info!(
            fd_limit = self.fd_limit,
            private_descriptor_table = private,
            "file-descriptor limit {}: room for about {} guests",
            self.fd_limit,
            self.fd_limit.saturating_sub(64)
        );
        self.discovery.register(self.poll.registry(), INOTIFY);
        let now = self.clock.now();
        self.fleet.add_configured(&mut os_random, now);
        self.rescan(now);
        self.drive(now);
        self.notifier.notify("READY=1");
        info!(watch = ?self.discovery.dirs(), pattern = self.discovery.pattern().as_str(), guests = self.fleet.len(), "vigild running");
        let mut events = Events::with_capacity(EVENTS);
        while !self.stopping {
            let now = self.clock.now();
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let started = std::time::Instant::now();
            let mut now = self.clock.now();
            self.dispatch(&events, now);
            if self.fleet.next_timeout().is_some_and(|t| t <= now) {
                now = self.last_look(&mut events)?;
            }
            // answers that arrived in time are counted before the verdicts that would miss them; the read work
            // of one pass is bounded, so timers are never late by more than one bounded pass
            self.conns.read_ready(&mut self.fleet, now);
            self.conns.read_due(&mut self.fleet, now);
            self.fleet.handle_timeouts(now);
            self.drive(now);
            self.periodic(now);
            self.pass.observe(started.elapsed().as_secs_f64());
        }
        self.shutdown();
        Ok(())
    }

    /// Before verdicts: judge at a time read *before* a last look at readiness. An answer that arrived before that
    /// time is in the ready list by then (the sender's write puts it there), so it is read before its verdict, even
    /// after a stall left more sockets ready than one wait returns. Returns that time.
    fn last_look(&mut self, events: &mut Events) -> io::Result<Instant> {
        let mut now = self.clock.now();
        for _ in 0..DRAIN_ROUNDS {
            now = self.clock.now();
            match self.poll.poll(events, Some(std::time::Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.dispatch(events, now);
            if events.iter().count() < EVENTS {
                break;
            }
        }
        Ok(now)
    }

    /// Hands readiness events to their owners.
    fn dispatch(&mut self, events: &Events, now: Instant) {
        for event in events.iter() {
            match event.token() {
                SIGNALS => self.on_signals(now),
                INOTIFY => self.on_inotify(now),
                WAKER => {
                    self.on_outcomes();
                    self.on_commands(now);
                }
                _ => self.conns.on_ready(&mut self.fleet, self.poll.registry(), event, now),
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> std::time::Duration {
        if self.conns.pending_reads() {
            return std::time::Duration::ZERO;
        }
        let mut next = self.next_rescan.min(self.next_status).min(self.next_watchdog);
        if let Some(w) = self.fleet.next_timeout() {
            next = next.min(w);
        }
        (next - now).into()
    }

    /// Logs, writes and hands upstream one event.
    pub(super) fn publish(&mut self, guest: Arc<str>, event: Event) {
        crate::events::log_event(&guest, &event);
        self.sink.emit(&guest, &event);
        if let Some(tx) = &self.links.events {
            if tx.try_send((guest, event)).is_err() {
                self.control_dropped += 1;
            }
        }
    }

    /// Publishes every event the fleet has.
    fn publish_events(&mut self) {
        while let Some((guest, event)) = self.fleet.poll_event() {
            self.publish(guest, event);
        }
    }

    /// Carries out what the fleet asks: connections, closes, resumed reads, bytes to send, events, actions.
    fn drive(&mut self, now: Instant) {
        for _ in 0..64 {
            let mut progress = false;
            while let Some(io) = self.fleet.poll_io() {
                progress = true;
                match io {
                    Io::Connect { key, path } => {
                        self.conns.connect(&mut self.fleet, self.poll.registry(), key, &path, now)
                    }
                    Io::Close { key } => self.conns.close(self.poll.registry(), key),
                    Io::Resume { key } => self.conns.resume(key),
                }
                // a storm of connects (every guest found at start, or back after an outage) is published as it
                // goes: the fleet's queue never holds thousands of events, whose memory glibc would keep
                self.publish_events();
            }
            while let Some(key) = self.fleet.poll_dirty() {
                progress = true;
                self.conns.transmit(&mut self.fleet, self.poll.registry(), key, now);
            }
            self.publish_events();
            while let Some(done) = self.fleet.poll_vote_done() {
                if let Some(reply) = self.votes.remove(&done.ticket) {
                    let _ = reply.send(Ok(done));
                }
            }
            while let Some(a) = self.fleet.poll_action() {
                progress |= self.dispatch_action(a);
            }
            if !progress {
                break;
            }
        }
        self.ledger_pending |= self.fleet.ledger().take_dirty();
        if self.ledger_pending {
            self.ledger_pending = match &self.ledger {
                Some(w) => {
                    let entries = self.fleet.ledger().export(now, LEDGER_KEEP);
                    !w.offer(ledger_file::encode(&entries, now, std::time::SystemTime::now()))
                }
                None => false,
            };
        }
    }

    // ---- discovery ----

    fn on_inotify(&mut self, now: Instant) {
        let (changes, rescan) = self.discovery.on_ready();
        for change in changes {
            match change {
                Change::Added(id, path) => {
                    self.fleet.add_guest(&id, path, Origin::Watched, None, os_random(), now);
                }
                Change::Removed(path) => {
                    if let Some(key) = self.fleet.key_of(&path) {
                        self.fleet.remove_guest(key, "socket removed", now);
                    }
                }
            }
        }
        if rescan {
            self.rescan(now);
        }
    }

    fn rescan(&mut self, now: Instant) {
        let mut present = std::collections::HashSet::new();
        let fleet = &self.fleet;
        let new = self.discovery.scan(|path| fleet.key_of(path).map(|key| present.insert(key)).is_some());
        for key in self.fleet.watched_not_in(&present) {
            self.fleet.remove_guest(key, "socket removed", now);
        }
        for (id, path) in new {
            self.fleet.add_guest(&id, path, Origin::Watched, None, os_random(), now);
        }
    }

    fn reload(&mut self, now: Instant) {
        self.sink.reopen();
        let file = match &self.cfg.config_file {
            None => FileConfig::default(),
            Some(path) => match FileConfig::load(path) {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "SIGHUP: config not reloaded");
                    self.rescan(now);
                    return;
                }
            },
        };
        match self.cfg.discovery(&file) {
            Ok((dirs, pattern)) => self.discovery.set(dirs, pattern),
            Err(e) => {
                warn!(error = %e, "SIGHUP: config not reloaded");
                return;
            }
        }
        self.fleet.reload(file, os_random, now);
        self.rescan(now);
        info!(guests = self.fleet.len(), "configuration reloaded");
    }

    // ---- housekeeping ----

    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGHUP => self.reload(now),
                SIGTERM | SIGINT => {
                    info!(signal = sig, "stopping");
                    self.stopping = true;
                }
                _ => {}
            }
        }
    }

    fn periodic(&mut self, now: Instant) {
        if now >= self.next_rescan {
            self.rescan(now);
            self.drive(now);
            self.next_rescan = now + self.cfg.rescan;
        }
        if now >= self.next_watchdog {
            self.notifier.notify("WATCHDOG=1");
            self.next_watchdog =
                now + self.notifier.watchdog_interval().map_or(Duration::from_secs(3600), Duration::from);
        }
        if now >= self.next_status {
            self.write_status();
            self.next_status = now + Duration::from_secs(2);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let now = self.clock.now();
        Snapshot {
            time: crate::events::rfc3339(std::time::SystemTime::now()),
            pid: std::process::id(),
            host: self.cfg.hostname.clone(),
            fd_limit: self.fd_limit,
            events_emitted: self.sink.seq(),
            events_dropped: self.sink.dropped(),
            guests: self.fleet.snapshot(now),
        }
    }

    fn write_status(&mut self) {
        if let Some(w) = &self.status {
            w.submit(self.snapshot());
        }
        let (ok, n) = self.fleet.heartbeating();
        self.notifier.notify(&format!("STATUS={ok}/{n} guests heartbeating"));
    }

    fn shutdown(&mut self) {
        self.notifier.notify("STOPPING=1");
        let now = self.clock.now();
        // queued corrective actions are never started after SIGTERM (each is reported as skipped)
        self.actions.stop();
        self.fleet.shutdown(now);
        self.conns.flush_all(&mut self.fleet, self.poll.registry(), now);
        self.drive(now);
        self.on_outcomes();
        // votes still open end as `error` with the sessions above; anything not answered yet is dropped here
        self.votes.clear();
        // letting go of the event queue lets the spool writer finish what it was handed
        self.links.events = None;
        self.control.stop();
        self.write_status();
        if let Some(mut w) = self.status.take() {
            w.stop();
        }
        self.sink.close();
        info!("vigild stopped");
    }
}
