//! The fleet's public types: keys, link states, tunables, and what it asks of the I/O layer.

use std::sync::Arc;

use vigil_core::{CorrectiveAction, Duration};

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
    /// With spread phases (the policy's `spread_phase`), guests side by side in the fleet's memory share a place in
    /// the interval in runs of this many (0: each guest's place is random). See [`PHASE_RUN`].
    pub phase_run: usize,
}

/// Default of [`FleetConfig::phase_run`]. A wake-up then walks runs of neighbours in the fleet's memory (and in the
/// kernel's: a run's sockets were connected one after another) instead of one guest here and one there. Issue #20,
/// 10,000 guests at 1 s, vigild's CPU per heartbeat in alternating runs: random places 13.7 and 15.0 µs, runs of 16
/// 11.6 and 12.3 µs, runs of 64 11.6 and 10.9 µs (BENCHMARKS.md). 32 guests challenged in the same pass is no
/// burst for a host or its guests; the runs themselves are spread over the interval (see `Fleet::add_guest`).
pub const PHASE_RUN: usize = 32;

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { backoff_min: Duration::from_secs(1), backoff_max: Duration::from_secs(60), phase_run: PHASE_RUN }
    }
}

/// A session this long, with heartbeats and no flooding, resets the backoff.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// What the fleet asks of the I/O layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// Connect to the guest's socket; answer with [`Fleet::handle_connected`](super::Fleet::handle_connected) or [`Fleet::handle_connect_failed`](super::Fleet::handle_connect_failed).
    Connect {
        /// The guest.
        key: GuestKey,
        /// Its socket.
        path: std::sync::Arc<std::path::Path>,
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
    /// The guest's id.
    pub guest: Arc<str>,
    /// `heartbeat_lost` or `unhealthy`.
    pub trigger: &'static str,
    /// The action (as effective: `unknown` never gets here).
    pub action: CorrectiveAction,
    /// How it is carried out.
    pub via: Via,
}

/// How a corrective action is carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// A command (`policy = "command"`).
    Command(Vec<String>),
    /// A libvirt call (`policy = "libvirt"`).
    Libvirt(LibvirtAction),
}

/// A corrective action through libvirt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LibvirtAction {
    /// What to do to the domain.
    pub op: LibvirtOp,
    /// Watch the domain's counters this long first; hold the action if they move.
    pub second_opinion: Option<std::time::Duration>,
    /// Save the screenshot and the console's tail first.
    pub evidence: bool,
}

/// A libvirt operation on a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibvirtOp {
    /// `virDomainReset`.
    Reset,
    /// `virDomainReboot`.
    Reboot,
    /// `virDomainDestroy`.
    Stop,
    /// `virDomainCreate`.
    Start,
}

impl LibvirtOp {
    /// Its name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            LibvirtOp::Reset => "reset",
            LibvirtOp::Reboot => "reboot",
            LibvirtOp::Stop => "stop",
            LibvirtOp::Start => "start",
        }
    }

    /// Whether it ends what the guest is doing (evidence and the second opinion apply).
    pub fn destructive(self) -> bool {
        self != LibvirtOp::Start
    }
}

/// A guest's line storage, made only while a line that arrived in parts waits for its end: most reads carry whole
/// lines, which the core frames without a copy, so an idle or well-behaved guest holds no line buffer at all.
#[derive(Debug, Default)]
pub struct LineOnDemand(Option<Box<[u8; vigil_core::LINE_BUF]>>);

impl vigil_core::LineStorage for LineOnDemand {
    fn buf(&mut self) -> &mut [u8; vigil_core::LINE_BUF] {
        self.0.get_or_insert_with(|| Box::new([0; vigil_core::LINE_BUF]))
    }

    fn release(&mut self) {
        self.0 = None;
    }
}

/// A guest's waiting event, on the heap only between the input that made it and the fleet's `poll_event` right
/// after (registrations, losses, health changes): 8 bytes per guest instead of an inline ~232-byte slot.
#[derive(Debug, Default)]
pub struct EventOnDemand(Option<Box<vigil_core::MonitorEvent>>);

impl vigil_core::EventSlot for EventOnDemand {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn put(&mut self, event: vigil_core::MonitorEvent) -> bool {
        if self.0.is_some() {
            return false;
        }
        self.0 = Some(Box::new(event));
        true
    }

    fn take(&mut self) -> Option<vigil_core::MonitorEvent> {
        self.0.take().map(|b| *b)
    }
}

/// A guest's Monitor tunables: those of its policy, shared by every guest under it (8 bytes a guest, not 48).
#[derive(Clone, Debug)]
pub struct PolicyConfig(pub std::sync::Arc<crate::config::Policy>);

impl vigil_core::ConfigSource for PolicyConfig {
    fn monitor_config(&self) -> &vigil_core::MonitorConfig {
        &self.0.monitor
    }
}

/// The core's Monitor as the fleet keeps it.
pub type GuestMonitor = vigil_core::Monitor<vigil_core::XorShift32, LineOnDemand, EventOnDemand, PolicyConfig>;
