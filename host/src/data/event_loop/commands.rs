//! The loop's side of the control plane: commands answered at once, or (votes) when the guest answers.

use std::sync::Arc;

use vigil_core::Instant;

use super::Daemon;
use crate::control::{Command, FleetView};

impl Daemon {
    /// Commands from the control plane: answered at once, or (votes) when the guest answers.
    pub(super) fn on_commands(&mut self, now: Instant) {
        // the hypervisor's word first, on its own queue: a flood of API requests never delays "paused"
        for _ in 0..crate::control::LIFECYCLE_QUEUE {
            let Ok((guest, event)) = self.links.lifecycle.try_recv() else { break };
            self.fleet.handle_lifecycle(&guest, event, now);
        }
        // at most one view of the whole fleet per pass (one with status lines, one without), shared by every
        // request that asks for it
        let mut views: [Option<Arc<FleetView>>; 2] = [None, None];
        // bounded per wake-up: the control plane's queue is bounded, and what is left wakes us again
        for _ in 0..crate::control::COMMAND_QUEUE {
            let Ok(cmd) = self.links.commands.try_recv() else { break };
            match cmd {
                Command::Report { guest, event } => self.publish(guest.into(), event),
                Command::AgentWatch { guest, domain } => {
                    self.fleet.watch_agent(&guest, &domain, now);
                }
                Command::AgentUnwatch { guest } => self.fleet.unwatch_agent(&guest, now),
                Command::AgentHealth { guest, result, failure_threshold } => {
                    self.fleet.handle_agent_health(&guest, result, failure_threshold)
                }
                Command::AgentProbe { guest, probe, loss_threshold } => {
                    self.fleet.handle_agent_probe(&guest, probe, now, loss_threshold)
                }
                Command::ActionResult { guest, event, refund } => {
                    self.fleet.handle_action_result(&guest, event, refund)
                }
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
                Command::VoteAsync { guest, event_type, notification_type, reply } => {
                    let started = self.fleet.start_vote(&guest, event_type, notification_type, now);
                    let _ = reply.send(started.map(|s| s.timeout));
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
                Command::Guest { id, reply } => {
                    let _ = reply.send(self.fleet.status(&id, now));
                }
                Command::Snapshot { guests, reply } => {
                    let v = views[usize::from(guests)].get_or_insert_with(|| Arc::new(self.view(now, guests)));
                    let _ = reply.send(Arc::clone(v));
                }
            }
        }
        self.drive(now);
    }

    /// The whole fleet as the control plane sees it.
    fn view(&self, now: Instant, guests: bool) -> FleetView {
        let (counters, totals) = self.fleet.counters();
        let (by_state, in_maintenance) = self.fleet.state_counts();
        FleetView {
            guests: if guests { self.fleet.snapshot(now) } else { Vec::new() },
            by_state,
            in_maintenance,
            counters,
            totals,
            pass: self.pass.clone(),
            events_emitted: self.sink.seq(),
            events_dropped: self.sink.dropped(),
            control_dropped: self.control_dropped,
            reporting: self.fleet.reporting(),
        }
    }
}
