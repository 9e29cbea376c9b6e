//! Byte budgets in the fleet: how much a guest may be read now, and what happens when it has used it up
//! (not read until it has budget again, reported once per episode, disconnected if it keeps on).

use std::sync::Arc;

use vigil_core::{Duration, Instant};

use super::{Fleet, GuestKey, Link};
use crate::events::Event;

impl Fleet {
    /// Bytes guest `key` may be read now (0: over budget, do not read).
    pub fn read_allowance(&mut self, key: GuestKey, now: Instant) -> usize {
        match self.guests.get_mut(key) {
            Some(g) if g.link == Link::Connected && g.resume_at().is_none() => {
                usize::try_from(g.budget.available(now)).unwrap_or(usize::MAX)
            }
            _ => 0,
        }
    }

    /// The guest's socket was read until it had nothing more (`WouldBlock`): an over-budget episode, if any,
    /// has ended.
    pub fn handle_drained(&mut self, key: GuestKey) {
        if let Some(g) = self.guests.get_mut(key) {
            g.end_episode(false);
        }
    }

    /// The guest used up its byte budget with data still waiting: it is not read until it has budget again.
    /// The first time in an episode it is reported (`protocol_error` `rate_limited`); kept over budget for
    /// `disconnect_after`, it is disconnected with backoff.
    pub fn handle_over_budget(&mut self, key: GuestKey, now: Instant) {
        let Some(g) = self.guests.get_mut(key) else { return };
        if g.link != Link::Connected {
            return;
        }
        let resume = g.budget.ready_at(now).max(now + Duration::from_millis(1));
        let s = g.seldom();
        if s.throttled_since.is_none() {
            *self.counters.protocol_errors.entry("rate_limited").or_default() += 1;
        }
        s.resume_at = Some(resume);
        let since = *s.throttled_since.get_or_insert(now);
        if since == now {
            s.rate_limited = s.rate_limited.saturating_add(1);
            if let Some(suppressed) = s.floods.take(now.as_millis()) {
                let b = g.policy.budget;
                let detail = format!(
                    "over its byte budget ({} bytes per interval, burst {}): not read until it has budget again \
                     ({} bytes read so far, episode {})",
                    b.bytes_per_interval,
                    b.burst,
                    g.monitor.stats().bytes_in,
                    g.rate_limited()
                );
                let total = u64::from(g.monitor.stats().protocol_errors) + u64::from(g.rate_limited());
                let event = Event::ProtocolError { error: "rate_limited", detail, suppressed, total };
                self.events.push_back((Arc::clone(&g.id), event));
            }
        }
        if now >= since + g.policy.budget.disconnect_after {
            let secs = g.policy.budget.disconnect_after.as_millis() / 1000;
            g.flooded_out = true;
            self.close_and_retry(key, &format!("over its byte budget for {secs} s"), now);
            return;
        }
        self.reschedule(key);
    }
}
