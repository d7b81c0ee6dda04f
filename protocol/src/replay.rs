//! Replay protection for received envelopes.
//!
//! An envelope is accepted only if its `sent_at` lies within ±`skew` of the local
//! clock, and its `(sender, seq)` has not been seen. A sender numbers its envelopes
//! one after another ([`crate::SeqGenerator`]), so per sender the guard keeps a
//! sliding bitmap of the last `window` sequence numbers below the highest one seen,
//! as IPsec and WireGuard do: one bit per number, whoever the envelopes went to. A
//! number below the window is refused (it cannot be told apart from a replay): an
//! envelope is lost only if its sender sent `window` more before it arrived.
//! Anything older than the freshness window is refused as stale, so a replay after
//! gossipsub's 60 s duplicate cache is caught as well. Memory is bounded: senders
//! silent for longer than twice the skew are forgotten (their old envelopes are
//! stale anyway), and at most `max_senders` are tracked.

use std::collections::BTreeMap;

use crate::{AgentId, ProtocolError, Result};

/// Default allowed clock skew: 30 s.
pub const DEFAULT_SKEW_MS: u64 = 30_000;

/// Default window: a sender's last 2,048 sequence numbers, 256 bytes per sender.
pub const DEFAULT_WINDOW: usize = 2048;

/// One sender's window: bit `seq % len` stands for `seq`, for seqs in
/// `(top - len, top]`.
#[derive(Debug)]
struct SenderWindow {
    top: u64,
    bits: Box<[u64]>,
    newest_sent_at_ms: u64,
}

impl SenderWindow {
    fn new(words: usize, seq: u64) -> Self {
        let mut w = SenderWindow {
            top: seq,
            bits: vec![0; words].into_boxed_slice(),
            newest_sent_at_ms: 0,
        };
        w.set(seq);
        w
    }

    fn len(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let i = seq % self.len();
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64) {
        let (w, b) = self.slot(seq);
        self.bits[w] |= b;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (w, b) = self.slot(seq);
        self.bits[w] & b != 0
    }

    /// Moves the top to `seq` (> top), forgetting the numbers that leave the window.
    fn advance(&mut self, seq: u64) {
        let gap = seq - self.top;
        if gap >= self.len() {
            self.bits.fill(0);
        } else {
            let mut s = self.top + 1;
            while s <= seq {
                let (w, b) = self.slot(s);
                if b == 1 && seq - s >= 63 {
                    // A whole word leaves at once.
                    self.bits[w] = 0;
                    s += 64;
                } else {
                    self.bits[w] &= !b;
                    s += 1;
                }
            }
        }
        self.top = seq;
    }

    /// Records `seq`; false if it was seen or lies below the window.
    fn record(&mut self, seq: u64) -> bool {
        if seq > self.top {
            self.advance(seq);
        } else if self.top - seq >= self.len() || self.is_set(seq) {
            return false;
        }
        self.set(seq);
        true
    }
}

/// Freshness and duplicate checks for envelopes.
#[derive(Debug)]
pub struct ReplayGuard {
    skew_ms: u64,
    words: usize,
    max_senders: usize,
    senders: BTreeMap<AgentId, SenderWindow>,
    last_prune_ms: u64,
}

impl Default for ReplayGuard {
    /// ±30 s skew, a window of 2,048 sequence numbers per sender, and 20,000
    /// senders: at most about 5 MiB in the worst case, a few KiB in practice.
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_SKEW_MS, DEFAULT_WINDOW, 20_000)
    }
}

impl ReplayGuard {
    /// A guard allowing `skew_ms` of clock difference, remembering a window of
    /// `window` sequence numbers per sender (rounded up to a multiple of 64) and at
    /// most `max_senders` senders.
    pub fn new(skew_ms: u64, window: usize, max_senders: usize) -> Self {
        ReplayGuard {
            skew_ms,
            words: window.div_ceil(64).max(1),
            max_senders: max_senders.max(1),
            senders: BTreeMap::new(),
            last_prune_ms: 0,
        }
    }

    /// The allowed skew.
    pub fn skew_ms(&self) -> u64 {
        self.skew_ms
    }

    /// Checks and records one envelope received at `now_ms`.
    pub fn check(&mut self, sender: AgentId, seq: u64, sent_at_ms: u64, now_ms: u64) -> Result<()> {
        let age = sent_at_ms as i128 - now_ms as i128;
        if age.unsigned_abs() > u128::from(self.skew_ms) {
            return Err(ProtocolError::Stale {
                age_ms: age.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
                window_ms: self.skew_ms,
            });
        }
        self.prune(now_ms);
        let words = self.words;
        let w = match self.senders.entry(sender) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(SenderWindow::new(words, seq))
            }
            std::collections::btree_map::Entry::Occupied(e) => {
                let w = e.into_mut();
                if !w.record(seq) {
                    return Err(ProtocolError::Replay {
                        sender: sender.to_string(),
                        seq,
                    });
                }
                w
            }
        };
        w.newest_sent_at_ms = w.newest_sent_at_ms.max(sent_at_ms);
        Ok(())
    }

    /// Number of senders tracked.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    fn prune(&mut self, now_ms: u64) {
        let horizon = 2 * self.skew_ms;
        if now_ms.saturating_sub(self.last_prune_ms) >= self.skew_ms
            || self.senders.len() >= self.max_senders
        {
            self.senders
                .retain(|_, w| now_ms.saturating_sub(w.newest_sent_at_ms) <= horizon);
            self.last_prune_ms = now_ms;
        }
        while self.senders.len() >= self.max_senders {
            let oldest = self
                .senders
                .iter()
                .min_by_key(|(_, w)| w.newest_sent_at_ms)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.senders.remove(&k),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SenderWindow;

    /// The bitmap against a plain set of the numbers in the window.
    #[test]
    fn the_window_agrees_with_a_set_of_recent_numbers() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut w = SenderWindow::new(2, 1_000);
        let mut seen = std::collections::BTreeSet::from([1_000u64]);
        let mut top = 1_000u64;
        for _ in 0..20_000 {
            let r = next();
            let seq = match r % 4 {
                0 => top + 1 + r % 3,
                1 => top + r % 300,
                _ => top.saturating_sub(r % 160),
            };
            let expect = if seq > top {
                true
            } else {
                top - seq < 128 && !seen.contains(&seq)
            };
            assert_eq!(w.record(seq), expect, "seq {seq}, top {top}");
            if expect {
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }
}
