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
    /// Taken, but not as new: the receiver had it already, or would not act on it now (Masakari's 409: a
    /// duplicate, or the host in maintenance). Counted apart from deliveries; the record is passed.
    Conflict(String),
    /// The receiver will never take it, and it is worth keeping: straight to the dead letters (the VIM's silence
    /// on an alarm for an instance it does not know).
    DeadLetter(String),
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
        let endpoint = cfg.endpoint();
        let timeout = Duration::from_secs(endpoint.timeout_secs.unwrap_or(10).max(1));
        // TLS trusts the system's roots and Mozilla's, and the sink's own CA file if it names one
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(ca) = &endpoint.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: not PEM certificates: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file {}: no certificate in it", ca.display()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| format!("http client: {e}"))?;
        Ok(match cfg {
            SinkConfig::Alertmanager(c) => {
                Sink::Alertmanager(alertmanager::Alertmanager::new(c, ctx, http, spool, name))
            }
            SinkConfig::Masakari(c) => Sink::Masakari(masakari::Masakari::new(c, ctx, http)?),
            SinkConfig::StarlingxVim(c) => Sink::Vim(vim::Vim::new(c, ctx, http)?),
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

    /// The state items that changed since the last call (Alertmanager's alerts), to save with the cursor.
    fn take_changes(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        match self {
            Sink::Alertmanager(s) => s.take_changes(),
            _ => Vec::new(),
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
    /// Records given up on after `max_record_age` of failures, or at once when the receiver will never take them
    /// (kept in the spool's dead letters).
    pub dead_letters: std::sync::atomic::AtomicU64,
    /// Records the receiver had already or would not act on (Masakari's 409), counted apart from deliveries.
    pub conflicts: std::sync::atomic::AtomicU64,
}

/// How long a sink keeps retrying one record before it goes to the dead letters (default 24 h).
pub const MAX_RECORD_AGE: Duration = Duration::from_secs(24 * 3600);

/// Delivers from the spool to `sink` forever: in order, each record until it is delivered, refused for good, or
/// still failing after `max_age` of retries (then it goes to the spool's dead letters, with a `spool` event
/// `dead_letter` for every sink, so that one poisoned record never blocks its sink); then the cursor moves. Wakes
/// when the spool grows, and at least every 10 s for periodic work.
pub async fn run(
    mut sink: Sink,
    name: String,
    spool: Arc<Spool>,
    mut grown: watch::Receiver<u64>,
    stats: Arc<SinkStats>,
    max_age: Duration,
) {
    use std::sync::atomic::Ordering::Relaxed;
    // every spool call runs on the blocking pool: disk work never stalls the runtime that serves the API
    let mut cursor = blocking(&spool, {
        let name = name.clone();
        move |s| s.cursor(&name)
    })
    .await
    .unwrap_or(0);
    let mut jitter = XorShift32::new(crate::sys::os_random());
    let mut last_durable = std::time::Instant::now();
    info!(sink = %name, cursor, "sink started");
    loop {
        let batch = match blocking(&spool, move |s| s.read_after(cursor, BATCH)).await {
            Ok(b) => b,
            Err(e) => {
                warn!(sink = %name, error = %e, "spool read failed");
                Vec::new()
            }
        };
        for (seq, rec) in &batch {
            let mut backoff = Backoff::starting_at(RETRY_MIN);
            let first_try = std::time::Instant::now();
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
                    Delivery::Conflict(why) => {
                        stats.conflicts.fetch_add(1, Relaxed);
                        info!(sink = %name, seq, why = %why, "taken as a conflict; passed");
                        break;
                    }
                    Delivery::DeadLetter(why) => {
                        stats.dead_letters.fetch_add(1, Relaxed);
                        warn!(sink = %name, seq, why = %why, "the receiver will never take it; dead-lettered");
                        dead_letter(&spool, &name, rec, &why).await;
                        break;
                    }
                    Delivery::Retry(why) if first_try.elapsed() >= max_age => {
                        stats.dead_letters.fetch_add(1, Relaxed);
                        warn!(sink = %name, seq, why = %why, "still failing after max_record_age; dead-lettered");
                        dead_letter(&spool, &name, rec, &why).await;
                        break;
                    }
                    Delivery::Retry(why) => {
                        stats.retries.fetch_add(1, Relaxed);
                        let wait = backoff.next_std(RETRY_MAX, jitter.next_id());
                        warn!(sink = %name, seq, why = %why, retry_in_ms = wait.as_millis() as u64, "delivery failed");
                        // progress so far is saved before a long wait
                        save(&spool, &name, cursor, sink.take_changes(), true).await;
                        tokio::time::sleep(wait).await;
                        sink.tick().await;
                    }
                }
            }
            cursor = *seq;
        }
        if !batch.is_empty() {
            // once per batch, and durable only now and then: at least once tolerates a replay after a crash
            let durable = last_durable.elapsed() >= DURABLE_EVERY;
            save(&spool, &name, cursor, sink.take_changes(), durable).await;
            if durable {
                last_durable = std::time::Instant::now();
            }
        }
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(10), grown.changed()).await;
        }
        sink.tick().await;
    }
}

/// Records delivered between two saves of a sink's cursor.
const BATCH: usize = 256;
/// A sink's progress is saved durably at least this often (otherwise with the next append's commit).
const DURABLE_EVERY: Duration = Duration::from_secs(5);

/// Runs `f` on the spool on the blocking pool.
async fn blocking<T: Send + 'static>(
    spool: &Arc<Spool>,
    f: impl FnOnce(&Spool) -> Result<T, super::spool::SpoolError> + Send + 'static,
) -> Result<T, super::spool::SpoolError> {
    let spool = Arc::clone(spool);
    match tokio::task::spawn_blocking(move || f(&spool)).await {
        Ok(r) => r,
        Err(e) => Err(super::spool::SpoolError(format!("spool task: {e}"))),
    }
}

/// Saves a sink's cursor and changed state.
async fn save(spool: &Arc<Spool>, name: &str, cursor: u64, changes: Vec<(String, Option<Vec<u8>>)>, durable: bool) {
    let n = name.to_string();
    if let Err(e) = blocking(spool, move |s| s.save_progress(&n, cursor, &changes, durable)).await {
        warn!(sink = %name, error = %e, "could not save the sink's progress");
    }
}

/// Keeps `rec` in the dead letters and tells every sink (a `spool` event), off the runtime (durable writes).
async fn dead_letter(spool: &Arc<Spool>, name: &str, rec: &Value, why: &str) {
    let (spool, name, rec, why) = (Arc::clone(spool), name.to_string(), rec.clone(), why.to_string());
    let done = tokio::task::spawn_blocking(move || {
        spool.dead_letter(&name, &rec, &why)?;
        if rec["kind"] == "spool" && rec["state"] == "dead_letter" {
            return Ok(()); // a notice of a dead letter that could not be delivered either: no notice of the notice
        }
        let detail = format!(
            "sink {name} gave up on event {} ({}) after retrying it for max_record_age: {why}",
            rec["id"].as_str().unwrap_or("?"),
            rec["kind"].as_str().unwrap_or("?")
        );
        let host = rec["host"].as_str().unwrap_or("").to_string();
        let event = crate::events::Event::Spool { state: "dead_letter", dropped: 1, detail };
        spool.append(&mut [super::spool::record(&host, "", &event)]).map(|_| ())
    })
    .await;
    if !matches!(done, Ok(Ok(()))) {
        warn!("could not keep a dead letter: {done:?}");
    }
}

/// The status of an HTTP answer as a delivery: 2xx done; 400, 413 and 422 final (the receiver will never take
/// this body); everything else is retried with backoff: 401/403 (a token being rotated), 404 (a receiver being
/// redeployed), 408, 429, 5xx, and any other answer. A record that keeps failing is dead-lettered after
/// `max_record_age` (see [`run`]), so nothing blocks a sink for good.
pub fn by_status(code: u16, body: &str) -> Delivery {
    match code {
        200..=299 => Delivery::Done,
        400 | 413 | 422 => Delivery::Final(format!("HTTP {code}: {}", short(body))),
        _ => Delivery::Retry(format!("HTTP {code}: {}", short(body))),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::upstream::sink_config::WebhookConfig;
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one HTTP request (headers, then the body's `Content-Length`) and throws it away.
    async fn read_request<S: tokio::io::AsyncRead + Unpin>(c: &mut S) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while let Ok(k) = c.read(&mut buf[got..]).await {
            if k == 0 {
                break;
            }
            got += k;
            let text = String::from_utf8_lossy(&buf[..got]).to_string();
            if let Some(h) = text.find("\r\n\r\n") {
                let len = text[..h]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if got >= h + 4 + len {
                    return;
                }
            }
        }
    }

    /// A receiver on loopback that answers each request with the next status of `script` (the last one forever);
    /// returns its URL and how many requests it got.
    async fn receiver(script: Vec<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&n);
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else { return };
                read_request(&mut c).await;
                let i = count.fetch_add(1, Relaxed);
                let code = script.get(i).or(script.last()).copied().unwrap_or(200);
                let _ = c
                    .write_all(
                        format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        (url, n)
    }

    async fn deliver_all(script: Vec<u16>, records: usize, max_age: Duration) -> (Arc<Spool>, Arc<SinkStats>, usize) {
        let events = (0..records).map(|i| (format!("g{i}"), crate::events::Event::Recovered {})).collect();
        deliver(script, events, max_age, |url| {
            SinkConfig::Webhook(WebhookConfig {
                url,
                name: None,
                timeout_secs: Some(5),
                ca_file: None,
                token_file: None,
                content_mode: Default::default(),
            })
        })
        .await
    }

    async fn deliver(
        script: Vec<u16>,
        events: Vec<(String, crate::events::Event)>,
        max_age: Duration,
        cfg: impl FnOnce(String) -> SinkConfig,
    ) -> (Arc<Spool>, Arc<SinkStats>, usize) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir =
            std::env::temp_dir().join(format!("vigil-delivery-{}-{}", std::process::id(), N.fetch_add(1, Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        let (url, hits) = receiver(script).await;
        let cfg = cfg(url);
        let name = cfg.cursor_name();
        let (spool, _) = Spool::open(&dir, 1000, std::slice::from_ref(&name)).unwrap();
        let spool = Arc::new(spool);
        let mut recs: Vec<Value> = events.iter().map(|(g, e)| super::super::spool::record("h", g, e)).collect();
        let last = spool.append(&mut recs).unwrap().last;
        let sink = Sink::new(&cfg, &name, Arc::new(Context::default()), &spool).unwrap();
        let stats = Arc::new(SinkStats::default());
        let (_tx, rx) = watch::channel(last);
        let task = tokio::spawn(run(sink, name.clone(), Arc::clone(&spool), rx, Arc::clone(&stats), max_age));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while spool.cursor(&name).unwrap() < last {
            assert!(std::time::Instant::now() < deadline, "the sink's cursor is stuck");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
        (spool, stats, hits.load(Relaxed))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_rotated_token_or_a_redeployed_receiver_is_retried_not_dropped() {
        // 401 (a token being rotated), then 404 (a receiver being redeployed), then it takes it
        let (_, stats, hits) = deliver_all(vec![401, 404, 202], 1, MAX_RECORD_AGE).await;
        assert_eq!((stats.delivered.load(Relaxed), stats.refused.load(Relaxed)), (1, 0));
        assert_eq!((stats.retries.load(Relaxed), hits), (2, 3));
    }

    fn lost_event() -> crate::events::Event {
        crate::events::Event::HeartbeatLost {
            consecutive_misses: 2,
            corrective_action: "reboot",
            last_heartbeat: None,
            reason: None,
            probe: None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_alertmanager_resolve_changes_the_saved_alerts_only_once_it_was_taken() {
        use crate::events::Event;
        let dir = std::env::temp_dir().join(format!("vigil-am-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (spool, _) = Spool::open(&dir, 100, &["am".to_string()]).unwrap();
        // the loss is taken, the resolve fails once, then is taken
        let (url, hits) = receiver(vec![200, 503, 200]).await;
        let cfg = crate::upstream::sink_config::Endpoint { url, name: None, timeout_secs: Some(5), ca_file: None };
        let http = reqwest::Client::new();
        let mut am = super::alertmanager::Alertmanager::new(&cfg, Arc::new(Context::default()), http, &spool, "am");
        let lost = super::super::spool::record("h", "g", &lost_event());
        let recovered = super::super::spool::record("h", "g", &Event::Recovered {});
        assert!(matches!(am.deliver(&lost).await, Delivery::Done));
        let firing = am.state();
        assert!(matches!(am.deliver(&recovered).await, Delivery::Retry(_)));
        assert_eq!(am.state(), firing, "a resolve that was not taken changes nothing");
        assert!(matches!(am.deliver(&recovered).await, Delivery::Done));
        assert_ne!(am.state(), firing, "taken: now it is resolved");
        assert_eq!(hits.load(Relaxed), 3, "the retry posted the resolve again");
        // a VM deleted while lost: its socket goes, and the alert is resolved rather than firing forever
        let lost = super::super::spool::record("h", "g", &lost_event());
        assert!(matches!(am.deliver(&lost).await, Delivery::Done));
        let firing = am.state();
        let removed = Event::Removed { open_fault: Some("heartbeat_lost".into()) };
        assert!(matches!(am.deliver(&super::super::spool::record("h", "g", &removed)).await, Delivery::Done));
        assert_ne!(am.state(), firing, "resolved");
        assert_eq!(hits.load(Relaxed), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_record_that_keeps_failing_goes_to_the_dead_letters_and_the_sink_moves_on() {
        // the receiver fails every request: with max_record_age 0, each record is tried once and dead-lettered
        let (spool, stats, _) = deliver_all(vec![503], 3, Duration::ZERO).await;
        // (the notices of the dead letters fail too, and are dead-lettered without a notice of their own)
        assert!(stats.dead_letters.load(Relaxed) >= 3);
        let dead = spool.dead_letters().unwrap();
        assert!(dead.len() >= 3);
        assert!(dead.iter().all(|d| d["why"].as_str().unwrap_or("").contains("503") && d["record"]["id"].is_string()));
        // and every sink hears of it: a spool event in the spool (delivered in turn, or dead-lettered too here)
        let notice = |r: &Value| r["kind"] == "spool" && r["state"] == "dead_letter";
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = spool.read_after(3, 10).unwrap();
            let dead = spool.dead_letters().unwrap();
            if waiting.iter().any(|(_, r)| notice(r)) || dead.iter().any(|d| notice(&d["record"])) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no dead_letter notice: {waiting:?} {dead:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // a body the receiver will never take is final at once, not retried
        assert!(matches!(by_status(422, ""), Delivery::Final(_)) && matches!(by_status(403, ""), Delivery::Retry(_)));
    }

    /// An HTTPS receiver on loopback whose certificate (for `localhost`) is signed by a CA of its own; returns its
    /// URL and the CA's PEM. It answers 200 to every request.
    async fn https_receiver() -> (String, String) {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "Vigil test private CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der.into())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}/", l.local_addr().unwrap().port());
        tokio::spawn(async move {
            loop {
                let Ok((c, _)) = l.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(c).await else { return };
                    read_request(&mut tls).await;
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (url, ca_cert.pem())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_receiver_behind_a_private_ca_is_reached_with_its_ca_file_and_refused_without() {
        let (url, ca_pem) = https_receiver().await;
        let dir = std::env::temp_dir().join(format!("vigil-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("private-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let (spool, _) = Spool::open(&dir, 10, &["s".to_string()]).unwrap();
        let rec = super::super::spool::record("h", "g", &crate::events::Event::Recovered {});
        let hook = |ca_file| {
            SinkConfig::Webhook(WebhookConfig {
                url: url.clone(),
                name: None,
                timeout_secs: Some(5),
                ca_file,
                token_file: None,
                content_mode: Default::default(),
            })
        };
        let ctx = Arc::new(Context::default());
        let mut without = Sink::new(&hook(None), "s", Arc::clone(&ctx), &spool).unwrap();
        let refused = without.deliver(&rec).await;
        assert!(
            matches!(&refused, Delivery::Retry(why) if why.contains("certificate") || why.contains("connection")),
            "{refused:?}"
        );
        let mut with = Sink::new(&hook(Some(ca_file.clone())), "s", ctx, &spool).unwrap();
        assert!(matches!(with.deliver(&rec).await, Delivery::Done));
        // a CA file that is not PEM is refused at start, naming it
        std::fs::write(&ca_file, "not a certificate").unwrap();
        let bad = Sink::new(&hook(Some(ca_file.clone())), "s", Arc::new(Context::default()), &spool);
        assert!(bad.is_err_and(|e| e.contains("private-ca.pem")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
