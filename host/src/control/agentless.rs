//! Agentless guests through libvirt (issue #22): every running domain with the stock QEMU guest agent's channel
//! (`org.qemu.guest_agent.0`, any of its channels) and without Vigil's own (`cgcs.heartbeat`) is probed through
//! libvirt, in process, on vigild's libvirt client: one task per domain, one probe per interval, each with its own
//! timeout, so a slow or stopped domain never delays another. The probe is `virDomainGetTime`, a typed agent call
//! (`guest-get-time`) that, unlike a raw agent command, does not mark the domain tainted. How each probe went goes
//! to the loop, whose fleet gives the verdicts (`fleet::agentless`). Domains are found at start and every
//! `rescan` (a domain without the agent is looked at again every tenth rescan, in case its channel was plugged in).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};
use vigil_core::libvirt as wire;

use super::libvirt::{DomainRef, Error, Libvirt};
use super::{Command, Shared};
use crate::fleet::agentless::Probe;

/// The guest agent's channel name.
pub const AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";
/// Vigil's heartbeat channel name.
pub const HEARTBEAT_CHANNEL: &str = "cgcs.heartbeat";

/// How agentless guests are probed.
#[derive(Clone, Debug)]
pub struct QgaRunConfig {
    /// The libvirt URI.
    pub libvirt: String,
    /// One probe per this.
    pub interval: Duration,
    /// A probe unanswered this long is a miss.
    pub timeout: Duration,
    /// Loss when consecutive misses exceed this.
    pub loss_threshold: u32,
    /// How often the running domains are listed.
    pub rescan: Duration,
    /// The opt-in health command.
    pub health: Option<HealthRun>,
}

/// The opt-in health command, resolved.
#[derive(Clone, Debug)]
pub struct HealthRun {
    /// The argv.
    pub command: Vec<String>,
    /// One run per this.
    pub interval: Duration,
    /// A run not exited after this is a failure.
    pub timeout: Duration,
    /// Unhealthy after this many failures in a row.
    pub failure_threshold: u32,
}

/// The longest reason kept from a health command's output.
pub const MAX_REASON: usize = 200;

/// The channels a domain's XML names (`<channel><target name=...>`).
pub fn channels(xml: &str) -> Vec<String> {
    let Ok(doc) = roxmltree::Document::parse(xml) else { return Vec::new() };
    doc.descendants()
        .filter(|n| n.has_tag_name("channel"))
        .filter_map(|c| c.children().find(|t| t.has_tag_name("target")))
        .filter_map(|t| t.attribute("name").map(str::to_string))
        .collect()
}

/// How a probe's result reads: any answer from the agent (an error reply included: a frozen guest's agent refuses
/// most commands, and is alive) is an answer; no answer is a miss; a domain that is not running, or a libvirt that
/// cannot probe, is neither.
pub fn classify(r: Result<(i64, u32), Error>) -> Probe {
    match r {
        Ok(_) => Probe::Answered,
        Err(Error::Timeout { after, .. }) => Probe::NoAnswer(format!("no answer in {} ms", after.as_millis())),
        Err(Error::Remote { code: wire::ERR_AGENT_UNRESPONSIVE | wire::ERR_OPERATION_TIMEOUT, message }) => {
            Probe::NoAnswer(message)
        }
        // not running, gone, not supported by this driver: nothing to judge
        Err(Error::Remote { code: wire::ERR_OPERATION_INVALID | wire::ERR_NO_DOMAIN | 3 | 74 | 84, .. }) => {
            Probe::NotRunning
        }
        Err(Error::Remote { .. }) => Probe::Answered,
        // libvirtd itself unreachable: the guest is not to blame
        Err(_) => Probe::NotRunning,
    }
}

fn uuid_string(u: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*u).hyphenated().to_string()
}

/// Finds and probes agentless domains on vigild's libvirt client `lv` until the runtime stops.
pub async fn run(cfg: QgaRunConfig, lv: Result<Libvirt, Error>, shared: Arc<Shared>) {
    let lv = match lv {
        Ok(lv) => lv,
        Err(e) => {
            warn!(error = %e, "qga: no libvirt client; agentless guests are not watched");
            return;
        }
    };
    let cfg = Arc::new(cfg);
    let mut watched: HashMap<[u8; 16], (String, JoinHandle<()>)> = HashMap::new();
    let mut without_agent: HashSet<[u8; 16]> = HashSet::new();
    let mut round: u64 = 0;
    let mut said_error = false;
    loop {
        if round.is_multiple_of(10) {
            without_agent.clear();
        }
        round += 1;
        match lv.active_domains(None).await {
            Ok(list) => {
                said_error = false;
                let running: HashSet<[u8; 16]> = list.iter().map(|d| d.uuid).collect();
                watched.retain(|uuid, (id, task)| {
                    let keep = running.contains(uuid);
                    if !keep {
                        task.abort();
                        shared.send(Command::AgentUnwatch { guest: id.clone() });
                    }
                    keep
                });
                for d in list {
                    if watched.contains_key(&d.uuid) || without_agent.contains(&d.uuid) {
                        continue;
                    }
                    let Ok(xml) = lv.xml(&d, None).await else { continue };
                    let ch = channels(&xml);
                    if !ch.iter().any(|c| c == AGENT_CHANNEL) || ch.iter().any(|c| c == HEARTBEAT_CHANNEL) {
                        without_agent.insert(d.uuid);
                        continue;
                    }
                    let id = uuid_string(&d.uuid);
                    info!(guest = %id, domain = %d.name, "qga: watching through the guest agent");
                    shared.send(Command::AgentWatch { guest: id.clone(), domain: d.name.clone() });
                    let (lv2, cfg2, sh2) = (lv.clone(), Arc::clone(&cfg), Arc::clone(&shared));
                    let (d2, id2) = (d.clone(), id.clone());
                    let task = tokio::spawn(async move {
                        match cfg2.health.clone() {
                            Some(h) => {
                                let heard = Arc::new(Heard::default());
                                let health = health_loop(
                                    lv2.clone(),
                                    d2.clone(),
                                    id2.clone(),
                                    h,
                                    Arc::clone(&sh2),
                                    Arc::clone(&heard),
                                );
                                tokio::join!(probe_loop(lv2, d2, id2, cfg2, sh2, heard), health);
                            }
                            None => probe_loop(lv2, d2, id2, cfg2, sh2, Arc::default()).await,
                        }
                    });
                    watched.insert(d.uuid, (id, task));
                }
            }
            Err(e) => {
                if !said_error {
                    warn!(error = %e, "qga: cannot list domains; trying again");
                    said_error = true;
                }
            }
        }
        tokio::time::sleep(cfg.rescan).await;
    }
}

/// A probe went unanswered: is the domain still running, as libvirt says now (an agent-free call)? A domain being
/// destroyed, shut down or paused stops answering before its lifecycle event arrives; that is not a hang.
async fn confirm_running(lv: &Libvirt, d: &DomainRef, timeout: Duration, why: String) -> Probe {
    confirm(lv.info(d, Some(timeout)).await.map(|info| info.state), why)
}

/// What libvirt's answer on the domain's state (`virDomainGetInfo`) makes of an unanswered probe: a miss only if
/// libvirt says promptly that the domain runs. A guest that hangs leaves libvirt's own calls fast (the agent's call
/// waits without holding the domain); a libvirt that cannot say within the probe's timeout is busy with the domain
/// itself (a destroy waiting for QEMU to die holds it: seen in a live run, where the loss came 7 ms before the
/// `stopped` event), and a libvirtd gone cannot probe: neither is the guest's fault, as in [`classify`].
pub fn confirm(state: Result<u8, Error>, why: String) -> Probe {
    match state {
        // VIR_DOMAIN_RUNNING, VIR_DOMAIN_BLOCKED: it runs, and its agent did not answer
        Ok(1 | 2) => Probe::NoAnswer(why),
        Ok(_) => Probe::NotRunning,
        Err(Error::Remote { code: wire::ERR_NO_DOMAIN | wire::ERR_OPERATION_INVALID, .. }) => Probe::NotRunning,
        // any other refusal: libvirt answered, and did not say it stopped; the probe's verdict stands
        Err(Error::Remote { .. }) => Probe::NoAnswer(why),
        // libvirt slow to say (busy with this domain) or unreachable: nothing to judge this time
        Err(_) => Probe::NotRunning,
    }
}

/// A probe's call left to finish at libvirt.
type Outstanding = JoinHandle<Result<(i64, u32), Error>>;

/// How long a probe may stay outstanding at libvirt before it is abandoned.
pub const PROBE_CAP: Duration = Duration::from_secs(60);

/// One probe per interval. A probe unanswered within the timeout is a miss, but its call is left to finish at
/// libvirt (which holds the domain's agent job until the agent answers or its own timeout passes): no second probe
/// is sent while one is outstanding, so a silent agent costs libvirtd at most one worker, however long it stays
/// silent, and ticks meanwhile count as misses.
/// When the guest agent last answered the health command: libvirt runs one agent command per domain at a time, so a
/// probe queued behind a health run may wait past its timeout while the agent is plainly alive.
#[derive(Debug)]
struct Heard(std::sync::Mutex<Option<tokio::time::Instant>>);

impl Default for Heard {
    fn default() -> Self {
        Heard(std::sync::Mutex::new(None))
    }
}

impl Heard {
    fn now(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Some(tokio::time::Instant::now());
        }
    }

    fn within(&self, d: Duration) -> bool {
        self.0.lock().ok().and_then(|t| *t).is_some_and(|t| t.elapsed() <= d)
    }
}

async fn probe_loop(
    lv: Libvirt,
    d: DomainRef,
    id: String,
    cfg: Arc<QgaRunConfig>,
    shared: Arc<Shared>,
    heard: Arc<Heard>,
) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outstanding: Option<(Outstanding, std::time::Instant)> = None;
    loop {
        tick.tick().await;
        let probe = match &outstanding {
            Some((h, since)) if !h.is_finished() => {
                Probe::NoAnswer(format!("the probe sent {} ms ago is still unanswered", since.elapsed().as_millis()))
            }
            _ => {
                let (lv2, d2) = (lv.clone(), d.clone());
                let mut h = tokio::spawn(async move { lv2.guest_time(&d2, Some(PROBE_CAP)).await });
                match tokio::time::timeout(cfg.timeout, &mut h).await {
                    Ok(Ok(r)) => {
                        outstanding = None;
                        classify(r)
                    }
                    Ok(Err(_)) => {
                        outstanding = None;
                        Probe::NotRunning
                    }
                    Err(_) => {
                        outstanding = Some((h, std::time::Instant::now()));
                        Probe::NoAnswer(format!("no answer in {} ms", cfg.timeout.as_millis()))
                    }
                }
            }
        };
        // unanswered, but the agent answered the health command within the interval: busy, alive
        let probe = match probe {
            Probe::NoAnswer(_) if heard.within(cfg.interval) => Probe::Answered,
            Probe::NoAnswer(why) => confirm_running(&lv, &d, cfg.timeout, why).await,
            p => p,
        };
        shared.send(Command::AgentProbe { guest: id.clone(), probe, loss_threshold: cfg.loss_threshold });
    }
}

/// Runs the health command once per interval (the first after one interval: the agent needs to be up).
async fn health_loop(lv: Libvirt, d: DomainRef, id: String, h: HealthRun, shared: Arc<Shared>, heard: Arc<Heard>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + h.interval, h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = match run_health(&lv, &d, &h, &heard).await {
            Ok(r) => r,
            // the agent unreachable or silent: the liveness probes judge that, not the health check
            Err(Error::Timeout { .. })
            | Err(Error::Remote { code: wire::ERR_AGENT_UNRESPONSIVE | wire::ERR_OPERATION_TIMEOUT, .. }) => continue,
            // the agent refused the command (guest-exec disabled in its configuration): the check cannot run
            Err(Error::Remote { message, .. }) => Err(bounded(&format!("the guest agent refused: {message}"))),
            Err(_) => continue, // libvirtd unreachable: nothing to judge
        };
        shared.send(Command::AgentHealth { guest: id.clone(), result, failure_threshold: h.failure_threshold });
    }
}

/// One run: `guest-exec`, then `guest-exec-status` until it exits or the timeout passes. The outer `Err` is
/// libvirt's; the inner one the command's failure, with its first output line.
async fn run_health(lv: &Libvirt, d: &DomainRef, h: &HealthRun, heard: &Heard) -> Result<Result<(), String>, Error> {
    let t = Duration::from_secs(5);
    let (path, args) = h.command.split_first().map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
    let exec =
        serde_json::json!({"execute": "guest-exec", "arguments": {"path": path, "arg": args, "capture-output": true}});
    let reply = lv.agent_command(d, &exec.to_string(), 5, t).await?;
    heard.now();
    let Some(pid) = serde_json::from_str::<serde_json::Value>(&reply).ok().and_then(|v| v["return"]["pid"].as_i64())
    else {
        return Ok(Err(bounded(&format!("guest-exec gave no pid: {reply}"))));
    };
    let started = tokio::time::Instant::now();
    let status = serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}).to_string();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = lv.agent_command(d, &status, 5, t).await?;
        heard.now();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        let r = &v["return"];
        if r["exited"].as_bool() == Some(true) {
            let code = r["exitcode"].as_i64();
            if code == Some(0) {
                return Ok(Ok(()));
            }
            let line = first_line(r["out-data"].as_str()).or_else(|| first_line(r["err-data"].as_str()));
            let what = code.map_or_else(|| format!("signal {}", r["signal"]), |c| format!("exit {c}"));
            return Ok(Err(bounded(&format!("{what}: {}", line.unwrap_or_default()))));
        }
        if started.elapsed() >= h.timeout {
            return Ok(Err(format!("still running after {} s", h.timeout.as_secs())));
        }
    }
}

/// The first line of base64 output (only its first 4 KiB decoded: guest output is hostile input).
fn first_line(b64: Option<&str>) -> Option<String> {
    use base64::Engine;
    let b64 = b64?;
    let head = &b64.as_bytes()[..b64.len().min(4096) / 4 * 4];
    let bytes = base64::engine::general_purpose::STANDARD.decode(head).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

/// At most [`MAX_REASON`] characters (events escape the rest).
fn bounded(s: &str) -> String {
    s.chars().take(MAX_REASON).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_answers() {
        let xml = "<domain><devices><channel type='unix'><source mode='bind'/><target type='virtio' name='x.y'/>\
                   </channel><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' \
                   state='connected'/></channel></devices></domain>";
        assert_eq!(channels(xml), ["x.y", AGENT_CHANNEL]);
        assert!(channels("<<").is_empty());
        let t = Duration::from_secs(3);
        assert_eq!(classify(Ok((1, 2))), Probe::Answered);
        assert_eq!(
            classify(Err(Error::Timeout { call: "x", after: t })),
            Probe::NoAnswer("no answer in 3000 ms".into())
        );
        let remote = |code: i32| Error::Remote { code, message: "m".into() };
        assert_eq!(classify(Err(remote(86))), Probe::NoAnswer("m".into()));
        assert_eq!(classify(Err(remote(55))), Probe::NotRunning);
        assert_eq!(classify(Err(remote(1))), Probe::Answered, "the agent refused: it is alive");
        assert_eq!(classify(Err(Error::Connect("gone".into()))), Probe::NotRunning);
    }

    #[test]
    fn an_unanswered_probe_is_a_miss_only_if_libvirt_says_promptly_that_the_domain_runs() {
        let why = || "the probe sent 501 ms ago is still unanswered".to_string();
        assert_eq!(confirm(Ok(1), why()), Probe::NoAnswer(why()), "running");
        assert_eq!(confirm(Ok(2), why()), Probe::NoAnswer(why()), "blocked");
        for state in [3, 4, 5, 6, 7] {
            assert_eq!(
                confirm(Ok(state), why()),
                Probe::NotRunning,
                "paused, shutting down, shut off, crashed, suspended"
            );
        }
        let remote = |code: i32| Error::Remote { code, message: "m".into() };
        assert_eq!(confirm(Err(remote(wire::ERR_NO_DOMAIN)), why()), Probe::NotRunning, "gone");
        assert_eq!(
            confirm(Err(remote(1)), why()),
            Probe::NoAnswer(why()),
            "libvirt answered, running as far as it knows"
        );
        // a destroy holds the domain while QEMU dies: GetInfo waits past the timeout; the stop comes next
        let slow = Error::Timeout { call: "DOMAIN_GET_INFO", after: Duration::from_millis(500) };
        assert_eq!(confirm(Err(slow), why()), Probe::NotRunning);
        assert_eq!(confirm(Err(Error::Connect("gone".into())), why()), Probe::NotRunning);
    }

    #[test]
    fn health_output_is_bounded_to_its_first_line() {
        // "\n  db down\nmore" in base64
        assert_eq!(first_line(Some("CiAgZGIgZG93bgptb3Jl")).as_deref(), Some("db down"));
        assert_eq!(first_line(Some("!!!")), None);
        assert_eq!(first_line(None), None);
        assert_eq!(bounded(&"x".repeat(1000)).len(), MAX_REASON);
    }
}
