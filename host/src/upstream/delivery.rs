//! Delivery from the spool to one sink: the sink configuration, the [`Sink`] a configuration makes, how an answer
//! is judged ([`Delivery`]), and the loop that walks a sink's cursor ([`run`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use vigil_core::{IdSource, XorShift32};

use super::sink_config::SinkConfig;
use super::spool::Spool;
use super::{alertmanager, masakari, vim, webhook};
use crate::backoff::Backoff;

/// First retry delay of a failed delivery.
const RETRY_MIN: vigil_core::Duration = vigil_core::Duration::from_secs(1);
/// Largest retry delay.
const RETRY_MAX: vigil_core::Duration = vigil_core::Duration::from_secs(60);

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

    /// The guest whose instance is `uuid`: the one mapped to it, else the UUID itself (the reverse of
    /// [`instance`](Self::instance)).
    pub fn guest_of_instance(&self, uuid: &str) -> String {
        self.instance_uuids.iter().find(|(_, u)| *u == uuid).map_or_else(|| uuid.to_string(), |(g, _)| g.clone())
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
    /// A sink from its configuration, named `name` (its cursor; see [`SinkConfig::unique_names`]).
    pub fn new(cfg: &SinkConfig, name: &str, ctx: Arc<Context>, spool: &Spool) -> Result<Sink, String> {
        let timeout = Duration::from_secs(cfg.endpoint().timeout_secs.unwrap_or(10).max(1));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(match cfg {
            SinkConfig::Alertmanager(c) => {
                Sink::Alertmanager(alertmanager::Alertmanager::new(c, ctx, http, spool, name))
            }
            SinkConfig::Masakari(c) => Sink::Masakari(masakari::Masakari::new(c, ctx, http)?),
            SinkConfig::StarlingxVim(c) => Sink::Vim(vim::Vim::new(c, ctx, http)),
            SinkConfig::Webhook(c) => Sink::Webhook(webhook::Webhook::new(c, ctx, http)?),
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
    let mut jitter = XorShift32::new(crate::sys::os_random());
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
            let mut backoff = Backoff::starting_at(RETRY_MIN);
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
                        let wait = backoff.next_std(RETRY_MAX, jitter.next_id());
                        warn!(sink = %name, seq, why = %why, retry_in_ms = wait.as_millis() as u64, "delivery failed");
                        tokio::time::sleep(wait).await;
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

/// A request error as a delivery (always worth a retry: refused connection, timeout, TLS, DNS). The URL is left
/// out of the message: its path or query may hold a secret.
pub fn by_error(e: &reqwest::Error) -> Delivery {
    let mut why = format!("{}", NoUrl(e));
    if let Some(source) = std::error::Error::source(e) {
        why = format!("{why}: {source}");
    }
    Delivery::Retry(why)
}

/// A reqwest error's kind, without its URL.
struct NoUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for NoUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_request() {
            "request failed"
        } else if e.is_body() || e.is_decode() {
            "bad response body"
        } else {
            "HTTP error"
        };
        f.write_str(kind)
    }
}

/// Reads a secret from a file (trimmed); the error names the file, never the content.
pub fn secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("{}: {e}", path.display()))
}
