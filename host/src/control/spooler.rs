//! The spool's writer thread and the sinks' tasks: events from the loop become records (with a stable UUIDv7
//! `id`, `time`, `host`, `guest`, `kind` and the event's fields), stored in batches, each batch one durable
//! commit, before any sink is told (a `watch` of the last sequence number wakes them).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::{Shared, Upstream};
use crate::events::{rfc3339, Event};
use crate::upstream::spool::Spool;
use crate::upstream::{Sink, SinkStats};

/// The opened spool and the sinks ready to run.
pub struct Opened {
    /// The spool.
    pub spool: Arc<Spool>,
    /// Sinks by cursor name.
    pub sinks: Vec<(String, Sink)>,
    /// Their counters.
    pub stats: Vec<(String, Arc<SinkStats>)>,
    notes: Vec<String>,
    host: String,
}

/// Opens the spool and builds the sinks (a bad sink configuration is refused here, before the daemon runs).
pub fn open(u: &Upstream) -> Result<Opened, String> {
    for s in &u.sinks {
        s.validate()?;
    }
    let names = crate::upstream::SinkConfig::unique_names(&u.sinks);
    let (spool, notes) = Spool::open(&u.state_dir, u.cap, &names).map_err(|e| e.to_string())?;
    for n in &notes {
        warn!("{n}");
    }
    let ctx = Arc::new(u.ctx.clone());
    let mut sinks = Vec::new();
    let mut stats = Vec::new();
    for (cfg, name) in u.sinks.iter().zip(&names) {
        sinks.push((name.clone(), Sink::new(cfg, name, Arc::clone(&ctx), &spool)?));
        stats.push((name.clone(), Arc::new(SinkStats::default())));
    }
    Ok(Opened { spool: Arc::new(spool), sinks, stats, notes, host: u.ctx.host.clone() })
}

/// A record for the spool.
pub fn record(host: &str, guest: &str, event: &Event) -> Value {
    let mut v = serde_json::to_value(event).unwrap_or_else(|_| json!({ "kind": event.kind() }));
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), json!(uuid::Uuid::now_v7().to_string()));
        m.insert("time".into(), json!(rfc3339(SystemTime::now())));
        m.insert("host".into(), json!(host));
        m.insert("guest".into(), json!(guest));
    }
    v
}

/// Starts the writer thread and the sink tasks (on `rt`).
pub fn start(
    up: Opened,
    mut rx: mpsc::Receiver<(Arc<str>, Event)>,
    shared: Arc<Shared>,
    rt: &tokio::runtime::Handle,
) -> std::io::Result<JoinHandle<()>> {
    let (grown_tx, grown_rx) = watch::channel(0u64);
    for ((name, sink), (_, stats)) in up.sinks.into_iter().zip(up.stats.iter()) {
        rt.spawn(crate::upstream::run(sink, name, Arc::clone(&up.spool), grown_rx.clone(), Arc::clone(stats)));
    }
    let spool = up.spool;
    let host = up.host;
    let mut pending: Vec<Value> = up
        .notes
        .into_iter()
        .map(|n| record(&host, "", &Event::Spool { state: "reset", dropped: 0, detail: n }))
        .collect();
    std::thread::Builder::new().name("vigild-spool".into()).spawn(move || loop {
        if pending.is_empty() {
            match rx.blocking_recv() {
                Some((guest, e)) => {
                    shared.count(e.kind());
                    pending.push(record(&host, &guest, &e));
                }
                None => return,
            }
        }
        while pending.len() < 1024 {
            match rx.try_recv() {
                Ok((guest, e)) => {
                    shared.count(e.kind());
                    pending.push(record(&host, &guest, &e));
                }
                Err(_) => break,
            }
        }
        match spool.append(&mut pending) {
            Ok(a) => {
                pending.clear();
                if a.dropped > 0 {
                    let detail =
                        format!("the spool was full: the {} oldest undelivered events were dropped", a.dropped);
                    warn!("{detail}");
                    pending.push(record(&host, "", &Event::Spool { state: "dropped", dropped: a.dropped, detail }));
                }
                let _ = grown_tx.send(a.last);
            }
            Err(e) => {
                // a full disk or an I/O error: keep the batch, try again in a second (the loop's queue fills
                // meanwhile and counts what it cannot hand over; the loop never waits)
                warn!(error = %e, "spool write failed; retrying");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    })
}
