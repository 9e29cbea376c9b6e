//! What the hypervisor says of each VM (libvirt or QMP lifecycle events), and the verdicts that follow: a paused,
//! rebooting or stopped VM is never declared lost and never gets a corrective action; a crash is reported at once;
//! a hang the hypervisor did not cause is still a loss within the bound.

use std::sync::Arc;

use vigil_core::{Duration, Instant};

use super::{Fleet, GuestKey};
use crate::events::Event;

/// A lifecycle event from the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// The VM started (or was started again).
    Started,
    /// Its vCPUs were paused (suspend, a migration stun, a snapshot).
    Paused,
    /// They run again.
    Resumed,
    /// It is rebooting (reset or an ACPI reboot).
    Rebooting,
    /// It shut down or was destroyed.
    Stopped,
    /// Its kernel panicked (`pvpanic`).
    Crashed,
}

/// The VM's state as the hypervisor said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vm {
    /// Running (or nothing said: the default without a lifecycle source).
    Running,
    /// Paused: loss detection suspended.
    Paused,
    /// Rebooting: a new `init` is expected before `until` (its `restart_secs`).
    Rebooting {
        /// When the guest is overdue.
        until: Instant,
    },
    /// Shut down or destroyed: never a loss.
    Stopped,
    /// Crashed (reported once): no loss on top of it.
    Crashed,
}

impl Vm {
    /// The state's word in the status.
    pub fn word(self) -> &'static str {
        match self {
            Vm::Running => "heartbeating",
            Vm::Paused => "paused",
            Vm::Rebooting { .. } => "rebooting",
            Vm::Stopped => "stopped",
            Vm::Crashed => "crashed",
        }
    }
}

/// How long a rebooting guest has when it never told its `restart_secs`.
pub const DEFAULT_RESTART: Duration = Duration::from_secs(601);

impl Fleet {
    /// The hypervisor says `event` happened to guest `id`'s VM. `false` if no guest has that id.
    pub fn handle_lifecycle(&mut self, id: &str, event: Lifecycle, now: Instant) -> bool {
        if event == Lifecycle::Started {
            self.ledger.started(id, now); // minimum uptime counts from here, whether or not its socket is open yet
        }
        let Some(key) = self.find(id) else {
            if self.agent_lifecycle(id, event, now) {
                return true;
            }
            // a VM that stops takes its socket with it: its guest may be gone already; say what happened to it
            let recent = self.removed.iter().find(|(g, t)| &**g == id && now < *t + Duration::from_secs(60));
            if let (Some((g, _)), Lifecycle::Stopped | Lifecycle::Crashed) = (recent, event) {
                let e = if event == Lifecycle::Stopped { Event::Stopped {} } else { Event::Crashed {} };
                self.events.push_back((Arc::clone(g), e));
            }
            return false;
        };
        let g = &mut self.guests[key];
        let gid = Arc::clone(&g.id);
        let (vm, said) = match event {
            Lifecycle::Paused => (Vm::Paused, Some(Event::Paused {})),
            Lifecycle::Resumed => {
                // it could not answer while paused: count misses from now
                g.monitor.rechallenge(now);
                (Vm::Running, Some(Event::Resumed {}))
            }
            Lifecycle::Rebooting => {
                let secs = g
                    .monitor
                    .registration()
                    .map_or(DEFAULT_RESTART.as_millis() / 1000, |r| u64::from(r.init.restart_secs))
                    .min(u64::from(g.policy.caps.restart_secs));
                (Vm::Rebooting { until: now + Duration::from_secs(secs) }, Some(Event::Rebooting {}))
            }
            Lifecycle::Stopped => (Vm::Stopped, Some(Event::Stopped {})),
            Lifecycle::Started => (Vm::Running, None),
            Lifecycle::Crashed => (Vm::Crashed, Some(Event::Crashed {})),
        };
        g.vm = vm;
        if let Some(e) = said {
            self.events.push_back((gid, e));
        }
        if event == Lifecycle::Crashed {
            let action = self.guests[key].requested;
            self.act(key, "crashed", action, now);
        }
        self.after_input(key);
        true
    }

    /// A rebooting guest did not register again within its `restart_secs`: that is a loss, and says so.
    pub(super) fn reboot_overdue(&mut self, key: GuestKey, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        let Vm::Rebooting { .. } = g.vm else { return };
        g.vm = Vm::Running;
        let action = g.requested;
        let event = Event::HeartbeatLost {
            consecutive_misses: 0,
            last_heartbeat: None,
            corrective_action: action.as_str(),
            reason: Some("rebooted, and no init within its restart_secs".into()),
            probe: None,
        };
        self.events.push_back((Arc::clone(&g.id), event));
        self.act(key, "heartbeat_lost", action, now);
        self.reschedule(key);
    }
}
