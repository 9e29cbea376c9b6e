//! Budgets of corrective actions (issue #23): at most `budget` actions per guest per window, none before a minimum
//! uptime after the VM's last start (or vigild's own last action on it), a refusal reported once until the budget
//! refills. Kept by guest id, not by connection (a reset guest reconnects and must not start afresh), and exported
//! for the state directory so that a vigild restart never refills a budget.

use std::collections::HashMap;
use std::sync::Arc;

use vigil_core::{Duration, Instant};

use crate::config::RecoveryPolicy;

/// What the ledger remembers of one guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerEntry {
    /// When actions were taken, oldest first (only those inside the longest window that matters).
    pub actions: Vec<Instant>,
    /// The VM's last start, as the hypervisor told it.
    pub started: Option<Instant>,
    /// A refusal was reported and the budget has not refilled since.
    suppressed: bool,
}

impl LedgerEntry {
    /// An entry as saved.
    pub fn new(actions: Vec<Instant>, started: Option<Instant>) -> Self {
        LedgerEntry { actions, started, suppressed: false }
    }
}

/// Why an action may not run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The budget is spent; the oldest action leaves the window at `refills_at` (`None`: a budget of 0).
    Budget {
        /// When one more action is allowed.
        refills_at: Option<Instant>,
    },
    /// The VM has not run `min_uptime` yet.
    Uptime {
        /// When it will have.
        at: Instant,
    },
}

/// Every guest's actions.
#[derive(Debug, Default)]
pub struct Ledger {
    guests: HashMap<Arc<str>, LedgerEntry>,
    dirty: bool,
}

impl Ledger {
    /// May guest `id` get an action now under `p`? `Err((refusal, first))`: `first` is true the first time in an
    /// episode (report it then, not again until an action has been allowed).
    pub fn check(&mut self, id: &Arc<str>, p: &RecoveryPolicy, now: Instant) -> Result<(), (Refusal, bool)> {
        let e = self.guests.entry(Arc::clone(id)).or_default();
        let cutoff = Instant::from_millis(now.as_millis().saturating_sub(p.window.as_millis()));
        e.actions.retain(|&t| t > cutoff);
        let refusal = if p.budget == 0 {
            Some(Refusal::Budget { refills_at: None })
        } else if e.actions.len() >= p.budget as usize {
            let oldest = e.actions[e.actions.len() - p.budget as usize];
            Some(Refusal::Budget { refills_at: Some(oldest + p.window) })
        } else {
            let last_start = e.started.max(e.actions.last().copied());
            last_start.filter(|&t| now < t + p.min_uptime).map(|t| Refusal::Uptime { at: t + p.min_uptime })
        };
        match refusal {
            None => {
                e.suppressed = false; // the episode is over: a later refusal is news again
                Ok(())
            }
            Some(r) => {
                let first = !e.suppressed;
                e.suppressed = true;
                Err((r, first))
            }
        }
    }

    /// An action was taken now.
    pub fn record(&mut self, id: &Arc<str>, now: Instant) {
        let e = self.guests.entry(Arc::clone(id)).or_default();
        e.actions.push(now);
        e.suppressed = false;
        self.dirty = true;
    }

    /// The latest action was not carried out after all (held by the second opinion): it does not count.
    pub fn refund(&mut self, id: &str) {
        if let Some(e) = self.guests.get_mut(id) {
            e.actions.pop();
            self.dirty = true;
        }
    }

    /// The hypervisor started the guest's VM now.
    pub fn started(&mut self, id: &str, now: Instant) {
        let e = self.guests.entry(Arc::from(id)).or_default();
        e.started = Some(now);
        self.dirty = true;
    }

    /// Whether anything changed since the last call (the loop then saves [`Ledger::export`]).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Every guest with something to remember, actions no older than `keep`.
    pub fn export(&self, now: Instant, keep: Duration) -> Vec<(Arc<str>, LedgerEntry)> {
        let cutoff = now.as_millis().saturating_sub(keep.as_millis());
        self.guests
            .iter()
            .map(|(id, e)| {
                let actions = e.actions.iter().copied().filter(|t| t.as_millis() >= cutoff).collect();
                (Arc::clone(id), LedgerEntry { actions, started: e.started, suppressed: false })
            })
            .filter(|(_, e)| !e.actions.is_empty() || e.started.is_some())
            .collect()
    }

    /// What a previous run saved.
    pub fn import(&mut self, entries: impl IntoIterator<Item = (Arc<str>, LedgerEntry)>) {
        for (id, mut e) in entries {
            e.actions.sort_unstable();
            self.guests.insert(id, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_secs(10_000 + s)
    }

    #[test]
    fn three_an_hour_then_suppressed_once_until_refilled() {
        let p = RecoveryPolicy { min_uptime: Duration::from_secs(0), ..RecoveryPolicy::default() };
        let id: Arc<str> = "g".into();
        let mut l = Ledger::default();
        for s in [0, 100, 200] {
            assert_eq!(l.check(&id, &p, at(s)), Ok(()));
            l.record(&id, at(s));
        }
        let refill = Some(at(3600));
        assert_eq!(l.check(&id, &p, at(300)), Err((Refusal::Budget { refills_at: refill }, true)));
        assert_eq!(l.check(&id, &p, at(400)), Err((Refusal::Budget { refills_at: refill }, false)), "reported once");
        assert_eq!(l.check(&id, &p, at(3601)), Ok(()), "the oldest left the window");
        l.record(&id, at(3601));
        assert_eq!(l.check(&id, &p, at(3650)), Err((Refusal::Budget { refills_at: Some(at(3700)) }, true)));
        assert!(l.take_dirty());
        assert!(!l.take_dirty());
    }

    #[test]
    fn minimum_uptime_after_a_start_or_an_action_and_refunds() {
        let p = RecoveryPolicy::default(); // 120 s
        let id: Arc<str> = "g".into();
        let mut l = Ledger::default();
        assert_eq!(l.check(&id, &p, at(0)), Ok(()), "no known start: the heartbeat's verdict stands");
        l.started("g", at(10));
        assert_eq!(l.check(&id, &p, at(60)), Err((Refusal::Uptime { at: at(130) }, true)));
        assert_eq!(l.check(&id, &p, at(131)), Ok(()));
        l.record(&id, at(131));
        assert_eq!(l.check(&id, &p, at(200)), Err((Refusal::Uptime { at: at(251) }, true)), "after its own reset");
        l.refund("g");
        assert_eq!(l.check(&id, &p, at(200)), Ok(()), "a held action does not count");
        let none = RecoveryPolicy { budget: 0, ..p };
        assert_eq!(l.check(&id, &none, at(500)), Err((Refusal::Budget { refills_at: None }, true)));
    }

    #[test]
    fn export_and_import_keep_the_budget() {
        let p = RecoveryPolicy { min_uptime: Duration::from_secs(0), ..RecoveryPolicy::default() };
        let id: Arc<str> = "g".into();
        let mut l = Ledger::default();
        for s in [0, 10, 20] {
            l.record(&id, at(s));
        }
        let saved = l.export(at(30), Duration::from_secs(86_400));
        let mut again = Ledger::default();
        again.import(saved);
        assert!(matches!(again.check(&id, &p, at(40)), Err((Refusal::Budget { .. }, true))));
    }
}
