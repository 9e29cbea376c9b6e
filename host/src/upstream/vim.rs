//! The StarlingX VIM, as the reference host agent reported to it: `PATCH /nfvi-plugins/v1/instances/<uuid>` with
//! `event-type` `alarm` for faults (`services: [{service: heartbeat, state: failed|unhealthy, repair-action}]`),
//! `service` on registration and exit (`state`/`status` `enabled`/`disabled`, `restart-timeout`), and `action`
//! for vote results (`guest-response` `allow` for an accepted vote, `proceed` for a completed notice, `reject`).
//! A `timeout` or `error` is never sent as proceed: it is a `reject` with the reason; `unknown` (the guest's own
//! command gave no usable answer, as the reference guest says) is sent as `proceed`, as the reference did.

use std::sync::Arc;

use serde_json::{json, Value};

use super::sink_config::Endpoint;
use super::{by_error, by_status, Context, Delivery};

/// The sink.
pub struct Vim {
    url: String,
    ctx: Arc<Context>,
    http: reqwest::Client,
}

/// StarlingX's names for events (`live-migrate-begin`), from the protocol's (`live_migrate_begin`).
pub fn vim_action(event_type: &str) -> String {
    event_type.replace('_', "-")
}

impl Vim {
    /// A sink for the VIM at `cfg.url`.
    pub fn new(cfg: &Endpoint, ctx: Arc<Context>, http: reqwest::Client) -> Self {
        Vim { url: cfg.url.trim_end_matches('/').to_string(), ctx, http }
    }

    /// The body the VIM gets for a record, if it gets one.
    pub fn body(ctx: &Context, rec: &Value) -> Option<(String, Value)> {
        let guest = rec["guest"].as_str()?;
        let uuid = ctx.instance(guest);
        let host = rec["host"].as_str().unwrap_or(&ctx.host).to_string();
        let service = |state: &str, extra: Value| {
            let mut s = json!({ "service": "heartbeat", "state": state });
            if let (Value::Object(m), Value::Object(e)) = (&mut s, extra) {
                m.extend(e);
            }
            s
        };
        let (event_type, data) = match rec["kind"].as_str()? {
            "heartbeat_lost" => (
                "alarm",
                json!({ "services": [service("failed", json!({ "repair-action": rec["corrective_action"] }))] }),
            ),
            "unhealthy" => (
                "alarm",
                json!({ "services": [service("unhealthy", json!({ "repair-action": rec["corrective_action"] }))] }),
            ),
            "registered" => (
                "service",
                json!({ "services": [service("enabled", json!({ "status": "enabled", "restart-timeout": rec["restart_secs"].to_string() }))] }),
            ),
            "deregistered" => (
                "service",
                json!({ "services": [service("disabled", json!({ "status": "disabled", "restart-timeout": "0" }))] }),
            ),
            "vote_result" => {
                let (response, reason) = match rec["result"].as_str()? {
                    "accept" => ("allow", rec["log_msg"].as_str().unwrap_or("").to_string()),
                    "complete" => ("proceed", rec["log_msg"].as_str().unwrap_or("").to_string()),
                    "unknown" => ("proceed", "the guest gave no usable answer".to_string()),
                    "reject" => ("reject", rec["log_msg"].as_str().unwrap_or("").to_string()),
                    other => ("reject", format!("no answer from the guest: {other}")),
                };
                (
                    "action",
                    json!({
                        "action": vim_action(rec["event_type"].as_str().unwrap_or("")),
                        "guest-response": response,
                        "reason": reason,
                    }),
                )
            }
            _ => return None,
        };
        let body = json!({ "uuid": uuid, "hostname": host, "event-type": event_type, "event-data": data });
        Some((uuid, body))
    }

    /// Sends one record, if the VIM wants it.
    pub async fn deliver(&mut self, rec: &Value) -> Delivery {
        let Some((uuid, body)) = Self::body(&self.ctx, rec) else { return Delivery::Done };
        let url = format!("{}/nfvi-plugins/v1/instances/{uuid}", self.url);
        match self.http.patch(&url).json(&body).send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                by_status(code, &r.text().await.unwrap_or_default())
            }
            Err(e) => by_error(&e),
        }
    }
}
