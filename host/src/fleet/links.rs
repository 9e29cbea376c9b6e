//! The link to each guest's socket: connections made and lost, reconnect backoff (1 s doubling to 60 s, +-20 %
//! jitter, started over only after a healthy session), and the rate-limited `connected`/`disconnected` events.

use std::sync::Arc;

use vigil_core::{Duration, IdSource, Instant};

use super::{Fleet, GuestKey, Io, Link, Origin, HEALTHY_SESSION};
use crate::events::Event;
use crate::fleet::bucket::ByteBudget;

impl Fleet {
    /// The connection asked for is up.
    pub fn handle_connected(&mut self, key: GuestKey, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        g.link = Link::Connected;
        g.connections = g.connections.saturating_add(1);
        g.connected_at = now;
        g.heartbeats_at_connect = g.monitor.stats().heartbeats;
        g.end_episode(true);
        g.flooded_out = false;
        g.budget = ByteBudget::new(&g.policy.budget, Duration::from_secs(1), now);
        g.monitor.connected(now);
        if let Some(suppressed) = g.links.take(now.as_millis()) {
            let event = Event::Connected { socket: g.path.display().to_string(), suppressed };
            self.events.push_back((Arc::clone(&g.id), event));
        }
        self.after_input(key);
    }

    /// The connection asked for failed; `gone` when the socket file does not exist.
    pub fn handle_connect_failed(&mut self, key: GuestKey, gone: bool, now: Instant) {
        let Some(g) = self.guests.get(key) else { return };
        if gone && g.origin == Origin::Watched {
            self.remove_guest(key, "socket file gone", now);
        } else {
            self.schedule_reconnect(key, now);
        }
    }

    /// The I/O layer lost the connection (peer closed, read or write error).
    pub fn handle_closed(&mut self, key: GuestKey, reason: &str, now: Instant) {
        if self.guests.get(key).is_some_and(|g| g.link == Link::Connected) {
            self.close_and_retry(key, reason, now);
        }
    }

    pub(super) fn schedule_reconnect(&mut self, key: GuestKey, now: Instant) {
        let jitter = self.rng.next_id();
        let cfg = self.cfg;
        let Some(g) = self.guests.get_mut(key) else { return };
        // 1 s doubling to 60 s, +-20 % jitter so a node's guests do not reconnect in lockstep
        let delay = g.backoff.next(cfg.backoff_max, jitter);
        g.link = Link::Backoff;
        g.reconnect_at = now + delay;
        self.wheel.set(key, Some(g.reconnect_at));
    }

    /// Closes the connection: bookkeeping, `disconnected` (rate-limited), and an [`Io::Close`].
    pub(super) fn close(&mut self, key: GuestKey, reason: &str, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        g.link = Link::Backoff;
        if let Some(s) = g.seldom.as_deref_mut() {
            s.resume_at = None;
        }
        g.monitor.disconnected();
        if let Some(suppressed) = g.links.take(now.as_millis()) {
            let event = Event::Disconnected { reason: reason.to_owned(), suppressed };
            self.events.push_back((Arc::clone(&g.id), event));
        }
        self.io.push_back(Io::Close { key });
        self.drain_monitor(key, now);
    }

    /// Closes and schedules a reconnect; the backoff starts over only after a session that stayed healthy (it
    /// lasted [`HEALTHY_SESSION`], heartbeated, and was not cut for flooding), so a guest that connects and
    /// closes in a loop is slowed down to one attempt a minute.
    pub(super) fn close_and_retry(&mut self, key: GuestKey, reason: &str, now: Instant) {
        let backoff_min = self.cfg.backoff_min;
        if let Some(g) = self.guests.get_mut(key) {
            let lasted = now - g.connected_at;
            let heartbeated = g.monitor.stats().heartbeats > g.heartbeats_at_connect;
            let no_fault = g.monitor.fault().is_none();
            if lasted >= HEALTHY_SESSION && heartbeated && no_fault && !g.flooded_out {
                g.backoff.reset(backoff_min);
            }
        }
        self.close(key, reason, now);
        self.schedule_reconnect(key, now);
    }
}
