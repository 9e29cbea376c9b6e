//! [`MonitorConfig`]: the tunables of a [`Monitor`](super::Monitor).

use crate::time::Duration;

/// Tunables of a [`Monitor`](super::Monitor); `Default` gives the reference behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MonitorConfig {
    /// Loss is declared when consecutive misses exceed this (default 1: at the second miss).
    pub loss_threshold: u32,
    /// The guest's requested interval is raised to at least this (default 100 ms; StarlingX used 400 ms).
    pub min_interval: Duration,
    /// ... and lowered to at most this (default 60 s), so a guest cannot make itself unmonitored.
    pub max_interval: Duration,
    /// A connected guest that has not registered within this is reported as
    /// [`MonitorEvent::RegistrationTimeout`](super::MonitorEvent::RegistrationTimeout), so the caller can reconnect (default 120 s).
    pub registration_timeout: Duration,
    /// At most one `nack` per this span (default 1 s): a flooding guest cannot make the host write at its pace.
    pub nack_interval: Duration,
    /// After a registration, delay the second challenge by a random part (up to half) of the interval, so that
    /// guests registering at once (a restart of the host daemon) do not keep challenge phases aligned forever; or,
    /// if the caller chose a place in the interval ([`Monitor::set_phase`](super::Monitor::set_phase)), towards
    /// that place, by at most half an interval per interval.
    /// Within the protocol: a guest expects a challenge within max(2 x interval, 5 s). Default off (exact
    /// timing); the host daemon turns it on.
    pub spread_phase: bool,
    /// Coalescing of challenge deadlines (default zero: off). When set, every challenge deadline of a guest falls
    /// on a multiple of a *step*: the largest whole number of milliseconds that is at most this, at most 1 % of
    /// the interval, and divides the interval. Only the phase moves (the first deadline is rounded up, by less than
    /// one step); the period and every verdict stay exact. A host with thousands of guests sets it (vigild: 10 ms)
    /// so that one wake-up serves every challenge due in the same step instead of one wake-up per guest.
    pub coalesce: Duration,
}

impl MonitorConfig {
    /// The coalescing step for `interval` (zero when [`coalesce`](Self::coalesce) is off).
    pub fn coalesce_step(&self, interval: Duration) -> Duration {
        let interval = interval.as_millis();
        let cap = self.coalesce.as_millis().min(interval / 100);
        (1..=cap).rev().find(|&d| interval.is_multiple_of(d)).map_or(Duration::ZERO, Duration::from_millis)
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            loss_threshold: 1,
            min_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(60),
            registration_timeout: Duration::from_secs(120),
            nack_interval: Duration::from_secs(1),
            spread_phase: false,
            coalesce: Duration::ZERO,
        }
    }
}

/// Where a [`Monitor`](super::Monitor) reads its tunables: its own copy (a [`MonitorConfig`], the default), or one
/// the caller shares among many monitors (a host with thousands of guests under one policy keeps one copy, not
/// 48 bytes in each).
pub trait ConfigSource {
    /// The tunables in force.
    fn monitor_config(&self) -> &MonitorConfig;
}

impl ConfigSource for MonitorConfig {
    fn monitor_config(&self) -> &MonitorConfig {
        self
    }
}
