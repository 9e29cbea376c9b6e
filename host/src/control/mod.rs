//! The control plane: a tokio runtime on its own thread, serving the admin API ([`api`]) and metrics, linked to
//! the data plane only by bounded channels and the loop's `Waker`.
//!
//! Commands go in with `try_send` (a full queue answers 503, never waits) and wake the loop; the loop answers on a
//! oneshot, never waiting for the receiver. Events come out of the loop with `try_send` too (a full queue is
//! counted). The control thread may wait on sockets and clients; the data plane never waits on it.

pub mod agentless;
pub mod api;
pub mod client;
pub mod evidence;
pub mod hotplug;
pub mod libvirt;
pub mod lifecycle;
pub mod qga_direct;
pub mod recovery;
pub mod render;
pub mod serve;
mod spooler;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use vigil_core::{EventType, NotificationType};

use crate::events::Event;
use crate::fleet::{Counters, Totals, VoteDone, VoteRefusal};
use crate::metrics::Buckets;
use crate::node::status::GuestStatus;

/// Depth of the command queue into the loop.
pub const COMMAND_QUEUE: usize = 1024;
/// Depth of the lifecycle queue into the loop (its own: a busy API never crowds out "this VM was paused").
pub const LIFECYCLE_QUEUE: usize = 4096;
/// Depth of the event queue out of the loop: every guest of a large node changing state at once.
pub const EVENT_QUEUE: usize = 65_536;

/// What the control plane asks of the data plane.
#[derive(Debug)]
pub enum Command {
    /// An event the control plane observed (hot-plug of a guest's channel): written, numbered and delivered
    /// upstream like the loop's own.
    Report {
        /// Guest id.
        guest: String,
        /// What happened.
        event: Event,
    },
    /// Start a vote or notice and answer at once with its timeout (the StarlingX VIM's way); the result is a
    /// `vote_result` event, delivered upstream like any other.
    VoteAsync {
        /// Guest id.
        guest: String,
        /// The event.
        event_type: EventType,
        /// Vote or notice (default: as the reference).
        notification_type: Option<NotificationType>,
        /// The guest's timeout, or why there is none.
        reply: oneshot::Sender<Result<vigil_core::Duration, VoteRefusal>>,
    },
    /// Run a vote or notice and answer when the guest does (or the time runs out).
    Vote {
        /// Guest id.
        guest: String,
        /// The event.
        event_type: EventType,
        /// Vote or notice (default: as the reference, a vote for events that can be refused).
        notification_type: Option<NotificationType>,
        /// The answer.
        reply: oneshot::Sender<Result<VoteDone, VoteRefusal>>,
    },
    /// Open (`Some(secs)`) or end (`None`) a maintenance window; answers whether the guest exists.
    Maintenance {
        /// Guest id.
        guest: String,
        /// Length, or `None` to end it.
        secs: Option<u64>,
        /// Why.
        reason: String,
        /// Whether the guest exists.
        reply: oneshot::Sender<bool>,
    },
    /// Turn fault reporting on or off, for one guest or (`None`) the whole host.
    Reporting {
        /// Guest id, or the host.
        guest: Option<String>,
        /// On or off.
        on: bool,
        /// Whether the guest exists.
        reply: oneshot::Sender<bool>,
    },
    /// What the data plane sees now (one view is built per pass and shared by every request in it).
    Snapshot {
        /// With every guest's status line (`GET /v1/guests`); without (`/metrics`: counts by state only, no
        /// allocation per guest).
        guests: bool,
        /// The view.
        reply: oneshot::Sender<Arc<FleetView>>,
    },
    /// A libvirt corrective action ended (`refund`: it was held, so it does not count against the budget).
    ActionResult {
        /// Guest id.
        guest: String,
        /// The `action_result` event.
        event: Event,
        /// Give the action back to the guest's budget.
        refund: bool,
    },
    /// Watch a domain through its guest agent (`[qga]`).
    AgentWatch {
        /// Guest id (the domain's UUID).
        guest: String,
        /// The domain's name.
        domain: String,
    },
    /// The domain is gone.
    AgentUnwatch {
        /// Guest id.
        guest: String,
    },
    /// How one probe of an agentless guest went.
    AgentProbe {
        /// Guest id.
        guest: String,
        /// The outcome.
        probe: crate::fleet::agentless::Probe,
        /// Loss when consecutive misses exceed this.
        loss_threshold: u32,
    },
    /// How one run of an agentless guest's health command went.
    AgentHealth {
        /// Guest id.
        guest: String,
        /// `Err`: why it failed.
        result: Result<(), String>,
        /// Unhealthy after this many failures in a row.
        failure_threshold: u32,
    },
    /// One guest's status, found by id.
    Guest {
        /// Guest id.
        id: String,
        /// Its status, if there is such a guest.
        reply: oneshot::Sender<Option<GuestStatus>>,
    },
}

/// The data plane's state as the control plane sees it (for `GET /v1/guests` and `/metrics`).
#[derive(Clone, Debug)]
pub struct FleetView {
    /// Every guest (empty in a view asked for without them).
    pub guests: Vec<GuestStatus>,
    /// Guests by state word.
    pub by_state: Vec<(&'static str, u64)>,
    /// Guests with a maintenance window open.
    pub in_maintenance: u64,
    /// Fleet-wide counters.
    pub counters: Counters,
    /// Monotonic totals of per-guest counters.
    pub totals: Totals,
    /// Time of the loop's passes.
    pub pass: Buckets,
    /// Events written (`seq`).
    pub events_emitted: u64,
    /// Events dropped by the local writer.
    pub events_dropped: u64,
    /// Events the control plane's queue could not take.
    pub control_dropped: u64,
    /// Fault reporting for the whole host.
    pub reporting: bool,
}

/// The loop's end of the links: commands in, events out.
pub struct LoopSide {
    /// Commands from the control plane.
    pub commands: std::sync::mpsc::Receiver<Command>,
    /// What the hypervisor did to a guest's VM (guest id, event), on a queue of its own.
    pub lifecycle: std::sync::mpsc::Receiver<(String, crate::fleet::Lifecycle)>,
    /// Events to the control plane (`None` once the loop has let go of it, at a stop).
    pub events: Option<mpsc::Sender<(Arc<str>, Event)>>,
    /// Libvirt corrective actions to carry out (`None` without `--libvirt`).
    pub recovery: Option<mpsc::Sender<recovery::RecoveryJob>>,
}

/// How the control plane listens.
#[derive(Clone, Debug, Default)]
pub struct ControlConfig {
    /// The admin API's UNIX socket.
    pub admin_socket: Option<PathBuf>,
    /// Group that may use it (mode 0660); default: root's.
    pub admin_group: Option<String>,
    /// Also serve on this loopback TCP address, with a bearer token.
    pub admin_tcp: Option<std::net::SocketAddr>,
    /// The token's file (required with `admin_tcp`).
    pub admin_token_file: Option<PathBuf>,
    /// Allow `admin_tcp` on an address other than loopback (a management network, for `vigild relay` on the
    /// controller); the token is still required.
    pub admin_tcp_remote: bool,
    /// Upstream delivery: the spool and its sinks (none: events stay local).
    pub upstream: Option<Upstream>,
    /// Lifecycle sources (libvirt, QMP).
    pub lifecycle: lifecycle::LifecycleConfig,
    /// A read-only listener (`/`, `/metrics`, `/healthz`) without a token, for scrapers and the status page.
    pub web_listen: Option<std::net::SocketAddr>,
    /// Corrective actions through libvirt, and where their evidence goes.
    pub recovery: Option<recovery::RecoveryConfig>,
    /// Agentless guests through the stock QEMU guest agent (libvirt).
    pub qga: Option<agentless::QgaRunConfig>,
    /// Agentless guests on plain QEMU: the agent's own sockets (`--qga-pattern`).
    pub qga_direct: Option<qga_direct::QgaDirectConfig>,
}

/// The spool and the sinks that read it.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Where the spool lives.
    pub state_dir: PathBuf,
    /// Records that may wait before the oldest are dropped.
    pub cap: u64,
    /// The sinks.
    pub sinks: Vec<crate::upstream::SinkConfig>,
    /// Host name and instance mapping.
    pub ctx: crate::upstream::Context,
    /// How long a sink retries one record before it goes to the dead letters.
    pub max_record_age: std::time::Duration,
}

/// State shared by the control thread's tasks.
pub struct Shared {
    commands: SyncSender<Command>,
    lifecycle: SyncSender<(String, crate::fleet::Lifecycle)>,
    wake: Arc<dyn Fn() + Send + Sync>,
    /// Events seen by the control plane, by kind.
    pub events_by_kind: Mutex<BTreeMap<&'static str, u64>>,
    /// Commands refused because the queue was full.
    pub commands_refused: AtomicU64,
    /// The spool, when events go upstream.
    pub spool: Option<Arc<crate::upstream::spool::Spool>>,
    /// Each sink's name and counters.
    pub sinks: Vec<(String, Arc<crate::upstream::SinkStats>)>,
    /// Host name and instance mapping (for the StarlingX API).
    pub ctx: crate::upstream::Context,
    /// The latest events, for the status page (at most [`RECENT`]).
    pub recent: Mutex<std::collections::VecDeque<Recent>>,
    /// Where evidence saved before corrective actions is (`GET /v1/guests/{id}/evidence`).
    pub evidence_dir: Option<PathBuf>,
    /// Libvirt corrective actions seen, by result.
    pub action_results: Mutex<BTreeMap<&'static str, u64>>,
}

/// Events the status page shows.
pub const RECENT: usize = 50;

/// One recent event, as the status page shows it.
#[derive(Clone, Debug)]
pub struct Recent {
    /// When the control plane saw it (RFC 3339).
    pub time: String,
    /// The guest.
    pub guest: String,
    /// Its kind.
    pub kind: &'static str,
    /// Its fields, as JSON, cut to 300 bytes.
    pub detail: String,
}

impl Shared {
    /// Tells the loop what the hypervisor did to guest `guest`'s VM, on the lifecycle queue (never crowded out by
    /// API requests), and wakes it; `false` if even that queue is full.
    pub fn lifecycle(&self, guest: &str, event: crate::fleet::Lifecycle) -> bool {
        match self.lifecycle.try_send((guest.to_string(), event)) {
            Ok(()) => {
                (self.wake)();
                true
            }
            Err(_) => false,
        }
    }

    /// Sends a command to the loop and wakes it; `false` if the queue is full.
    pub fn send(&self, c: Command) -> bool {
        match self.commands.try_send(c) {
            Ok(()) => {
                (self.wake)();
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.commands_refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The running control thread.
pub struct Control {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Control {
    /// Starts the control thread. Returns it and the loop's end of the links. Fails if a listener cannot be set
    /// up (a bad socket path or group, a missing token file): the daemon does not start half-configured.
    pub fn start(cfg: ControlConfig, wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<(Control, LoopSide)> {
        let (cmd_tx, cmd_rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        let (lc_tx, lc_rx) = std::sync::mpsc::sync_channel(LIFECYCLE_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // listeners are bound and the spool opened here, so errors reach the caller before the daemon runs
        let listeners = rt.block_on(api::bind(&cfg))?;
        let upstream = match &cfg.upstream {
            Some(u) if !u.sinks.is_empty() => Some(spooler::open(u).map_err(std::io::Error::other)?),
            _ => None,
        };
        let shared = Arc::new(Shared {
            commands: cmd_tx,
            lifecycle: lc_tx,
            wake,
            events_by_kind: Mutex::new(BTreeMap::new()),
            commands_refused: AtomicU64::new(0),
            spool: upstream.as_ref().map(|u| Arc::clone(&u.spool)),
            sinks: upstream.as_ref().map(|u| u.stats.clone()).unwrap_or_default(),
            ctx: cfg.upstream.as_ref().map(|u| u.ctx.clone()).unwrap_or_default(),
            recent: Mutex::default(),
            evidence_dir: cfg.recovery.as_ref().map(|r| r.evidence_dir.clone()),
            action_results: Mutex::default(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let sh = Arc::clone(&shared);
        let writer = match upstream {
            Some(up) => Some(spooler::start(up, ev_rx, Arc::clone(&shared), rt.handle())?),
            None => {
                rt.spawn(count_events(ev_rx, Arc::clone(&shared)));
                None
            }
        };
        // one libvirt connection per URI serves recovery and the agentless probes
        let mut clients: std::collections::HashMap<String, Result<libvirt::Libvirt, libvirt::Error>> =
            std::collections::HashMap::new();
        let mut client =
            |uri: &str| clients.entry(uri.to_string()).or_insert_with(|| libvirt::Libvirt::new(uri)).clone();
        let recovery_tx = cfg.recovery.clone().map(|rc| {
            let (tx, rx) = mpsc::channel(recovery::RECOVERY_QUEUE);
            let lv = client(&rc.libvirt);
            rt.spawn(recovery::run(rc, lv, Arc::clone(&shared), rx));
            tx
        });
        if let Some(q) = cfg.qga.clone() {
            let lv = client(&q.libvirt);
            rt.spawn(agentless::run(q, lv, Arc::clone(&shared)));
        }
        if let Some(q) = cfg.qga_direct.clone() {
            rt.spawn(qga_direct::run(q, Arc::clone(&shared)));
        }
        let lc = cfg.lifecycle.clone();
        let lc_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("vigild-control".into()).spawn(move || {
            crate::sys::background_thread();
            rt.block_on(async move {
                if let Err(e) = lifecycle::start(&lc, lc_shared) {
                    tracing::warn!(error = %e, "lifecycle sources not started");
                }
                api::serve(listeners, sh, stop_rx).await
            });
        })?;
        Ok((
            Control { stop: Some(stop_tx), thread: Some(thread), writer },
            LoopSide { commands: cmd_rx, lifecycle: lc_rx, events: Some(ev_tx), recovery: recovery_tx },
        ))
    }

    /// Stops serving (requests in flight are dropped) and joins the thread. The spool writer finishes what the
    /// loop handed it (the loop drops its end of the event queue first), for at most two seconds.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(w) = self.writer.take() {
            let start = std::time::Instant::now();
            while !w.is_finished() && start.elapsed() < std::time::Duration::from_secs(2) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn count_events(mut rx: mpsc::Receiver<(Arc<str>, Event)>, shared: Arc<Shared>) {
    while let Some((guest, e)) = rx.recv().await {
        shared.seen(&guest, &e);
    }
}

impl Shared {
    /// Counts an event by kind and keeps it among the recent ones.
    pub fn seen(&self, guest: &str, e: &Event) {
        self.count(e.kind());
        if let Event::ActionResult { result, .. } = e {
            if let Ok(mut m) = self.action_results.lock() {
                *m.entry(result).or_default() += 1;
            }
        }
        let mut detail = serde_json::to_string(e).unwrap_or_default();
        if detail.len() > 300 {
            let mut cut = 300;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        let r = Recent {
            time: crate::events::rfc3339(std::time::SystemTime::now()),
            guest: guest.to_string(),
            kind: e.kind(),
            detail,
        };
        if let Ok(mut q) = self.recent.lock() {
            if q.len() >= RECENT {
                q.pop_front();
            }
            q.push_back(r);
        }
    }

    /// Counts an event by kind.
    pub fn count(&self, kind: &'static str) {
        if let Ok(mut m) = self.events_by_kind.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_command_queue_never_holds_back_a_lifecycle_event() {
        let (cmd_tx, cmd_rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        let (lc_tx, lc_rx) = std::sync::mpsc::sync_channel(LIFECYCLE_QUEUE);
        let shared = Shared {
            commands: cmd_tx,
            lifecycle: lc_tx,
            wake: Arc::new(|| {}),
            events_by_kind: Mutex::new(BTreeMap::new()),
            commands_refused: AtomicU64::new(0),
            spool: None,
            sinks: Vec::new(),
            ctx: crate::upstream::Context::default(),
            recent: Mutex::default(),
            evidence_dir: None,
            action_results: Mutex::default(),
        };
        // API requests pile up faster than the loop takes them: the command queue is full
        let mut replies = Vec::new();
        loop {
            let (tx, rx) = oneshot::channel();
            replies.push(rx);
            if !shared.send(Command::Snapshot { guests: true, reply: tx }) {
                break;
            }
        }
        assert_eq!(shared.commands_refused.load(Ordering::Relaxed), 1);
        // the hypervisor pauses a VM meanwhile: that still gets through, and the loop reads it first
        assert!(shared.lifecycle("vm-1", crate::fleet::Lifecycle::Paused));
        let side = LoopSide { commands: cmd_rx, lifecycle: lc_rx, events: None, recovery: None };
        assert_eq!(side.lifecycle.try_recv().ok(), Some(("vm-1".to_string(), crate::fleet::Lifecycle::Paused)));
        assert_eq!(side.commands.try_iter().count(), COMMAND_QUEUE);
    }
}
