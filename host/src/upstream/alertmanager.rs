//! Alertmanager v2 (`POST /api/v2/alerts`): `VigilHeartbeatLost`, `VigilGuestUnhealthy` and
//! `VigilHeartbeatNotEstablished` alerts, labelled
//! `alertname`, `guest`, `host`, `severity`, with the guest's reason and requested action as annotations. Firing
//! alerts are re-sent every 60 s with `endsAt` = now + 4 min (as Prometheus does); recovery, a graceful exit or a
//! removed guest resolves them with `endsAt` = the time of recovery, re-sent for 5 min. Alertmanager identifies an
//! alert by its labels, so re-sending is idempotent: no duplicate alert. The set of alerts is saved in the spool,
//! so a restart goes on re-sending them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::sink_config::Endpoint;
use super::{by_error, by_status, Context, Delivery};
use crate::events::rfc3339;
use crate::upstream::spool::Spool;

/// How often firing alerts are re-sent.
pub const RESEND: Duration = Duration::from_secs(60);
/// How far ahead a firing alert's `endsAt` is set.
pub const ENDS_AHEAD: Duration = Duration::from_secs(240);
/// How long a resolved alert is re-sent.
pub const RESOLVED_FOR: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Alert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: String,
    /// RFC 3339 time of resolution, and when (unix ms) to stop re-sending it.
    resolved: Option<(String, u64)>,
}

/// The sink.
pub struct Alertmanager {
    url: String,
    ctx: Arc<Context>,
    http: reqwest::Client,
    alerts: BTreeMap<String, Alert>,
    /// Alerts changed (or forgotten) since the state was last saved.
    changed: std::collections::BTreeSet<String>,
    last_resend: Option<std::time::Instant>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Alertmanager {
    /// A sink posting to `cfg.url`, with the alerts saved under `name` in the spool.
    pub fn new(cfg: &Endpoint, ctx: Arc<Context>, http: reqwest::Client, spool: &Spool, name: &str) -> Self {
        let mut alerts: BTreeMap<String, Alert> = spool
            .state_items(name)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v).ok()?)))
            .collect();
        let mut changed = std::collections::BTreeSet::new();
        if alerts.is_empty() {
            // saved whole by an older vigild: carried over, and saved item by item from now on
            alerts = spool.state(name).ok().flatten().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            changed.extend(alerts.keys().cloned());
        }
        let url = format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'));
        Alertmanager { url, ctx, http, alerts, changed, last_resend: None }
    }

    /// The alerts, serialised (for tests and inspection).
    pub fn state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.alerts).unwrap_or_default()
    }

    /// What changed since the last call, to save: each alert's new value, or `None` when it was forgotten.
    pub fn take_changes(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let keys = std::mem::take(&mut self.changed);
        keys.into_iter()
            .map(|k| {
                let v = self.alerts.get(&k).and_then(|a| serde_json::to_vec(a).ok());
                (k, v)
            })
            .collect()
    }

    fn key(guest: &str, name: &str) -> String {
        format!("{guest}\u{0}{name}")
    }

    /// Posts what one record changes; the alerts are updated only once Alertmanager took them, so a record that
    /// is retried posts its change again (a resolve is never lost to a failed POST).
    pub async fn deliver(&mut self, rec: &Value) -> Delivery {
        let kind = rec["kind"].as_str().unwrap_or("");
        let guest = rec["guest"].as_str().unwrap_or("").to_string();
        let time = rec["time"].as_str().unwrap_or("").to_string();
        let changed: Vec<(String, Alert)> = match kind {
            "heartbeat_lost" => {
                let why = "the guest stopped answering heartbeat challenges".to_string();
                vec![self.fire(&guest, "VigilHeartbeatLost", "critical", &time, why, rec)]
            }
            "unhealthy" => {
                let why = rec["log_msg"].as_str().unwrap_or("").to_string();
                vec![self.fire(&guest, "VigilGuestUnhealthy", "warning", &time, why, rec)]
            }
            "not_established" => {
                let why = "the guest's heartbeat port is open, but the guest never registered".to_string();
                vec![self.fire(&guest, "VigilHeartbeatNotEstablished", "warning", &time, why, rec)]
            }
            "registered" => self.resolve(&guest, &time, &["VigilHeartbeatNotEstablished"]),
            // a deleted VM's alerts are closed too: they would fire forever
            "recovered" | "deregistered" | "stopped" | "removed" => self.resolve(
                &guest,
                &time,
                &["VigilHeartbeatLost", "VigilGuestUnhealthy", "VigilHeartbeatNotEstablished"],
            ),
            _ => Vec::new(),
        };
        if changed.is_empty() {
            return Delivery::Done;
        }
        let now = SystemTime::now();
        let body: Vec<Value> = changed.iter().map(|(_, a)| render(a, now)).collect();
        let done = self.post(&body).await;
        if matches!(done, Delivery::Done) {
            self.changed.extend(changed.iter().map(|(k, _)| k.clone()));
            self.alerts.extend(changed);
        }
        done
    }

    /// The alert `name` of `guest`, firing.
    fn fire(&self, guest: &str, name: &str, severity: &str, time: &str, why: String, rec: &Value) -> (String, Alert) {
        let key = Self::key(guest, name);
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), name.to_string());
        labels.insert("guest".to_string(), guest.to_string());
        labels.insert("severity".to_string(), severity.to_string());
        labels.insert("instance_uuid".to_string(), self.ctx.instance(guest));
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), format!("{name} for guest {guest}"));
        annotations.insert("reason".to_string(), why);
        // the reporting node is an annotation, not a label: the same guest's alert from the source and the target of
        // a migration is one alert (Alertmanager groups and deduplicates by labels)
        annotations.insert("host".to_string(), rec["host"].as_str().unwrap_or(&self.ctx.host).to_string());
        annotations
            .insert("corrective_action".to_string(), rec["corrective_action"].as_str().unwrap_or("none").to_string());
        let starts_at = match self.alerts.get(&key) {
            Some(a) if a.resolved.is_none() => a.starts_at.clone(),
            _ => time.to_string(),
        };
        (key, Alert { labels, annotations, starts_at, resolved: None })
    }

    /// The alerts `names` of `guest` that are firing, resolved.
    fn resolve(&self, guest: &str, time: &str, names: &[&str]) -> Vec<(String, Alert)> {
        let until = unix_ms(SystemTime::now()) + RESOLVED_FOR.as_millis() as u64;
        let mut changed = Vec::new();
        for name in names {
            let key = Self::key(guest, name);
            if let Some(a) = self.alerts.get(&key).filter(|a| a.resolved.is_none()) {
                let mut a = a.clone();
                a.resolved = Some((time.to_string(), until));
                changed.push((key, a));
            }
        }
        changed
    }

    async fn post(&self, body: &[Value]) -> Delivery {
        match self.http.post(&self.url).json(body).send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                by_status(code, &text)
            }
            Err(e) => by_error(&e),
        }
    }

    /// Every 60 s: re-sends firing alerts (`endsAt` now + 4 min) and recently resolved ones; forgets resolved
    /// alerts after 5 min.
    pub async fn tick(&mut self) {
        if self.last_resend.is_some_and(|t| t.elapsed() < RESEND) || self.alerts.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let now_ms = unix_ms(now);
        let forget: Vec<String> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.resolved.as_ref().is_some_and(|(_, until)| *until <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for k in forget {
            self.alerts.remove(&k);
            self.changed.insert(k);
        }
        let body: Vec<Value> = self.alerts.values().map(|a| render(a, now)).collect();
        if !body.is_empty() && matches!(self.post(&body).await, Delivery::Done) {
            self.last_resend = Some(std::time::Instant::now());
        }
    }
}

fn render(a: &Alert, now: SystemTime) -> Value {
    let ends_at = match &a.resolved {
        Some((t, _)) => t.clone(),
        None => rfc3339(now + ENDS_AHEAD),
    };
    json!({ "labels": a.labels, "annotations": a.annotations, "startsAt": a.starts_at, "endsAt": ends_at })
}
