//! OpenStack Masakari: `POST /v1/notifications` with a `VM` notification whose payload is the pair Masakari's
//! engine acts on (`QEMU_GUEST_AGENT_ERROR`, `STOPPED_FAILED`: stop and start the instance, for instances with HA
//! enabled). Sent only for losses whose guest asked for `reboot` or `stop`, unless `all_losses`. Authentication
//! is Keystone v3 password auth (`POST /v3/auth/tokens`, the token from `X-Subject-Token`), refreshed a minute
//! before `expires_at` and on a 401; `auth_url` may end in `/v3` or not. 202 is success; a 409 (a duplicate of an
//! earlier attempt that got through, or the host in maintenance) is counted as a conflict, apart from deliveries,
//! and passed; 400 is final (logged, counted).

use std::sync::Arc;

use serde_json::{json, Value};

use super::keystone::{Keystone, KeystoneOptions};
use super::sink_config::MasakariConfig;
use super::{by_error, by_status, Context, Delivery};

/// The sink.
pub struct Masakari {
    url: String,
    ctx: Arc<Context>,
    http: reqwest::Client,
    keystone: Option<Keystone>,
    all_losses: bool,
}

impl Masakari {
    /// A sink for the Masakari API at `cfg.url`; Keystone if `auth_url` is set (else no token: a noauth API).
    pub fn new(cfg: &MasakariConfig, ctx: Arc<Context>, http: reqwest::Client) -> Result<Self, String> {
        let options = KeystoneOptions {
            auth_url: cfg.auth_url.as_deref(),
            username: cfg.username.as_deref(),
            password_file: cfg.password_file.as_deref(),
            user_domain_name: cfg.user_domain_name.as_deref(),
            project_name: cfg.project_name.as_deref(),
            project_domain_name: cfg.project_domain_name.as_deref(),
        };
        let keystone = Keystone::from_options("masakari", options, http.clone())?;
        Ok(Masakari {
            url: format!("{}/v1/notifications", cfg.url.trim_end_matches('/')),
            ctx,
            http,
            keystone,
            all_losses: cfg.all_losses,
        })
    }

    /// The notification for a record, if Masakari gets one.
    pub fn body(ctx: &Context, rec: &Value, all_losses: bool) -> Option<Value> {
        if rec["kind"] != "heartbeat_lost" {
            return None;
        }
        let action = rec["corrective_action"].as_str().unwrap_or("none");
        if !all_losses && !matches!(action, "reboot" | "stop") {
            return None;
        }
        let guest = rec["guest"].as_str()?;
        Some(json!({
            "notification": {
                "type": "VM",
                "hostname": rec["host"].as_str().unwrap_or(&ctx.host),
                "generated_time": rec["time"],
                "payload": {
                    "event": "QEMU_GUEST_AGENT_ERROR",
                    "instance_uuid": ctx.instance(guest),
                    "vir_domain_event": "STOPPED_FAILED",
                },
            }
        }))
    }

    async fn token(&mut self) -> Result<Option<String>, Delivery> {
        match &mut self.keystone {
            None => Ok(None),
            Some(k) => k.token().await.map(Some).map_err(|e| Delivery::Retry(e.0)),
        }
    }

    /// Sends one notification, if the record calls for it.
    pub async fn deliver(&mut self, rec: &Value) -> Delivery {
        let Some(body) = Self::body(&self.ctx, rec, self.all_losses) else { return Delivery::Done };
        for attempt in 0..2 {
            let token = match self.token().await {
                Ok(t) => t,
                Err(d) => return d,
            };
            let mut req = self.http.post(&self.url).json(&body);
            if let Some(t) = token {
                req = req.header("X-Auth-Token", t);
            }
            match req.send().await {
                Ok(r) => match r.status().as_u16() {
                    // a duplicate (our earlier attempt got through) or the host in maintenance: not a failure,
                    // not a delivery either
                    409 => return Delivery::Conflict(format!("HTTP 409: {}", r.text().await.unwrap_or_default())),
                    401 if attempt == 0 => {
                        if let Some(k) = &mut self.keystone {
                            k.expire();
                        }
                    }
                    code => return by_status(code, &r.text().await.unwrap_or_default()),
                },
                Err(e) => return by_error(&e),
            }
        }
        Delivery::Retry("keystone token refused twice".into())
    }
}
