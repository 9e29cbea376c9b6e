//! The nonces of the latest challenges sent, so that a guest catching up after a freeze can prove it is alive.

/// How many of the latest challenges an answer may echo (the reference host accepts the last 6): after a freeze a
/// guest answers the challenges that queued up, each of which proves it is alive again.
pub const RECENT_NONCES: usize = 6;

/// The nonces of the latest challenges sent, and which were answered.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RecentNonces {
    nonces: [u32; RECENT_NONCES],
    answered: [bool; RECENT_NONCES],
    len: usize,
    next: usize,
}

impl RecentNonces {
    pub(super) fn push(&mut self, nonce: u32) {
        self.nonces[self.next] = nonce;
        self.answered[self.next] = false;
        self.next = (self.next + 1) % RECENT_NONCES;
        self.len = (self.len + 1).min(RECENT_NONCES);
    }

    /// Marks `nonce` answered; `false` if it was never sent (of the latest) or already answered.
    pub(super) fn answer(&mut self, nonce: u32) -> bool {
        let slot = (0..self.len)
            .map(|i| (self.next + RECENT_NONCES - 1 - i) % RECENT_NONCES)
            .find(|&i| self.nonces[i] == nonce);
        match slot {
            Some(i) if !self.answered[i] => {
                self.answered[i] = true;
                true
            }
            _ => false,
        }
    }

    pub(super) fn clear(&mut self) {
        *self = RecentNonces::default();
    }
}
