//! A webhook: each record as a CloudEvents 1.0 event, in structured mode (`Content-Type:
//! application/cloudevents+json`; `id` = the record's stable id, `source` = this host, `type` = `io.vigil.<kind>`,
//! `subject` = the guest when there is one, `time`, `data` = the record) or binary mode (the same attributes as
//! `ce-*` headers, the record as the body), with an optional bearer token read from a file (again whenever the file
//! changes).

use std::sync::Arc;

use serde_json::{json, Value};

use super::secret::SecretFile;
use super::sink_config::{ContentMode, WebhookConfig};
use super::{by_error, by_status, Context, Delivery};

/// The sink.
pub struct Webhook {
    url: String,
    ctx: Arc<Context>,
    http: reqwest::Client,
    token: Option<SecretFile>,
    mode: ContentMode,
}

impl Webhook {
    /// A webhook posting to `cfg.url`.
    pub fn new(cfg: &WebhookConfig, ctx: Arc<Context>, http: reqwest::Client) -> Result<Self, String> {
        let token = cfg.token_file.as_deref().map(SecretFile::open).transpose()?;
        Ok(Webhook { url: cfg.url.clone(), ctx, http, token, mode: cfg.content_mode })
    }

    /// Posts one record.
    pub async fn deliver(&mut self, rec: &Value) -> Delivery {
        let source = format!("vigil://{}", self.ctx.host);
        let kind = format!("io.vigil.{}", rec["kind"].as_str().unwrap_or("event"));
        // `subject` must not be empty when present: host-wide records (the spool's own) have none
        let subject = rec["guest"].as_str().filter(|g| !g.is_empty());
        let mut req = match self.mode {
            ContentMode::Structured => {
                let mut event = json!({
                    "specversion": "1.0",
                    "id": rec["id"],
                    "source": source,
                    "type": kind,
                    "time": rec["time"],
                    "datacontenttype": "application/json",
                    "data": rec,
                });
                if let (Some(sub), Value::Object(m)) = (subject, &mut event) {
                    m.insert("subject".into(), json!(sub));
                }
                self.http.post(&self.url).header("Content-Type", "application/cloudevents+json").body(event.to_string())
            }
            ContentMode::Binary => {
                let mut req = self
                    .http
                    .post(&self.url)
                    .header("Content-Type", "application/json")
                    .header("ce-specversion", "1.0")
                    .header("ce-id", rec["id"].as_str().unwrap_or(""))
                    .header("ce-source", source)
                    .header("ce-type", kind)
                    .header("ce-time", rec["time"].as_str().unwrap_or(""));
                if let Some(sub) = subject {
                    req = req.header("ce-subject", sub);
                }
                req.body(rec.to_string())
            }
        };
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
