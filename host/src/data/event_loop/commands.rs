//! The loop's side of the control plane: commands answered at once, or (votes) when the guest answers.

use vigil_core::Instant;

use super::Daemon;
use crate::control::{Command, FleetView};

impl Daemon {
    /// Commands from the control plane: answered at once, or (votes) when the guest answers.
    pub(super) fn on_commands(&mut self, now: Instant) {
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
                Command::Lifecycle { guest, event } => {
                    self.fleet.handle_lifecycle(&guest, event, now);
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
}
