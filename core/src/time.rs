//! Time as the core sees it: a millisecond counter the caller supplies.
//!
//! The core never reads a clock. Every entry point takes an [`Instant`]; the caller decides where the epoch is
//! (boot, process start, a SysTick counter). Milliseconds are enough: the shortest protocol interval is 100 ms
//! and the reference floors it at 400 ms. A `u64` of milliseconds does not wrap for 584 million years.
//!
//! The conversion from the OS clock exists only under the `std` feature ([`StdClock`]).

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in milliseconds since an epoch the caller chose.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant {
    millis: u64,
}

/// A span of time in milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration {
    millis: u64,
}

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant { millis: 0 };

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant { millis }
    }

    /// An instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Instant { millis: secs.saturating_mul(1000) }
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration { millis: self.millis.saturating_sub(earlier.millis) }
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration { millis: 0 };

    /// `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration { millis }
    }

    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration { millis: secs.saturating_mul(1000) }
    }

    /// Length in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// `self * n`, saturating.
    pub const fn saturating_mul(self, n: u64) -> Duration {
        Duration { millis: self.millis.saturating_mul(n) }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant { millis: self.millis.saturating_add(rhs.millis) }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero: time never goes backwards in the core.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration { millis: self.millis.saturating_add(rhs.millis) }
    }
}

impl From<core::time::Duration> for Duration {
    fn from(d: core::time::Duration) -> Self {
        Duration { millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX) }
    }
}

impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_millis(d.millis)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}ms", self.millis)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.millis / 1000, self.millis % 1000)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.millis)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.millis)
    }
}

/// Reads the OS monotonic clock as core [`Instant`]s, with the epoch at the clock's creation.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug)]
pub struct StdClock {
    origin: std::time::Instant,
    past_ms: u64,
}

#[cfg(feature = "std")]
impl StdClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        StdClock { origin: std::time::Instant::now(), past_ms: 0 }
    }

    /// A clock whose epoch lies `past` before now, so that times remembered from before its creation (a previous
    /// run's, restored from disk) up to `past` ago are still distinct instants.
    pub fn with_past(past: Duration) -> Self {
        StdClock { origin: std::time::Instant::now(), past_ms: past.as_millis() }
    }

    /// Now, as a core instant.
    pub fn now(&self) -> Instant {
        self.instant(std::time::Instant::now())
    }

    /// An OS instant as a core instant (saturating at the epoch).
    pub fn instant(&self, t: std::time::Instant) -> Instant {
        let since = u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX);
        Instant::from_millis(since.saturating_add(self.past_ms))
    }
}

#[cfg(feature = "std")]
impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t - Instant::from_millis(10), Duration::ZERO);
        assert_eq!(Instant::from_millis(u64::MAX) + Duration::from_secs(1), Instant::from_millis(u64::MAX));
        assert_eq!(Duration::from_secs(2).as_millis(), 2000);
        assert_eq!(Duration::from(core::time::Duration::from_micros(1500)).as_millis(), 1);
    }
}
