//! The loop's side of corrective actions: each is handed to whoever carries it out (argv workers, the libvirt
//! recovery queue) without waiting, and what comes back is given to the fleet.

use std::sync::Arc;

use super::Daemon;
use crate::control::recovery::RecoveryJob;
use crate::events::Event;
use crate::fleet::{action_event, Via};
use crate::node::actions::ActionJob;

impl Daemon {
    /// Hands a corrective action to whoever carries it out, never waiting; `true` if it was refused at once
    /// (reported, and a libvirt action given back to the budget).
    pub(super) fn dispatch_action(&mut self, a: crate::fleet::ActionRequest) -> bool {
        match a.via {
            Via::Command(argv) => {
                let job = ActionJob { guest: a.guest, trigger: a.trigger, action: a.action, argv };
                let Err(job) = self.actions.submit(job) else { return false };
                let e = action_event(job.trigger, job.action, job.argv, None, Some("action queue full".into()));
                self.fleet.handle_action_outcome(job.guest, e);
            }
            Via::Libvirt(how) => {
                let job = RecoveryJob {
                    guest: Arc::clone(&a.guest),
                    trigger: a.trigger,
                    action: a.action,
                    how,
                    decided: std::time::Instant::now(),
                };
                let refused = match &self.links.recovery {
                    None => "no libvirt connection (policy = \"libvirt\" needs --libvirt)",
                    Some(tx) => match tx.try_send(job) {
                        Ok(()) => return false,
                        Err(_) => "recovery queue full",
                    },
                };
                let event = Event::ActionResult {
                    trigger: a.trigger,
                    corrective_action: a.action.as_str(),
                    operation: how.op.as_str(),
                    result: "failed",
                    reason: Some(refused.into()),
                    elapsed_ms: 0,
                    os_activity: None,
                    activity: None,
                    evidence: Vec::new(),
                };
                self.fleet.handle_action_result(&a.guest, event, true);
            }
        }
        true
    }

    pub(super) fn on_outcomes(&mut self) {
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
}
