//! What a [`Monitor`](super::Monitor) tells its caller: events, the registration it learned, open faults, and why a
//! command was refused.

use core::fmt;

use crate::error::ProtocolError;
use crate::msg::*;
use crate::time::{Duration, Instant};

/// What the monitor knows of a registered guest (from its last `init`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Registration {
    /// The `init` as the guest sent it.
    pub init: Init,
    /// The challenge interval in force (the request, clamped to the configured bounds).
    pub interval: Duration,
}

/// What the monitor tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(clippy::large_enum_variant)] // no heap in the core: texts are carried inline
pub enum MonitorEvent {
    /// The guest sent `init` (first time, or again: a new session either way).
    Registered(Registration),
    /// Consecutive misses exceeded the threshold. Reported once per episode; the monitor keeps challenging at the
    /// interval, and any valid answer (or a new `init`) ends the episode with [`MonitorEvent::Recovered`].
    HeartbeatLost {
        /// Misses counted.
        consecutive_misses: u32,
        /// When the last valid response arrived, if any in this connection.
        last_heartbeat: Option<Instant>,
    },
    /// The guest answered but reports itself unhealthy. Reported once per episode, again if the requested action
    /// escalates, and again after the guest registers anew.
    Unhealthy {
        /// What the guest asks for.
        corrective_action: CorrectiveAction,
        /// Why.
        log_msg: LogMsg,
    },
    /// A valid answer after a loss (any health but `unhealthy`), or a healthy one after an unhealthy report.
    Recovered,
    /// The guest sent `exit`: a graceful deregistration, never a fault.
    Deregistered {
        /// The guest's reason.
        log_msg: LogMsg,
    },
    /// The outcome of [`Monitor::notify`](super::Monitor::notify): the guest's answer, `timeout`, or `error` when the session ended first.
    VoteResult {
        /// The event voted on or notified.
        event_type: EventType,
        /// Vote or notice.
        notification_type: NotificationType,
        /// The answer.
        result: VoteResult,
        /// The guest's reason (empty for timeout).
        log_msg: LogMsg,
    },
    /// The guest broke the protocol (counted in [`MonitorStats::protocol_errors`](super::MonitorStats::protocol_errors)).
    ProtocolError(ProtocolError),
    /// Connected for [`MonitorConfig::registration_timeout`](super::MonitorConfig::registration_timeout) without a registration: reconnect.
    RegistrationTimeout,
}

/// Where a [`Monitor`](super::Monitor) keeps the one event waiting to be polled.
///
/// `Option<MonitorEvent>` (the default) keeps it inline: ~232 bytes, most of them a `log_msg`, in every monitor
/// for an event that waits only between an input call and the caller's next `poll_event`. A host with thousands of
/// guests can keep it on the heap only while it waits (events are rare: registrations, losses, health changes), as
/// it does for partial lines with [`LineStorage`](crate::LineStorage).
pub trait EventSlot {
    /// No event waits.
    fn is_empty(&self) -> bool;
    /// Keeps `event` and returns true; if one already waits (the monitor never asks for that), drops `event` and
    /// returns false.
    fn put(&mut self, event: MonitorEvent) -> bool;
    /// The waiting event, if any; the slot is empty afterwards.
    fn take(&mut self) -> Option<MonitorEvent>;
}

impl EventSlot for Option<MonitorEvent> {
    fn is_empty(&self) -> bool {
        self.is_none()
    }
    fn put(&mut self, event: MonitorEvent) -> bool {
        if self.is_some() {
            return false;
        }
        *self = Some(event);
        true
    }
    fn take(&mut self) -> Option<MonitorEvent> {
        Option::take(self)
    }
}

/// An open fault, remembered across sessions and reconnections until a healthy heartbeat clears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Fault {
    /// Heartbeats stopped.
    Lost,
    /// The guest said it is unhealthy.
    Unhealthy(CorrectiveAction),
}

/// Why [`Monitor::notify`](super::Monitor::notify) refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NotifyError {
    /// The guest is not registered.
    NotRegistered,
    /// The guest is registered but its heartbeat is lost: it would not answer.
    NotHeartbeating,
    /// Another vote or notice is still open.
    Busy,
    /// The timeout does not fit the protocol's 32-bit milliseconds.
    TimeoutTooLong,
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotifyError::NotRegistered => "guest not registered",
            NotifyError::NotHeartbeating => "guest heartbeat lost",
            NotifyError::Busy => "another notification is open",
            NotifyError::TimeoutTooLong => "timeout longer than 2^32 ms",
        })
    }
}

impl core::error::Error for NotifyError {}
