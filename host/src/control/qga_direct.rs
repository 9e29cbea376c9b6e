//! Agentless guests on plain QEMU (issue #22): the guest agent's chardev socket itself (QEMU's
//! `-chardev socket,server=on` for the port `org.qemu.guest_agent.0`), found in the watched directories by
//! `--qga-pattern` (`*` = the guest id, as for heartbeat and QMP sockets). Not for libvirt domains: libvirt owns
//! their agent socket, and a second client would break its commands (use `[qga]` there).
//!
//! One task per socket drives the core's [`QgaMonitor`] (the `0xFF` resynchronisation at connect and after every
//! unanswered probe, a ping per interval, bounded replies: every byte is the guest's). At each interval's end the
//! task tells the fleet whether the interval's probe was answered, and the fleet gives the verdicts, as for
//! agentless guests under libvirt (`fleet::agentless`), with the QMP lifecycle events of the same guest id.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};
use vigil_core::qga::{QgaConfig, QgaMonitor, QGA_MAX_REQUEST};
use vigil_core::StdClock;

use super::{Command, Shared};
use crate::fleet::agentless::Probe;
use crate::glob::Pattern;

/// How direct sockets are probed.
#[derive(Clone, Debug)]
pub struct QgaDirectConfig {
    /// Socket names (`*` = the guest id).
    pub pattern: String,
    /// The watched directories.
    pub dirs: Vec<PathBuf>,
    /// One probe per this.
    pub interval: Duration,
    /// Loss when consecutive misses exceed this.
    pub loss_threshold: u32,
}

/// Finds sockets every two seconds and runs a session for each new one.
pub async fn run(cfg: QgaDirectConfig, shared: Arc<Shared>) {
    let pattern = match Pattern::new(&cfg.pattern) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "--qga-pattern: not watching agent sockets");
            return;
        }
    };
    let active: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    let cfg = Arc::new(cfg);
    loop {
        for dir in &cfg.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let Some(id) = e.file_name().to_str().and_then(|n| pattern.guest_id(n)) else { continue };
                let path = e.path();
                if active.lock().map(|mut a| a.insert(path.clone())).unwrap_or(false) {
                    let (shared, active, cfg) = (Arc::clone(&shared), Arc::clone(&active), Arc::clone(&cfg));
                    tokio::spawn(async move {
                        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        shared.send(Command::AgentWatch { guest: id.clone(), domain: name });
                        watch(&path, &id, &cfg, &shared).await;
                        shared.send(Command::AgentUnwatch { guest: id });
                        if let Ok(mut a) = active.lock() {
                            a.remove(&path);
                        }
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Sessions on one socket until its file is gone; reconnects every two seconds while QEMU is away.
async fn watch(path: &Path, id: &str, cfg: &QgaDirectConfig, shared: &Shared) {
    let clock = StdClock::new();
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.subsec_nanos()) | 1;
    let ids = move || {
        // xorshift32: sync ids need only differ from one another
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut m = QgaMonitor::new(QgaConfig { interval: cfg.interval.into_core(), loss_threshold: u32::MAX }, ids);
    while path.exists() {
        match tokio::net::UnixStream::connect(path).await {
            Ok(stream) => {
                info!(guest = id, path = %path.display(), "qga: connected to the agent socket");
                if let Err(e) = session(stream, &mut m, &clock, id, cfg, shared).await {
                    warn!(guest = id, error = %e, "qga: agent socket session ended");
                }
                m.disconnected();
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

trait IntoCore {
    fn into_core(self) -> vigil_core::Duration;
}

impl IntoCore for Duration {
    fn into_core(self) -> vigil_core::Duration {
        vigil_core::Duration::from_millis(self.as_millis() as u64)
    }
}

async fn session<R: vigil_core::IdSource>(
    mut stream: tokio::net::UnixStream,
    m: &mut QgaMonitor<R>,
    clock: &StdClock,
    id: &str,
    cfg: &QgaDirectConfig,
    shared: &Shared,
) -> std::io::Result<()> {
    m.connected(clock.now());
    let mut buf = [0u8; 4096];
    let mut out = [0u8; QGA_MAX_REQUEST];
    let (mut answers, mut misses) = (m.stats().answers, m.stats().misses);
    loop {
        while let Some(n) = m.poll_transmit(&mut out) {
            stream.write_all(&out[..n]).await?;
        }
        while m.poll_event().is_some() {} // the fleet gives the verdicts
        let s = *m.stats();
        if s.answers > answers || s.misses > misses {
            // an interval ended (or an answer came): tell the fleet how it went
            let probe = if s.misses > misses {
                Probe::NoAnswer(format!("no answer to the probe in {} ms", cfg.interval.as_millis()))
            } else {
                Probe::Answered
            };
            shared.send(Command::AgentProbe { guest: id.to_string(), probe, loss_threshold: cfg.loss_threshold });
            (answers, misses) = (s.answers, s.misses);
        }
        let wait = m.poll_timeout().map_or(Duration::from_secs(1), |t| {
            Duration::from_millis(t.saturating_duration_since(clock.now()).as_millis())
        });
        tokio::select! {
            r = stream.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                let mut fed = 0;
                while fed < n {
                    fed += m.handle_bytes(clock.now(), &buf[fed..n]);
                    while m.poll_event().is_some() {}
                }
            }
            () = tokio::time::sleep(wait) => m.handle_timeout(clock.now()),
        }
    }
}
