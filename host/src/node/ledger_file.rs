//! The action ledger on disk (`STATE_DIR/action-ledger.json`): every guest's recent corrective actions and its
//! VM's last start, so that a vigild restart never refills a budget. Instants are saved as wall-clock times.
//! Written by a thread of its own (a temporary file, fsync, rename): the loop hands over the bytes without waiting,
//! and when the writer is still busy the loop tries again at its next pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;
use vigil_core::Instant;

use crate::fleet::recovery::LedgerEntry;

/// The file's name in the state directory.
pub const FILE: &str = "action-ledger.json";

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    version: u32,
    guests: BTreeMap<String, SavedGuest>,
}

#[derive(Default, Serialize, Deserialize)]
struct SavedGuest {
    #[serde(default)]
    actions_unix_ms: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_unix_ms: Option<u64>,
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Reads the ledger saved by a previous run, as entries on this run's clock (`now` is `wall` on it). A missing
/// file is an empty ledger; an unreadable one is reported and ignored (budgets then start afresh, said loudly).
pub fn load(path: &Path, now: Instant, wall: SystemTime) -> Vec<(Arc<str>, LedgerEntry)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "action ledger unreadable: budgets start afresh");
            return Vec::new();
        }
    };
    let saved: Saved = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "action ledger malformed: budgets start afresh");
            return Vec::new();
        }
    };
    let wall_now = wall_ms(wall);
    // a time from the future (a clock set back) counts as now: never earlier than it was
    let on_clock = |ms: u64| Instant::from_millis(now.as_millis().saturating_sub(wall_now.saturating_sub(ms)));
    saved
        .guests
        .into_iter()
        .map(|(id, g)| {
            let actions = g.actions_unix_ms.into_iter().map(on_clock).collect();
            (Arc::from(id), LedgerEntry::new(actions, g.started_unix_ms.map(on_clock)))
        })
        .collect()
}

/// The ledger as the file holds it.
pub fn encode(entries: &[(Arc<str>, LedgerEntry)], now: Instant, wall: SystemTime) -> Vec<u8> {
    let wall_now = wall_ms(wall);
    let to_wall = |t: Instant| wall_now.saturating_sub(now.saturating_duration_since(t).as_millis());
    let guests = entries
        .iter()
        .map(|(id, e)| {
            let g = SavedGuest {
                actions_unix_ms: e.actions.iter().map(|&t| to_wall(t)).collect(),
                started_unix_ms: e.started.map(to_wall),
            };
            (id.to_string(), g)
        })
        .collect();
    serde_json::to_vec_pretty(&Saved { version: 1, guests }).unwrap_or_default()
}

/// The writer thread.
pub struct LedgerWriter {
    tx: SyncSender<Vec<u8>>,
}

impl LedgerWriter {
    /// Starts the writer of `path`.
    pub fn start(path: PathBuf) -> std::io::Result<LedgerWriter> {
        let (tx, rx) = sync_channel::<Vec<u8>>(1);
        std::thread::Builder::new().name("vigild-ledger".into()).spawn(move || {
            crate::sys::background_thread();
            while let Ok(bytes) = rx.recv() {
                if let Err(e) = write_atomically(&path, &bytes) {
                    warn!(path = %path.display(), error = %e, "action ledger not saved: a restart may refill budgets");
                }
            }
        })?;
        Ok(LedgerWriter { tx })
    }

    /// Hands the bytes over; `false` if the writer is still busy with the previous ones (try again later).
    pub fn offer(&self, bytes: Vec<u8>) -> bool {
        !matches!(self.tx.try_send(bytes), Err(TrySendError::Full(_)))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trip_across_clocks() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = Instant::from_secs(5_000);
        let e =
            LedgerEntry::new(vec![Instant::from_secs(4_000), Instant::from_secs(4_900)], Some(Instant::from_secs(10)));
        let bytes = encode(&[("g".into(), e)], now, wall);
        let dir = std::env::temp_dir().join(format!("vigil-ledger-{}", std::process::id()));
        let path = dir.join(FILE);
        write_atomically(&path, &bytes).unwrap();
        // a new run, 100 s later on the wall, whose monotonic clock started afresh
        let later = load(&path, Instant::from_secs(50), wall + Duration::from_secs(100));
        assert_eq!(later.len(), 1);
        let (_, e) = &later[0];
        // 1,000 s and 100 s before the save, 100 s more since: 1,100 s and 200 s ago, clamped at 0 on the new clock
        assert_eq!(e.actions, [Instant::from_secs(0), Instant::from_secs(0)]);
        let later = load(&path, Instant::from_secs(5_000), wall + Duration::from_secs(100));
        assert_eq!(later[0].1.actions, [Instant::from_secs(3_900), Instant::from_secs(4_800)]);
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path, now, wall).is_empty());
        assert!(load(&dir.join("missing"), now, wall).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
