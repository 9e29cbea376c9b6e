//! [`MonitorStats`]: the counters of one guest, kept across sessions.

use crate::time::Duration;

/// Counters of one guest, kept across sessions. The traffic counters are 64-bit; the others are 32-bit and
/// saturate (a host keeps one of these per guest: 80 bytes, not 112).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MonitorStats {
    /// Bytes fed in.
    pub bytes_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Valid heartbeat answers: to the current challenge or, late, to any earlier one of the session, once each.
    pub heartbeats: u64,
    /// Of those, answers to an earlier challenge than the current one (a guest catching up after a freeze or a
    /// pause): counted, never reported.
    pub late_answers: u32,
    /// Values the reference sends as fallbacks (`unknown` action, event or notification type, an unknown health
    /// string), accepted and mapped to a safe meaning.
    pub unknown_values: u32,
    /// Intervals that ended unanswered.
    pub misses: u32,
    /// Intervals that ended unanswered but were not counted as misses because the challenge left too late (less
    /// than half an interval before the verdict): the host, not the guest, was behind (an overloaded host, a host
    /// process stopped and resumed). Counted so that an operator sees it; never a fault.
    pub host_late: u32,
    /// Losses declared.
    pub losses: u32,
    /// Registrations (`init`s accepted).
    pub registrations: u32,
    /// Protocol errors of any kind.
    pub protocol_errors: u32,
    /// Nacks sent.
    pub nacks: u32,
    /// Nacks not sent because of the rate limit.
    pub nacks_suppressed: u32,
    /// The last round-trip time of a challenge.
    pub last_rtt: Duration,
    /// The largest round-trip time seen.
    pub max_rtt: Duration,
}
