//! A hashed timing wheel: one deadline per key, O(1) to set, O(1) amortised per expiry, whatever the number of
//! deadlines (10^5 guests cost what 10 do per tick).
//!
//! Time is cut into ticks of [`TICK_MS`]; slot = tick mod [`SLOTS`]. Setting a key's deadline records it in the
//! key's own cell and pushes `(key, deadline)` into the slot; the stale entry a re-set leaves behind is recognised
//! when its slot is swept (the key's cell no longer holds that deadline) and dropped — lazy cancellation, no
//! search. Deadlines further than one revolution away stay in their slot and are looked at once per revolution.
//! A bitmap of non-empty slots finds the next wake-up without walking empty slots. Slot vectors keep their
//! capacity, so steady state allocates nothing. It must never fire a key early or lose one.

use vigil_core::Instant;

/// Tick length in milliseconds: the wheel's resolution (expiries are reported at most this late).
pub const TICK_MS: u64 = 4;
/// Number of slots (a power of two); one revolution is `SLOTS * TICK_MS` = 32.8 s.
pub const SLOTS: usize = 8192;
const WORDS: usize = SLOTS / 64;

/// Deadlines by key (a slab index).
pub struct TimerWheel {
    slots: Vec<Vec<(u32, u64)>>,
    nonempty: [u64; WORDS],
    /// The deadline in force per key (`u64::MAX` = none), indexed by key.
    current: Vec<u64>,
    /// All ticks before this one have been swept.
    swept: u64,
    len: usize,
}

impl TimerWheel {
    /// An empty wheel whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            nonempty: [0; WORDS],
            current: Vec::new(),
            swept: now.as_millis() / TICK_MS,
            len: 0,
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
        self.current.get(key).copied().filter(|&d| d != u64::MAX).map(Instant::from_millis)
    }

    /// Sets (or moves, or with `None` clears) the deadline of `key`.
    pub fn set(&mut self, key: usize, deadline: Option<Instant>) {
        if self.current.len() <= key {
            self.current.resize(key + 1, u64::MAX);
        }
        let new = deadline.map_or(u64::MAX, |d| d.as_millis());
        let old = std::mem::replace(&mut self.current[key], new);
        if old == new {
            return;
        }
        match (old == u64::MAX, new == u64::MAX) {
            (true, false) => self.len += 1,
            (false, true) => self.len -= 1,
            _ => {}
        }
        if new != u64::MAX {
            // A deadline already past goes into the next slot to sweep.
            let tick = (new / TICK_MS).max(self.swept);
            let slot = (tick as usize) & (SLOTS - 1);
            self.slots[slot].push((key as u32, new));
            self.nonempty[slot / 64] |= 1 << (slot % 64);
        }
    }

    /// The earliest moment worth waking up for: never after the earliest deadline; possibly earlier (the start of
    /// a slot whose entries belong to a later revolution), never in the past for the current slot.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let start = (self.swept as usize) & (SLOTS - 1);
        // The current slot is swept repeatedly: use its exact earliest live deadline.
        let mut best =
            self.slots[start].iter().filter(|(k, d)| self.current.get(*k as usize) == Some(d)).map(|&(_, d)| d).min();
        // Then the first non-empty slot after it (wrapping), at the start of its tick.
        for i in 0..=WORDS {
            let word_idx = (start / 64 + i) % WORDS;
            let mut word = self.nonempty[word_idx];
            if i == 0 {
                // slots after `start` in its word
                word &= (!0u64 << (start % 64)) << 1;
                if start % 64 == 63 {
                    word = 0;
                }
            }
            if i == WORDS {
                word &= !(!0u64 << (start % 64));
            }
            if word != 0 {
                let slot = word_idx * 64 + word.trailing_zeros() as usize;
                let ahead = (slot + SLOTS - start) & (SLOTS - 1);
                let at = (self.swept + ahead as u64) * TICK_MS;
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
        let mut batch: Vec<(u32, u64)> = Vec::new();
        while self.swept <= last_tick {
            let slot = (self.swept as usize) & (SLOTS - 1);
            if self.nonempty[slot / 64] & (1 << (slot % 64)) != 0 {
                let entries = &mut self.slots[slot];
                // Keep the entries not yet due (a later revolution, or later within the current tick).
                let mut i = 0;
                while i < entries.len() {
                    let (key, deadline) = entries[i];
                    let live = self.current.get(key as usize) == Some(&deadline);
                    if !live {
                        entries.swap_remove(i);
                    } else if deadline <= now_ms {
                        batch.push(entries.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                if entries.is_empty() {
                    self.nonempty[slot / 64] &= !(1 << (slot % 64));
                }
            }
            if self.swept == last_tick {
                break; // entries later in this tick stay; sweep this slot again next time
            }
            self.swept += 1;
        }
        for (key, deadline) in batch.drain(..) {
            if self.current[key as usize] == deadline {
                self.current[key as usize] = u64::MAX;
                self.len -= 1;
                fire(self, key as usize);
            }
        }
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
            w.set(key, Some(at(x >> 40)));
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
}
