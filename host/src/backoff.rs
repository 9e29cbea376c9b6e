//! [`Backoff`]: how long to wait before the next try, for everything in vigild that retries (guest reconnects,
//! sink deliveries, lifecycle sources). The delay starts at a minimum, doubles on each failure up to a maximum, and
//! each wait is spread +-20 % at random so that many peers failing together do not retry in lockstep.
//!
//! It holds only the current delay (8 bytes: the fleet keeps one per guest); the bounds and the randomness come
//! from the caller, so it is sans-IO and exact on virtual time.

use vigil_core::Duration;

/// The current delay of one retrying thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    current: Duration,
}

impl Backoff {
    /// A backoff whose first wait is about `min`.
    pub const fn starting_at(min: Duration) -> Self {
        Backoff { current: min }
    }

    /// The wait before the next try (the current delay, +-20 % by `random`); the delay then doubles, up to `max`.
    pub fn next(&mut self, max: Duration, random: u32) -> Duration {
        let base = self.current.as_millis();
        let spread = base / 5;
        let wait = Duration::from_millis(base - spread + u64::from(random) % (2 * spread + 1));
        self.current = (self.current + self.current).min(max);
        wait
    }

    /// [`next`](Self::next) as a `std::time::Duration`, for the threads that sleep on the OS clock.
    pub fn next_std(&mut self, max: Duration, random: u32) -> std::time::Duration {
        std::time::Duration::from_millis(self.next(max, random).as_millis())
    }

    /// Starts over at `min` (after a success that counts).
    pub fn reset(&mut self, min: Duration) {
        self.current = min;
    }

    /// The delay the next wait is spread around.
    pub fn current(&self) -> Duration {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_within_a_fifth_and_starts_over_on_reset() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut b = Backoff::starting_at(min);
        let waits: Vec<u64> = (0..8).map(|i| b.next(max, i * 7919).as_millis()).collect();
        let bases = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000];
        for (w, base) in waits.iter().zip(bases) {
            assert!((base - base / 5..=base + base / 5).contains(w), "{w} around {base}");
        }
        assert_eq!(b.next(max, 0).as_millis(), 48_000, "the smallest draw is the base less a fifth");
        assert_eq!(b.next(max, 24_000).as_millis(), 72_000, "the largest is the base and a fifth");
        b.reset(min);
        assert_eq!(b.current(), min);
    }
}
