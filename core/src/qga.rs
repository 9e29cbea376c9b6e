//! [`QgaMonitor`]: liveness of a guest that runs only the stock QEMU guest agent (`qemu-ga`), as a sans-IO state
//! machine in the [`Monitor`](crate::Monitor)'s style (issue #22).
//!
//! The wire: newline-delimited JSON. `{"execute":"guest-ping"}` is answered `{"return": {}}`. To resynchronise,
//! send the byte `0xFF` then `{"execute":"guest-sync-delimited","arguments":{"id":N}}`; the agent answers `0xFF`
//! then `{"return": N}`, and everything before its `0xFF` is stale (a late answer, or a parse error for a partial
//! request) and is discarded. vigild resynchronises at connect and after every unanswered probe.
//!
//! One probe per interval: a `guest-ping` while in sync, a `guest-sync-delimited` (with a fresh id from the
//! caller's [`IdSource`]) when not. At the end of each interval an unanswered probe is a miss; loss is declared when
//! consecutive misses exceed the threshold (default 1: at the second miss, 3 intervals after the last answered probe
//! at most, as for heartbeat guests), once per episode, and any valid answer ends the episode. Replies are bounded
//! by the framer ([`MAX_LINE`](crate::MAX_LINE)); a longer line is dropped and counted, never buffered. It never
//! reads a clock, does I/O, allocates or panics on agent bytes.

use crate::framer::{FrameError, LineFramer, LineStorage, LINE_BUF};
use crate::time::{Duration, Instant};
use crate::IdSource;

/// The byte that delimits a resynchronisation, both ways.
pub const QGA_SENTINEL: u8 = 0xFF;
/// The longest request this machine writes (`0xFF` + a sync with a 10-digit id + `\n`).
pub const QGA_MAX_REQUEST: usize = 80;

/// Tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QgaConfig {
    /// One probe per this (default 1 s).
    pub interval: Duration,
    /// Loss when consecutive misses exceed this (default 1).
    pub loss_threshold: u32,
}

impl Default for QgaConfig {
    fn default() -> Self {
        QgaConfig { interval: Duration::from_secs(1), loss_threshold: 1 }
    }
}

/// What the machine tells its caller: the heartbeat monitor's words for the same facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QgaEvent {
    /// In sync with the agent for the first time on this connection.
    Synced,
    /// Consecutive unanswered probes exceeded the threshold (once per episode).
    HeartbeatLost {
        /// Misses counted.
        consecutive_misses: u32,
        /// When the last probe was answered, if ever on this connection.
        last_heartbeat: Option<Instant>,
    },
    /// A valid answer after a loss.
    Recovered,
    /// The agent sent something that is not an answer we wait for.
    ProtocolError(QgaError),
}

/// What was wrong with the agent's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QgaError {
    /// A line longer than the bound (dropped).
    LineTooLong,
    /// Not a `{"return": ...}` or `{"error": ...}` object.
    Malformed,
    /// The agent answered with an error (it runs: still proof of life).
    AgentError,
}

/// Where the machine stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QgaState {
    /// No transport.
    Disconnected,
    /// Waiting for the answer to a `guest-sync-delimited` (and for the agent's `0xFF` before it).
    Syncing,
    /// In sync: pinging.
    InSync,
}

/// Counters, kept across connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QgaStats {
    /// Probes answered.
    pub answers: u64,
    /// Intervals whose probe went unanswered.
    pub misses: u64,
    /// Losses declared.
    pub losses: u64,
    /// Resynchronisations sent.
    pub syncs: u64,
    /// Bytes dropped before the agent's `0xFF` (stale answers, parse errors of a partial request).
    pub discarded: u64,
    /// Lines refused (too long, malformed) and error answers.
    pub errors: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Ping,
    Sync(u32),
}

/// Liveness through `qemu-ga`. Methods as the [`Monitor`](crate::Monitor)'s: `connected`/`disconnected`,
/// `handle_bytes`, `handle_timeout`, then drain `poll_event` and `poll_transmit`, sleep until `poll_timeout`.
pub struct QgaMonitor<R, S = [u8; LINE_BUF]> {
    config: QgaConfig,
    ids: R,
    framer: LineFramer<S>,
    state: QgaState,
    /// Bytes are stale until the agent's `0xFF`.
    await_sentinel: bool,
    /// The probe of this interval, until answered.
    outstanding: Option<Probe>,
    /// The probe to write.
    tx: Option<Probe>,
    answered: bool,
    misses: u32,
    lost: bool,
    synced_once: bool,
    last_answer: Option<Instant>,
    next: Option<Instant>,
    event: Option<QgaEvent>,
    stats: QgaStats,
}

impl<R: IdSource> QgaMonitor<R> {
    /// A machine with no transport yet.
    pub fn new(config: QgaConfig, ids: R) -> Self {
        QgaMonitor::with_line_storage(config, ids, [0; LINE_BUF])
    }
}

impl<R: IdSource, S: LineStorage> QgaMonitor<R, S> {
    /// A machine that keeps a partial line in `storage` (see [`LineStorage`]).
    pub fn with_line_storage(config: QgaConfig, ids: R, storage: S) -> Self {
        QgaMonitor {
            config,
            ids,
            framer: LineFramer::with_storage(storage),
            state: QgaState::Disconnected,
            await_sentinel: false,
            outstanding: None,
            tx: None,
            answered: false,
            misses: 0,
            lost: false,
            synced_once: false,
            last_answer: None,
            next: None,
            event: None,
            stats: QgaStats::default(),
        }
    }

    /// Where it stands.
    pub fn state(&self) -> QgaState {
        self.state
    }

    /// Whether a loss is open.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// The counters.
    pub fn stats(&self) -> &QgaStats {
        &self.stats
    }

    /// A transport is up: resynchronise at once.
    pub fn connected(&mut self, now: Instant) {
        self.framer.reset();
        self.misses = 0;
        self.synced_once = false;
        self.last_answer = None;
        self.start_probe(now, false);
    }

    /// The transport is gone (an open loss stays open until an answer).
    pub fn disconnected(&mut self) {
        self.state = QgaState::Disconnected;
        self.outstanding = None;
        self.tx = None;
        self.next = None;
        self.framer.reset();
    }

    /// Feeds bytes from the agent; returns how many were consumed (all, unless an event waits to be polled).
    #[must_use = "bytes not consumed must be fed again"]
    pub fn handle_bytes(&mut self, now: Instant, input: &[u8]) -> usize {
        if self.state == QgaState::Disconnected {
            return input.len();
        }
        let mut used = 0;
        while used < input.len() && self.event.is_none() {
            let rest = &input[used..];
            // the sentinel starts a fresh stream wherever it appears: anything held before it is stale
            if let Some(p) = rest.iter().position(|&b| b == QGA_SENTINEL) {
                if self.await_sentinel || p == 0 {
                    self.stats.discarded += (p + usize::from(self.framer.buffered() > 0)) as u64;
                    self.framer.reset();
                    self.await_sentinel = false;
                    used += p + 1;
                    continue;
                }
            }
            if self.await_sentinel {
                self.stats.discarded += rest.len() as u64;
                used = input.len();
                break;
            }
            // up to the next sentinel, if any: it is handled on the next turn
            let end = rest.iter().position(|&b| b == QGA_SENTINEL).unwrap_or(rest.len());
            let (n, line) = self.framer.push(&rest[..end]);
            used += n;
            let reply = match line {
                None => continue,
                Some(Err(FrameError::LineTooLong)) => Err(QgaError::LineTooLong),
                Some(Ok(line)) => classify(line),
            };
            self.on_reply(now, reply);
        }
        used
    }

    /// Lets the interval end when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.event.is_some() || self.state == QgaState::Disconnected {
            return;
        }
        if self.next.is_some_and(|t| t <= now) {
            let in_sync = self.answered && self.state == QgaState::InSync;
            if !self.answered {
                self.stats.misses += 1;
                self.misses = self.misses.saturating_add(1);
                if self.misses > self.config.loss_threshold && !self.lost {
                    self.lost = true;
                    self.stats.losses += 1;
                    self.event = Some(QgaEvent::HeartbeatLost {
                        consecutive_misses: self.misses,
                        last_heartbeat: self.last_answer,
                    });
                }
            }
            self.start_probe(now, in_sync);
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<QgaEvent> {
        self.event.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Writes the next request into `buf`; returns its length.
    pub fn poll_transmit(&mut self, buf: &mut [u8; QGA_MAX_REQUEST]) -> Option<usize> {
        let probe = self.tx.take()?;
        let mut w = Writer { buf, n: 0 };
        match probe {
            Probe::Ping => w.put(b"{\"execute\":\"guest-ping\"}\n"),
            Probe::Sync(id) => {
                w.put(&[QGA_SENTINEL]);
                w.put(b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":");
                w.uint(id);
                w.put(b"}}\n");
            }
        }
        Some(w.n)
    }

    fn start_probe(&mut self, now: Instant, in_sync: bool) {
        self.answered = false;
        let probe = if in_sync {
            Probe::Ping
        } else {
            self.stats.syncs += 1;
            self.await_sentinel = true;
            self.state = QgaState::Syncing;
            // JSON numbers the agent echoes exactly: keep ids within 31 bits
            Probe::Sync(self.ids.next_id() & 0x7fff_ffff)
        };
        self.outstanding = Some(probe);
        self.tx = Some(probe);
        self.next = Some(now + self.config.interval);
    }

    fn on_reply(&mut self, now: Instant, reply: Result<Reply, QgaError>) {
        let alive = match (reply, self.outstanding) {
            (Ok(Reply::Return), Some(Probe::Ping)) => true,
            (Ok(Reply::SyncReturn(n)), Some(Probe::Sync(id))) if n == u64::from(id) => {
                self.state = QgaState::InSync;
                if !self.synced_once {
                    self.synced_once = true;
                    self.event = Some(QgaEvent::Synced);
                }
                true
            }
            // an error answer to our ping: the agent runs (a command refused by its block list, say)
            (Ok(Reply::Error), Some(Probe::Ping)) => {
                self.stats.errors += 1;
                true
            }
            // a stale answer (another id, a ping's answer while syncing) or an error for a partial request
            (Ok(_), _) => return,
            (Err(e), _) => {
                self.stats.errors += 1;
                self.event = Some(QgaEvent::ProtocolError(e));
                return;
            }
        };
        if alive {
            self.outstanding = None;
            self.answered = true;
            self.misses = 0;
            self.stats.answers += 1;
            self.last_answer = Some(now);
            if self.lost {
                self.lost = false;
                // a `Synced` already waiting says it first; the recovery follows on the next answer
                if self.event.is_none() {
                    self.event = Some(QgaEvent::Recovered);
                } else {
                    self.lost = true;
                }
            }
        }
    }
}

/// What an agent's line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// `{"return": N}` (an unsigned integer).
    SyncReturn(u64),
    /// `{"return": ...}` (anything else).
    Return,
    /// `{"error": ...}`.
    Error,
}

/// Classifies a line by its first key, without parsing the rest (it is bounded, and nothing else is used).
fn classify(line: &[u8]) -> Result<Reply, QgaError> {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut i = 0;
    let skip = |i: &mut usize| {
        while line.get(*i).is_some_and(ws) {
            *i += 1;
        }
    };
    skip(&mut i);
    let expect = |i: &mut usize, b: u8| -> Result<(), QgaError> {
        if line.get(*i) == Some(&b) {
            *i += 1;
            Ok(())
        } else {
            Err(QgaError::Malformed)
        }
    };
    expect(&mut i, b'{')?;
    skip(&mut i);
    let key = if line.get(i..i + 8) == Some(b"\"return\"") {
        i += 8;
        true
    } else if line.get(i..i + 7) == Some(b"\"error\"") {
        i += 7;
        false
    } else {
        return Err(QgaError::Malformed);
    };
    skip(&mut i);
    expect(&mut i, b':')?;
    skip(&mut i);
    let last = line.iter().rposition(|b| !ws(b));
    if last.map(|l| line[l]) != Some(b'}') {
        return Err(QgaError::Malformed);
    }
    if !key {
        return Ok(Reply::Error);
    }
    let start = i;
    let mut n: u64 = 0;
    while let Some(&d) = line.get(i).filter(|d| d.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        i += 1;
    }
    if i > start {
        skip(&mut i);
        if last == Some(i) {
            return Ok(Reply::SyncReturn(n));
        }
    }
    Ok(Reply::Return)
}

struct Writer<'a> {
    buf: &'a mut [u8; QGA_MAX_REQUEST],
    n: usize,
}

impl Writer<'_> {
    fn put(&mut self, s: &[u8]) {
        // every request fits QGA_MAX_REQUEST (the longest is a sync with a 10-digit id)
        let end = (self.n + s.len()).min(QGA_MAX_REQUEST);
        let k = end - self.n;
        self.buf[self.n..end].copy_from_slice(&s[..k]);
        self.n = end;
    }

    fn uint(&mut self, v: u32) {
        let mut d = [0u8; 10];
        self.put(crate::fast::u32_ascii(v, &mut d));
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    struct T {
        q: QgaMonitor<fn() -> u32>,
    }

    fn seven() -> u32 {
        7
    }

    impl T {
        fn new() -> Self {
            let mut q = QgaMonitor::new(QgaConfig::default(), seven as fn() -> u32);
            q.connected(at(0));
            T { q }
        }
        fn sent(&mut self) -> Vec<u8> {
            let mut buf = [0u8; QGA_MAX_REQUEST];
            let mut out = Vec::new();
            while let Some(n) = self.q.poll_transmit(&mut buf) {
                out.extend_from_slice(&buf[..n]);
            }
            out
        }
        fn feed(&mut self, t: u64, b: &[u8]) -> Vec<QgaEvent> {
            let mut ev = Vec::new();
            let mut input = b;
            while !input.is_empty() {
                let n = self.q.handle_bytes(at(t), input);
                input = &input[n..];
                ev.extend(self.q.poll_event());
            }
            ev
        }
        fn tick(&mut self, t: u64) -> Vec<QgaEvent> {
            let mut ev = Vec::new();
            while self.q.poll_timeout().is_some_and(|d| d <= at(t)) {
                let d = self.q.poll_timeout().unwrap();
                self.q.handle_timeout(d);
                ev.extend(self.q.poll_event());
            }
            ev
        }
    }

    #[test]
    fn it_syncs_at_connect_then_pings_once_per_interval() {
        let mut t = T::new();
        assert_eq!(t.sent(), b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":7}}\n");
        // garbage and a stale answer before the agent's sentinel are skipped
        assert_eq!(
            t.feed(5, b"{\"return\": {}}\n{\"error\": {\"class\": \"GenericError\"}}\n\xff{\"return\": 7}\n"),
            [QgaEvent::Synced]
        );
        assert_eq!(t.q.state(), QgaState::InSync);
        assert!(t.tick(1000).is_empty());
        assert_eq!(t.sent(), b"{\"execute\":\"guest-ping\"}\n");
        assert!(t.feed(1010, b"{\"return\": {}}\n").is_empty());
        assert!(t.tick(2000).is_empty());
        assert_eq!(t.q.stats().answers, 2);
        assert_eq!(t.q.stats().discarded, 52);
    }

    #[test]
    fn two_unanswered_probes_are_a_loss_then_a_resync_recovers() {
        let mut t = T::new();
        t.sent();
        t.feed(5, b"\xff{\"return\": 7}\n");
        t.tick(1000);
        t.sent(); // a ping, never answered (the agent stopped)
        assert!(t.tick(2000).is_empty(), "the first miss is not a loss");
        assert!(t.sent().starts_with(b"\xff"), "after a miss: resynchronise");
        let ev = t.tick(3000);
        assert_eq!(ev, [QgaEvent::HeartbeatLost { consecutive_misses: 2, last_heartbeat: Some(at(5)) }]);
        assert!(t.q.is_lost());
        t.sent();
        // the agent continues: the late ping answer comes before its sentinel and is stale; the sync recovers
        assert_eq!(t.feed(3100, b"{\"return\": {}}\n\xff{\"return\": 7}\n"), [QgaEvent::Recovered]);
        assert!(!t.q.is_lost());
        assert!(t.tick(4000).is_empty());
        assert_eq!(t.sent(), b"{\"execute\":\"guest-ping\"}\n", "in sync again: pings");
    }

    #[test]
    fn hostile_lines_are_bounded_and_refused_without_panic() {
        let mut t = T::new();
        t.sent();
        t.feed(1, b"\xff{\"return\": 7}\n");
        let long = [b'x'; 5000];
        let ev = t.feed(2, &long);
        assert_eq!(ev, [QgaEvent::ProtocolError(QgaError::LineTooLong)]);
        t.feed(3, b"\n");
        assert_eq!(t.feed(4, b"[1,2]\n"), [QgaEvent::ProtocolError(QgaError::Malformed)]);
        assert_eq!(t.feed(5, b"{\"return\": 99999999999999999999999}\n"), []);
        assert_eq!(classify(b"{\"return\": 12 }"), Ok(Reply::SyncReturn(12)));
        assert_eq!(classify(b"{\"return\": {}}"), Ok(Reply::Return));
        assert_eq!(classify(b"{ \"error\" : {\"class\":\"x\"}}"), Ok(Reply::Error));
        assert_eq!(classify(b"{\"return\": 1"), Err(QgaError::Malformed));
        assert_eq!(classify(b""), Err(QgaError::Malformed));
    }
}
