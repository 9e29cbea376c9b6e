//! [`ByteBudget`]: what a guest may make vigild read, as a token bucket on virtual time.
//!
//! An honest guest sends about 200 bytes per interval (one answer); the protocol's worst honest burst is a thawed
//! guest answering the challenges that queued up during a freeze (six answers) plus an `init`. A guest over its
//! budget is simply not read until it has budget again: its socket buffer fills and the guest blocks, which costs
//! the host nothing. This module owns the arithmetic only; it never touches a socket or a clock.

use vigil_core::{Duration, Instant};

/// Sizes of a guest's byte budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Bytes a guest may send per heartbeat interval (default 4 KiB: twenty honest answers, or four of the
    /// longest messages the protocol allows).
    pub bytes_per_interval: u64,
    /// Bytes it may send at once (default 8 KiB: a thawed guest's six queued answers and an `init`, with room).
    pub burst: u64,
    /// A guest kept over its budget this long is disconnected, with backoff (default 60 s).
    pub disconnect_after: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { bytes_per_interval: 4096, burst: 8192, disconnect_after: Duration::from_secs(60) }
    }
}

/// Smallest grant worth a read: a whole message of the largest size.
pub const MIN_GRANT: u64 = vigil_core::MAX_WIRE as u64;

/// A token bucket of bytes.
#[derive(Clone, Copy, Debug)]
pub struct ByteBudget {
    tokens: u64,
    /// Refill rate, bytes per second.
    rate: u64,
    burst: u64,
    refilled_at: Instant,
}

impl ByteBudget {
    /// A full bucket for a guest challenged every `interval`.
    pub fn new(cfg: &BudgetConfig, interval: Duration, now: Instant) -> Self {
        let mut b = ByteBudget { tokens: cfg.burst, rate: 0, burst: cfg.burst, refilled_at: now };
        b.set_interval(cfg, interval);
        b
    }

    /// The guest's interval changed (it registered): the rate follows it.
    pub fn set_interval(&mut self, cfg: &BudgetConfig, interval: Duration) {
        let ms = interval.as_millis().max(1);
        self.rate = (cfg.bytes_per_interval.saturating_mul(1000) / ms).max(1);
        self.burst = cfg.burst.max(MIN_GRANT);
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = (now - self.refilled_at).as_millis();
        let gained = elapsed.saturating_mul(self.rate) / 1000;
        if gained > 0 {
            self.tokens = self.tokens.saturating_add(gained).min(self.burst);
            // advance by what the gained tokens cost (rounded up, so a token is never granted twice; at most
            // `elapsed`, since `gained` was rounded down)
            self.refilled_at = if self.tokens == self.burst {
                now
            } else {
                self.refilled_at + Duration::from_millis(gained.saturating_mul(1000).div_ceil(self.rate))
            };
        }
    }

    /// Bytes the guest may be read now.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens
    }

    /// Takes `n` bytes (after a read).
    pub fn charge(&mut self, n: u64) {
        self.tokens = self.tokens.saturating_sub(n);
    }

    /// When at least [`MIN_GRANT`] bytes will be available again.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let need = MIN_GRANT.min(self.burst).saturating_sub(self.tokens);
        if need == 0 {
            now
        } else {
            now + Duration::from_millis(need.saturating_mul(1000).div_ceil(self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn bursts_then_refills_at_the_rate_of_the_interval() {
        let cfg = BudgetConfig::default();
        let mut b = ByteBudget::new(&cfg, Duration::from_secs(1), at(0));
        assert_eq!(b.available(at(0)), 8192);
        b.charge(8192);
        assert_eq!(b.available(at(0)), 0);
        assert_eq!(b.ready_at(at(0)), at(259), "1058 bytes at 4096 B/s");
        assert_eq!(b.available(at(500)), 2048);
        assert_eq!(b.available(at(500)), 2048, "asking again at the same time grants nothing more");
        assert_eq!(b.available(at(10_000)), 8192, "never more than the burst");
        // a faster interval refills faster
        b.set_interval(&cfg, Duration::from_millis(100));
        b.charge(8192);
        assert_eq!(b.available(at(10_100)), 4096);
    }

    #[test]
    fn an_honest_guest_never_comes_near_the_budget() {
        // 200 bytes per 400 ms (the reference floor) for an hour
        let cfg = BudgetConfig::default();
        let mut b = ByteBudget::new(&cfg, Duration::from_millis(400), at(0));
        for i in 0..9000u64 {
            let now = at(i * 400);
            assert!(b.available(now) >= cfg.burst - 200);
            b.charge(200);
        }
    }
}
