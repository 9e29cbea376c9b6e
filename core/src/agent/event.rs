//! What an [`Agent`](super::Agent) tells its caller, where it stands, its counters, and why a command was refused.

use core::fmt;

use crate::error::ProtocolError;
use crate::msg::*;
use crate::time::Instant;

/// Where the agent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AgentState {
    /// Sending `init` until one is acknowledged.
    Registering,
    /// Answering challenges.
    Registered,
    /// `exit` was queued; the agent answers nothing more.
    Exited,
}

/// What the agent tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(clippy::large_enum_variant)] // no heap in the core: texts are carried inline
pub enum AgentEvent {
    /// The host acknowledged a registration.
    Registered {
        /// The invocation id the host acknowledged.
        invocation_id: u32,
    },
    /// Challenges stopped; the agent registers again.
    RegistrationLost,
    /// The host asks for a vote or gives notice: answer with [`Agent::answer_action`](super::Agent::answer_action) before `deadline`, or the
    /// agent answers `timeout` for you at `deadline` — one second before the host gives up, as the reference guest
    /// does — so that the host sees that nobody decided (never a silent "proceed"; the host's policy decides).
    ActionRequest {
        /// What the host sent.
        notify: ActionNotify,
        /// When the agent will answer `timeout` on its own.
        deadline: Instant,
    },
    /// The host refused one of our messages.
    Nacked {
        /// The host's reason.
        log_msg: LogMsg,
    },
    /// The host broke the protocol.
    ProtocolError(ProtocolError),
}

/// Counters of the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AgentStats {
    /// `init`s sent.
    pub inits: u64,
    /// Challenges answered.
    pub answers: u64,
    /// Votes and notices answered (by the caller or by default).
    pub actions: u64,
    /// Nacks received.
    pub nacks: u64,
    /// Protocol errors of the host.
    pub protocol_errors: u64,
}

/// Why [`Agent::answer_action`](super::Agent::answer_action) refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoActionPending;

impl fmt::Display for NoActionPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no vote or notice is waiting for an answer")
    }
}

impl core::error::Error for NoActionPending {}
