//! The Linux guest agent: the [`Driver`] over the virtio-serial port, plus what a VM needs around
//! it: a periodic health-check command, the local application API, the event notification command for votes,
//! `exit` on SIGTERM, and reconnection when the port's other end goes away.
//!
//! One thread runs a mio loop over the port, the API socket and signals; commands run on their own threads and
//! report through a channel, so nothing ever delays the answer to a challenge.
//!
//! Beside it: `port` (finding and opening the virtio-serial port), `commands` (health and notification commands),
//! `apps/` (the local application APIs: `mod.rs` their state and aggregation, `json.rs` the JSON-lines API,
//! `reference.rs` the reference guest's binary API).

use std::prelude::rust_2021::*;

pub mod apps;
pub mod commands;
pub mod port;

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Deserialize;
use signal_hook::consts::{SIGINT, SIGTERM};
use vigil_core::{
    bounded, Agent, AgentConfig, AgentEvent, CorrectiveAction, Health, Instant, NotificationType, StdClock, VoteResult,
    XorShift32,
};

use crate::{Clock, Driver};
use apps::Apps;
use commands::Report;
use port::Port;

const PORT: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
const APPS: usize = 16;

/// The agent's settings (flags and TOML share these names).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestConfig {
    /// Port path (device or UNIX socket); `None`: discover.
    pub port: Option<PathBuf>,
    /// Declared name (default: the host name).
    pub name: Option<String>,
    /// Requested heartbeat interval.
    pub interval_ms: u32,
    /// Action requested on heartbeat loss.
    pub corrective_action: String,
    /// Health-check command (argv).
    pub health_cmd: Option<Vec<String>>,
    /// Seconds between health checks.
    pub health_interval_secs: u64,
    /// Seconds a health check may take.
    pub health_timeout_secs: u64,
    /// Action requested when the health check fails.
    pub health_action: String,
    /// Event notification command (called as `CMD revocable|irrevocable EVENT`).
    pub notify_cmd: Option<PathBuf>,
    /// Local application API socket.
    pub api_socket: PathBuf,
    /// The reference guest's binary application API (`None`: off).
    pub reference_api_socket: Option<PathBuf>,
    /// sysfs root (tests).
    pub sys_root: PathBuf,
    /// /dev root (tests).
    pub dev_root: PathBuf,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            port: None,
            name: None,
            interval_ms: 1000,
            corrective_action: "reboot".into(),
            health_cmd: None,
            health_interval_secs: 10,
            health_timeout_secs: 5,
            health_action: "reboot".into(),
            notify_cmd: None,
            api_socket: PathBuf::from("/run/vigil/guest.sock"),
            reference_api_socket: Some(PathBuf::from(REFERENCE_API_SOCKET)),
            sys_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
        }
    }
}

struct SysClock(StdClock);

impl Clock for SysClock {
    fn now(&mut self) -> Instant {
        self.0.now()
    }
}

struct Vote {
    id: u64,
    kind: NotificationType,
    /// `None` while the command runs; `Some(None)` when it gave no answer (the agent will answer `timeout`).
    script: Option<Option<(VoteResult, String)>>,
    /// No notification command is configured: only the applications vote.
    no_script: bool,
    started: StdInstant,
    /// Applications still silent by then count as accepting (silence accepts), a little before the agent's own
    /// `timeout` answer.
    apps_deadline: StdInstant,
}

/// Where the reference guest daemon serves its binary application API.
pub const REFERENCE_API_SOCKET: &str = "/var/run/.guest_heartbeat_api";

/// How often the agent looks for a port that is not there (yet): a channel hot-plugged by the host is found
/// within this, and the agent registers at once.
pub const PORT_RETRY: StdDuration = StdDuration::from_millis(500);

/// Runs the agent until SIGTERM/SIGINT; then sends `exit`.
pub fn run(cfg: GuestConfig) -> std::io::Result<()> {
    let action = |s: &str| {
        CorrectiveAction::from_wire(s)
            .ok_or_else(|| std::io::Error::other(format!("corrective action {s:?}: none, log, reboot or stop")))
    };
    let corrective_action = action(&cfg.corrective_action)?;
    let health_action = action(&cfg.health_action)?;
    let name = cfg.name.clone().unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into_owned());
    let clock = StdClock::new();
    let seed = std::process::id() ^ StdInstant::now().elapsed().subsec_nanos() ^ seed_from_time();
    let agent_cfg = AgentConfig {
        name: bounded(&name),
        heartbeat_interval_ms: cfg.interval_ms,
        corrective_action,
        ..AgentConfig::default()
    };
    let agent = Agent::new(agent_cfg, XorShift32::new(seed), clock.now());
    let mut driver = Driver::new(Port::Closed, SysClock(clock), agent);

    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let wake: Arc<dyn Fn() + Send + Sync> = {
        let w = Arc::clone(&waker);
        Arc::new(move || {
            let _ = w.wake();
        })
    };
    let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT])?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut apps = Apps::bind(&cfg.api_socket, poll.registry(), APPS)?;
    if let Some(path) = &cfg.reference_api_socket {
        match apps.bind_reference(path, poll.registry()) {
            Ok(true) => eprintln!("vigil-guest: reference application API on {}", path.display()),
            Ok(false) => eprintln!("vigil-guest: {} is served by another process; reference API off", path.display()),
            Err(e) => eprintln!("vigil-guest: reference application API on {}: {e}; off", path.display()),
        }
    }
    let (tx, reports): (_, Receiver<Report>) = channel();
    if let Some(argv) = cfg.health_cmd.clone() {
        commands::spawn_health_checks(
            argv,
            StdDuration::from_secs(cfg.health_interval_secs.max(1)),
            StdDuration::from_secs(cfg.health_timeout_secs.max(1)),
            tx.clone(),
            Arc::clone(&wake),
        )?;
    }
    let mut check: Option<(Health, String)> = None;
    let mut vote: Option<Vote> = None;
    let mut vote_seq = 0u64;
    let mut next_open = StdInstant::now();
    let mut port_open = false;
    let mut waiting_said = false;
    let mut events = Events::with_capacity(64);
    let mut stopping = false;
    let mut stop_deadline = None;
    eprintln!("vigil-guest: name {name:?}, api {}", cfg.api_socket.display());

    loop {
        // (re)open the port when it is closed
        if !port_open && StdInstant::now() >= next_open {
            let path = port::find_port(cfg.port.as_deref(), &cfg.sys_root, &cfg.dev_root);
            match path.as_deref().map(Port::open) {
                Some(Ok(p)) => {
                    let fd = p.raw_fd();
                    poll.registry().register(&mut SourceFd(&fd), PORT, Interest::READABLE | Interest::WRITABLE)?;
                    driver.replace_io(p);
                    port_open = true;
                    eprintln!(
                        "vigil-guest: port {} open",
                        path.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
                    );
                }
                _ => {
                    // the port may appear later (hot-plugged by the host: issue #21): look again, quietly
                    if !waiting_said {
                        eprintln!("vigil-guest: no heartbeat port yet; looking every {} ms", PORT_RETRY.as_millis());
                        waiting_said = true;
                    }
                    next_open = StdInstant::now() + PORT_RETRY;
                }
            }
        }

        // health of everything local, combined: the worst wins, actions combine stop > reboot > log > none
        let now = StdInstant::now();
        let app_next = apps.tick(now);
        let (health, act, msg) = combine(check.as_ref(), health_action, &apps, now);
        driver.agent_mut().set_health(health, act, &msg);

        // votes: one reject wins; everyone accepting answers at once; silent applications accept; a notification
        // command that gives no answer leaves the answer to the agent, which says `timeout`
        if let Some(v) = &vote {
            if let Some((result, why)) = vote_decision(v, &apps, now) {
                let _ = driver.agent_mut().answer_action(result, &why);
                vote = None;
            } else if v.started.elapsed() > StdDuration::from_secs(3600) {
                vote = None;
            }
        }

        let mut new_vote = None;
        let result = driver.poll(&mut |_: &mut Agent<XorShift32>, e: AgentEvent| match e {
            AgentEvent::ActionRequest { notify, deadline } => new_vote = Some((notify, deadline)),
            AgentEvent::Registered { invocation_id } => {
                eprintln!("vigil-guest: registered (invocation {invocation_id})")
            }
            AgentEvent::RegistrationLost => eprintln!("vigil-guest: challenges stopped; registering again"),
            AgentEvent::Nacked { log_msg } => eprintln!("vigil-guest: host refused a message: {log_msg}"),
            AgentEvent::ProtocolError(p) => eprintln!("vigil-guest: host protocol error: {p}"),
        });
        let next = match result {
            Ok(n) => n,
            Err(e) => {
                eprintln!("vigil-guest: port: {e}; reopening");
                if let Port::Device(_) | Port::Socket(_) = driver.io_mut() {
                    let fd = driver.io_mut().raw_fd();
                    let _ = poll.registry().deregister(&mut SourceFd(&fd));
                }
                driver.replace_io(Port::Closed);
                port_open = false;
                next_open = StdInstant::now() + PORT_RETRY;
                None
            }
        };
        if let Some((notify, deadline)) = new_vote {
            vote_seq += 1;
            apps.start_vote(notify.event_type, notify.notification_type, notify.timeout_ms);
            let left = StdDuration::from_millis(deadline.saturating_duration_since(driver_now(&clock)).as_millis());
            let mut v = Vote {
                id: vote_seq,
                kind: notify.notification_type,
                script: None,
                no_script: cfg.notify_cmd.is_none(),
                started: StdInstant::now(),
                apps_deadline: StdInstant::now() + left.saturating_sub(left.min(StdDuration::from_millis(200)) / 2),
            };
            match &cfg.notify_cmd {
                Some(cmd) => {
                    commands::spawn_vote(
                        vec![cmd.display().to_string()],
                        v.id,
                        notify.notification_type,
                        notify.event_type.as_str(),
                        left.max(StdDuration::from_millis(1)),
                        tx.clone(),
                        Arc::clone(&wake),
                    );
                }
                None => v.script = Some(Some((VoteResult::Accept, String::new()))),
            }
            vote = Some(v);
            continue; // decide at once if nobody is asked
        }

        if stopping {
            let done = driver.pending_tx() == 0 && port_open;
            if done || stop_deadline.is_some_and(|d| StdInstant::now() >= d) || !port_open {
                eprintln!("vigil-guest: exit sent; stopping");
                return Ok(());
            }
        }

        let mut timeout = StdDuration::from_secs(1);
        if let Some(n) = next {
            timeout = timeout.min(StdDuration::from(n.saturating_duration_since(driver_now(&clock))));
        }
        if let Some(t) = app_next {
            timeout = timeout.min(t.saturating_duration_since(StdInstant::now()));
        }
        if !port_open {
            timeout = timeout.min(next_open.saturating_duration_since(StdInstant::now()));
        }
        if stopping || driver.pending_tx() > 0 {
            timeout = timeout.min(StdDuration::from_millis(20));
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS if signals.pending().next().is_some() && !stopping => {
                    stopping = true;
                    stop_deadline = Some(StdInstant::now() + StdDuration::from_secs(2));
                    driver.agent_mut().shutdown("Exiting...");
                }
                WAKER => {}
                PORT => {}
                t if apps.owns(t) => apps.on_ready(t, poll.registry(), StdInstant::now()),
                _ => {}
            }
        }
        apps.flush_all();
        while let Ok(r) = reports.try_recv() {
            match r {
                Report::Health(h, m) => check = Some((h, m)),
                Report::Vote(id, v) => {
                    if let Some(vt) = vote.as_mut().filter(|vt| vt.id == id) {
                        vt.script = Some(v);
                    }
                }
            }
        }
    }
}

fn driver_now(clock: &StdClock) -> Instant {
    clock.now()
}

fn seed_from_time() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() ^ d.as_secs() as u32)
}

/// The combined health of the health check and every registered application.
fn combine(
    check: Option<&(Health, String)>,
    check_action: CorrectiveAction,
    apps: &Apps,
    now: StdInstant,
) -> (Health, CorrectiveAction, String) {
    let mut worst: Option<(CorrectiveAction, String)> = None;
    let mut consider = |action: CorrectiveAction, msg: String| {
        if worst.as_ref().is_none_or(|(a, _)| action > *a) {
            worst = Some((action, msg));
        }
    };
    if let Some((Health::Unhealthy, msg)) = check {
        consider(check_action, msg.clone());
    }
    for app in apps.iter() {
        let name = app.name.as_deref().unwrap_or("?");
        if Apps::is_silent(app, now) {
            consider(app.action, app.silent_reason());
        } else if app.health == Health::Unhealthy {
            consider(app.action, format!("{name}: {}", app.log_msg));
        }
    }
    match worst {
        Some((a, m)) => (Health::Unhealthy, a, m),
        None => (Health::Healthy, CorrectiveAction::None, String::new()),
    }
}

/// One reject wins; the command and every registered application answered decides (the command's `unknown`
/// stands if nobody rejects); past `apps_deadline`, silent applications accept. A command that gave no answer
/// decides nothing: the agent answers `timeout` on its own.
fn vote_decision(v: &Vote, apps: &Apps, now: StdInstant) -> Option<(VoteResult, String)> {
    let yes = if v.kind == NotificationType::Revocable { VoteResult::Accept } else { VoteResult::Complete };
    if let Some(Some((VoteResult::Reject, why))) = &v.script {
        return Some((VoteResult::Reject, why.clone()));
    }
    for app in apps.iter() {
        if let Some((VoteResult::Reject, why)) = &app.vote {
            return Some((VoteResult::Reject, format!("{}: {why}", app.name.as_deref().unwrap_or("?"))));
        }
    }
    let apps_done = apps.iter().all(|a| a.vote.is_some()) || now >= v.apps_deadline;
    match &v.script {
        Some(Some((result, why))) if apps_done => {
            let result = if v.no_script || *result == VoteResult::Accept { yes } else { *result };
            Some((result, why.clone()))
        }
        _ => None,
    }
}
