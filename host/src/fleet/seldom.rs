//! [`Seldom`]: what only some guests ever need — an over-budget episode, its counters, a vote in flight, a
//! maintenance window, the time of the last corrective action, the rate limits of error and flood reports. It is
//! kept on the heap from the first time a guest needs it, so that the entry of a quiet guest (most of them, most
//! of the time) stays small: a host keeps one entry per guest (issue #20: 2 KiB per guest for the whole process).
//!
//! What a guest that never needs it reads is the default: no episode, no vote, no window, full rate limits.

use vigil_core::Instant;

use super::{Guest, Ticket};
use crate::events::RateLimit;

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Seldom {
    /// Over budget since then (not read until `resume_at`).
    pub(super) throttled_since: Option<Instant>,
    pub(super) resume_at: Option<Instant>,
    /// Over-budget episodes.
    pub(super) rate_limited: u32,
    /// Messages dropped because the guest does not read.
    pub(super) tx_dropped: u32,
    pub(super) last_action: Option<Instant>,
    pub(super) errors: RateLimit,
    /// Over-budget reports have their own limit, so decode errors cannot hide them.
    pub(super) floods: RateLimit,
    /// The vote or notice in flight, for the caller.
    pub(super) vote: Option<Ticket>,
    /// An open maintenance window: until, and why.
    pub(super) maintenance: Option<(Instant, String)>,
}

impl Guest {
    /// The guest's seldom-used state, made on first use.
    pub(super) fn seldom(&mut self) -> &mut Seldom {
        self.seldom.get_or_insert_with(Box::default)
    }

    /// When an over-budget guest is read again, if it is over budget.
    pub(super) fn resume_at(&self) -> Option<Instant> {
        self.seldom.as_ref().and_then(|s| s.resume_at)
    }

    /// The open maintenance window: until, and why.
    pub(super) fn maintenance(&self) -> Option<&(Instant, String)> {
        self.seldom.as_ref().and_then(|s| s.maintenance.as_ref())
    }

    /// Over-budget episodes.
    pub(super) fn rate_limited(&self) -> u32 {
        self.seldom.as_ref().map_or(0, |s| s.rate_limited)
    }

    /// Messages dropped because the guest does not read.
    pub(super) fn tx_dropped(&self) -> u32 {
        self.seldom.as_ref().map_or(0, |s| s.tx_dropped)
    }

    /// When the last corrective action for this guest was queued.
    pub(super) fn last_action(&self) -> Option<Instant> {
        self.seldom.as_ref().and_then(|s| s.last_action)
    }

    /// The over-budget episode, if any, is over (a new connection, or the guest was read dry): nothing is made
    /// for a guest that never had one.
    pub(super) fn end_episode(&mut self, resumed: bool) {
        if let Some(s) = self.seldom.as_deref_mut() {
            if resumed {
                s.resume_at = None;
            }
            if s.resume_at.is_none() {
                s.throttled_since = None;
            }
        }
    }
}
