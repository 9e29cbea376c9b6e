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

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{debug, info, warn};
use vigil_core::{Duration, Instant, StdClock, MAX_WIRE};

use crate::actions::{outcome_channel, ActionJob, ActionOutcome, ActionRunner};
use crate::config::FileConfig;
use crate::control::{Command, Control, ControlConfig, FleetView, LoopSide};
use crate::discovery::{Change, Discovery};
use crate::events::{escape_text, Event, EventSink, EventsTarget};
use crate::fleet::{action_event, Fleet, FleetConfig, GuestKey, Io, Origin, Ticket, VoteDone, VoteRefusal};
use crate::glob::Pattern;
use crate::metrics::{Buckets, PASS_BOUNDS};
use crate::sdnotify::Notifier;
use crate::status::{Snapshot, StatusWriter};

const SIGNALS: Token = Token(usize::MAX - 1);
const INOTIFY: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);

/// Bytes read from all guests in one pass before timers get their turn (what is left is read next pass).
pub const PASS_BUDGET: usize = 256 * 1024;
/// Bytes read from one guest per read call.
pub const READ_CHUNK: usize = 16 * 1024;
/// Bytes that may wait for a guest that does not read; beyond it messages are dropped and counted.
pub const MAX_OUTBUF: usize = 4096;
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

struct Conn {
    stream: UnixStream,
    gen: u32,
    out: Vec<u8>,
    /// In the list of guests to read.
    queued: bool,
    /// The peer closed its end: read to the end, never stop at a short read.
    read_closed: bool,
}

fn token(key: GuestKey, gen: u32) -> Token {
    Token(key | (gen as usize) << 32)
}

/// The daemon.
pub struct Daemon {
    cfg: DaemonConfig,
    poll: Poll,
    clock: StdClock,
    fleet: Fleet,
    conns: Vec<Option<Conn>>,
    next_gen: u32,
    discovery: Discovery,
    signals: signal_hook_mio::v1_0::Signals,
    sink: EventSink,
    actions: ActionRunner,
    outcomes: Receiver<ActionOutcome>,
    status: Option<StatusWriter>,
    notifier: Notifier,
    readbuf: Vec<u8>,
    to_read: Vec<GuestKey>,
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
}

/// 32 bits from the OS's entropy (per-guest nonce seeds).
pub fn os_random() -> u32 {
    let mut b = [0u8; 4];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
        Ok(4) => u32::from_ne_bytes(b),
        // never expected on Linux; fall back to something that differs per call
        _ => {
            (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()) as u32)
                ^ std::process::id().rotate_left(16)
        }
    }
}

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
        let clock = StdClock::new();
        let now = clock.now();
        let fleet_cfg = FleetConfig { backoff_min: cfg.backoff_min, backoff_max: cfg.backoff_max };
        Ok(Daemon {
            fleet: Fleet::new(fleet_cfg, file, os_random(), now),
            discovery: Discovery::new(dirs, pattern),
            cfg,
            poll,
            clock,
            conns: Vec::new(),
            next_gen: 0,
            signals,
            sink,
            actions,
            outcomes,
            status,
            notifier: Notifier::from_env(),
            readbuf: vec![0; READ_CHUNK],
            to_read: Vec::new(),
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
        info!(
            fd_limit = self.fd_limit,
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
        let mut events = Events::with_capacity(1024);
        while !self.stopping {
            let now = self.clock.now();
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let started = std::time::Instant::now();
            let now = self.clock.now();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(now),
                    INOTIFY => self.on_inotify(now),
                    WAKER => {
                        self.on_outcomes();
                        self.on_commands(now);
                    }
                    Token(t) => self.on_ready(t, event.is_readable(), event.is_read_closed(), event.is_writable(), now),
                }
            }
            // answers that arrived in time are counted before the verdicts that would miss them; the read work
            // of one pass is bounded, so timers are never late by more than one bounded pass
            self.read_ready_guests(now);
            self.fleet.handle_timeouts(now);
            self.drive(now);
            self.periodic(now);
            self.pass.observe(started.elapsed().as_secs_f64());
        }
        self.shutdown();
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> std::time::Duration {
        if !self.to_read.is_empty() {
            return std::time::Duration::ZERO;
        }
        let mut next = self.next_rescan.min(self.next_status).min(self.next_watchdog);
        if let Some(w) = self.fleet.next_timeout() {
            next = next.min(w);
        }
        (next - now).into()
    }

    fn conn(&mut self, key: GuestKey) -> Option<&mut Conn> {
        self.conns.get_mut(key).and_then(Option::as_mut)
    }

    fn on_ready(&mut self, t: usize, readable: bool, read_closed: bool, writable: bool, now: Instant) {
        let (key, gen) = (t & 0xFFFF_FFFF, (t >> 32) as u32);
        let Some(conn) = self.conn(key).filter(|c| c.gen == gen) else { return };
        conn.read_closed |= read_closed;
        if (readable || read_closed) && !conn.queued {
            conn.queued = true;
            self.to_read.push(key);
        }
        if writable {
            self.flush_out(key, now);
        }
    }

    /// Reads the guests that were ready, each within its byte budget, all within [`PASS_BUDGET`].
    fn read_ready_guests(&mut self, now: Instant) {
        let mut pass_left = PASS_BUDGET;
        let mut list = std::mem::take(&mut self.to_read);
        let mut keep = Vec::new();
        for key in list.drain(..) {
            if pass_left == 0 {
                keep.push(key);
                continue;
            }
            if self.read_guest(key, now, &mut pass_left) {
                if let Some(c) = self.conn(key) {
                    c.queued = false;
                }
            } else {
                keep.push(key);
            }
        }
        keep.append(&mut self.to_read);
        self.to_read = keep;
        if self.to_read.is_empty() {
            self.to_read = list; // keep the capacity
        }
    }

    /// Reads one guest; `true` when it is done for now (drained, over budget, or closed).
    fn read_guest(&mut self, key: GuestKey, now: Instant, pass_left: &mut usize) -> bool {
        let mut buf = std::mem::take(&mut self.readbuf);
        let done = loop {
            let allowance = self.fleet.read_allowance(key, now);
            let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else { break true };
            if allowance == 0 {
                self.fleet.handle_over_budget(key, now);
                break true;
            }
            if *pass_left == 0 {
                break false;
            }
            let want = allowance.min(buf.len()).min(*pass_left);
            match conn.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    self.fleet.handle_closed(key, "connection closed by peer", now);
                    break true;
                }
                Ok(n) => {
                    *pass_left -= n;
                    let short = n < want && !conn.read_closed;
                    self.fleet.handle_bytes(key, &buf[..n], now);
                    if short {
                        // a short read drained the stream socket: the next arrival raises a new edge, so the
                        // read that would only say WouldBlock is skipped
                        self.fleet.handle_drained(key);
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.fleet.handle_drained(key);
                    break true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fleet.handle_closed(key, &format!("read error: {e}"), now);
                    break true;
                }
            }
        };
        self.readbuf = buf;
        done
    }

    /// Carries out what the fleet asks: connections, closes, resumed reads, bytes to send, events, actions.
    fn drive(&mut self, now: Instant) {
        for _ in 0..64 {
            let mut progress = false;
            while let Some(io) = self.fleet.poll_io() {
                progress = true;
                match io {
                    Io::Connect { key, path } => self.connect(key, &path, now),
                    Io::Close { key } => self.drop_conn(key),
                    Io::Resume { key } => {
                        if let Some(c) = self.conn(key).filter(|c| !c.queued) {
                            c.queued = true;
                            self.to_read.push(key);
                        }
                    }
                }
            }
            while let Some(key) = self.fleet.poll_dirty() {
                progress = true;
                self.transmit(key, now);
            }
            while let Some((guest, event)) = self.fleet.poll_event() {
                log_event(&guest, &event);
                self.sink.emit(&guest, &event);
                if self.links.events.try_send((guest, event)).is_err() {
                    self.control_dropped += 1;
                }
            }
            while let Some(done) = self.fleet.poll_vote_done() {
                if let Some(reply) = self.votes.remove(&done.ticket) {
                    let _ = reply.send(Ok(done));
                }
            }
            while let Some(a) = self.fleet.poll_action() {
                let job = ActionJob { guest: a.guest, trigger: a.trigger, action: a.action, argv: a.argv };
                if let Err(job) = self.actions.submit(job) {
                    let e = action_event(job.trigger, job.action, job.argv, None, Some("action queue full".into()));
                    self.fleet.handle_action_outcome(job.guest, e);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }

    fn connect(&mut self, key: GuestKey, path: &std::path::Path, now: Instant) {
        match UnixStream::connect(path) {
            Ok(mut stream) => {
                self.next_gen = (self.next_gen + 1) & 0x7FFF_FFFF;
                let gen = self.next_gen;
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = self.poll.registry().register(&mut stream, token(key, gen), interest) {
                    warn!(error = %e, "register failed");
                    self.fleet.handle_connect_failed(key, false, now);
                    return;
                }
                if self.conns.len() <= key {
                    self.conns.resize_with(key + 1, || None);
                }
                self.conns[key] = Some(Conn { stream, gen, out: Vec::new(), queued: false, read_closed: false });
                self.fleet.handle_connected(key, now);
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "connect failed");
                self.fleet.handle_connect_failed(key, e.kind() == io::ErrorKind::NotFound, now);
            }
        }
    }

    fn drop_conn(&mut self, key: GuestKey) {
        if let Some(mut c) = self.conns.get_mut(key).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn transmit(&mut self, key: GuestKey, now: Instant) {
        let mut wire = [0u8; MAX_WIRE];
        let mut broken = None;
        while let Some(n) = self.fleet.poll_transmit(key, now, &mut wire) {
            let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else { break };
            let mut sent = 0;
            if conn.out.is_empty() {
                match conn.stream.write(&wire[..n]) {
                    Ok(m) => sent = m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        broken = Some(format!("write error: {e}"));
                        break;
                    }
                }
            }
            if sent < n {
                if conn.out.len() + (n - sent) <= MAX_OUTBUF {
                    conn.out.extend_from_slice(&wire[sent..n]);
                } else {
                    self.fleet.handle_tx_dropped(key);
                }
            }
        }
        if let Some(reason) = broken {
            self.fleet.handle_closed(key, &reason, now);
        }
    }

    fn flush_out(&mut self, key: GuestKey, now: Instant) {
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else { return };
        while !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
                Ok(0) => break,
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = format!("write error: {e}");
                    self.fleet.handle_closed(key, &reason, now);
                    return;
                }
            }
        }
        if conn.out.is_empty() && conn.out.capacity() > MAX_OUTBUF {
            conn.out = Vec::new();
        }
    }

    fn on_outcomes(&mut self) {
        while let Ok(o) = self.outcomes.try_recv() {
            let event = Event::Action {
                trigger: o.job.trigger,
                corrective_action: o.job.action.as_str(),
                argv: o.job.argv,
                exit_code: o.exit_code,
                elapsed_ms: o.elapsed.map(|d| d.as_millis() as u64),
                error: o.error,
                skipped: o.skipped,
            };
            self.fleet.handle_action_outcome(o.job.guest, event);
        }
        let now = self.clock.now();
        self.drive(now);
    }

    /// Commands from the control plane: answered at once, or (votes) when the guest answers.
    fn on_commands(&mut self, now: Instant) {
        // bounded per wake-up: the control plane's queue is bounded, and what is left wakes us again
        for _ in 0..crate::control::COMMAND_QUEUE {
            let Ok(cmd) = self.links.commands.try_recv() else { break };
            match cmd {
                Command::Vote { guest, event_type, notification_type, reply } => {
                    match self.fleet.start_vote(&guest, event_type, notification_type, now) {
                        Ok(started) => {
                            self.votes.insert(started.ticket, reply);
                        }
                        Err(refusal) => {
                            let _ = reply.send(Err(refusal));
                        }
                    }
                }
                Command::Maintenance { guest, secs, reason, reply } => {
                    let ok = match secs {
                        Some(secs) => self.fleet.set_maintenance(&guest, secs, &reason, now).is_some(),
                        None => self.fleet.end_maintenance(&guest, now),
                    };
                    let _ = reply.send(ok);
                }
                Command::Reporting { guest, on, reply } => {
                    let _ = reply.send(self.fleet.set_reporting(guest.as_deref(), on, now));
                }
                Command::Snapshot { reply } => {
                    let (counters, totals) = self.fleet.counters();
                    let view = FleetView {
                        guests: self.fleet.snapshot(now),
                        counters,
                        totals,
                        pass: self.pass.clone(),
                        events_emitted: self.sink.seq(),
                        events_dropped: self.sink.dropped(),
                        control_dropped: self.control_dropped,
                        reporting: self.fleet.reporting(),
                    };
                    let _ = reply.send(Box::new(view));
                }
            }
        }
        self.drive(now);
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
        let present = self.discovery.scan();
        let keep: std::collections::HashSet<&std::path::Path> = present.iter().map(|(_, p)| p.as_path()).collect();
        for key in self.fleet.watched_not_in(&keep) {
            self.fleet.remove_guest(key, "socket removed", now);
        }
        for (id, path) in present {
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
        for key in 0..self.conns.len() {
            self.flush_out(key, now);
        }
        self.drive(now);
        self.on_outcomes();
        // votes still open end as `error` with the sessions above; anything not answered yet is dropped here
        self.votes.clear();
        self.control.stop();
        self.write_status();
        if let Some(mut w) = self.status.take() {
            w.stop();
        }
        self.sink.close();
        info!("vigild stopped");
    }
}

/// One log line per event; guest text is escaped (a guest must not forge log lines).
fn log_event(guest: &str, e: &Event) {
    match e {
        Event::HeartbeatLost { consecutive_misses, .. } => warn!(guest, consecutive_misses, "heartbeat lost"),
        Event::Unhealthy { corrective_action, log_msg } => {
            warn!(guest, action = corrective_action, log_msg = %escape_text(log_msg), "unhealthy")
        }
        Event::Registered { name, interval_ms, .. } => {
            info!(guest, name = %escape_text(name), interval_ms, "registered")
        }
        Event::Deregistered { log_msg } => info!(guest, log_msg = %escape_text(log_msg), "deregistered"),
        Event::ProtocolError { error, .. } => debug!(guest, error, "protocol error"),
        other => info!(guest, kind = other.kind(), "event"),
    }
}

/// Raises the soft file-descriptor limit to the hard one; returns (the soft limit before, the limit in force).
/// Corrective commands get the old soft limit back.
pub fn raise_fd_limit() -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum;
    if lim.current != hard {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: hard, maximum: hard });
    }
    (soft, getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}
