//! Corrective actions through libvirt (`policy = "libvirt"`, issue #23), on the control plane's runtime: the loop
//! decides (budgets, minimum uptime: `fleet::recovery`) and hands a job over a bounded queue; here each job runs as
//! its own task on vigild's libvirt connection, so a domain whose QEMU hangs delays no other:
//!
//! 1. the second opinion, when on: the domain's block and network counters read twice, the window apart (each read
//!    bounded by the call timeout); if bytes moved, the OS is alive and the action is held (`result: "held"`,
//!    `os_activity: true`) and refunded to the budget. vCPU time is reported, never decisive: a hung kernel may spin.
//! 2. evidence, for a destructive action: the console screenshot (PNG; converted from PPM when libvirt gives one) and
//!    the last lines of the serial console's log file, written by a blocking-pool thread under
//!    `STATE_DIR/evidence/<guest>/<time>-<operation>/`, pruned by age and total size ([`super::evidence`]).
//! 3. the action, with its own timeout; its result is an `action_result` event (ok, failed with libvirt's reason,
//!    timed_out) delivered like any other. When QEMU itself does not answer its monitor (stopped, wedged: a counter
//!    read or the screenshot got no answer, or the reset timed out), a reset cannot work: the domain is power-cycled
//!    instead, destroyed (libvirt kills the process, which needs no answer from it) and started again (a persistent
//!    domain; Nova's are); the event's `reason` says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{info, warn};
use vigil_core::CorrectiveAction;

use super::evidence;
use super::libvirt::{DomainRef, Error, Libvirt};
use super::{Command, Shared};
use crate::events::{Activity, Event};
use crate::fleet::{LibvirtAction, LibvirtOp};

/// Depth of the queue of jobs from the loop.
pub const RECOVERY_QUEUE: usize = 256;
/// The longest one libvirt action may take.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a screenshot may take (a QEMU that does not answer its monitor never gives one).
pub const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one counter read of the second opinion may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest screenshot kept.
pub const MAX_SCREENSHOT: usize = 32 << 20;

/// A corrective action for the control plane to carry out.
#[derive(Clone, Debug)]
pub struct RecoveryJob {
    /// The guest.
    pub guest: Arc<str>,
    /// What caused it.
    pub trigger: &'static str,
    /// The guest's corrective action.
    pub action: CorrectiveAction,
    /// How.
    pub how: LibvirtAction,
    /// When the loop decided (for the time from verdict to action).
    pub decided: Instant,
}

/// Where and how recovery runs.
#[derive(Clone, Debug)]
pub struct RecoveryConfig {
    /// The libvirt URI.
    pub libvirt: String,
    /// `STATE_DIR/evidence`.
    pub evidence_dir: PathBuf,
    /// Evidence kept in all (default 256 MiB).
    pub evidence_max_bytes: u64,
    /// Evidence older than this is removed (default 30 days).
    pub evidence_max_age: Duration,
    /// Guest id -> instance UUID (plain layouts); otherwise the id is the domain's UUID or name.
    pub instance_uuids: BTreeMap<String, String>,
    /// Per libvirt action.
    pub action_timeout: Duration,
}

impl RecoveryConfig {
    /// Defaults for `uri`, evidence under `state_dir`.
    pub fn new(uri: &str, state_dir: &Path) -> Self {
        RecoveryConfig {
            libvirt: uri.to_string(),
            evidence_dir: state_dir.join("evidence"),
            evidence_max_bytes: 256 << 20,
            evidence_max_age: Duration::from_secs(30 * 86_400),
            instance_uuids: BTreeMap::new(),
            action_timeout: ACTION_TIMEOUT,
        }
    }
}

/// Runs jobs on vigild's libvirt client `lv` until the loop lets go of the queue.
pub async fn run(
    cfg: RecoveryConfig,
    lv: Result<Libvirt, Error>,
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<RecoveryJob>,
) {
    let lv = match lv {
        Ok(lv) => lv,
        Err(e) => {
            warn!(error = %e, "recovery: no libvirt client; libvirt actions fail");
            while let Some(job) = jobs.recv().await {
                report(&shared, &job, Outcome::failed(&e), Vec::new());
            }
            return;
        }
    };
    let cfg = Arc::new(cfg);
    while let Some(job) = jobs.recv().await {
        let (lv, cfg, shared) = (lv.clone(), Arc::clone(&cfg), Arc::clone(&shared));
        tokio::spawn(async move {
            let (outcome, evidence) = execute(&lv, &cfg, &job).await;
            report(&shared, &job, outcome, evidence);
        });
    }
}

/// How an action ended.
struct Outcome {
    result: &'static str,
    reason: Option<String>,
    os_activity: Option<bool>,
    activity: Option<Activity>,
}

impl Outcome {
    fn failed(e: &Error) -> Outcome {
        let result = if matches!(e, Error::Timeout { .. }) { "timed_out" } else { "failed" };
        Outcome { result, reason: Some(e.to_string()), os_activity: None, activity: None }
    }
}

fn report(shared: &Shared, job: &RecoveryJob, o: Outcome, evidence: Vec<String>) {
    let elapsed_ms = job.decided.elapsed().as_millis() as u64;
    info!(guest = %job.guest, operation = job.how.op.as_str(), result = o.result, elapsed_ms, "libvirt action");
    let refund = o.result == "held";
    let event = Event::ActionResult {
        trigger: job.trigger,
        corrective_action: job.action.as_str(),
        operation: job.how.op.as_str(),
        result: o.result,
        reason: o.reason,
        elapsed_ms,
        os_activity: o.os_activity,
        activity: o.activity,
        evidence,
    };
    if !shared.send(Command::ActionResult { guest: job.guest.to_string(), event, refund }) {
        warn!(guest = %job.guest, "action result not delivered: the loop's command queue is full");
    }
}

async fn execute(lv: &Libvirt, cfg: &RecoveryConfig, job: &RecoveryJob) -> (Outcome, Vec<String>) {
    let id = cfg.instance_uuids.get(&*job.guest).map_or(&*job.guest, String::as_str);
    let d = match lv.lookup(id).await {
        Ok(d) => d,
        Err(e) => return (Outcome::failed(&e), Vec::new()),
    };
    let destructive = job.how.op.destructive();
    let xml = if destructive && (job.how.second_opinion.is_some() || job.how.evidence) {
        lv.xml(&d, None).await.ok()
    } else {
        None
    };
    let devices = xml.as_deref().map(devices).unwrap_or_default();
    // why QEMU looks wedged (a counter read or the screenshot got no answer): a reset would wait in vain
    let mut wedged: Option<String> = None;
    let mut seen = None;
    if let (Some(window), true) = (job.how.second_opinion, destructive) {
        match second_opinion(lv, &d, &devices, window).await {
            Ok(activity) if activity.block_bytes > 0 || activity.block_requests > 0 || activity.net_bytes > 0 => {
                let reason = format!(
                    "domain counters moved over {} s (block {} B, network {} B): the OS is alive; not acting on \
                     the heartbeat alone",
                    window.as_secs(),
                    activity.block_bytes,
                    activity.net_bytes
                );
                let activity = Some(activity);
                return (
                    Outcome { result: "held", reason: Some(reason), os_activity: Some(true), activity },
                    Vec::new(),
                );
            }
            Ok(activity) => seen = Some(activity),
            Err(e) => wedged = Some(format!("the domain's counters could not be read ({e})")),
        }
    }
    let evidence = if destructive && job.how.evidence {
        let (files, shot) = collect_evidence(lv, cfg, job, &d, devices.console.clone(), wedged.is_none()).await;
        if let (None, Some(e @ Error::Timeout { .. })) = (&wedged, shot) {
            wedged = Some(format!("the screenshot got no answer ({e})"));
        }
        files
    } else {
        Vec::new()
    };
    let t = Some(cfg.action_timeout);
    let r = match (job.how.op, wedged) {
        (LibvirtOp::Reset | LibvirtOp::Reboot, Some(why)) => {
            warn!(guest = %job.guest, why, "QEMU does not answer: power-cycling the domain instead of a reset");
            power_cycle(lv, &d, t, &why).await
        }
        (op, _) => {
            let r = match op {
                LibvirtOp::Reset => lv.reset(&d, t).await,
                LibvirtOp::Reboot => lv.reboot(&d, t).await,
                LibvirtOp::Stop => lv.destroy(&d, t).await,
                LibvirtOp::Start => lv.start(&d, t).await,
            };
            match (op, r) {
                (LibvirtOp::Reset | LibvirtOp::Reboot, Err(e @ Error::Timeout { .. })) => {
                    warn!(guest = %job.guest, "reset timed out: QEMU does not answer; power-cycling the domain");
                    power_cycle(lv, &d, t, &format!("the reset got no answer ({e})")).await
                }
                (_, r) => r.map(|()| None),
            }
        }
    };
    let os_activity = seen.as_ref().map(|_| false);
    let o = match r {
        Ok(reason) => Outcome { result: "ok", reason, os_activity, activity: seen },
        Err(e) => Outcome { os_activity, activity: seen, ..Outcome::failed(&e) },
    };
    (o, evidence)
}

/// Destroys a domain whose QEMU does not answer (libvirt kills the process: no answer from it is needed) and starts
/// it again; `Ok` carries what was done, for the event.
async fn power_cycle(lv: &Libvirt, d: &DomainRef, t: Option<Duration>, why: &str) -> Result<Option<String>, Error> {
    let said = format!("QEMU does not answer its monitor: {why}");
    lv.destroy(d, t).await.map_err(|e| Error::Remote { code: 0, message: format!("{said}; destroy failed: {e}") })?;
    match lv.start(d, t).await {
        Ok(()) => Ok(Some(format!("{said}; power-cycled (destroyed, started)"))),
        Err(e) => Err(Error::Remote {
            code: 0,
            message: format!("{said}; destroyed, but not started again (a transient domain cannot be): {e}"),
        }),
    }
}

/// What the domain's XML names: disks and interfaces to read counters of, the console's log file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// Disk targets (`vda`).
    pub disks: Vec<String>,
    /// Interface targets (`vnet0`).
    pub interfaces: Vec<String>,
    /// A file the serial console is written to.
    pub console: Option<PathBuf>,
}

/// Reads the devices out of a domain's XML (anything unreadable is simply absent).
pub fn devices(xml: &str) -> Devices {
    let mut out = Devices::default();
    let Ok(doc) = roxmltree::Document::parse(xml) else { return out };
    let Some(devs) = doc.root_element().children().find(|n| n.has_tag_name("devices")) else { return out };
    for n in devs.children().filter(roxmltree::Node::is_element) {
        let target = n.children().find(|c| c.has_tag_name("target"));
        match n.tag_name().name() {
            "disk" => {
                if let Some(dev) = target.and_then(|t| t.attribute("dev")) {
                    out.disks.push(dev.to_string());
                }
            }
            "interface" => {
                if let Some(dev) = target.and_then(|t| t.attribute("dev")) {
                    out.interfaces.push(dev.to_string());
                }
            }
            "serial" | "console" if out.console.is_none() => {
                let log = n.children().find(|c| c.has_tag_name("log")).and_then(|l| l.attribute("file"));
                let file = (n.attribute("type") == Some("file"))
                    .then(|| n.children().find(|c| c.has_tag_name("source")).and_then(|s| s.attribute("path")))
                    .flatten();
                out.console = log.or(file).map(PathBuf::from);
            }
            _ => {}
        }
    }
    out
}

#[derive(Default, Clone, Copy)]
struct Sample {
    cpu_ns: u64,
    block_bytes: u64,
    block_requests: u64,
    net_bytes: u64,
}

/// One reading of the counters; a read that gets no answer in [`PROBE_TIMEOUT`] ends it (QEMU is not answering).
/// Other errors (a device gone) leave that counter out.
async fn sample(lv: &Libvirt, d: &DomainRef, devs: &Devices) -> Result<Sample, Error> {
    let t = Some(PROBE_TIMEOUT);
    let timed_out = |r: &Result<_, Error>| matches!(r, Err(Error::Timeout { .. }));
    let mut s = Sample::default();
    let info = lv.info(d, t).await;
    if timed_out(&info) {
        return info.map(|_| s);
    }
    s.cpu_ns = info.map_or(0, |i| i.cpu_time_ns);
    let pos = |v: i64| u64::try_from(v).unwrap_or(0);
    for disk in &devs.disks {
        match lv.block_stats(d, disk, t).await {
            Ok(b) => {
                s.block_bytes += pos(b.rd_bytes) + pos(b.wr_bytes);
                s.block_requests += pos(b.rd_req) + pos(b.wr_req);
            }
            Err(e @ Error::Timeout { .. }) => return Err(e),
            Err(_) => {}
        }
    }
    for dev in &devs.interfaces {
        match lv.interface_stats(d, dev, t).await {
            Ok(n) => s.net_bytes += pos(n.rx_bytes) + pos(n.tx_bytes),
            Err(e @ Error::Timeout { .. }) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(s)
}

async fn second_opinion(lv: &Libvirt, d: &DomainRef, devs: &Devices, window: Duration) -> Result<Activity, Error> {
    let a = sample(lv, d, devs).await?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let b = sample(lv, d, devs).await?;
    Ok(Activity {
        window_ms: t0.elapsed().as_millis() as u64,
        cpu_ns: b.cpu_ns.saturating_sub(a.cpu_ns),
        block_bytes: b.block_bytes.saturating_sub(a.block_bytes),
        block_requests: b.block_requests.saturating_sub(a.block_requests),
        net_bytes: b.net_bytes.saturating_sub(a.net_bytes),
    })
}

async fn collect_evidence(
    lv: &Libvirt,
    cfg: &RecoveryConfig,
    job: &RecoveryJob,
    d: &DomainRef,
    console: Option<PathBuf>,
    take_shot: bool,
) -> (Vec<String>, Option<Error>) {
    let shot = if take_shot {
        lv.screenshot(d, MAX_SCREENSHOT, SCREENSHOT_TIMEOUT).await
    } else {
        Err(Error::Connect("QEMU does not answer its monitor".into()))
    };
    let shot_error = shot.as_ref().err().cloned();
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let dir = cfg.evidence_dir.join(evidence::dir_name(&job.guest)).join(format!("{stamp}-{}", job.how.op.as_str()));
    let root = cfg.evidence_dir.clone();
    let (max_bytes, max_age) = (cfg.evidence_max_bytes, cfg.evidence_max_age);
    let guest = Arc::clone(&job.guest);
    let written = tokio::task::spawn_blocking(move || {
        let files = evidence::save(&dir, shot.map_err(|e| e.to_string()), console.as_deref(), &guest);
        evidence::prune(&root, max_bytes, max_age);
        files
    })
    .await
    .unwrap_or_default();
    (written.iter().map(|p| p.display().to_string()).collect(), shot_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_a_domain_xml() {
        let xml = "<domain><devices><disk type='file'><source file='/x.img'/><target dev='vda' bus='virtio'/></disk>\
                   <interface type='network'><target dev='vnet3'/></interface>\
                   <serial type='file'><source path='/var/log/c.log'/><target port='0'/></serial></devices></domain>";
        let d = devices(xml);
        assert_eq!(d.disks, ["vda"]);
        assert_eq!(d.interfaces, ["vnet3"]);
        assert_eq!(d.console, Some(PathBuf::from("/var/log/c.log")));
        let pty = "<domain><devices><console type='pty'><log file='/l/console.log' append='on'/></console></devices>\
                   </domain>";
        assert_eq!(devices(pty).console, Some(PathBuf::from("/l/console.log")));
        assert_eq!(devices("not xml"), Devices::default());
    }
}
