//! Lifecycle sources: what the hypervisor did to each VM, told to the data plane on its own queue
//! ([`Shared::lifecycle`](super::Shared::lifecycle)), which API requests never fill.
//!
//! - **QMP** (plain QEMU): sockets in the watched directories whose names match `--qmp-pattern` (the guest id is
//!   what `*` matches, as for heartbeat sockets: `qmp.<id>.sock` beside `cgcs.heartbeat.<id>.sock`). vigild
//!   connects, negotiates capabilities and reads events; lines are bounded and parsed by the core's QMP parser
//!   (fuzzed). A lost connection is retried at the next scan (every second).
//! - **libvirt**: `virsh -c URI event --all --loop`, libvirt's own client, run as a child process and restarted with
//!   backoff when libvirtd goes away; domains are matched by UUID (`virsh domuuid`), which is the guest id in Nova's
//!   socket names (or mapped through `[instance_uuids]`). A child process instead of an FFI binding: no `unsafe`
//!   in vigild, and libvirt's event registration stays libvirt's code.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::{info, warn};
use vigil_core::qmp::{self, QmpLifecycle, QmpLine};

use super::hotplug::Hotplug;
use super::Shared;
use crate::backoff::Backoff;
use crate::fleet::Lifecycle;
use crate::glob::Pattern;

/// Where lifecycle events come from.
#[derive(Clone, Debug, Default)]
pub struct LifecycleConfig {
    /// QMP socket names to look for in `dirs` (`*` = the guest id).
    pub qmp_pattern: Option<String>,
    /// The watched directories.
    pub dirs: Vec<PathBuf>,
    /// A libvirt URI to subscribe to.
    pub libvirt: Option<String>,
    /// Plug the heartbeat channel into the libvirt domains this policy selects.
    pub hotplug: Option<super::hotplug::HotplugConfig>,
}

/// Longest QMP line kept (longer ones are dropped to the next newline).
pub const MAX_QMP_LINE: usize = 64 * 1024;

fn tell(shared: &Shared, guest: &str, event: Lifecycle) {
    info!(guest, ?event, "lifecycle");
    if !shared.lifecycle(guest, event) {
        warn!(guest, ?event, "lifecycle event not delivered: the loop's lifecycle queue is full");
    }
}

/// What [`read_line_bounded`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line (without its newline) is in the buffer.
    Complete,
    /// A line longer than the bound was read and thrown away, to its newline, with no buffer beyond the bound.
    TooLong,
    /// The stream ended (a partial last line is dropped).
    Eof,
}

/// Reads one line into `line` (cleared first), never holding more than `max` bytes of it: the rest of a longer
/// line is consumed from the reader's own buffer and discarded.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(Line::Eof);
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !too_long && line.len() + part.len() <= max {
            line.extend_from_slice(part);
        } else {
            too_long = true;
            line.clear();
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}

/// Starts the configured sources on the current runtime.
pub fn start(cfg: &LifecycleConfig, shared: Arc<Shared>) -> Result<(), String> {
    if let Some(p) = &cfg.qmp_pattern {
        let pattern = Pattern::new(p)?;
        tokio::spawn(qmp_scanner(pattern, cfg.dirs.clone(), Arc::clone(&shared)));
    }
    if let Some(uri) = &cfg.libvirt {
        let hotplug = match &cfg.hotplug {
            Some(h) => Some(Hotplug::start(h.clone(), uri.clone(), Arc::clone(&shared))?),
            None => None,
        };
        tokio::spawn(libvirt(uri.clone(), shared, hotplug));
    } else if cfg.hotplug.is_some() {
        return Err("hot-plug needs a libvirt connection (--libvirt URI)".into());
    }
    Ok(())
}

async fn qmp_scanner(pattern: Pattern, dirs: Vec<PathBuf>, shared: Arc<Shared>) {
    let active: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    loop {
        for dir in &dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let Some(id) = e.file_name().to_str().and_then(|n| pattern.guest_id(n)) else { continue };
                let path = e.path();
                if active.lock().map(|mut a| a.insert(path.clone())).unwrap_or(false) {
                    let (shared, active) = (Arc::clone(&shared), Arc::clone(&active));
                    tokio::spawn(async move {
                        if let Err(e) = qmp_session(&path, &id, &shared).await {
                            warn!(guest = %id, error = %e, "QMP session ended");
                        }
                        if let Ok(mut a) = active.lock() {
                            a.remove(&path);
                        }
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn qmp_session(path: &std::path::Path, id: &str, shared: &Shared) -> std::io::Result<()> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    info!(guest = id, path = %path.display(), "QMP connected");
    loop {
        match read_line_bounded(&mut r, &mut line, MAX_QMP_LINE).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                warn!(guest = id, max = MAX_QMP_LINE, "QMP line too long; skipped");
                continue;
            }
            Line::Complete => {}
        }
        let text = line.trim_ascii();
        match qmp::parse(text) {
            Ok(QmpLine::Greeting) => w.write_all(b"{\"execute\":\"qmp_capabilities\"}\r\n").await?,
            Ok(l) => {
                let event = match l.lifecycle() {
                    Some(QmpLifecycle::Stop) => Lifecycle::Paused,
                    Some(QmpLifecycle::Resume) => Lifecycle::Resumed,
                    Some(QmpLifecycle::Reset) => Lifecycle::Rebooting,
                    Some(QmpLifecycle::Shutdown) => Lifecycle::Stopped,
                    Some(QmpLifecycle::Panicked) => Lifecycle::Crashed,
                    None => continue,
                };
                tell(shared, id, event);
            }
            Err(e) => warn!(guest = id, error = %e, "QMP line refused"),
        }
    }
}

/// The domain of a `metadata-change` line of `virsh event --loop` (`event 'metadata-change' for domain 'NAME':
/// type element, uri URI`): hot-plug looks at it again (its owner may have just enabled it).
pub fn metadata_changed(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("event 'metadata-change' for domain ")?;
    let name = rest.split_once(": ").map_or(rest, |(n, _)| n);
    Some(name.trim().trim_end_matches(':').trim_matches('\''))
}

/// One line of `virsh event --loop`: the domain's name and what happened to it.
pub fn parse_virsh_event(line: &str) -> Option<(String, Lifecycle)> {
    let rest = line.strip_prefix("event ")?;
    let (kind, rest) = rest.split_once(" for domain ")?;
    let kind = kind.trim_matches('\'');
    let (name, detail) = match rest.split_once(": ") {
        Some((n, d)) => (n, d),
        None => (rest, ""),
    };
    let name = name.trim().trim_end_matches(':').trim_matches('\'').to_string();
    let event = match kind {
        "reboot" => Lifecycle::Rebooting,
        "lifecycle" => match detail.split_whitespace().next()? {
            "Suspended" | "PMSuspended" => Lifecycle::Paused,
            "Resumed" => Lifecycle::Resumed,
            "Started" => Lifecycle::Started,
            "Stopped" if detail.contains("Crashed") => Lifecycle::Crashed,
            "Stopped" => Lifecycle::Stopped,
            "Crashed" => Lifecycle::Crashed,
            _ => return None,
        },
        _ => return None,
    };
    Some((name, event))
}

async fn domuuid(uri: &str, name: &str) -> Option<String> {
    let out = tokio::process::Command::new("virsh").args(["-c", uri, "domuuid", name]).output().await.ok()?;
    let uuid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !uuid.is_empty()).then_some(uuid)
}

async fn libvirt(uri: String, shared: Arc<Shared>, hotplug: Option<Arc<Hotplug>>) {
    let (min, max) = (vigil_core::Duration::from_secs(1), vigil_core::Duration::from_secs(30));
    let mut backoff = Backoff::starting_at(min);
    let mut uuids: HashMap<String, String> = HashMap::new();
    loop {
        let child = tokio::process::Command::new("virsh")
            .args(["-c", &uri, "event", "--all", "--loop"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut child) => {
                info!(uri = %uri, "subscribed to libvirt events");
                if let Some(hp) = &hotplug {
                    // domains already running (vigild's own start, or libvirtd back after a restart)
                    match super::hotplug::virsh(&uri, &["list", "--name"]).await {
                        Ok(names) => names.lines().map(str::trim).filter(|n| !n.is_empty()).for_each(|n| hp.check(n)),
                        Err(e) => warn!(uri = %uri, error = %e, "hot-plug: cannot list the running domains"),
                    }
                }
                if let Some(out) = child.stdout.take() {
                    let mut out = BufReader::new(out);
                    let mut bytes = Vec::new();
                    loop {
                        match read_line_bounded(&mut out, &mut bytes, MAX_QMP_LINE).await {
                            Ok(Line::Complete) => {}
                            Ok(Line::TooLong) => continue,
                            Ok(Line::Eof) | Err(_) => break,
                        }
                        backoff.reset(min);
                        let line = String::from_utf8_lossy(&bytes);
                        if let (Some(hp), Some(name)) = (&hotplug, metadata_changed(&line)) {
                            hp.check(name);
                        }
                        let Some((name, event)) = parse_virsh_event(&line) else { continue };
                        if let (Some(hp), Lifecycle::Started | Lifecycle::Resumed) = (&hotplug, event) {
                            hp.check(&name);
                        }
                        if !uuids.contains_key(&name) {
                            if let Some(u) = domuuid(&uri, &name).await {
                                uuids.insert(name.clone(), u);
                            }
                        }
                        let uuid = uuids.get(&name).cloned().unwrap_or(name);
                        let guest = shared.ctx.guest_of_instance(&uuid);
                        tell(&shared, &guest, event);
                    }
                }
                let _ = child.kill().await;
                warn!(uri = %uri, "libvirt event stream ended; resubscribing");
            }
            Err(e) => warn!(uri = %uri, error = %e, "cannot run virsh"),
        }
        tokio::time::sleep(backoff.next_std(max, crate::sys::os_random())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn an_over_long_line_is_skipped_without_holding_more_than_the_bound() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\n{\"event\":\"STOP\"}\nlast");
        let mut r = BufReader::with_capacity(4096, &input[..]);
        let mut line = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut line, 1000).await.unwrap(), Line::TooLong);
        assert!(line.capacity() <= 1000 + 4096, "held {} bytes of a 1 MiB line", line.capacity());
        assert_eq!(read_line_bounded(&mut r, &mut line, 1000).await.unwrap(), Line::Complete);
        assert_eq!(line, b"{\"event\":\"STOP\"}");
        assert_eq!(read_line_bounded(&mut r, &mut line, 1000).await.unwrap(), Line::Eof, "a partial last line");
    }

    #[test]
    fn a_metadata_change_names_its_domain() {
        let l = "event 'metadata-change' for domain 'plain-c': type element, uri https://vigil.dev/xmlns/heartbeat/1";
        assert_eq!(metadata_changed(l), Some("plain-c"));
        assert_eq!(metadata_changed("event 'lifecycle' for domain 'x': Started Booted"), None);
    }

    #[test]
    fn virsh_event_lines_as_libvirt_9_prints_them() {
        let p = |l: &str| parse_virsh_event(l);
        assert_eq!(p("event 'lifecycle' for domain 'vm1': Suspended Paused"), Some(("vm1".into(), Lifecycle::Paused)));
        assert_eq!(p("event 'lifecycle' for domain 'vm1': Resumed Unpaused"), Some(("vm1".into(), Lifecycle::Resumed)));
        assert_eq!(p("event 'reboot' for domain 'vm1'"), Some(("vm1".into(), Lifecycle::Rebooting)));
        assert_eq!(
            p("event 'lifecycle' for domain 'vm1': Stopped Destroyed"),
            Some(("vm1".into(), Lifecycle::Stopped))
        );
        assert_eq!(p("event 'lifecycle' for domain 'vm1': Crashed Panicked"), Some(("vm1".into(), Lifecycle::Crashed)));
        assert_eq!(p("event 'lifecycle' for domain 'vm1': Started Booted"), Some(("vm1".into(), Lifecycle::Started)));
        assert_eq!(p("event 'lifecycle' for domain 'vm1': Shutdown Finished after guest request"), None);
        assert_eq!(p("event 'device-added' for domain 'vm1': x"), None);
        assert_eq!(p("garbage"), None);
    }
}
