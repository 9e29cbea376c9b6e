//! Votes and notices: [`Monitor::notify`] asks the guest before an event (a vote) or tells it (a notice), the
//! guest's `action_response` or the timeout ends it, and a session that ends first ends it with `error`.

use super::*;

/// Why an open vote ended without an answer (a byte, where the text would take sixteen in every monitor).
#[derive(Clone, Copy, Debug)]
pub(super) enum VoteEnd {
    Registered,
    Exited,
    Disconnected,
}

impl VoteEnd {
    pub(super) fn reason(self) -> &'static str {
        match self {
            VoteEnd::Registered => "guest registered anew",
            VoteEnd::Exited => "guest agent exited before answering",
            VoteEnd::Disconnected => "connection to guest lost",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Vote {
    pub(super) notify: ActionNotify,
    pub(super) sent: bool,
}

impl<R: IdSource, S: LineStorage, E: EventSlot, C: ConfigSource> Monitor<R, S, E, C> {
    /// Sends `action_notify` and waits `timeout` (exactly the value sent) for the answer, which arrives as
    /// [`MonitorEvent::VoteResult`] — with `timeout` if none came.
    pub fn notify(
        &mut self,
        now: Instant,
        event_type: EventType,
        notification_type: NotificationType,
        timeout: Duration,
    ) -> Result<(), NotifyError> {
        if self.state != MonitorState::Heartbeating {
            return Err(NotifyError::NotRegistered);
        }
        if self.fault == Some(Fault::Lost) {
            return Err(NotifyError::NotHeartbeating);
        }
        if self.vote.is_some() {
            return Err(NotifyError::Busy);
        }
        let timeout_ms = u32::try_from(timeout.as_millis()).map_err(|_| NotifyError::TimeoutTooLong)?;
        let invocation_id = self.registration.as_ref().map_or(0, |r| r.init.invocation_id);
        self.vote = Some(Vote {
            notify: ActionNotify { invocation_id, event_type, notification_type, timeout_ms },
            sent: false,
        });
        self.set_timer(Timer::Vote, Some(now + timeout));
        Ok(())
    }

    pub(super) fn on_action_response(&mut self, now: Instant, r: ActionResponse) {
        let expected = self.registration.as_ref().map_or(0, |reg| reg.init.invocation_id);
        if self.state != MonitorState::Heartbeating {
            self.on_protocol_error(now, ProtocolError::Unexpected(MsgType::ActionResponse));
            return;
        }
        if r.invocation_id != expected {
            self.nack(now, "wrong invocation_id");
            self.on_protocol_error(now, ProtocolError::WrongInvocationId { expected, got: r.invocation_id });
            return;
        }
        if r.event_type == EventType::Unknown || r.notification_type == NotificationType::Unknown {
            self.stats.unknown_values = self.stats.unknown_values.saturating_add(1);
        }
        // The reference's `unknown` members match the open vote: it sends them when it could not parse ours.
        match self.vote {
            Some(v)
                if v.sent
                    && (v.notify.event_type == r.event_type || r.event_type == EventType::Unknown)
                    && (v.notify.notification_type == r.notification_type
                        || r.notification_type == NotificationType::Unknown) =>
            {
                self.vote = None;
                self.set_timer(Timer::Vote, None);
                self.push_vote_result(v, r.vote_result, r.log_msg);
            }
            _ => self.on_protocol_error(now, ProtocolError::Unexpected(MsgType::ActionResponse)),
        }
    }

    pub(super) fn push_vote_result(&mut self, vote: Vote, result: VoteResult, log_msg: LogMsg) {
        self.push(vote_result(vote, result, log_msg));
    }

    /// The open vote, if any, ends with `error` for `why` (reported from its own slot, before any queued event).
    pub(super) fn end_vote(&mut self, why: VoteEnd) {
        if let Some(vote) = self.vote.take() {
            self.set_timer(Timer::Vote, None);
            self.vote_ended = Some((vote, why));
        }
    }
}

pub(super) fn vote_result(vote: Vote, result: VoteResult, log_msg: LogMsg) -> MonitorEvent {
    MonitorEvent::VoteResult {
        event_type: vote.notify.event_type,
        notification_type: vote.notify.notification_type,
        result,
        log_msg,
    }
}
