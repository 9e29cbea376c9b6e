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
}

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

/// Finds and probes agentless domains until the runtime stops.
pub async fn run(cfg: QgaRunConfig, shared: Arc<Shared>) {
    let lv = match Libvirt::new(&cfg.libvirt) {
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
                    let task = tokio::spawn(probe_loop(
                        lv.clone(),
                        d.clone(),
                        id.clone(),
                        Arc::clone(&cfg),
                        Arc::clone(&shared),
                    ));
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

/// A probe's call left to finish at libvirt.
type Outstanding = JoinHandle<Result<(i64, u32), Error>>;

/// How long a probe may stay outstanding at libvirt before it is abandoned.
pub const PROBE_CAP: Duration = Duration::from_secs(60);

/// One probe per interval. A probe unanswered within the timeout is a miss, but its call is left to finish at
/// libvirt (which holds the domain's agent job until the agent answers or its own timeout passes): no second probe
/// is sent while one is outstanding, so a silent agent costs libvirtd at most one worker, however long it stays
/// silent, and ticks meanwhile count as misses.
async fn probe_loop(lv: Libvirt, d: DomainRef, id: String, cfg: Arc<QgaRunConfig>, shared: Arc<Shared>) {
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
        shared.send(Command::AgentProbe { guest: id.clone(), probe, loss_threshold: cfg.loss_threshold });
    }
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
}
