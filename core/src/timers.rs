//! A fixed table of deadlines indexed by a small enum, as in quinn-proto: no heap, the next deadline is the
//! smallest entry. Stored as raw milliseconds with `u64::MAX` for "unset", to keep the state machines small.

use crate::time::Instant;

const UNSET: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timers<const N: usize>([u64; N]);

impl<const N: usize> Timers<N> {
    pub(crate) const fn new() -> Self {
        Timers([UNSET; N])
    }

    pub(crate) fn set(&mut self, i: usize, at: Instant) {
        // An instant of u64::MAX ms is the end of time; treat it as unset rather than corrupt the table.
        self.0[i] = at.as_millis();
    }

    pub(crate) fn stop(&mut self, i: usize) {
        self.0[i] = UNSET;
    }

    pub(crate) fn clear(&mut self) {
        self.0 = [UNSET; N];
    }

    pub(crate) fn get(&self, i: usize) -> Option<Instant> {
        let v = self.0[i];
        (v != UNSET).then(|| Instant::from_millis(v))
    }

    pub(crate) fn is_due(&self, i: usize, now: Instant) -> bool {
        self.0[i] != UNSET && self.0[i] <= now.as_millis()
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        let min = self.0.iter().copied().min().unwrap_or(UNSET);
        (min != UNSET).then(|| Instant::from_millis(min))
    }
}
