//! A webhook: each record as a CloudEvents 1.0 event in structured JSON mode (`Content-Type:
//! application/cloudevents+json`; `id` = the record's stable id, `source` = this host, `type` = `io.vigil.<kind>`,
//! `time`, `data` = the record), with an optional bearer token read from a file (again whenever the file changes).

use std::sync::Arc;

use serde_json::{json, Value};

use super::secret::SecretFile;
use super::sink_config::WebhookConfig;
use super::{by_error, by_status, Context, Delivery};

/// The sink.
pub struct Webhook {
    url: String,
    ctx: Arc<Context>,
    http: reqwest::Client,
    token: Option<SecretFile>,
}

impl Webhook {
    /// A webhook posting to `cfg.url`.
    pub fn new(cfg: &WebhookConfig, ctx: Arc<Context>, http: reqwest::Client) -> Result<Self, String> {
        let token = cfg.token_file.as_deref().map(SecretFile::open).transpose()?;
        Ok(Webhook { url: cfg.url.clone(), ctx, http, token })
    }

    /// Posts one record.
    pub async fn deliver(&mut self, rec: &Value) -> Delivery {
        let event = json!({
            "specversion": "1.0",
            "id": rec["id"],
            "source": format!("vigil://{}", self.ctx.host),
            "type": format!("io.vigil.{}", rec["kind"].as_str().unwrap_or("event")),
            "subject": rec["guest"],
            "time": rec["time"],
            "datacontenttype": "application/json",
            "data": rec,
        });
        let mut req =
            self.http.post(&self.url).header("Content-Type", "application/cloudevents+json").body(event.to_string());
        if let Some(t) = &mut self.token {
            req = req.bearer_auth(t.get().0); // a rotated token file is read again
        }
        match req.send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                by_status(code, &r.text().await.unwrap_or_default())
            }
            Err(e) => by_error(&e),
        }
    }
}
