//! The data plane: one mio loop that discovers guest sockets, keeps one connection per socket, runs one core
//! `Monitor` per guest and turns its events into fault events and corrective actions.
//!
//! Shape (as mio's own examples): one `Events` buffer reused forever; a slab of guests whose index is both the
//! connection's `Token` and the guest's key in the [`TimerWheel`]; readiness drained to `WouldBlock` under a
//! per-guest read budget, with guests that used their budget revisited after everyone else; the poll timeout is
//! the wheel's next deadline. No heap allocation per message: one shared read buffer, encoding onto the stack,
//! and a bounded per-guest output buffer that only fills when a guest stops reading.
//!
//! It must never block: not on a guest, not on the event writer, not on a corrective command.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use slab::Slab;
use tracing::{debug, info, warn};
use vigil_core::{Duration, Fault, Instant, Monitor, MonitorEvent, MonitorState, StdClock, XorShift32, MAX_WIRE};

use crate::actions::{outcome_channel, ActionJob, ActionOutcome, ActionRunner};
use crate::config::{FileConfig, GuestSettings, Policy};
use crate::events::{EventSink, EventsTarget, RateLimit};
use crate::glob::Pattern;
use crate::sdnotify::Notifier;
use crate::status::{GuestStatus, Snapshot, StatusWriter};
use crate::wheel::TimerWheel;

const SIGNALS: Token = Token(usize::MAX - 1);
const INOTIFY: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);

/// Bytes read from one guest per wake-up before the others get their turn.
pub const READ_BUDGET: usize = 32 * 1024;
/// Bytes that may wait for a guest that does not read; beyond it messages are dropped and counted.
pub const MAX_OUTBUF: usize = 4096;
/// Default first reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Default largest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How vigild runs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Directories to watch.
    pub watch: Vec<PathBuf>,
    /// Socket file-name pattern.
    pub pattern: Pattern,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Watched,
    Configured,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Waiting to (re)connect at the wheel deadline.
    Backoff,
    Connected,
}

struct Guest {
    id: Arc<str>,
    path: PathBuf,
    origin: Origin,
    monitor: Monitor<XorShift32>,
    policy: Arc<Policy>,
    conn: Option<UnixStream>,
    link: Link,
    reconnect_at: Instant,
    backoff: Duration,
    connected_at: Instant,
    out: Vec<u8>,
    tx_dropped: u64,
    last_action: Option<Instant>,
    errors: RateLimit,
    /// Registrations are rare; a guest re-registering in a loop is rate-limited like protocol errors.
    registrations: RateLimit,
    /// Read budget used up with data left: revisit after the others.
    more_to_read: bool,
}

/// The daemon.
pub struct Daemon {
    cfg: DaemonConfig,
    file: FileConfig,
    defaults: Arc<Policy>,
    poll: Poll,
    clock: StdClock,
    guests: Slab<Guest>,
    by_path: HashMap<PathBuf, usize>,
    wheel: TimerWheel,
    inotify: Option<OwnedFd>,
    watches: HashMap<i32, PathBuf>,
    signals: signal_hook_mio::v1_0::Signals,
    sink: EventSink,
    actions: ActionRunner,
    outcomes: Receiver<ActionOutcome>,
    status: Option<StatusWriter>,
    notifier: Notifier,
    rng: XorShift32,
    seeds: u64,
    readbuf: Vec<u8>,
    scratch: Vec<vigil_core::MonitorEvent>,
    fired: Vec<usize>,
    retry_read: Vec<usize>,
    next_rescan: Instant,
    next_status: Instant,
    next_watchdog: Instant,
    stopping: bool,
    fd_limit: u64,
}

impl Daemon {
    /// Sets everything up (no guest is contacted yet).
    pub fn new(cfg: DaemonConfig) -> io::Result<Self> {
        let file = match &cfg.config_file {
            Some(p) => FileConfig::load(p).map_err(io::Error::other)?,
            None => FileConfig::default(),
        };
        let fd_limit = raise_fd_limit();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, outcomes) = outcome_channel();
        let wake_fn: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = waker.wake();
        });
        let actions = ActionRunner::start(4, tx, wake_fn);
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let sink = EventSink::start(cfg.events.clone(), cfg.hostname.clone())?;
        let status = cfg.status_file.clone().map(StatusWriter::start).transpose()?;
        let clock = StdClock::new();
        let now = clock.now();
        let seed = std::process::id()
            ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()));
        let defaults = Arc::new(Policy::resolve(&file.defaults, None));
        Ok(Daemon {
            cfg,
            file,
            defaults,
            poll,
            clock,
            guests: Slab::new(),
            by_path: HashMap::new(),
            wheel: TimerWheel::new(now),
            inotify: None,
            watches: HashMap::new(),
            signals,
            sink,
            actions,
            outcomes,
            status,
            notifier: Notifier::from_env(),
            rng: XorShift32::new(seed),
            seeds: u64::from(seed) << 32 | u64::from(std::process::id()),
            readbuf: vec![0; READ_BUDGET.min(64 * 1024)],
            scratch: Vec::with_capacity(8),
            fired: Vec::new(),
            retry_read: Vec::new(),
            next_rescan: now,
            next_status: now,
            next_watchdog: now,
            stopping: false,
            fd_limit,
        })
    }

    /// Runs until SIGTERM/SIGINT.
    pub fn run(mut self) -> io::Result<()> {
        info!(
            fd_limit = self.fd_limit,
            guests_possible = self.fd_limit.saturating_sub(64),
            "file-descriptor limit {}: room for about {} guests",
            self.fd_limit,
            self.fd_limit.saturating_sub(64)
        );
        self.setup_inotify();
        self.load_configured_guests();
        self.rescan_all();
        self.notifier.notify("READY=1");
        info!(watch = ?self.cfg.watch, pattern = self.cfg.pattern.as_str(), guests = self.guests.len(), "vigild running");
        let mut events = Events::with_capacity(1024);
        while !self.stopping {
            let now = self.clock.now();
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(),
                    INOTIFY => self.on_inotify(now),
                    WAKER => self.on_outcomes(),
                    Token(key) => {
                        self.on_ready(key, event.is_readable() || event.is_read_closed(), event.is_writable(), now)
                    }
                }
            }
            // guests that used their read budget: one more round each, after everyone else (a guest that uses it
            // again goes back on the list for the next round, so a flooder gets one budget per round, no more)
            let mut retry = std::mem::take(&mut self.retry_read);
            for key in retry.drain(..) {
                if self.guests.get(key).is_some_and(|g| g.more_to_read) {
                    self.read_guest(key, now);
                }
            }
            if self.retry_read.is_empty() {
                self.retry_read = retry; // keep the capacity
            }
            self.run_timers(now);
            self.periodic(now);
        }
        self.shutdown();
        Ok(())
    }

    fn poll_timeout(&self, now: Instant) -> std::time::Duration {
        if !self.retry_read.is_empty() {
            return std::time::Duration::ZERO;
        }
        let mut next = self.next_rescan.min(self.next_status).min(self.next_watchdog);
        if let Some(w) = self.wheel.next_wakeup() {
            next = next.min(w);
        }
        (next - now).into()
    }

    // ---- guests ----

    fn add_guest(&mut self, id: String, path: PathBuf, origin: Origin, settings: Option<&GuestSettings>, now: Instant) {
        if self.by_path.contains_key(&path) {
            return;
        }
        let policy = match settings {
            Some(s) => Arc::new(Policy::resolve(&self.file.defaults, Some(s))),
            None => Arc::clone(&self.defaults),
        };
        // each guest's nonce generator gets an independent seed (mixed, not the next output of a shared
        // generator, which would make every guest walk the same sequence one step apart)
        self.seeds = self.seeds.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let seed = mix64(self.seeds) as u32;
        let entry = self.guests.vacant_entry();
        let key = entry.key();
        if key >= WAKER.0 {
            warn!("guest table full");
            return;
        }
        entry.insert(Guest {
            id: id.into(),
            path: path.clone(),
            origin,
            monitor: Monitor::new(policy.monitor, XorShift32::new(seed)),
            policy,
            conn: None,
            link: Link::Backoff,
            reconnect_at: now,
            backoff: self.cfg.backoff_min,
            connected_at: now,
            out: Vec::new(),
            tx_dropped: 0,
            last_action: None,
            errors: RateLimit::new(),
            registrations: RateLimit::new(),
            more_to_read: false,
        });
        self.by_path.insert(path, key);
        debug!(guest = %self.guests[key].id, "guest discovered");
        self.connect(key, now);
    }

    fn remove_guest(&mut self, key: usize, reason: &str) {
        if !self.guests.contains(key) {
            return;
        }
        if self.guests[key].link == Link::Connected {
            self.close(key, reason);
        }
        self.wheel.set(key, None);
        let g = self.guests.remove(key);
        self.by_path.remove(&g.path);
        info!(guest = %g.id, reason, "guest removed");
    }

    fn connect(&mut self, key: usize, now: Instant) {
        let g = &mut self.guests[key];
        match UnixStream::connect(&g.path) {
            Ok(mut stream) => {
                if let Err(e) =
                    self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
                {
                    warn!(guest = %g.id, error = %e, "register failed");
                    self.schedule_reconnect(key, now);
                    return;
                }
                g.conn = Some(stream);
                g.link = Link::Connected;
                g.connected_at = now;
                g.out.clear();
                g.monitor.connected(now);
                let (id, path) = (Arc::clone(&g.id), g.path.display().to_string());
                info!(guest = %id, "connected");
                self.sink.emit(&id, "connected", json!({ "socket": path }));
                self.after_io(key, now);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && g.origin == Origin::Watched => {
                self.remove_guest(key, "socket file gone");
            }
            Err(e) => {
                debug!(guest = %g.id, error = %e, "connect failed");
                self.schedule_reconnect(key, now);
            }
        }
    }

    fn schedule_reconnect(&mut self, key: usize, now: Instant) {
        let jitter_seed = vigil_core::IdSource::next_id(&mut self.rng);
        let g = &mut self.guests[key];
        // 1 s doubling to 60 s, +-20 % jitter so a node's guests do not reconnect in lockstep
        let base = g.backoff.as_millis();
        let spread = base / 5;
        let delay = Duration::from_millis(base - spread + u64::from(jitter_seed) % (2 * spread + 1));
        g.backoff = (g.backoff + g.backoff).min(self.cfg.backoff_max);
        g.link = Link::Backoff;
        g.reconnect_at = now + delay;
        self.wheel.set(key, Some(g.reconnect_at));
    }

    fn close(&mut self, key: usize, reason: &str) {
        let g = &mut self.guests[key];
        if let Some(mut c) = g.conn.take() {
            let _ = self.poll.registry().deregister(&mut c);
        }
        g.link = Link::Backoff;
        g.more_to_read = false;
        g.out = Vec::new();
        g.monitor.disconnected();
        let id = Arc::clone(&g.id);
        info!(guest = %id, reason, "disconnected");
        self.sink.emit(&id, "disconnected", json!({ "reason": reason }));
        self.drain_monitor_events(key);
    }

    fn disconnect_and_retry(&mut self, key: usize, reason: &str, now: Instant) {
        let lasted = now - self.guests[key].connected_at;
        self.close(key, reason);
        if lasted >= self.cfg.backoff_max || self.guests[key].monitor.stats().heartbeats > 0 {
            self.guests[key].backoff = self.cfg.backoff_min;
        }
        self.schedule_reconnect(key, now);
    }

    fn on_ready(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        if !self.guests.contains(key) {
            return;
        }
        if writable {
            self.flush_out(key, now);
        }
        if readable && self.guests.contains(key) && self.guests[key].link == Link::Connected {
            self.read_guest(key, now);
        }
    }

    fn read_guest(&mut self, key: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.readbuf);
        let mut budget = READ_BUDGET;
        self.guests[key].more_to_read = false;
        while let Some(g) = self.guests.get_mut(key) {
            let Some(conn) = g.conn.as_mut() else { break };
            if budget == 0 {
                g.more_to_read = true;
                self.retry_read.push(key);
                break;
            }
            let want = budget.min(buf.len());
            match conn.read(&mut buf[..want]) {
                Ok(0) => {
                    self.disconnect_and_retry(key, "connection closed by peer", now);
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    self.feed(key, &buf[..n], now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.disconnect_and_retry(key, &format!("read error: {e}"), now);
                    break;
                }
            }
        }
        self.readbuf = buf;
        if self.guests.contains(key) {
            self.after_io(key, now);
        }
    }

    fn feed(&mut self, key: usize, mut input: &[u8], now: Instant) {
        while !input.is_empty() {
            let used = self.guests[key].monitor.handle_bytes(now, input);
            input = &input[used..];
            self.drain_monitor_events(key);
        }
    }

    fn drain_monitor_events(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(e) = self.guests[key].monitor.poll_event() {
            scratch.push(e);
        }
        for e in scratch.drain(..) {
            self.on_monitor_event(key, e);
        }
        self.scratch = scratch;
    }

    /// After input or timers: send what the monitor wants to send and reschedule its deadline.
    fn after_io(&mut self, key: usize, now: Instant) {
        let mut wire = [0u8; MAX_WIRE];
        let mut broken = None;
        {
            let g = &mut self.guests[key];
            while let Some(n) = g.monitor.poll_transmit(now, &mut wire) {
                let Some(conn) = g.conn.as_mut() else { break };
                let mut sent = 0;
                if g.out.is_empty() {
                    match conn.write(&wire[..n]) {
                        Ok(m) => sent = m,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            broken = Some(format!("write error: {e}"));
                            break;
                        }
                    }
                }
                if sent < n {
                    if g.out.len() + (n - sent) <= MAX_OUTBUF {
                        g.out.extend_from_slice(&wire[sent..n]);
                    } else {
                        g.tx_dropped += 1;
                    }
                }
            }
        }
        if let Some(reason) = broken {
            self.disconnect_and_retry(key, &reason, now);
            return;
        }
        self.reschedule(key);
    }

    fn flush_out(&mut self, key: usize, now: Instant) {
        let g = &mut self.guests[key];
        let Some(conn) = g.conn.as_mut() else { return };
        while !g.out.is_empty() {
            match conn.write(&g.out) {
                Ok(0) => break,
                Ok(n) => {
                    g.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = format!("write error: {e}");
                    self.disconnect_and_retry(key, &reason, now);
                    return;
                }
            }
        }
        if g.out.is_empty() && g.out.capacity() > MAX_OUTBUF {
            g.out = Vec::new();
        }
    }

    fn reschedule(&mut self, key: usize) {
        let g = &self.guests[key];
        let at = match g.link {
            Link::Connected => g.monitor.poll_timeout(),
            Link::Backoff => Some(g.reconnect_at),
        };
        self.wheel.set(key, at);
    }

    fn run_timers(&mut self, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.expire(now, |_, key| fired.push(key));
        for key in fired.drain(..) {
            let Some(g) = self.guests.get_mut(key) else { continue };
            match g.link {
                Link::Backoff => self.connect(key, now),
                Link::Connected => {
                    // fire everything due, draining events between calls
                    for _ in 0..8 {
                        let Some(g) = self.guests.get_mut(key) else { break };
                        if g.monitor.poll_timeout().is_none_or(|t| t > now) {
                            break;
                        }
                        g.monitor.handle_timeout(now);
                        self.drain_monitor_events(key);
                    }
                    if self.guests.get(key).is_some_and(|g| g.link == Link::Connected) {
                        self.after_io(key, now);
                    }
                }
            }
        }
        self.fired = fired;
    }

    // ---- events ----

    fn on_monitor_event(&mut self, key: usize, e: MonitorEvent) {
        let now = self.clock.now();
        let g = &mut self.guests[key];
        let id = Arc::clone(&g.id);
        match e {
            MonitorEvent::Registered(r) => {
                g.backoff = self.cfg.backoff_min;
                if !g.registrations.allow(now.as_millis()) {
                    return;
                }
                let suppressed = std::mem::take(&mut g.registrations.suppressed);
                info!(guest = %id, name = %r.init.name, interval_ms = r.interval.as_millis(), "registered");
                self.sink.emit(
                    &id,
                    "registered",
                    json!({
                        "name": r.init.name.as_str(),
                        "invocation_id": r.init.invocation_id,
                        "interval_ms": r.interval.as_millis(),
                        "requested_interval_ms": r.init.heartbeat_interval_ms,
                        "corrective_action": r.init.corrective_action.as_str(),
                        "vote_secs": r.init.vote_secs,
                        "shutdown_notice_secs": r.init.shutdown_notice_secs,
                        "suspend_notice_secs": r.init.suspend_notice_secs,
                        "resume_notice_secs": r.init.resume_notice_secs,
                        "restart_secs": r.init.restart_secs,
                        "suppressed": suppressed,
                    }),
                );
            }
            MonitorEvent::HeartbeatLost { consecutive_misses, last_heartbeat } => {
                let action =
                    g.monitor.registration().map_or(vigil_core::CorrectiveAction::None, |r| r.init.corrective_action);
                let last = last_heartbeat.map(|t| crate::events::rfc3339(self.wall(t)));
                warn!(guest = %id, consecutive_misses, "heartbeat lost");
                self.sink.emit(
                    &id,
                    "heartbeat_lost",
                    json!({ "consecutive_misses": consecutive_misses, "last_heartbeat": last, "corrective_action": action.as_str() }),
                );
                self.act(key, "heartbeat_lost", action, now);
            }
            MonitorEvent::Unhealthy { corrective_action, log_msg } => {
                warn!(guest = %id, action = %corrective_action, log_msg = %log_msg, "unhealthy");
                self.sink.emit(
                    &id,
                    "unhealthy",
                    json!({ "corrective_action": corrective_action.as_str(), "log_msg": log_msg.as_str() }),
                );
                self.act(key, "unhealthy", corrective_action, now);
            }
            MonitorEvent::Recovered => {
                info!(guest = %id, "recovered");
                self.sink.emit(&id, "recovered", json!({}));
            }
            MonitorEvent::Deregistered { log_msg } => {
                info!(guest = %id, log_msg = %log_msg, "deregistered");
                self.sink.emit(&id, "deregistered", json!({ "log_msg": log_msg.as_str() }));
            }
            MonitorEvent::VoteResult { event_type, notification_type, result, log_msg } => {
                info!(guest = %id, %event_type, %result, "vote result");
                self.sink.emit(
                    &id,
                    "vote_result",
                    json!({
                        "event_type": event_type.as_str(),
                        "notification_type": notification_type.as_str(),
                        "result": result.as_str(),
                        "log_msg": log_msg.as_str(),
                    }),
                );
            }
            MonitorEvent::ProtocolError(pe) => {
                if g.errors.allow(now.as_millis()) {
                    let suppressed = std::mem::take(&mut g.errors.suppressed);
                    let total = g.monitor.stats().protocol_errors;
                    debug!(guest = %id, error = %pe, "protocol error");
                    self.sink.emit(
                        &id,
                        "protocol_error",
                        json!({ "error": pe.label(), "detail": pe.to_string(), "suppressed": suppressed, "total": total }),
                    );
                }
            }
            MonitorEvent::RegistrationTimeout => {
                // Connected but silent for 120 s: the reference reconnects; so do we, right away.
                self.close(key, "no registration within the registration timeout");
                self.guests[key].backoff = self.cfg.backoff_min;
                self.guests[key].reconnect_at = now;
                self.guests[key].link = Link::Backoff;
                self.wheel.set(key, Some(now));
            }
        }
    }

    fn act(&mut self, key: usize, trigger: &'static str, action: vigil_core::CorrectiveAction, now: Instant) {
        let g = &mut self.guests[key];
        let name = g.monitor.registration().map(|r| r.init.name.as_str().to_owned()).unwrap_or_default();
        let Some(argv) = g.policy.command_for(action, &g.id, &name, trigger) else { return };
        if g.last_action.is_some_and(|t| now < t + g.policy.action_min_gap) {
            let id = Arc::clone(&g.id);
            self.sink.emit(
                &id,
                "action",
                json!({ "trigger": trigger, "corrective_action": action.as_str(), "argv": argv, "skipped": "rate limit" }),
            );
            return;
        }
        g.last_action = Some(now);
        let job = ActionJob { key, guest: Arc::clone(&g.id), trigger, action: action.as_str(), argv };
        if let Err(job) = self.actions.submit(job) {
            self.sink.emit(
                &job.guest,
                "action",
                json!({ "trigger": trigger, "corrective_action": job.action, "argv": job.argv, "error": "action queue full" }),
            );
        }
    }

    fn on_outcomes(&mut self) {
        while let Ok(o) = self.outcomes.try_recv() {
            info!(guest = %o.job.guest, argv = ?o.job.argv, exit_code = ?o.exit_code, error = ?o.error, "action finished");
            self.sink.emit(
                &o.job.guest,
                "action",
                json!({
                    "trigger": o.job.trigger,
                    "corrective_action": o.job.action,
                    "argv": o.job.argv,
                    "exit_code": o.exit_code,
                    "error": o.error,
                    "elapsed_ms": o.elapsed.as_millis() as u64,
                }),
            );
        }
    }

    fn wall(&self, t: Instant) -> std::time::SystemTime {
        let ago = std::time::Duration::from(self.clock.now() - t);
        let now = std::time::SystemTime::now();
        now.checked_sub(ago).unwrap_or(now)
    }

    // ---- discovery ----

    fn setup_inotify(&mut self) {
        use rustix::fs::inotify;
        match inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC) {
            Ok(fd) => {
                let raw = fd.as_raw_fd();
                if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), INOTIFY, Interest::READABLE) {
                    warn!(error = %e, "inotify registration failed; relying on rescans");
                    return;
                }
                self.inotify = Some(fd);
            }
            Err(e) => warn!(error = %e, "inotify unavailable; relying on rescans"),
        }
        self.add_watches();
    }

    fn add_watches(&mut self) {
        use rustix::fs::inotify::{add_watch, WatchFlags};
        let Some(fd) = &self.inotify else { return };
        for dir in &self.cfg.watch {
            if self.watches.values().any(|d| d == dir) {
                continue;
            }
            let flags = WatchFlags::CREATE
                | WatchFlags::DELETE
                | WatchFlags::MOVED_TO
                | WatchFlags::MOVED_FROM
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF
                | WatchFlags::ONLYDIR;
            match add_watch(fd, dir.as_path(), flags) {
                Ok(wd) => {
                    self.watches.insert(wd, dir.clone());
                }
                Err(e) => warn!(dir = %dir.display(), error = %e, "cannot watch directory (will retry at rescan)"),
            }
        }
    }

    fn on_inotify(&mut self, now: Instant) {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let Some(fd) = self.inotify.as_ref() else { return };
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = Reader::new(fd, &mut buf);
        let mut changes: Vec<(PathBuf, bool)> = Vec::new();
        let mut rescan = false;
        let mut lost_watches = Vec::new();
        loop {
            match reader.next() {
                Ok(ev) => {
                    let flags = ev.events();
                    if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                        rescan = true;
                        continue;
                    }
                    if flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED) {
                        lost_watches.push(ev.wd());
                        rescan = true;
                        continue;
                    }
                    let (Some(dir), Some(name)) = (self.watches.get(&ev.wd()), ev.file_name()) else { continue };
                    let path = dir.join(name.to_string_lossy().as_ref());
                    let created = flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO);
                    changes.push((path, created));
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    warn!(error = %e, "inotify read failed");
                    break;
                }
            }
        }
        for wd in lost_watches {
            self.watches.remove(&wd);
        }
        for (path, created) in changes {
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| self.cfg.pattern.guest_id(n)) else {
                continue;
            };
            if created {
                self.add_guest(id, path, Origin::Watched, None, now);
            } else if let Some(&key) = self.by_path.get(&path) {
                if self.guests[key].origin == Origin::Watched {
                    self.remove_guest(key, "socket removed");
                }
            }
        }
        if rescan {
            self.rescan_all();
        }
    }

    fn rescan_all(&mut self) {
        let now = self.clock.now();
        self.add_watches();
        let mut present: Vec<(String, PathBuf)> = Vec::new();
        for dir in &self.cfg.watch {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(id) = name.to_str().and_then(|n| self.cfg.pattern.guest_id(n)) else { continue };
                let is_socket = entry.file_type().is_ok_and(|t| {
                    use std::os::unix::fs::FileTypeExt;
                    t.is_socket()
                });
                if is_socket {
                    present.push((id, entry.path()));
                }
            }
        }
        let keep: std::collections::HashSet<&Path> = present.iter().map(|(_, p)| p.as_path()).collect();
        let gone: Vec<usize> = self
            .guests
            .iter()
            .filter(|(_, g)| g.origin == Origin::Watched && !keep.contains(g.path.as_path()))
            .map(|(k, _)| k)
            .collect();
        for key in gone {
            self.remove_guest(key, "socket removed");
        }
        for (id, path) in present {
            self.add_guest(id, path, Origin::Watched, None, now);
        }
    }

    fn load_configured_guests(&mut self) {
        let now = self.clock.now();
        let guests = self.file.guests.clone();
        for g in &guests {
            self.add_guest(g.id.clone(), g.socket.clone(), Origin::Configured, Some(&g.settings), now);
        }
    }

    fn reload(&mut self) {
        let Some(path) = self.cfg.config_file.clone() else {
            info!("SIGHUP: no config file; rescanning");
            self.rescan_all();
            return;
        };
        let file = match FileConfig::load(&path) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "SIGHUP: config not reloaded");
                return;
            }
        };
        self.file = file;
        self.defaults = Arc::new(Policy::resolve(&self.file.defaults, None));
        let configured: HashMap<PathBuf, GuestSettings> =
            self.file.guests.iter().map(|g| (g.socket.clone(), g.settings.clone())).collect();
        let stale: Vec<usize> = self
            .guests
            .iter()
            .filter(|(_, g)| g.origin == Origin::Configured && !configured.contains_key(&g.path))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            self.remove_guest(key, "removed from configuration");
        }
        for (_, g) in self.guests.iter_mut() {
            let policy = match configured.get(&g.path) {
                Some(s) => Arc::new(Policy::resolve(&self.file.defaults, Some(s))),
                None => Arc::clone(&self.defaults),
            };
            g.monitor.set_config(policy.monitor);
            g.policy = policy;
        }
        self.load_configured_guests();
        info!(guests = self.guests.len(), "configuration reloaded");
    }

    // ---- housekeeping ----

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGHUP => self.reload(),
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
            self.rescan_all();
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
        let guests = self
            .guests
            .iter()
            .map(|(_, g)| {
                let s = g.monitor.stats();
                GuestStatus {
                    id: g.id.to_string(),
                    socket: g.path.display().to_string(),
                    state: match (g.link, g.monitor.state()) {
                        (Link::Backoff, _) | (_, MonitorState::Disconnected) => "disconnected",
                        (_, MonitorState::AwaitingInit) => "awaiting_init",
                        (_, MonitorState::Heartbeating) => "heartbeating",
                        (_, MonitorState::Exited) => "exited",
                    }
                    .into(),
                    fault: g.monitor.fault().map(|f| match f {
                        Fault::Lost => "heartbeat_lost".to_string(),
                        Fault::Unhealthy(a) => format!("unhealthy:{a}"),
                    }),
                    name: g.monitor.registration().map(|r| r.init.name.to_string()),
                    interval_ms: g.monitor.registration().map(|r| r.interval.as_millis()),
                    heartbeats: s.heartbeats,
                    misses: s.misses,
                    protocol_errors: s.protocol_errors,
                    last_rtt_ms: s.last_rtt.as_millis(),
                    max_rtt_ms: s.max_rtt.as_millis(),
                    tx_dropped: g.tx_dropped,
                }
            })
            .collect();
        Snapshot {
            time: crate::events::rfc3339(std::time::SystemTime::now()),
            pid: std::process::id(),
            host: self.cfg.hostname.clone(),
            fd_limit: self.fd_limit,
            events_emitted: self.sink.seq(),
            events_dropped: self.sink.dropped(),
            guests,
        }
    }

    fn write_status(&mut self) {
        if self.status.is_some() {
            let snap = self.snapshot();
            if let Some(w) = &self.status {
                w.submit(snap);
            }
        }
        let (n, ok) = (
            self.guests.len(),
            self.guests.iter().filter(|(_, g)| g.monitor.state() == MonitorState::Heartbeating).count(),
        );
        self.notifier.notify(&format!("STATUS={ok}/{n} guests heartbeating"));
    }

    fn shutdown(&mut self) {
        self.notifier.notify("STOPPING=1");
        let keys: Vec<usize> = self.guests.iter().filter(|(_, g)| g.link == Link::Connected).map(|(k, _)| k).collect();
        for key in keys {
            let now = self.clock.now();
            self.flush_out(key, now);
            if self.guests.contains(key) && self.guests[key].link == Link::Connected {
                self.close(key, "vigild stopping");
            }
        }
        self.write_status();
        if let Some(mut w) = self.status.take() {
            w.stop();
        }
        self.actions.stop();
        self.on_outcomes();
        self.sink.close();
        info!("vigild stopped");
    }
}

/// splitmix64's finaliser: a well-mixed 64-bit value from a counter.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Raises the soft file-descriptor limit to the hard one; returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum;
    if lim.current != hard {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: hard, maximum: hard });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
