//! Upstream sinks: the systems that repair VMs, fed from the spool. Each sink runs as its own task on the control
//! thread with its own cursor, its own retry (exponential backoff with jitter, 1 s doubling to 60 s) and a timeout
//! on every request, so a dead receiver delays nobody else. Credentials come from files and are never logged.
//!
//! | kind | what it sends |
//! |---|---|
//! | `alertmanager` ([`alertmanager`]) | Alertmanager v2 alerts, firing and resolved, re-sent as Prometheus does |
//! | `masakari` ([`masakari`]) | OpenStack Masakari VM notifications (Keystone v3 password auth) |
//! | `starlingx-vim` ([`vim`]) | what the StarlingX guest-heartbeat host agent sent to the VIM |
//! | `webhook` ([`webhook`]) | CloudEvents 1.0, structured JSON |

pub mod alertmanager;
pub mod masakari;
pub mod vim;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::spool::Spool;

/// One sink as the configuration file (`[[sink]]`) or a flag names it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `alertmanager`, `masakari`, `starlingx-vim`, `webhook`.
    pub kind: String,
    /// Base URL (Alertmanager, Masakari API, VIM) or the full URL (webhook).
    pub url: String,
    /// A name for its cursor and its log lines (default: kind and URL).
    pub name: Option<String>,
    /// Seconds each request may take (default 10).
    pub timeout_secs: Option<u64>,
    /// Webhook: a file with a bearer token.
    pub token_file: Option<PathBuf>,
    /// Masakari: Keystone v3 (`auth_url`, `username`, `password_file`, `user_domain_name`, `project_name`,
    /// `project_domain_name`, `region_name`, as masakari-monitors names them).
    pub auth_url: Option<String>,
    /// Masakari: Keystone user.
    pub username: Option<String>,
    /// Masakari: a file holding the password.
    pub password_file: Option<PathBuf>,
    /// Masakari: the user's domain (default `Default`).
    pub user_domain_name: Option<String>,
    /// Masakari: the project.
    pub project_name: Option<String>,
    /// Masakari: the project's domain (default `Default`).
    pub project_domain_name: Option<String>,
    /// Masakari: the region (informational).
    pub region_name: Option<String>,
    /// Masakari: notify every loss, not only those whose guest asked for `reboot` or `stop`.
    #[serde(default)]
    pub all_losses: bool,
}

impl SinkConfig {
    /// A sink from a command-line flag.
    pub fn from_flag(kind: &str, url: &str) -> Self {
        SinkConfig {
            kind: kind.into(),
            url: url.into(),
            name: None,
            timeout_secs: None,
            token_file: None,
            auth_url: None,
            username: None,
            password_file: None,
            user_domain_name: None,
            project_name: None,
            project_domain_name: None,
            region_name: None,
            all_losses: false,
        }
    }

    /// Its cursor's name.
    pub fn cursor_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("{}:{}", self.kind, self.url))
    }

    /// Checks what can be checked before starting.
    pub fn validate(&self) -> Result<(), String> {
        if !["alertmanager", "masakari", "starlingx-vim", "webhook"].contains(&self.kind.as_str()) {
            return Err(format!("sink kind {:?}: alertmanager, masakari, starlingx-vim or webhook", self.kind));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("sink {}: url must be http:// or https://", self.kind));
        }
        if self.kind == "masakari"
            && self.auth_url.is_some()
            && (self.username.is_none() || self.password_file.is_none())
        {
            return Err("masakari: auth_url needs username and password_file".into());
        }
        Ok(())
    }
}

/// What sinks share: the host's name and guest-to-instance mapping.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// This compute node.
    pub host: String,
    /// Guest id -> instance UUID, where the socket's id is not the UUID (plain QEMU).
    pub instance_uuids: BTreeMap<String, String>,
}

impl Context {
    /// The instance UUID of a guest: the mapping, else the id itself (Nova names sockets by instance UUID).
    pub fn instance(&self, guest: &str) -> String {
        self.instance_uuids.get(guest).cloned().unwrap_or_else(|| guest.to_string())
    }
}

/// How one delivery went.
#[derive(Debug)]
pub enum Delivery {
    /// Delivered (or nothing to send for this record).
    Done,
    /// Failed in a way that may pass: try again after a backoff.
    Retry(String),
    /// Refused for good (a 400): logged and counted, the record is passed.
    Final(String),
}

/// A sink.
pub enum Sink {
    /// Alertmanager v2.
    Alertmanager(alertmanager::Alertmanager),
    /// Masakari.
    Masakari(masakari::Masakari),
    /// StarlingX VIM.
    Vim(vim::Vim),
    /// CloudEvents webhook.
    Webhook(webhook::Webhook),
}

impl Sink {
    /// A sink from its configuration.
    pub fn new(cfg: &SinkConfig, ctx: Arc<Context>, spool: &Spool) -> Result<Sink, String> {
        let timeout = Duration::from_secs(cfg.timeout_secs.unwrap_or(10).max(1));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let name = cfg.cursor_name();
        Ok(match cfg.kind.as_str() {
            "alertmanager" => Sink::Alertmanager(alertmanager::Alertmanager::new(cfg, ctx, http, spool, &name)),
            "masakari" => Sink::Masakari(masakari::Masakari::new(cfg, ctx, http)?),
            "starlingx-vim" => Sink::Vim(vim::Vim::new(cfg, ctx, http)),
            "webhook" => Sink::Webhook(webhook::Webhook::new(cfg, ctx, http)?),
            other => return Err(format!("sink kind {other:?}")),
        })
    }

    async fn deliver(&mut self, rec: &Value) -> Delivery {
        match self {
            Sink::Alertmanager(s) => s.deliver(rec).await,
            Sink::Masakari(s) => s.deliver(rec).await,
            Sink::Vim(s) => s.deliver(rec).await,
            Sink::Webhook(s) => s.deliver(rec).await,
        }
    }

    /// Periodic work (Alertmanager re-sends firing alerts).
    async fn tick(&mut self) {
        if let Sink::Alertmanager(s) = self {
            s.tick().await;
        }
    }

    fn save(&self, spool: &Spool, name: &str) {
        if let Sink::Alertmanager(s) = self {
            if let Err(e) = spool.set_state(name, &s.state()) {
                warn!(sink = name, error = %e, "could not save the sink's state");
            }
        }
    }
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records delivered.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: std::sync::atomic::AtomicU64,
    /// Records refused for good.
    pub refused: std::sync::atomic::AtomicU64,
}

/// Delivers from the spool to `sink` forever: in order, each record until it is delivered (or refused for good),
/// then the cursor moves. Wakes when the spool grows, and at least every 10 s for periodic work.
pub async fn run(
    mut sink: Sink,
    name: String,
    spool: Arc<Spool>,
    mut grown: watch::Receiver<u64>,
    stats: Arc<SinkStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut cursor = spool.cursor(&name).unwrap_or(0);
    let mut jitter = crate::sys::os_random() | 1;
    info!(sink = %name, cursor, "sink started");
    loop {
        let batch = match spool.read_after(cursor, 256) {
            Ok(b) => b,
            Err(e) => {
                warn!(sink = %name, error = %e, "spool read failed");
                Vec::new()
            }
        };
        for (seq, rec) in &batch {
            let mut backoff = Duration::from_secs(1);
            loop {
                match sink.deliver(rec).await {
                    Delivery::Done => {
                        stats.delivered.fetch_add(1, Relaxed);
                        break;
                    }
                    Delivery::Final(why) => {
                        stats.refused.fetch_add(1, Relaxed);
                        warn!(sink = %name, seq, why = %why, "refused for good; passed");
                        break;
                    }
                    Delivery::Retry(why) => {
                        stats.retries.fetch_add(1, Relaxed);
                        jitter ^= jitter << 13;
                        jitter ^= jitter >> 17;
                        jitter ^= jitter << 5;
                        let spread = backoff.as_millis() as u64 / 5;
                        let wait = backoff.as_millis() as u64 - spread + u64::from(jitter) % (2 * spread + 1);
                        warn!(sink = %name, seq, why = %why, retry_in_ms = wait, "delivery failed");
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        sink.tick().await;
                    }
                }
            }
            cursor = *seq;
            sink.save(&spool, &name);
            if let Err(e) = spool.set_cursor(&name, cursor) {
                warn!(sink = %name, error = %e, "could not save the cursor");
            }
        }
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(10), grown.changed()).await;
        }
        sink.tick().await;
    }
}

/// The status of an HTTP answer as a delivery: 2xx done, 408/429/5xx retry, other 4xx final.
pub fn by_status(code: u16, body: &str) -> Delivery {
    match code {
        200..=299 => Delivery::Done,
        408 | 429 | 500..=599 => Delivery::Retry(format!("HTTP {code}: {}", short(body))),
        _ => Delivery::Final(format!("HTTP {code}: {}", short(body))),
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A request error as a delivery (always worth a retry: refused connection, timeout, TLS, DNS).
pub fn by_error(e: &reqwest::Error) -> Delivery {
    Delivery::Retry(format!("{e}"))
}

/// Reads a secret from a file (trimmed); the error names the file, never the content.
pub fn secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("{}: {e}", path.display()))
}
