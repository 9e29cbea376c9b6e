//! The JSON-lines application API (`docs/guest-api.md`): the requests an application sends, the replies it gets,
//! and how one request changes its [`App`]. Every line is checked; a bad one is refused with an `error` reply.

use std::prelude::rust_2021::*;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vigil_core::{CorrectiveAction, Health, VoteResult};

use super::{App, MAX_OUT};

/// A request from an application.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start being monitored.
    Register {
        /// The application's name (unique per agent).
        name: String,
        /// How often the agent challenges it.
        interval_ms: u64,
        /// What to ask the host for when it is unhealthy or silent.
        #[serde(default = "default_action")]
        corrective_action: String,
    },
    /// Answer to a challenge.
    Response {
        /// The nonce echoed.
        nonce: u64,
        /// `healthy` or `unhealthy`.
        health: String,
        /// Why.
        #[serde(default)]
        log_msg: String,
    },
    /// Spontaneous health report.
    Health {
        /// `healthy` or `unhealthy`.
        health: String,
        /// Why.
        #[serde(default)]
        log_msg: String,
    },
    /// Answer to a vote or notice.
    VoteResult {
        /// `accept`, `reject`, `complete`, ...
        result: String,
        /// Why.
        #[serde(default)]
        log_msg: String,
    },
    /// Stop being monitored (closing the connection does the same).
    Deregister,
}

fn default_action() -> String {
    "log".into()
}

/// A message to an application.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    /// Registration accepted.
    Registered {
        /// Its name.
        name: String,
    },
    /// Prove you are alive: answer with `response` and this nonce.
    Challenge {
        /// The nonce.
        nonce: u64,
    },
    /// The host asks for a vote (`revocable`) or gives notice (`irrevocable`).
    Vote {
        /// What is about to happen.
        event_type: String,
        /// Vote or notice.
        notification_type: String,
        /// Answer within this.
        timeout_ms: u64,
    },
    /// The last request was refused.
    Error {
        /// Why.
        message: String,
    },
}

/// Applies one request; returns true when the application leaves.
pub(super) fn handle(app: &mut App, req: Result<Request, String>, now: Instant, rng: &mut u64) -> bool {
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            app.errors += 1;
            send(app, &Reply::Error { message: e });
            return false;
        }
    };
    let refuse = |app: &mut App, msg: &str| {
        app.errors += 1;
        send(app, &Reply::Error { message: msg.into() });
    };
    match req {
        Request::Register { name, interval_ms, corrective_action } => {
            let Some(action) = CorrectiveAction::from_wire(&corrective_action) else {
                refuse(app, "corrective_action must be none, log, reboot or stop");
                return false;
            };
            if name.is_empty() || name.len() > 64 || !(100..=3_600_000).contains(&interval_ms) {
                refuse(app, "name must be 1..=64 bytes and interval_ms within 100..=3600000");
                return false;
            }
            app.interval = Duration::from_millis(interval_ms);
            app.action = action;
            app.last_ok = now;
            app.next_challenge = now;
            *rng = rng.wrapping_add(interval_ms);
            send(app, &Reply::Registered { name: name.clone() });
            app.name = Some(name);
        }
        _ if app.name.is_none() => refuse(app, "register first"),
        Request::Response { nonce, health, log_msg } => match Health::from_wire(&health) {
            Some(h) if nonce == app.nonce && nonce != 0 => {
                app.health = h;
                app.log_msg = log_msg;
                app.last_ok = now;
            }
            Some(_) => refuse(app, "stale nonce"),
            None => refuse(app, "health must be healthy or unhealthy"),
        },
        Request::Health { health, log_msg } => match Health::from_wire(&health) {
            Some(h) => {
                app.health = h;
                app.log_msg = log_msg;
            }
            None => refuse(app, "health must be healthy or unhealthy"),
        },
        Request::VoteResult { result, log_msg } => match VoteResult::from_wire(&result) {
            Some(r) => app.vote = Some((r, log_msg)),
            None => refuse(app, "unknown vote result"),
        },
        Request::Deregister => return true,
    }
    false
}

pub(super) fn send(app: &mut App, reply: &Reply) {
    if app.out.len() > MAX_OUT {
        return; // an application that does not read loses messages, not our memory
    }
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        app.out.extend_from_slice(&line);
    }
}
