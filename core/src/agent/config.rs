//! [`AgentConfig`]: the tunables of an [`Agent`](super::Agent).

use crate::msg::*;
use crate::time::Duration;

/// What the agent declares in `init`, and its own timing; `Default` matches the reference guest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AgentConfig {
    /// Declared name (informational for the host).
    pub name: Name,
    /// Requested challenge interval.
    pub heartbeat_interval_ms: u32,
    /// Seconds needed to vote.
    pub vote_secs: u32,
    /// Seconds of notice wanted before shutdown.
    pub shutdown_notice_secs: u32,
    /// Seconds of notice wanted before suspend.
    pub suspend_notice_secs: u32,
    /// Seconds of notice wanted before resume.
    pub resume_notice_secs: u32,
    /// Seconds a restart takes.
    pub restart_secs: u32,
    /// Action requested on heartbeat loss; also sent with healthy answers, as the reference guest does.
    pub corrective_action: CorrectiveAction,
    /// Delay between `init` attempts (5 s).
    pub init_retry: Duration,
    /// Re-register when no challenge came for max(2 x interval, this) (5 s).
    pub min_silence: Duration,
    /// The same unhealthy action is not requested again within this (60 s); `none` is sent instead.
    pub action_holdoff: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: Name::new(),
            heartbeat_interval_ms: 1000,
            vote_secs: 9,
            shutdown_notice_secs: 9,
            suspend_notice_secs: 9,
            resume_notice_secs: 14,
            restart_secs: 601,
            corrective_action: CorrectiveAction::Reboot,
            init_retry: Duration::from_secs(5),
            min_silence: Duration::from_secs(5),
            action_holdoff: Duration::from_secs(60),
        }
    }
}
