//! OpenStack Masakari: `POST /v1/notifications` with a `VM` notification whose payload is the pair Masakari's
//! engine acts on (`QEMU_GUEST_AGENT_ERROR`, `STOPPED_FAILED`: stop and start the instance, for instances with HA
//! enabled). Sent only for losses whose guest asked for `reboot` or `stop`, unless `all_losses`. Authentication
//! is Keystone v3 password auth (`POST /v3/auth/tokens`, the token from `X-Subject-Token`), refreshed a minute
//! before `expires_at` and on a 401; `auth_url` may end in `/v3` or not. 202 is success; a 409 (a duplicate of an
//! earlier attempt that got through, or the host in maintenance) is counted as a conflict, apart from deliveries,
//! and passed; 400 is final (logged, counted).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::secret::SecretFile;
use super::sink_config::MasakariConfig;
use super::{by_error, by_status, Context, Delivery};

struct Keystone {
    url: String,
    username: String,
    password: SecretFile,
    user_domain: String,
    project: String,
    project_domain: String,
}

/// The sink.
pub struct Masakari {
    url: String,
    ctx: Arc<Context>,
    http: reqwest::Client,
    keystone: Option<Keystone>,
    token: Option<(String, SystemTime)>,
    all_losses: bool,
}

impl Masakari {
    /// A sink for the Masakari API at `cfg.url`; Keystone if `auth_url` is set (else no token: a noauth API).
    pub fn new(cfg: &MasakariConfig, ctx: Arc<Context>, http: reqwest::Client) -> Result<Self, String> {
        let keystone = match &cfg.auth_url {
            None => None,
            Some(url) => Some(Keystone {
                // `.../v3` or not, as operators write it: the token path is added once
                url: url.trim_end_matches('/').trim_end_matches("/v3").to_string(),
                username: cfg.username.clone().ok_or("masakari: username")?,
                password: SecretFile::open(cfg.password_file.as_deref().ok_or("masakari: password_file")?)?,
                user_domain: cfg.user_domain_name.clone().unwrap_or_else(|| "Default".into()),
                project: cfg.project_name.clone().ok_or("masakari: project_name")?,
                project_domain: cfg.project_domain_name.clone().unwrap_or_else(|| "Default".into()),
            }),
        };
        Ok(Masakari {
            url: format!("{}/v1/notifications", cfg.url.trim_end_matches('/')),
            ctx,
            http,
            keystone,
            token: None,
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
        let Some(k) = &mut self.keystone else { return Ok(None) };
        let (password, rotated) = k.password.get();
        let password = password.to_string();
        if rotated {
            self.token = None; // a new password: a new token
        }
        if let Some((t, exp)) = &self.token {
            if SystemTime::now() + Duration::from_secs(60) < *exp {
                return Ok(Some(t.clone()));
            }
        }
        let body = json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": k.username, "domain": { "name": k.user_domain }, "password": password } } },
            "scope": { "project": { "name": k.project, "domain": { "name": k.project_domain } } }
        }});
        let r =
            self.http.post(format!("{}/v3/auth/tokens", k.url)).json(&body).send().await.map_err(|e| by_error(&e))?;
        let code = r.status().as_u16();
        if !(200..300).contains(&code) {
            return Err(Delivery::Retry(format!("keystone: HTTP {code}")));
        }
        let token = r
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Delivery::Retry("keystone: no X-Subject-Token".into()))?;
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let expires = v["token"]["expires_at"]
            .as_str()
            .and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z').split('.').next().unwrap_or(s)).ok())
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(600));
        self.token = Some((token.clone(), expires));
        Ok(Some(token))
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
                    401 if attempt == 0 => self.token = None,
                    code => return by_status(code, &r.text().await.unwrap_or_default()),
                },
                Err(e) => return by_error(&e),
            }
        }
        Delivery::Retry("keystone token refused twice".into())
    }
}
