//! The StarlingX VIM, as the controller's guest agent (the reference's `guestAgent`) reported to it: `PATCH
//! /nfvi-plugins/v1/instances/<uuid>` with `{uuid, hostname, event-type, event-data}` (the VIM's
//! `nfvi_guest_api.py`, `guest_services_rest_api_patch_handler`):
//!
//! - `service`: `services: [{service: heartbeat, state, status, restart-timeout}]`, where `state` is the reporting
//!   switch (`enabled` unless reporting is off) and `status` the heartbeat (`enabled` while heartbeats flow,
//!   `disabled` after a loss or an exit); sent on registration, exit, loss (before the alarm) and recovery;
//! - `alarm`: `services: [{service: heartbeat, state: failed|unhealthy, repair-action: reboot|stop|log}]`, for a loss,
//!   and for an unhealthy report whose guest asked for an action (none or unknown raise nothing, as the reference);
//! - `action`: `{action, guest-response, reason}` for a vote's or notice's result, `action` in the VIM's table
//!   (`live_migrate_begin`, underscores), `guest-response` by the notification type as the reference chose it: a
//!   vote is `allow` or `reject`, a notice is `proceed`.
//!
//! The VIM's handler writes a reply only when it has a payload: a `service` or `action` PATCH is answered by a
//! closed connection, which is delivered; an `alarm` for an instance the VIM does not know (a deleted VM, an id that
//! is not a UUID) gets no reply either (its handler raises): retried a few times, then dead-lettered, so that it
//! never blocks the sink.

use std::sync::Arc;

use serde_json::{json, Value};

use super::secret::SecretFile;
use super::sink_config::VimConfig;
use super::{by_error, by_status, Context, Delivery};

/// An alarm the VIM closes without a reply this many times is for an instance it does not know: dead-lettered.
pub const ALARM_NO_REPLY_TRIES: u32 = 3;

/// The sink.
pub struct Vim {
    url: String,
    ctx: Arc<Context>,
    http: reqwest::Client,
    /// The record whose alarm got no reply, and how often.
    no_reply: Option<(String, u32)>,
    /// The relay's bearer token, when the sink points at `vigild relay`.
    token: Option<SecretFile>,
}

/// One PATCH and whether the VIM answers it with a payload (only alarms are).
struct Patch {
    uuid: String,
    body: Value,
    answered: bool,
}

impl Vim {
    /// A sink for the VIM (or the relay) at `cfg.url`.
    pub fn new(cfg: &VimConfig, ctx: Arc<Context>, http: reqwest::Client) -> Result<Self, String> {
        let token = cfg.token_file.as_deref().map(SecretFile::open).transpose()?;
        Ok(Vim { url: cfg.url.trim_end_matches('/').to_string(), ctx, http, no_reply: None, token })
    }

    /// The PATCHes the VIM gets for a record, in order (none, one, or a service update then an alarm).
    fn patches(ctx: &Context, rec: &Value) -> Vec<Patch> {
        let Some(guest) = rec["guest"].as_str().filter(|g| !g.is_empty()) else { return Vec::new() };
        let uuid = ctx.instance(guest);
        let host = rec["host"].as_str().unwrap_or(&ctx.host).to_string();
        let patch = |event_type: &str, data: Value| Patch {
            uuid: uuid.clone(),
            body: json!({ "uuid": uuid, "hostname": host, "event-type": event_type, "event-data": data }),
            answered: event_type == "alarm",
        };
        // `state`: the reporting switch; `status`: whether heartbeats flow
        let service = |status: &str, restart: String| {
            patch(
                "service",
                json!({ "services": [{
                    "service": "heartbeat", "state": "enabled", "status": status, "restart-timeout": restart,
                }] }),
            )
        };
        let alarm = |state: &str, action: &str| {
            patch("alarm", json!({ "services": [{ "service": "heartbeat", "state": state, "repair-action": action }] }))
        };
        let action = rec["corrective_action"].as_str().unwrap_or("log");
        match rec["kind"].as_str().unwrap_or("") {
            "registered" => vec![service("enabled", rec["restart_secs"].as_u64().unwrap_or(0).to_string())],
            "deregistered" => vec![service("disabled", "0".into())],
            "recovered" => vec![service("enabled", "0".into())],
            // the reference: the service goes down first, then the alarm (an unknown action is acted on as log)
            "heartbeat_lost" => {
                let action = if action == "unknown" { "log" } else { action };
                vec![service("disabled", "0".into()), alarm("failed", action)]
            }
            "unhealthy" if matches!(action, "reboot" | "stop" | "log") => vec![alarm("unhealthy", action)],
            "vote_result" => {
                let voted = rec["notification_type"] == "revocable";
                let reason = rec["log_msg"].as_str().unwrap_or("").to_string();
                let (response, reason) = match (voted, rec["result"].as_str().unwrap_or("")) {
                    (true, "accept" | "complete" | "unknown") => ("allow", reason),
                    (true, "reject") => ("reject", reason),
                    // a vote nobody answered is not consent
                    (true, other) => ("reject", format!("no answer from the guest: {other}")),
                    // a notice is going ahead whatever the guest said
                    (false, _) => ("proceed", reason),
                };
                vec![patch(
                    "action",
                    json!({
                        "action": rec["event_type"].as_str().unwrap_or("unknown"),
                        "guest-response": response,
                        "reason": reason,
                    }),
                )]
            }
            _ => Vec::new(),
        }
    }

    /// The bodies the VIM gets for a record (for tests and inspection).
    pub fn bodies(ctx: &Context, rec: &Value) -> Vec<Value> {
        Self::patches(ctx, rec).into_iter().map(|p| p.body).collect()
    }

    /// Sends what the VIM wants of one record.
    pub async fn deliver(&mut self, rec: &Value) -> Delivery {
        for p in Self::patches(&self.ctx, rec) {
            let url = format!("{}/nfvi-plugins/v1/instances/{}", self.url, p.uuid);
            let mut req = self.http.patch(&url).json(&p.body);
            if let Some(t) = &mut self.token {
                req = req.bearer_auth(t.get().0);
            }
            let outcome = match req.send().await {
                // the relay says in words what the VIM said by closing: it does not know the instance
                Ok(r) if r.status().as_u16() == 404 && p.answered => self.alarm_without_reply(rec),
                Ok(r) => {
                    let code = r.status().as_u16();
                    by_status(code, &r.text().await.unwrap_or_default())
                }
                // the request went out and the VIM closed the connection without a reply
                Err(e) if !e.is_connect() && !e.is_timeout() && !p.answered => Delivery::Done,
                Err(e) if !e.is_connect() && !e.is_timeout() => self.alarm_without_reply(rec),
                Err(e) => by_error(&e),
            };
            if !matches!(outcome, Delivery::Done) {
                return outcome;
            }
        }
        self.no_reply = None;
        Delivery::Done
    }

    /// An alarm the VIM did not answer: its handler raised, as it does for an instance it does not know.
    fn alarm_without_reply(&mut self, rec: &Value) -> Delivery {
        let id = rec["id"].as_str().unwrap_or("").to_string();
        let tries = match &self.no_reply {
            Some((seen, n)) if *seen == id => n + 1,
            _ => 1,
        };
        self.no_reply = Some((id, tries));
        let why = format!("the VIM closed the connection without a reply {tries} times: it does not know the instance");
        if tries >= ALARM_NO_REPLY_TRIES {
            self.no_reply = None;
            Delivery::DeadLetter(why)
        } else {
            Delivery::Retry(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: Value) -> Value {
        let mut r = json!({ "guest": "g", "host": "compute-0", "id": "x" });
        if let (Value::Object(m), Value::Object(e)) = (&mut r, v) {
            m.extend(e);
        }
        r
    }

    #[test]
    fn an_unhealthy_report_raises_an_alarm_only_when_the_guest_asked_for_an_action() {
        // the reference raises no alarm for an unhealthy guest whose corrective action is none (or unknown)
        let ctx = Context::default();
        for action in ["none", "unknown"] {
            let r = rec(json!({ "kind": "unhealthy", "corrective_action": action }));
            assert!(Vim::bodies(&ctx, &r).is_empty(), "{action}");
        }
        let r = rec(json!({ "kind": "unhealthy", "corrective_action": "stop" }));
        let b = Vim::bodies(&ctx, &r);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["event-type"], "alarm");
        assert_eq!(b[0]["event-data"]["services"][0]["state"], "unhealthy");
        assert_eq!(b[0]["event-data"]["services"][0]["repair-action"], "stop");
    }

    #[test]
    fn the_guest_response_follows_the_notification_type() {
        let ctx = Context::default();
        let response = |nt: &str, result: &str| {
            let r =
                rec(json!({ "kind": "vote_result", "event_type": "stop", "notification_type": nt, "result": result }));
            Vim::bodies(&ctx, &r)[0]["event-data"]["guest-response"].as_str().unwrap_or("").to_string()
        };
        assert_eq!(response("revocable", "accept"), "allow");
        assert_eq!(response("revocable", "reject"), "reject");
        assert_eq!(response("revocable", "timeout"), "reject", "a vote nobody answered is not consent");
        assert_eq!(response("irrevocable", "accept"), "proceed", "a notice goes ahead");
        assert_eq!(response("irrevocable", "timeout"), "proceed");
    }
}
