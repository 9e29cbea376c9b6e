//! Where a guest's deadlines fall in the interval: the coalescing grid, and the place the caller chose
//! ([`Monitor::set_phase`]).

use super::Monitor;
use crate::framer::LineStorage;
use crate::monitor::{ConfigSource, EventSlot};
use crate::time::{Duration, Instant};
use crate::IdSource;

impl<R: IdSource, S: LineStorage, E: EventSlot, C: ConfigSource> Monitor<R, S, E, C> {
    /// How much later than `at` a deadline should fall to be at the guest's place in the interval (see
    /// [`set_phase`](Self::set_phase)), at most half an interval (the rest is for the next interval): zero without a
    /// place, or once there. A deadline on the coalescing grid stays on it.
    pub(super) fn step_to_place(&self, at: Instant, interval: Duration) -> Duration {
        let Some(place) = self.phase.filter(|_| self.cfg().spread_phase) else {
            return Duration::ZERO;
        };
        let period = interval.as_millis().max(1);
        let step = self.cfg().coalesce_step(interval).as_millis().max(1);
        // the place, rounded up to the grid (which divides the interval)
        let want = ((u64::from(place).saturating_mul(period) >> 16).div_ceil(step).saturating_mul(step)) % period;
        let ahead = (want + period - at.as_millis() % period) % period;
        Duration::from_millis(ahead.min(period / 2 / step * step))
    }

    /// `at`, rounded up to the coalescing grid of `interval` (see [`MonitorConfig::coalesce`]).
    pub(super) fn on_grid(&self, at: Instant, interval: Duration) -> Instant {
        let step = self.cfg().coalesce_step(interval).as_millis();
        if step <= 1 {
            return at;
        }
        Instant::from_millis(at.as_millis().div_ceil(step).saturating_mul(step))
    }
}
