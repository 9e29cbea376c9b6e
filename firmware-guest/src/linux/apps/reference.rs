//! The reference guest's binary application API ([`crate::refapi`], `libguest_heartbeat_api`): how one record
//! changes an [`App`], the reference's ordinals, and records out.

use std::prelude::rust_2021::*;

use std::time::{Duration, Instant};

use vigil_core::{CorrectiveAction, EventType, Health, VoteResult};

use super::{flush, App, Wire, MAX_OUT, MAX_REFERENCE_APPS, REFERENCE_MIN_INTERVAL};
use crate::refapi::{self, RefMsg};

/// The reference's action ordinals: 0 unknown, 1 none, 2 reboot, 3 stop, 4 log.
fn action_of(ordinal: u32) -> CorrectiveAction {
    match ordinal {
        1 => CorrectiveAction::None,
        2 => CorrectiveAction::Reboot,
        3 => CorrectiveAction::Stop,
        4 => CorrectiveAction::Log,
        _ => CorrectiveAction::Unknown,
    }
}

/// The reference's event ordinals, in `EventType`'s order (unknown first).
pub(super) fn event_ordinal(e: EventType) -> u32 {
    match e {
        EventType::Unknown => 0,
        EventType::Stop => 1,
        EventType::Reboot => 2,
        EventType::Suspend => 3,
        EventType::Pause => 4,
        EventType::Unpause => 5,
        EventType::Resume => 6,
        EventType::ResizeBegin => 7,
        EventType::ResizeEnd => 8,
        EventType::LiveMigrateBegin => 9,
        EventType::LiveMigrateEnd => 10,
        EventType::ColdMigrateBegin => 11,
        EventType::ColdMigrateEnd => 12,
    }
}

/// Applies one record of the reference protocol; returns true when the application leaves (FINAL, or refused).
pub(super) fn handle_reference(
    app: &mut App,
    item: Result<(u32, RefMsg), refapi::RefError>,
    now: Instant,
    rng: &mut u64,
    registered: usize,
) -> bool {
    let Ok((_, msg)) = item else {
        app.errors += 1;
        return false;
    };
    match msg {
        RefMsg::Init { name, heartbeat_interval_ms, corrective_action, .. } => {
            if app.name.is_none() && registered >= MAX_REFERENCE_APPS {
                // the reference daemon's limit: refused cleanly, with an answer, then closed
                send_reference(app, &RefMsg::InitAck { accepted: 0 });
                flush(app);
                return true;
            }
            let name = if name.is_empty() { "unnamed".to_string() } else { name.to_string() };
            app.interval = Duration::from_millis(u64::from(heartbeat_interval_ms)).max(REFERENCE_MIN_INTERVAL);
            app.action = action_of(corrective_action);
            app.last_ok = now;
            app.next_challenge = now;
            *rng = rng.wrapping_add(u64::from(heartbeat_interval_ms));
            app.name = Some(name);
            send_reference(app, &RefMsg::InitAck { accepted: 1 });
        }
        _ if app.name.is_none() => app.errors += 1,
        RefMsg::ChallengeResponse { heartbeat_response, health, corrective_action, log_msg } => {
            if u64::from(heartbeat_response) == app.nonce {
                app.health = if health == 1 { Health::Healthy } else { Health::Unhealthy };
                if health != 1 && corrective_action != 0 {
                    app.action = action_of(corrective_action);
                }
                app.log_msg = log_msg.to_string();
                app.last_ok = now;
            } else {
                app.errors += 1;
            }
        }
        RefMsg::ActionResponse { invocation_id, vote_result, log_msg, .. } => match &app.wire {
            Wire::Reference { invocation, .. } if *invocation == invocation_id => {
                let r = match vote_result {
                    1 => VoteResult::Accept,
                    2 => VoteResult::Reject,
                    3 => VoteResult::Complete,
                    _ => VoteResult::Unknown,
                };
                app.vote = Some((r, log_msg.to_string()));
            }
            _ => app.errors += 1,
        },
        RefMsg::Final { .. } => return true,
        RefMsg::InitAck { .. } | RefMsg::Challenge { .. } | RefMsg::ActionNotify { .. } => app.errors += 1,
    }
    false
}

pub(super) fn send_reference(app: &mut App, msg: &RefMsg) {
    if app.out.len() > MAX_OUT {
        return;
    }
    if let Wire::Reference { seq, .. } = &mut app.wire {
        *seq = seq.wrapping_add(1);
        let mut rec = [0u8; refapi::RECORD];
        refapi::encode(msg, *seq, &mut rec);
        app.out.extend_from_slice(&rec);
    }
}
