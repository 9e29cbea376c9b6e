//! A hashed timing wheel: one deadline per key, O(1) to set, move or clear, O(1) per expiry, whatever the number
//! of deadlines (10^5 guests cost what 10 do per tick), and no allocation once every key has been seen.
//!
//! Time is cut into ticks of [`TICK_MS`]; slot = tick mod [`SLOTS`]. Each key (a slab index) owns one node in a
//! table indexed by the key; a node with a deadline sits in its slot's doubly linked list, so moving or clearing a
//! deadline unlinks it at once (no stale entries, no search, no per-slot vectors that grow). Deadlines more than one
//! revolution away stay in their slot and are looked at once per revolution. A bitmap of non-empty slots finds the
//! next wake-up without walking empty slots. It must never fire a key early or lose one.

use vigil_core::Instant;

/// Tick length in milliseconds: the wheel's resolution (expiries are reported at most this late).
pub const TICK_MS: u64 = 4;
/// Number of slots (a power of two); one revolution is `SLOTS * TICK_MS` = 32.8 s.
pub const SLOTS: usize = 8192;
const WORDS: usize = SLOTS / 64;
const NIL: u32 = u32::MAX;
const NONE: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    deadline: u64,
    slot: u32,
    prev: u32,
    next: u32,
}

const EMPTY: Node = Node { deadline: NONE, slot: 0, prev: NIL, next: NIL };

/// Deadlines by key (a slab index).
pub struct TimerWheel {
    heads: Vec<u32>,
    /// Per slot, a lower bound of its entries' deadlines: exact after a link or a sweep of the slot, possibly
    /// early after an unlink (a wake-up that finds nothing due sweeps the slot and makes it exact again).
    slot_min: Vec<u64>,
    nonempty: [u64; WORDS],
    nodes: Vec<Node>,
    /// All ticks before this one have been swept.
    swept: u64,
    len: usize,
    /// Keys expired by one `expire` call (kept for its capacity).
    batch: Vec<u32>,
}

impl TimerWheel {
    /// An empty wheel whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        TimerWheel {
            heads: vec![NIL; SLOTS],
            slot_min: vec![NONE; SLOTS],
            nonempty: [0; WORDS],
            nodes: Vec::new(),
            swept: now.as_millis() / TICK_MS,
            len: 0,
            batch: Vec::new(),
        }
    }

    /// Keys with a deadline in force.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no deadline is in force.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The deadline in force for `key`.
    pub fn get(&self, key: usize) -> Option<Instant> {
        self.nodes.get(key).map(|n| n.deadline).filter(|&d| d != NONE).map(Instant::from_millis)
    }

    /// Sets (or moves, or with `None` clears) the deadline of `key`.
    pub fn set(&mut self, key: usize, deadline: Option<Instant>) {
        if self.nodes.len() <= key {
            self.nodes.resize(key + 1, EMPTY);
        }
        let new = deadline.map_or(NONE, |d| d.as_millis());
        if self.nodes[key].deadline == new {
            return;
        }
        if self.nodes[key].deadline != NONE {
            self.unlink(key);
            self.len -= 1;
        }
        if new != NONE {
            // A deadline already past goes into the next slot to sweep.
            let tick = (new / TICK_MS).max(self.swept);
            self.link(key, (tick as usize) & (SLOTS - 1), new);
            self.len += 1;
        }
    }

    fn link(&mut self, key: usize, slot: usize, deadline: u64) {
        let head = self.heads[slot];
        self.slot_min[slot] = if head == NIL { deadline } else { self.slot_min[slot].min(deadline) };
        self.nodes[key] = Node { deadline, slot: slot as u32, prev: NIL, next: head };
        if head != NIL {
            self.nodes[head as usize].prev = key as u32;
        }
        self.heads[slot] = key as u32;
        self.nonempty[slot / 64] |= 1 << (slot % 64);
    }

    fn unlink(&mut self, key: usize) {
        let Node { slot, prev, next, .. } = self.nodes[key];
        let slot = slot as usize;
        if prev == NIL {
            self.heads[slot] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        if self.heads[slot] == NIL {
            self.nonempty[slot / 64] &= !(1 << (slot % 64));
            self.slot_min[slot] = NONE;
        }
        self.nodes[key] = EMPTY;
    }

    /// The earliest moment worth waking up for: never after the earliest deadline; possibly earlier (the start of
    /// a slot whose entries belong to a later revolution), never in the past for the current slot.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let start = (self.swept as usize) & (SLOTS - 1);
        // The current slot is swept repeatedly: use its exact earliest deadline.
        let mut best = (self.heads[start] != NIL).then_some(self.slot_min[start]);
        // Then the first non-empty slot after it (wrapping), at the start of its tick.
        for i in 0..=WORDS {
            let word_idx = (start / 64 + i) % WORDS;
            let mut word = self.nonempty[word_idx];
            if i == 0 {
                word &= (!0u64 << (start % 64)) << 1; // slots after `start` in its word
            }
            if i == WORDS {
                word &= !(!0u64 << (start % 64));
            }
            if word != 0 {
                let slot = word_idx * 64 + word.trailing_zeros() as usize;
                let ahead = (slot + SLOTS - start) & (SLOTS - 1);
                let tick = self.swept + ahead as u64;
                // Its exact earliest deadline when that falls in this revolution (so a loop does not wake at the
                // tick's start and then again at the deadline); else the tick's start (entries of a later one).
                let mut at = self.slot_min[slot];
                if at >= (tick + 1) * TICK_MS {
                    at = tick * TICK_MS;
                }
                best = Some(best.map_or(at, |b| b.min(at)));
                break;
            }
        }
        // Only far entries in the current slot: come back when it comes round again.
        let at = best.unwrap_or((self.swept + SLOTS as u64) * TICK_MS);
        Some(Instant::from_millis(at))
    }

    /// Removes every key whose deadline is `<= now` and calls `fire(key)` for each (the key's deadline is cleared
    /// before the call, so `fire` may set a new one).
    pub fn expire(&mut self, now: Instant, mut fire: impl FnMut(&mut Self, usize)) {
        let now_ms = now.as_millis();
        let last_tick = now_ms / TICK_MS;
        let mut batch = std::mem::take(&mut self.batch);
        while self.swept <= last_tick {
            let slot = (self.swept as usize) & (SLOTS - 1);
            let mut k = self.heads[slot];
            let mut left = NONE;
            while k != NIL {
                let n = self.nodes[k as usize];
                if n.deadline <= now_ms {
                    self.unlink(k as usize);
                    self.len -= 1;
                    batch.push(k);
                } else {
                    left = left.min(n.deadline);
                }
                k = n.next;
            }
            self.slot_min[slot] = left;
            if self.swept == last_tick {
                break; // entries later in this tick stay; sweep this slot again next time
            }
            self.swept += 1;
        }
        for key in batch.drain(..) {
            fire(self, key as usize);
        }
        self.batch = batch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn fired(w: &mut TimerWheel, now: u64) -> Vec<usize> {
        let mut out = Vec::new();
        w.expire(at(now), |_, k| out.push(k));
        out.sort_unstable();
        out
    }

    #[test]
    fn fires_on_time_never_early() {
        let mut w = TimerWheel::new(at(0));
        w.set(1, Some(at(100)));
        w.set(2, Some(at(101)));
        w.set(3, Some(at(100_000))); // three revolutions away
        assert_eq!(w.len(), 3);
        assert_eq!(fired(&mut w, 99), Vec::<usize>::new());
        assert_eq!(fired(&mut w, 100), [1]);
        assert_eq!(fired(&mut w, 101), [2]);
        assert!(w.next_wakeup().unwrap() <= at(100_000));
        assert_eq!(fired(&mut w, 99_999), Vec::<usize>::new());
        assert_eq!(fired(&mut w, 100_000), [3]);
        assert!(w.is_empty());
        assert_eq!(w.next_wakeup(), None);
    }

    #[test]
    fn moving_or_clearing_a_deadline_cancels_the_old_one() {
        let mut w = TimerWheel::new(at(0));
        w.set(7, Some(at(50)));
        w.set(7, Some(at(500)));
        assert_eq!(fired(&mut w, 60), Vec::<usize>::new());
        assert_eq!(w.get(7), Some(at(500)));
        w.set(7, None);
        assert_eq!(fired(&mut w, 1000), Vec::<usize>::new());
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_at_the_next_sweep_and_fire_may_rearm() {
        let mut w = TimerWheel::new(at(1000));
        w.set(1, Some(at(10)));
        let mut count = 0;
        w.expire(at(1000), |w, k| {
            count += 1;
            w.set(k, Some(at(1200)));
        });
        assert_eq!(count, 1);
        assert_eq!(fired(&mut w, 1199), Vec::<usize>::new());
        assert_eq!(fired(&mut w, 1200), [1]);
    }

    #[test]
    fn next_wakeup_is_never_after_the_earliest_deadline() {
        let mut w = TimerWheel::new(at(0));
        let mut x = 12345u64;
        for key in 0..2000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            w.set(key, Some(at((x >> 40) % 200_000)));
        }
        let mut now = 0;
        while let Some(wake) = w.next_wakeup() {
            let earliest = (0..2000).filter_map(|k| w.get(k)).min().unwrap();
            assert!(wake <= earliest, "wake {wake:?} after {earliest:?}");
            now = now.max(wake.as_millis());
            w.expire(at(now), |w2, k| assert!(w2.get(k).is_none()));
            now += 1;
        }
    }

    #[test]
    fn next_wakeup_stays_right_while_deadlines_move_and_clear() {
        let mut w = TimerWheel::new(at(0));
        let mut x = 999u64;
        let mut rnd = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 33
        };
        for key in 0..500 {
            w.set(key, Some(at(rnd() % 50_000)));
        }
        let (mut now, mut wakes) = (0, 0);
        while let Some(wake) = w.next_wakeup() {
            wakes += 1;
            let earliest = (0..500).filter_map(|k| w.get(k)).min().unwrap();
            assert!(wake <= earliest, "wake {wake:?} after {earliest:?}");
            now = now.max(wake.as_millis());
            w.expire(at(now), |_, _| {});
            // move or clear a few deadlines (the slots they leave keep a stale, early minimum)
            for _ in 0..3 {
                let key = (rnd() % 500) as usize;
                let to = (rnd() % 4 != 0).then(|| at(now + 1 + rnd() % 20_000));
                w.set(key, to);
            }
            now += 1;
            if now > 200_000 {
                break;
            }
        }
        // a stale minimum costs at most one extra wake-up per move, never a busy loop
        assert!(wakes < 500 + 4 * 3 * 500 + 20_000, "{wakes}");
    }
}
