//! [`SentNonces`]: which challenges this session really sent, and which of them were answered, so that a guest
//! catching up after a freeze or a pause (it answers every challenge that queued up, oldest first) proves it is
//! alive without a protocol error, however long it was away, while an answer to a challenge never sent, or a
//! second answer to one, stays an error.
//!
//! Nonces are `base + i` (31 bits) for the `i`-th challenge of the session, `base` drawn at random at registration,
//! so an echoed nonce names its challenge without a table of past nonces. The last [`ANSWER_WINDOW`] challenges
//! have an answered bit each; below the window only answers in order are taken (everything below the `floor`
//! counts as answered), which is how a queue drains. 32 bytes per guest, whatever the pause.

use crate::msg::MAX_NONCE;

/// How many of the latest challenges keep an answered bit each.
pub const ANSWER_WINDOW: u32 = 128;

/// What an echoed nonce is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Echo {
    /// The first answer to a challenge sent in this session (`behind`: how many challenges were sent after it).
    Fresh {
        /// 0 for the latest challenge.
        behind: u32,
    },
    /// Never sent, or answered already.
    Refused,
}

/// 128 bits in two words: a `u128` would give every Monitor (and a host's every guest entry) 16-byte alignment,
/// and the padding that comes with it.
#[derive(Clone, Copy, Debug, Default)]
struct Bits128([u64; 2]);

impl Bits128 {
    /// Bit `j` (taken modulo 128).
    fn get(&self, j: u32) -> bool {
        self.0[(j / 64 % 2) as usize] >> (j % 64) & 1 == 1
    }

    /// Sets bit `j` (taken modulo 128).
    fn set(&mut self, j: u32) {
        self.0[(j / 64 % 2) as usize] |= 1 << (j % 64);
    }

    /// Every bit moves up by one; bit 0 becomes clear and bit 127 leaves.
    fn shift_up(&mut self) {
        self.0[1] = self.0[1] << 1 | self.0[0] >> 63;
        self.0[0] <<= 1;
    }
}

/// The challenges of one session.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SentNonces {
    /// Bit `j`: the challenge `sent - 1 - j` was answered.
    answered: Bits128,
    base: u32,
    /// Challenges sent in this session.
    sent: u32,
    /// Challenges below this index are closed (answered, or passed by an answer to a later one out of the window).
    floor: u32,
}

impl SentNonces {
    /// A new session whose nonces start at `base`.
    pub(super) fn start(&mut self, base: u32) {
        *self = SentNonces { base: base & MAX_NONCE, ..SentNonces::default() };
    }

    /// The nonce the next challenge sent will carry.
    pub(super) fn next_nonce(&self) -> u32 {
        self.base.wrapping_add(self.sent) & MAX_NONCE
    }

    /// The next challenge left: its bit enters the window, and the oldest bit leaves it (an answered one moves the
    /// floor above it).
    pub(super) fn sent(&mut self) {
        if self.sent >= ANSWER_WINDOW && self.answered.get(ANSWER_WINDOW - 1) {
            self.floor = self.floor.max(self.sent - ANSWER_WINDOW + 1);
        }
        self.answered.shift_up();
        // a session never sends 2^31 challenges (68 years at 1 s); if one did, nonces would repeat: stop counting
        self.sent = (self.sent + 1).min(MAX_NONCE);
    }

    /// An answer echoing `nonce`.
    pub(super) fn answer(&mut self, nonce: u32) -> Echo {
        let index = nonce.wrapping_sub(self.base) & MAX_NONCE;
        if nonce > MAX_NONCE || index >= self.sent || index < self.floor {
            return Echo::Refused;
        }
        let behind = self.sent - 1 - index;
        if behind < ANSWER_WINDOW {
            if self.answered.get(behind) {
                return Echo::Refused;
            }
            self.answered.set(behind);
        } else {
            // out of the window: only in order
            self.floor = index + 1;
        }
        Echo::Fresh { behind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_words_behave_as_one_u128() {
        let (mut bits, mut reference) = (Bits128::default(), 0u128);
        let mut x = 0x9e37_79b9u32;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let j = x % 128;
            match x / 128 % 3 {
                0 => {
                    bits.set(j);
                    reference |= 1 << j;
                }
                1 => {
                    bits.shift_up();
                    reference <<= 1;
                }
                _ => {}
            }
            assert_eq!(bits.get(j), reference >> j & 1 == 1);
            assert_eq!((u128::from(bits.0[1]) << 64) | u128::from(bits.0[0]), reference);
        }
    }

    #[test]
    fn each_sent_nonce_is_taken_once_however_old_and_never_one_not_sent() {
        let mut s = SentNonces::default();
        s.start(MAX_NONCE - 2); // wraps within the first challenges
        let nonces: [u32; 300] = core::array::from_fn(|_| {
            let n = s.next_nonce();
            s.sent();
            n
        });
        assert_eq!(nonces[3], 0, "31-bit wrap");
        assert_eq!(s.answer(s.next_nonce()), Echo::Refused, "not sent yet");
        assert_eq!(s.answer(nonces[299]), Echo::Fresh { behind: 0 });
        assert_eq!(s.answer(nonces[299]), Echo::Refused, "twice");
        // a guest back from a long pause answers its queue in order
        for (i, n) in nonces.iter().enumerate().take(299) {
            assert_eq!(s.answer(*n), Echo::Fresh { behind: 299 - i as u32 }, "challenge {i}");
        }
        for n in &nonces {
            assert_eq!(s.answer(*n), Echo::Refused, "every one answered already");
        }
        assert_eq!(s.answer(MAX_NONCE + 5), Echo::Refused, "outside the nonce range");
    }

    #[test]
    fn an_answered_challenge_that_leaves_the_window_cannot_be_replayed() {
        let mut s = SentNonces::default();
        s.start(7);
        let first = s.next_nonce();
        s.sent();
        assert_eq!(s.answer(first), Echo::Fresh { behind: 0 });
        for _ in 0..ANSWER_WINDOW + 5 {
            s.sent();
        }
        assert_eq!(s.answer(first), Echo::Refused);
    }
}
