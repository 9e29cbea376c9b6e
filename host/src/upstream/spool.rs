//! The durable spool: every event is stored here before any upstream sink is told about it, and each sink reads
//! it from its own cursor, so a dead sink blocks none of the others and a restart (SIGKILL included) resumes where
//! each sink stopped. Delivery is at-least-once; every record carries a stable id (a UUIDv7) that receivers can
//! use to drop duplicates.
//!
//! Storage is `redb` (an embedded, crash-safe, copy-on-write store: a torn write leaves the last commit intact).
//! The spool is bounded: records every sink has delivered are compacted away, and when more than `cap` wait,
//! the oldest are dropped (cursors move past them), counted, and a `spool_dropped` record says so. A spool file
//! that cannot be opened (corrupt, cut short) is moved aside and a fresh one started; that is never fatal, and it
//! is reported. Writing happens on the control plane's spool thread, never on the data plane.

use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError,
    TableDefinition,
};
use serde_json::Value;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Each sink's state, one entry per item (`sink\0key`), so that a change saves only what changed.
const SINK_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("sink_state");
/// Records a sink gave up on (after `max_record_age`), kept for an operator to look at; the oldest go first.
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Dead letters kept.
pub const DEAD_LETTERS_KEPT: u64 = 1000;

/// Default bound on undelivered records.
pub const DEFAULT_CAP: u64 = 100_000;

/// Why the spool failed.
#[derive(Debug)]
pub struct SpoolError(pub String);

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpoolError {}

/// A spool redb says is corrupt, or one cut short (shorter than its own header says): the only cases the file is
/// moved aside. A file that is not a redb database at all, a lock, a permission or an upgrade is never discarded.
fn is_corrupt(e: &DatabaseError) -> bool {
    match e {
        DatabaseError::Storage(StorageError::Corrupted(_)) | DatabaseError::RepairAborted => true,
        DatabaseError::Storage(StorageError::Io(io)) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

/// Creates the tables and the cursors of sinks new to this spool.
fn init(db: &Database, sinks: &[String]) -> Result<(), SpoolError> {
    let txn = db.begin_write().map_err(err)?;
    {
        txn.open_table(EVENTS).map_err(err)?;
        txn.open_table(META).map_err(err)?;
        txn.open_table(STATE).map_err(err)?;
        let mut cursors = txn.open_table(CURSORS).map_err(err)?;
        // a new sink starts at the records still in the spool (it cannot see compacted ones)
        for s in sinks {
            if cursors.get(s.as_str()).map_err(err)?.is_none() {
                cursors.insert(s.as_str(), 0).map_err(err)?;
            }
        }
    }
    txn.commit().map_err(err)?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError(e.to_string())
}

/// The spool.
pub struct Spool {
    /// `None` while it is being reopened after an I/O error (redb refuses every call on a handle after one).
    db: std::sync::RwLock<Option<Database>>,
    path: PathBuf,
    cap: u64,
    sinks: Vec<String>,
    /// Records read back that did not parse (skipped, so that one bad record never blocks a sink).
    unreadable: std::sync::atomic::AtomicU64,
    /// Writes that failed (a full disk, an I/O error), and the records lost because they could not wait.
    pub health: SpoolHealth,
}

/// How the spool's writes went, for the metrics.
#[derive(Debug, Default)]
pub struct SpoolHealth {
    /// Failed writes and reopens.
    pub errors: std::sync::atomic::AtomicU64,
    /// Records that could not be held in memory while the spool was failing (the bound was reached).
    pub lost: std::sync::atomic::AtomicU64,
}

/// What `append` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number of the last record written (0 if none).
    pub last: u64,
    /// Records dropped (oldest first) to keep the spool within its cap.
    pub dropped: u64,
}

impl Spool {
    /// Opens (or creates) `dir/spool.redb` for `sinks`. Only a file redb finds corrupt is moved aside
    /// (`spool.redb.corrupt-<unix time>`) and a fresh spool started; the returned notes say so. Any other error
    /// (the file locked by another vigild, permissions, no descriptors, a format that needs an upgrade) is returned
    /// with the path and the reason, and the file is left as it is: no record is ever discarded for those.
    pub fn open(dir: &Path, cap: u64, sinks: &[String]) -> Result<(Spool, Vec<String>), SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let path = dir.join("spool.redb");
        let mut notes = Vec::new();
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(e) if is_corrupt(&e) => {
                let stamp =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
                std::fs::rename(&path, &aside)
                    .map_err(|e2| err(format!("{}: {e}; moving it aside: {e2}", path.display())))?;
                notes.push(format!(
                    "spool {} is corrupt ({e}); moved to {}; its undelivered events are lost",
                    path.display(),
                    aside.display()
                ));
                Database::create(&path).map_err(|e| err(format!("{}: {e}", path.display())))?
            }
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(err(format!(
                    "{}: the spool is in use by another process (is another vigild running with this state \
                     directory?)",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(err(format!(
                    "{}: cannot open the spool: {e} (nothing was changed; fix the cause, or move the file away to \
                     start a new spool)",
                    path.display()
                )))
            }
        };
        init(&db, sinks)?;
        let spool = Spool {
            db: std::sync::RwLock::new(Some(db)),
            path,
            cap: cap.max(1),
            sinks: sinks.to_vec(),
            unreadable: Default::default(),
            health: SpoolHealth::default(),
        };
        Ok((spool, notes))
    }

    /// Closes the database and opens it again: after an I/O error (a full disk) redb refuses every later call on
    /// the same handle. Committed records are kept (redb is copy-on-write: a failed commit leaves the last one).
    pub fn reopen(&self) -> Result<(), SpoolError> {
        let mut slot = self.db.write().map_err(|_| err("spool lock poisoned"))?;
        *slot = None; // drop first: the file lock goes with it
        let db = Database::create(&self.path).map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        init(&db, &self.sinks)?;
        *slot = Some(db);
        Ok(())
    }

    /// Runs `f` on the open database.
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, SpoolError>) -> Result<T, SpoolError> {
        let slot = self.db.read().map_err(|_| err("spool lock poisoned"))?;
        match slot.as_ref() {
            Some(db) => f(db),
            None => Err(err("spool closed: being reopened")),
        }
    }

    /// Appends records (JSON objects; each gets `spool_seq`), in one durable transaction. Returns the last
    /// sequence number and how many of the oldest records were dropped to stay within the cap.
    pub fn append(&self, records: &mut [Value]) -> Result<Appended, SpoolError> {
        self.with(|db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(Durability::Immediate).map_err(err)?;
            let mut out = Appended::default();
            {
                let mut meta = txn.open_table(META).map_err(err)?;
                let mut next = meta.get("next_seq").map_err(err)?.map_or(1, |v| v.value());
                let mut events = txn.open_table(EVENTS).map_err(err)?;
                for r in records.iter_mut() {
                    if let Value::Object(m) = r {
                        m.insert("spool_seq".into(), Value::from(next));
                    }
                    let bytes = serde_json::to_vec(r).map_err(err)?;
                    events.insert(next, bytes.as_slice()).map_err(err)?;
                    out.last = next;
                    next += 1;
                }
                meta.insert("next_seq", next).map_err(err)?;
                // over the cap: drop the oldest, moving every cursor past them
                let len = events.len().map_err(err)?;
                if len > self.cap {
                    let excess = len - self.cap;
                    let first = events.first().map_err(err)?.map_or(0, |(k, _)| k.value());
                    let last_dropped = first + excess - 1;
                    for seq in first..=last_dropped {
                        events.remove(seq).map_err(err)?;
                    }
                    let mut cursors = txn.open_table(CURSORS).map_err(err)?;
                    for s in &self.sinks {
                        let c = cursors.get(s.as_str()).map_err(err)?.map_or(0, |v| v.value());
                        if c < last_dropped {
                            cursors.insert(s.as_str(), last_dropped).map_err(err)?;
                        }
                    }
                    let dropped = meta.get("dropped").map_err(err)?.map_or(0, |v| v.value()) + excess;
                    meta.insert("dropped", dropped).map_err(err)?;
                    out.dropped = excess;
                }
            }
            txn.commit().map_err(err)?;
            Ok(out)
        })
    }

    /// Up to `max` records after `cursor`, in order.
    pub fn read_after(&self, cursor: u64, max: usize) -> Result<Vec<(u64, Value)>, SpoolError> {
        self.with(|db| {
            let txn = db.begin_read().map_err(err)?;
            let events = txn.open_table(EVENTS).map_err(err)?;
            let mut out = Vec::new();
            for item in events.range(cursor.saturating_add(1)..).map_err(err)?.take(max) {
                let (k, v) = item.map_err(err)?;
                // a record that does not parse is skipped and counted, never fatal
                match serde_json::from_slice(v.value()) {
                    Ok(val) => out.push((k.value(), val)),
                    Err(e) => {
                        self.unreadable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(seq = k.value(), error = %e, "spool record does not parse; skipped");
                    }
                }
            }
            Ok(out)
        })
    }

    /// Keeps a record sink `sink` gave up on, with why (at most [`DEAD_LETTERS_KEPT`], the oldest dropped).
    pub fn dead_letter(&self, sink: &str, record: &Value, why: &str) -> Result<(), SpoolError> {
        let entry = serde_json::json!({ "sink": sink, "why": why, "record": record });
        let bytes = serde_json::to_vec(&entry).map_err(err)?;
        self.with(|db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut dead = txn.open_table(DEAD).map_err(err)?;
                let next = dead.last().map_err(err)?.map_or(1, |(k, _)| k.value() + 1);
                dead.insert(next, bytes.as_slice()).map_err(err)?;
                while dead.len().map_err(err)? > DEAD_LETTERS_KEPT {
                    let Some(first) = dead.first().map_err(err)?.map(|(k, _)| k.value()) else { break };
                    dead.remove(first).map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
    }

    /// The dead letters kept, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<Value>, SpoolError> {
        self.with(|db| {
            let txn = db.begin_read().map_err(err)?;
            let dead = match txn.open_table(DEAD) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(err(e)),
            };
            let mut out = Vec::new();
            for item in dead.iter().map_err(err)? {
                let (_, v) = item.map_err(err)?;
                out.extend(serde_json::from_slice::<Value>(v.value()).ok());
            }
            Ok(out)
        })
    }

    /// Records skipped because they did not parse, since the spool was opened.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where sink `name` stands.
    pub fn cursor(&self, name: &str) -> Result<u64, SpoolError> {
        self.with(|db| {
            let txn = db.begin_read().map_err(err)?;
            let cursors = txn.open_table(CURSORS).map_err(err)?;
            Ok(cursors.get(name).map_err(err)?.map_or(0, |v| v.value()))
        })
    }

    /// Sink `name` delivered everything up to `seq` (durably); records every sink has delivered are compacted away.
    pub fn set_cursor(&self, name: &str, seq: u64) -> Result<(), SpoolError> {
        self.save_progress(name, seq, &[], true)
    }

    /// A sink's state as one blob, as vigild before per-item state saved it (read once, to carry it over).
    pub fn state(&self, name: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        self.with(|db| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(STATE).map_err(err)?;
            Ok(t.get(name).map_err(err)?.map(|v| v.value().to_vec()))
        })
    }

    /// Sink `name`'s state items (`key`, bytes), as [`save_progress`](Self::save_progress) left them.
    pub fn state_items(&self, name: &str) -> Result<Vec<(String, Vec<u8>)>, SpoolError> {
        self.with(|db| {
            let txn = db.begin_read().map_err(err)?;
            let t = match txn.open_table(SINK_STATE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(err(e)),
            };
            let (from, to) = (format!("{name}\u{0}"), format!("{name}\u{1}"));
            let mut out = Vec::new();
            for item in t.range(from.as_str()..to.as_str()).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let key = k.value().split_once('\u{0}').map_or("", |(_, k)| k).to_string();
                out.push((key, v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Sink `name` delivered everything up to `seq`, and its state items changed as `changes` say (`None`:
    /// removed); records every sink has delivered are compacted away. One transaction, durable only when `durable`:
    /// delivery is at least once, so progress lost to a crash is only delivered again, and the next durable commit
    /// (an append) makes it stick.
    pub fn save_progress(
        &self,
        name: &str,
        seq: u64,
        changes: &[(String, Option<Vec<u8>>)],
        durable: bool,
    ) -> Result<(), SpoolError> {
        self.with(|db| {
            let mut txn = db.begin_write().map_err(err)?;
            txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(err)?;
            {
                let mut cursors = txn.open_table(CURSORS).map_err(err)?;
                cursors.insert(name, seq).map_err(err)?;
                let mut min = u64::MAX;
                for s in &self.sinks {
                    min = min.min(cursors.get(s.as_str()).map_err(err)?.map_or(0, |v| v.value()));
                }
                if min != u64::MAX {
                    let mut events = txn.open_table(EVENTS).map_err(err)?;
                    events.retain_in(..=min, |_, _| false).map_err(err)?;
                }
                if !changes.is_empty() {
                    let mut t = txn.open_table(SINK_STATE).map_err(err)?;
                    for (key, value) in changes {
                        let k = format!("{name}\u{0}{key}");
                        match value {
                            Some(v) => t.insert(k.as_str(), v.as_slice()).map_err(err)?,
                            None => t.remove(k.as_str()).map_err(err)?,
                        };
                    }
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })
    }

    /// Records waiting, and records dropped over the spool's life.
    pub fn stats(&self) -> Result<(u64, u64), SpoolError> {
        self.with(|db| {
            let txn = db.begin_read().map_err(err)?;
            let events = txn.open_table(EVENTS).map_err(err)?;
            let meta = txn.open_table(META).map_err(err)?;
            let dropped = meta.get("dropped").map_err(err)?.map_or(0, |v| v.value());
            Ok((events.len().map_err(err)?, dropped))
        })
    }
}

/// A record for the spool: the event's fields, a stable id (UUIDv7) for receivers to drop duplicates by, the time,
/// this host and the guest.
pub fn record(host: &str, guest: &str, event: &crate::events::Event) -> Value {
    let mut v = serde_json::to_value(event).unwrap_or_else(|_| serde_json::json!({ "kind": event.kind() }));
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), serde_json::json!(uuid::Uuid::now_v7().to_string()));
        m.insert("time".into(), serde_json::json!(crate::events::rfc3339(std::time::SystemTime::now())));
        m.insert("host".into(), serde_json::json!(host));
        m.insert("guest".into(), serde_json::json!(guest));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn each_sink_has_its_own_cursor_and_delivered_records_are_compacted() {
        let dir = tmp("cursors");
        let sinks = vec!["a".to_string(), "b".to_string()];
        let (s, notes) = Spool::open(&dir, 100, &sinks).unwrap();
        assert!(notes.is_empty());
        let mut recs: Vec<Value> = (0..5).map(|i| json!({"n": i})).collect();
        assert_eq!(s.append(&mut recs).unwrap(), Appended { last: 5, dropped: 0 });
        assert_eq!(s.read_after(0, 10).unwrap().len(), 5);
        s.set_cursor("a", 5).unwrap();
        assert_eq!(s.read_after(s.cursor("a").unwrap(), 10).unwrap().len(), 0);
        assert_eq!(s.read_after(s.cursor("b").unwrap(), 10).unwrap()[0].1["n"], 0, "b is not held up by a");
        assert_eq!(s.stats().unwrap().0, 5, "kept until every sink has them");
        s.set_cursor("b", 3).unwrap();
        assert_eq!(s.stats().unwrap().0, 2, "compacted up to the slowest cursor");
        drop(s);
        // reopened (a restart): cursors and records are where they were; numbering goes on
        let (s, _) = Spool::open(&dir, 100, &sinks).unwrap();
        assert_eq!(s.cursor("b").unwrap(), 3);
        let rest = s.read_after(3, 10).unwrap();
        assert_eq!(rest.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(s.append(&mut [json!({"n": 5})]).unwrap().last, 6);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn over_the_cap_the_oldest_are_dropped_and_counted() {
        let dir = tmp("cap");
        let (s, _) = Spool::open(&dir, 3, &["a".to_string()]).unwrap();
        let mut recs: Vec<Value> = (0..5).map(|i| json!({"n": i})).collect();
        assert_eq!(s.append(&mut recs).unwrap(), Appended { last: 5, dropped: 2 });
        assert_eq!(s.stats().unwrap(), (3, 2));
        let got = s.read_after(s.cursor("a").unwrap(), 10).unwrap();
        assert_eq!(got.iter().map(|(_, v)| v["n"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3, 4]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_spool_cut_short_is_moved_aside_and_a_fresh_one_started() {
        let dir = tmp("torn");
        let (s, _) = Spool::open(&dir, 100, &["a".to_string()]).unwrap();
        let mut recs: Vec<Value> = (0..100).map(|i| json!({"n": i, "pad": "x".repeat(200)})).collect();
        s.append(&mut recs).unwrap();
        drop(s);
        let path = dir.join("spool.redb");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        let (s, notes) = Spool::open(&dir, 100, &["a".to_string()]).unwrap();
        // redb either repairs what it can or refuses; either way the spool works afterwards
        if !notes.is_empty() {
            assert!(notes[0].contains("moved to"), "{notes:?}");
        }
        assert!(s.append(&mut [json!({"n": "after"})]).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
