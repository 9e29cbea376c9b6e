//! vigild's configuration: command-line flags merged with an optional TOML file.
//!
//! Everything has a default, so `vigild run` with no file watches `/var/lib/libvirt/qemu` for
//! `cgcs.heartbeat.*.sock` and only logs faults. The file adds per-guest settings and corrective actions.
//! This module parses and validates; it never touches sockets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigil_core::{CorrectiveAction, Duration, MonitorConfig};

/// What to do about a fault.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionPolicy {
    /// Report only (default).
    #[default]
    Log,
    /// Also run the configured command for the action the guest asked for.
    Command,
    /// Carry the action out through vigild's libvirt connection (`--libvirt`): `reboot` as a reset (or a
    /// graceful reboot, `reboot_as`), `stop` as a destroy; with budgets, an optional second opinion from the
    /// domain's counters, and evidence saved first.
    Libvirt,
}

/// How `policy = "libvirt"` carries out a guest's `reboot`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RebootAs {
    /// `virDomainReset`, the reset button: works on a hung guest (default; what a hard reboot does).
    #[default]
    Reset,
    /// `virDomainReboot`: ACPI or the guest agent, so only a guest that still listens reboots.
    Reboot,
}

/// Settings that apply to a guest, from `[defaults]` or its own `[[guest]]` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestSettings {
    /// Force this challenge interval instead of the guest's request (at least 100 ms).
    pub interval_ms: Option<u32>,
    /// Loss when consecutive misses exceed this.
    pub loss_threshold: Option<u32>,
    /// `log` or `command`.
    pub policy: Option<ActionPolicy>,
    /// argv templates per corrective action (`reboot`, `stop`, `log`); `{guest}` (the id from the socket name
    /// or the config, never from the guest), `{action}` and `{kind}` are replaced. Never a shell string. Nothing
    /// the guest declares (its `name`) can reach an argv.
    pub commands: Option<BTreeMap<String, Vec<String>>>,
    /// At most one command per guest per this many seconds.
    pub action_min_gap_secs: Option<u64>,
    /// Corrective actions (command or libvirt) a guest may get per `action_window_secs` (default 3; 0: none);
    /// counted across vigild restarts (kept in the state directory).
    pub action_budget: Option<u32>,
    /// The budget's window (default 3600 s: three an hour, vSphere HA's "high" preset).
    pub action_window_secs: Option<u64>,
    /// No action before the VM has run this long since its last start or its last corrective action (default
    /// 120 s).
    pub min_uptime_secs: Option<u64>,
    /// `policy = "libvirt"`: before a destructive action, watch the domain's block and network counters this many
    /// seconds; if they moved, the OS is alive: hold the action (default 0: off, the heartbeat alone decides).
    pub second_opinion_secs: Option<u64>,
    /// `policy = "libvirt"`: save the console screenshot and the serial log's tail before the action (default
    /// true).
    pub evidence: Option<bool>,
    /// `policy = "libvirt"`: `reset` (default) or `reboot`.
    pub reboot_as: Option<RebootAs>,
    /// Bytes a guest may send per heartbeat interval before it is no longer read (default 4096).
    pub budget_bytes_per_interval: Option<u64>,
    /// Bytes a guest may send at once (default 8192).
    pub budget_burst_bytes: Option<u64>,
    /// Place challenges over the interval after a registration, runs of guests neighbouring in vigild's memory at one
    /// place (default true; see `MonitorConfig::spread_phase` and `FleetConfig::phase_run`).
    pub spread_phase: Option<bool>,
    /// Challenge deadlines fall on a grid of at most this many milliseconds (and at most 1 % of the interval), so
    /// that one wake-up of the loop serves every guest due in the same step; only the phase moves, never the
    /// period or a verdict (default 10; 0 for exact phases; see `MonitorConfig::coalesce`).
    pub coalesce_ms: Option<u32>,
    /// The longest a vote or a notice waits for the guest, whatever its `init` asks (`vote_secs`,
    /// `*_notice_secs`; default 60 s: the reference guest asks 9 to 14 s).
    pub max_notice_secs: Option<u32>,
    /// The longest a rebooting guest has to register again, whatever its `restart_secs` (default 600 s: the
    /// reference guest asks 601 s, and a reboot that takes ten minutes is a hang worth reporting).
    pub max_restart_secs: Option<u32>,
}

/// Default of [`GuestSettings::coalesce_ms`].
pub const DEFAULT_COALESCE_MS: u64 = 10;
/// Default of [`GuestSettings::max_notice_secs`].
pub const MAX_NOTICE_SECS: u32 = 60;
/// The largest `max_notice_secs` a configuration may set (the admin API waits at most this for a vote).
pub const MAX_NOTICE_CAP: u32 = 3600;
/// Default of [`GuestSettings::max_restart_secs`].
pub const MAX_RESTART_SECS: u32 = 600;

/// One `[[guest]]` entry: a socket named explicitly.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestEntry {
    /// Guest id (the name events carry).
    pub id: String,
    /// The QEMU socket.
    pub socket: PathBuf,
    /// Its settings.
    #[serde(flatten)]
    pub settings: GuestSettings,
}

/// The TOML file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directories to watch (added to `--watch`).
    #[serde(default)]
    pub watch: Vec<PathBuf>,
    /// File-name pattern (overridden by `--pattern`).
    pub pattern: Option<String>,
    /// Settings for every guest.
    #[serde(default)]
    pub defaults: GuestSettings,
    /// Explicit guests.
    #[serde(default, rename = "guest")]
    pub guests: Vec<GuestEntry>,
    /// Upstream sinks (`[[sink]]`): Alertmanager, Masakari, the StarlingX VIM, CloudEvents webhooks.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<crate::upstream::SinkConfig>,
    /// Where the spool lives (overridden by `--state-dir`; default `/var/lib/vigil`).
    pub state_dir: Option<PathBuf>,
    /// Undelivered events the spool keeps before dropping the oldest (default 100,000).
    pub spool_cap: Option<u64>,
    /// How long a sink retries one event before it goes to the spool's dead letters (default 86400: a day).
    pub max_record_age_secs: Option<u64>,
    /// This node's name in what goes upstream (default: the system's host name); set it where Nova knows the
    /// node by another name (its `[DEFAULT] host`).
    pub hostname: Option<String>,
    /// Guest id -> instance UUID, for layouts where the socket's id is not the instance UUID (plain QEMU).
    #[serde(default)]
    pub instance_uuids: BTreeMap<String, String>,
    /// Plug the heartbeat channel into running domains that a policy selects (needs `--libvirt`; see
    /// `docs/hotplug.md`). Absent: vigild never changes a domain.
    pub hotplug: Option<HotplugSettings>,
    /// Watch domains that run only the stock QEMU guest agent (needs `--libvirt`). Absent: off.
    pub qga: Option<QgaSettings>,
}

/// `[qga]`: OS-level liveness of running domains that have the QEMU guest agent's channel and not Vigil's, probed
/// through libvirt (`virDomainGetTime`, answered by `qemu-ga`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QgaSettings {
    /// One probe per this many milliseconds (default 5000; at least 100).
    pub interval_ms: Option<u64>,
    /// A probe unanswered this long is a miss (default 3000 ms, or half the interval when that is less; at least
    /// 50, less than the interval).
    pub timeout_ms: Option<u64>,
    /// Loss when consecutive misses exceed this (default 1: at the second miss).
    pub loss_threshold: Option<u32>,
    /// How often running domains are listed (default 10 s).
    pub rescan_secs: Option<u64>,
    /// What to do when such a guest is lost, under `[defaults]`' policy and budgets (`none`, the default: report
    /// only; `reboot`, `stop`). With `policy = "libvirt"`: a reset (or a power cycle when QEMU hangs) or a destroy.
    pub corrective_action: Option<String>,
    /// Opt-in application health: a command run in each such guest through `guest-exec` (off by default: it runs
    /// code inside tenants' VMs, and libvirt marks the domain tainted; see docs/security.md).
    pub health: Option<QgaHealthSettings>,
}

/// The default probe timeout for an interval: 3 s, or half the interval when that is less.
pub fn default_qga_timeout(interval_ms: u64) -> u64 {
    (interval_ms / 2).min(3000)
}

/// `[qga.health]`: a command run in the guest through the guest agent; exit status 0 is healthy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QgaHealthSettings {
    /// The argv, run by the guest agent (no shell unless you name one).
    pub command: Vec<String>,
    /// One run per this (default 10 s).
    pub interval_secs: Option<u64>,
    /// A run that has not exited after this is a failure (default 5 s).
    pub timeout_secs: Option<u64>,
    /// `unhealthy` after this many failures in a row (default 3).
    pub failure_threshold: Option<u32>,
}

/// `[hotplug]`: which running domains get the heartbeat channel, plugged in by vigild through libvirt. A domain is
/// selected if any selector says so.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HotplugSettings {
    /// Domain-name globs (`*`, `?`); `--enable-domains` adds to them.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Nova flavor-name globs, matched against the flavor Nova writes into the domain's metadata.
    #[serde(default)]
    pub flavors: Vec<String>,
    /// Honour `<vigil:heartbeat enabled="yes"/>` in the domain's metadata (default true), for non-Nova users.
    pub metadata: Option<bool>,
    /// Ask Nova's compute API for the flavor's extra spec `vigil:heartbeat` (`true` selects).
    pub compute: Option<ComputeSettings>,
    /// Where the channels' host sockets go (default: the first watched directory); named
    /// `cgcs.heartbeat.<domain uuid>.sock`, which discovery's default pattern finds.
    pub socket_dir: Option<PathBuf>,
    /// Unplug channels vigild attached from running domains the policy no longer selects (default false).
    #[serde(default)]
    pub detach: bool,
}

/// How to reach Nova's compute API (microversion 2.47 or later: the server's flavor with its extra specs).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ComputeSettings {
    /// The compute endpoint, e.g. `https://nova.example:8774/v2.1`.
    pub url: String,
    /// Keystone v3; without it no token is sent (a noauth deployment).
    pub auth_url: Option<String>,
    /// Keystone user (with a role that may read servers of every project, e.g. admin or reader).
    pub username: Option<String>,
    /// A file holding the password (re-read when it changes).
    pub password_file: Option<PathBuf>,
    /// The user's domain (default `Default`).
    pub user_domain_name: Option<String>,
    /// The project.
    pub project_name: Option<String>,
    /// The project's domain (default `Default`).
    pub project_domain_name: Option<String>,
    /// Extra CA certificates (PEM) to trust, for Nova and Keystone.
    pub ca_file: Option<PathBuf>,
    /// Per request (default 10 s).
    pub timeout_secs: Option<u64>,
}

impl FileConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: FileConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Checks what the types cannot: ids, commands, intervals, sinks, hot-plug patterns.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for g in &self.guests {
            if g.id.is_empty() || !seen.insert(&g.id) {
                return Err(format!("guest id {:?} empty or repeated", g.id));
            }
        }
        for sink in &self.sinks {
            sink.validate()?;
        }
        if let Some(h) = &self.hotplug {
            for g in h.domains.iter().chain(&h.flavors) {
                crate::glob::Pattern::new(g).map_err(|e| format!("hotplug: {e}"))?;
            }
            if let Some(c) = &h.compute {
                if c.auth_url.is_some()
                    && (c.username.is_none() || c.password_file.is_none() || c.project_name.is_none())
                {
                    return Err("hotplug.compute: auth_url needs username, password_file and project_name".into());
                }
            }
        }
        if let Some(q) = &self.qga {
            let interval = q.interval_ms.unwrap_or(5000);
            let timeout = q.timeout_ms.unwrap_or(default_qga_timeout(interval));
            if interval < 100 || timeout < 50 || timeout >= interval {
                return Err("qga: interval_ms at least 100, timeout_ms at least 50 and less than interval_ms".into());
            }
            if let Some(a) = &q.corrective_action {
                if !matches!(a.as_str(), "none" | "log" | "reboot" | "stop") {
                    return Err(format!("qga: corrective_action {a:?}: none, log, reboot or stop"));
                }
            }
            if let Some(h) = &q.health {
                if h.command.first().is_none_or(String::is_empty) {
                    return Err("qga.health: command must name a program".into());
                }
                if h.interval_secs == Some(0) || h.timeout_secs == Some(0) || h.failure_threshold == Some(0) {
                    return Err("qga.health: interval_secs, timeout_secs and failure_threshold are at least 1".into());
                }
            }
        }
        for s in std::iter::once(&self.defaults).chain(self.guests.iter().map(|g| &g.settings)) {
            for (action, argv) in s.commands.iter().flatten() {
                if CorrectiveAction::from_wire(action).is_none() {
                    return Err(format!("commands: unknown action {action:?} (reboot, stop, log, none)"));
                }
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(format!("commands.{action}: empty argv"));
                }
                if argv.iter().any(|a| a.contains("{name}")) {
                    return Err(format!(
                        "commands.{action}: {{name}} is the guest's own declaration and may not reach a command; \
                         use {{guest}} (the socket's id)"
                    ));
                }
            }
            if let Some(ms) = s.interval_ms.filter(|&ms| ms < MIN_INTERVAL_MS) {
                return Err(format!("interval_ms = {ms}: at least {MIN_INTERVAL_MS} ms"));
            }
            if s.budget_burst_bytes.is_some_and(|b| b < crate::fleet::bucket::MIN_GRANT) {
                return Err(format!(
                    "budget_burst_bytes: at least {} (one whole message)",
                    crate::fleet::bucket::MIN_GRANT
                ));
            }
            if s.max_notice_secs.is_some_and(|v| !(1..=MAX_NOTICE_CAP).contains(&v)) {
                return Err(format!("max_notice_secs: 1 to {MAX_NOTICE_CAP}"));
            }
            if s.second_opinion_secs.is_some_and(|v| v > 600) {
                return Err("second_opinion_secs: at most 600 (the action waits for it)".into());
            }
            if s.max_restart_secs == Some(0) {
                return Err("max_restart_secs: at least 1".into());
            }
            if s.budget_bytes_per_interval == Some(0) {
                return Err("budget_bytes_per_interval: more than 0".into());
            }
        }
        Ok(())
    }
}

/// The smallest challenge interval a configuration may force.
pub const MIN_INTERVAL_MS: u32 = 100;

/// The settings in force for one guest, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// For the guest's Monitor.
    pub monitor: MonitorConfig,
    /// `log` or `command`.
    pub policy: ActionPolicy,
    /// argv templates by action.
    pub commands: BTreeMap<String, Vec<String>>,
    /// Minimum time between two commands for this guest.
    pub action_min_gap: Duration,
    /// The guest's byte budget.
    pub budget: crate::fleet::bucket::BudgetConfig,
    /// Caps on the waits a guest chooses in its `init`.
    pub caps: GuestCaps,
    /// Budgets and the libvirt policy's options.
    pub recovery: RecoveryPolicy,
}

/// Budgets of corrective actions and the libvirt policy's options, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Actions per window.
    pub budget: u32,
    /// The window.
    pub window: Duration,
    /// Minimum uptime before an action.
    pub min_uptime: Duration,
    /// The second opinion's window, when on.
    pub second_opinion: Option<Duration>,
    /// Save evidence first.
    pub evidence: bool,
    /// How a `reboot` is done.
    pub reboot_as: RebootAs,
}

/// Default of [`GuestSettings::action_budget`].
pub const DEFAULT_ACTION_BUDGET: u32 = 3;
/// Default of [`GuestSettings::action_window_secs`].
pub const DEFAULT_ACTION_WINDOW_SECS: u64 = 3600;
/// Default of [`GuestSettings::min_uptime_secs`].
pub const DEFAULT_MIN_UPTIME_SECS: u64 = 120;

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            budget: DEFAULT_ACTION_BUDGET,
            window: Duration::from_secs(DEFAULT_ACTION_WINDOW_SECS),
            min_uptime: Duration::from_secs(DEFAULT_MIN_UPTIME_SECS),
            second_opinion: None,
            evidence: true,
            reboot_as: RebootAs::Reset,
        }
    }
}

/// Caps on the waits a guest chooses (its `init` is guest input: a vote could otherwise hang for weeks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCaps {
    /// Votes and notices, seconds.
    pub notice_secs: u32,
    /// A reboot, seconds.
    pub restart_secs: u32,
}

impl Default for GuestCaps {
    fn default() -> Self {
        GuestCaps { notice_secs: MAX_NOTICE_SECS, restart_secs: MAX_RESTART_SECS }
    }
}

impl Policy {
    /// `defaults`, then `own` on top.
    pub fn resolve(defaults: &GuestSettings, own: Option<&GuestSettings>) -> Policy {
        let pick = |f: fn(&GuestSettings) -> Option<u64>| own.and_then(f).or_else(|| f(defaults));
        let mut monitor = MonitorConfig { spread_phase: true, ..MonitorConfig::default() };
        if let Some(b) = own.and_then(|s| s.spread_phase).or(defaults.spread_phase) {
            monitor.spread_phase = b;
        }
        let coalesce = pick(|s| s.coalesce_ms.map(u64::from)).unwrap_or(DEFAULT_COALESCE_MS);
        monitor.coalesce = Duration::from_millis(coalesce);
        if let Some(ms) = pick(|s| s.interval_ms.map(u64::from)) {
            let d = Duration::from_millis(ms.max(u64::from(MIN_INTERVAL_MS)));
            monitor.min_interval = d;
            monitor.max_interval = d;
        }
        if let Some(t) = pick(|s| s.loss_threshold.map(u64::from)) {
            monitor.loss_threshold = t as u32;
        }
        let policy = own.and_then(|s| s.policy).or(defaults.policy).unwrap_or_default();
        let mut commands = defaults.commands.clone().unwrap_or_default();
        if let Some(own) = own.and_then(|s| s.commands.as_ref()) {
            commands.extend(own.clone());
        }
        let gap = pick(|s| s.action_min_gap_secs).unwrap_or(300);
        let mut budget = crate::fleet::bucket::BudgetConfig::default();
        if let Some(b) = pick(|s| s.budget_bytes_per_interval) {
            budget.bytes_per_interval = b.max(1);
        }
        if let Some(b) = pick(|s| s.budget_burst_bytes) {
            budget.burst = b.max(crate::fleet::bucket::MIN_GRANT);
        }
        let caps = GuestCaps {
            notice_secs: pick(|s| s.max_notice_secs.map(u64::from)).map_or(MAX_NOTICE_SECS, |v| v.max(1) as u32),
            restart_secs: pick(|s| s.max_restart_secs.map(u64::from)).map_or(MAX_RESTART_SECS, |v| v.max(1) as u32),
        };
        let recovery = RecoveryPolicy {
            budget: pick(|s| s.action_budget.map(u64::from)).map_or(DEFAULT_ACTION_BUDGET, |v| v as u32),
            window: Duration::from_secs(pick(|s| s.action_window_secs).unwrap_or(DEFAULT_ACTION_WINDOW_SECS).max(1)),
            min_uptime: Duration::from_secs(pick(|s| s.min_uptime_secs).unwrap_or(DEFAULT_MIN_UPTIME_SECS)),
            second_opinion: pick(|s| s.second_opinion_secs).filter(|&s| s > 0).map(Duration::from_secs),
            evidence: own.and_then(|s| s.evidence).or(defaults.evidence).unwrap_or(true),
            reboot_as: own.and_then(|s| s.reboot_as).or(defaults.reboot_as).unwrap_or_default(),
        };
        Policy { monitor, policy, commands, action_min_gap: Duration::from_secs(gap), budget, caps, recovery }
    }

    /// The argv to run for `action`, with placeholders filled in; `None` when the policy is `log` or no command
    /// is configured for it. `unknown` is acted on as `log`. An argument that would start with `-` only because
    /// of a substitution is refused (`Err`), so an odd guest id can never become an option.
    pub fn command_for(
        &self,
        action: CorrectiveAction,
        guest: &str,
        kind: &str,
    ) -> Option<Result<Vec<String>, String>> {
        if self.policy != ActionPolicy::Command {
            return None;
        }
        let action = action.effective();
        let template = self.commands.get(action.as_str())?;
        let mut argv = Vec::with_capacity(template.len());
        for a in template {
            let v = a.replace("{guest}", guest).replace("{action}", action.as_str()).replace("{kind}", kind);
            if v.starts_with('-') && !a.starts_with('-') {
                return Some(Err(format!("argument {v:?} would start with '-' after substitution")));
            }
            argv.push(v);
        }
        Some(Ok(argv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_parses_and_resolves() {
        let text = r#"
            watch = ["/tmp/x"]
            [defaults]
            policy = "command"
            loss_threshold = 2
            commands = { reboot = ["virsh", "reboot", "{guest}"], stop = ["virsh", "destroy", "{guest}"] }
            [[guest]]
            id = "db-1"
            socket = "/run/db-1.sock"
            interval_ms = 500
            policy = "log"
        "#;
        let cfg: FileConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        let d = Policy::resolve(&cfg.defaults, None);
        assert_eq!(d.monitor.loss_threshold, 2);
        assert_eq!(
            d.command_for(CorrectiveAction::Reboot, "vm-9", "heartbeat_lost"),
            Some(Ok(vec!["virsh".into(), "reboot".into(), "vm-9".into()]))
        );
        assert_eq!(d.command_for(CorrectiveAction::Log, "vm-9", "x"), None);
        assert!(matches!(d.command_for(CorrectiveAction::Reboot, "-rf", "x"), Some(Err(_))), "no leading '-'");
        assert_eq!(d.command_for(CorrectiveAction::Unknown, "vm-9", "x"), None, "unknown acts as log");
        let g = Policy::resolve(&cfg.defaults, Some(&cfg.guests[0].settings));
        assert_eq!(g.monitor.min_interval, Duration::from_millis(500));
        assert_eq!(g.monitor.loss_threshold, 2);
        assert_eq!(g.command_for(CorrectiveAction::Reboot, "db-1", "x"), None, "policy log");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        let cfg: FileConfig = toml::from_str("[defaults]\ncommands = { explode = [\"x\"] }").unwrap();
        assert!(cfg.validate().unwrap_err().contains("explode"));
        let cfg: FileConfig =
            toml::from_str("[[guest]]\nid=\"a\"\nsocket=\"/a\"\n[[guest]]\nid=\"a\"\nsocket=\"/b\"").unwrap();
        assert!(cfg.validate().is_err());
        // a guest's declared name may not reach a command (it could name another VM or an option)
        let cfg: FileConfig =
            toml::from_str("[defaults]\ncommands = { reboot = [\"virsh\", \"reboot\", \"{name}\"] }").unwrap();
        assert!(cfg.validate().unwrap_err().contains("{name}"));
        // hot-plug: globs are file-name patterns; Keystone needs its user
        let cfg: FileConfig = toml::from_str("[hotplug]\ndomains = [\"a/b\"]").unwrap();
        assert!(cfg.validate().unwrap_err().contains("hotplug"));
        let cfg: FileConfig = toml::from_str("[hotplug.compute]\nurl = \"http://n\"\nauth_url = \"http://k\"").unwrap();
        assert!(cfg.validate().unwrap_err().contains("username"));
        assert!(toml::from_str::<FileConfig>("[hotplug]\ndomain = [\"x\"]").is_err(), "unknown option");
        let cfg: FileConfig = toml::from_str("[hotplug]\nflavors = [\"*.hb\"]\ndetach = true").unwrap();
        assert!(cfg.validate().is_ok() && cfg.hotplug.is_some_and(|h| h.detach && h.metadata.is_none()));
        // the interval floor holds for a forced interval too (0 used to bypass it)
        let cfg: FileConfig = toml::from_str("[defaults]\ninterval_ms = 0").unwrap();
        assert!(cfg.validate().unwrap_err().contains("at least 100"));
        assert_eq!(
            Policy::resolve(&GuestSettings { interval_ms: Some(0), ..GuestSettings::default() }, None)
                .monitor
                .min_interval,
            Duration::from_millis(100)
        );
    }
}
