//! The spool's writer thread and the sinks' tasks: events from the loop become records (with a stable UUIDv7
//! `id`, `time`, `host`, `guest`, `kind` and the event's fields), stored in batches, each batch one durable
//! commit, before any sink is told (a `watch` of the last sequence number wakes them).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{Shared, Upstream};
use crate::backoff::Backoff;
use crate::events::Event;
use crate::upstream::spool::{record, Spool};
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
    max_record_age: Duration,
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
    Ok(Opened {
        spool: Arc::new(spool),
        sinks,
        stats,
        notes,
        host: u.ctx.host.clone(),
        max_record_age: u.max_record_age,
    })
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
        rt.spawn(crate::upstream::run(
            sink,
            name,
            Arc::clone(&up.spool),
            grown_rx.clone(),
            Arc::clone(stats),
            up.max_record_age,
        ));
    }
    let spool = up.spool;
    let host = up.host;
    let mut pending: Vec<Value> = up
        .notes
        .into_iter()
        .map(|n| record(&host, "", &Event::Spool { state: "reset", dropped: 0, detail: n }))
        .collect();
    std::thread::Builder::new().name("vigild-spool".into()).spawn(move || {
        crate::sys::background_thread();
        let mut failing: Option<Failing> = None;
        loop {
            // while the spool fails, keep taking what arrives (bounded), so the loop's queue does not overflow
            let limit = if failing.is_some() { MAX_PENDING + BATCH } else { BATCH };
            if pending.is_empty() {
                match rx.blocking_recv() {
                    Some((guest, e)) => {
                        shared.seen(&guest, &e);
                        pending.push(record(&host, &guest, &e));
                    }
                    None => return,
                }
            }
            while pending.len() < limit {
                match rx.try_recv() {
                    Ok((guest, e)) => {
                        shared.seen(&guest, &e);
                        pending.push(record(&host, &guest, &e));
                    }
                    Err(_) => break,
                }
            }
            if let Some(f) = failing.as_mut() {
                // over the bound: the oldest go, as in a full spool, and are counted
                if pending.len() >= MAX_PENDING {
                    let excess = pending.len() + 1 - MAX_PENDING;
                    pending.drain(..excess);
                    spool.health.lost.fetch_add(excess as u64, Relaxed);
                }
                if Instant::now() < f.retry_at {
                    std::thread::sleep(f.retry_at.saturating_duration_since(Instant::now()).min(TICK));
                    continue;
                }
                if let Err(e) = spool.reopen() {
                    spool.health.errors.fetch_add(1, Relaxed);
                    f.retry_at = Instant::now() + f.backoff.next_std(REOPEN_MAX, crate::sys::os_random());
                    warn!(error = %e, "spool still failing; records wait in memory: {}", pending.len());
                    continue;
                }
            }
            // one durable commit for the batch
            let batch: Vec<Value> = pending.drain(..pending.len().min(BATCH)).collect();
            let mut batch = batch;
            match spool.append(&mut batch) {
                Ok(a) => {
                    if let Some(f) = failing.take() {
                        let detail = format!(
                            "the spool is writable again after {} s; the events held meanwhile are stored",
                            f.since.elapsed().as_secs()
                        );
                        info!("{detail}");
                        pending.push(record(&host, "", &Event::Spool { state: "recovered", dropped: 0, detail }));
                    }
                    if a.dropped > 0 {
                        let detail =
                            format!("the spool was full: the {} oldest undelivered events were dropped", a.dropped);
                        warn!("{detail}");
                        pending.push(record(&host, "", &Event::Spool { state: "dropped", dropped: a.dropped, detail }));
                    }
                    let _ = grown_tx.send(a.last);
                }
                Err(e) => {
                    // a full disk or an I/O error: redb refuses the handle from now on, so close it and open it
                    // again with backoff; the batch goes back in front, nothing is lost while memory allows
                    spool.health.errors.fetch_add(1, Relaxed);
                    batch.append(&mut pending);
                    pending = batch;
                    if failing.is_none() {
                        warn!(error = %e, "spool write failed; holding events in memory and reopening");
                        let detail = format!("spool write failed: {e}; events are held in memory until it recovers");
                        pending.push(record(&host, "", &Event::Spool { state: "error", dropped: 0, detail }));
                        failing = Some(Failing {
                            since: Instant::now(),
                            retry_at: Instant::now(),
                            backoff: Backoff::starting_at(REOPEN_MIN),
                        });
                    }
                    if let Some(f) = failing.as_mut() {
                        f.retry_at = Instant::now() + f.backoff.next_std(REOPEN_MAX, crate::sys::os_random());
                    }
                }
            }
        }
    })
}

/// Records written in one durable commit.
const BATCH: usize = 1024;
/// Records held in memory while the spool cannot be written (about 1 KiB each: ~100 MiB at most).
const MAX_PENDING: usize = 100_000;
/// The spool thread looks at its queue at least this often while it waits to reopen.
const TICK: Duration = Duration::from_millis(200);
const REOPEN_MIN: vigil_core::Duration = vigil_core::Duration::from_millis(500);
const REOPEN_MAX: vigil_core::Duration = vigil_core::Duration::from_secs(30);

/// A spool that fails: since when, and when to try again.
struct Failing {
    since: Instant,
    retry_at: Instant,
    backoff: Backoff,
}
