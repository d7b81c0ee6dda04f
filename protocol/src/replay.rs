//! Replay protection for received envelopes.
//!
//! An envelope is accepted only if its `sent_at` lies within ±`skew` of the local
//! clock, and its `(sender, seq)` has not been seen. Per sender the guard keeps the
//! last `window` sequence numbers; once that window is full, a sequence number below
//! all of them is refused too (it cannot be told apart from a replay). Anything older
//! than the freshness window is refused as stale, so a replay after gossipsub's 60 s
//! duplicate cache is caught as well. Memory is bounded: senders silent for longer
//! than twice the skew are forgotten (their old envelopes are stale anyway), and at
//! most `max_senders` are tracked.

use std::collections::{BTreeMap, BTreeSet};

use crate::{AgentId, ProtocolError, Result};

/// Default allowed clock skew: 30 s.
pub const DEFAULT_SKEW_MS: u64 = 30_000;

#[derive(Debug, Default)]
struct SenderWindow {
    seen: BTreeSet<u64>,
    newest_sent_at_ms: u64,
}

/// Freshness and duplicate checks for envelopes.
#[derive(Debug)]
pub struct ReplayGuard {
    skew_ms: u64,
    window: usize,
    max_senders: usize,
    senders: BTreeMap<AgentId, SenderWindow>,
    last_prune_ms: u64,
}

impl Default for ReplayGuard {
    /// ±30 s skew, 512 sequence numbers per sender (a sender would have to get more
    /// than 512 newer envelopes to us ahead of an older one for it to be refused), and
    /// 20,000 senders: at most about 10 M remembered numbers in the worst case, a few
    /// hundred KiB in practice.
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_SKEW_MS, 512, 20_000)
    }
}

impl ReplayGuard {
    /// A guard allowing `skew_ms` of clock difference, remembering `window` sequence
    /// numbers per sender and at most `max_senders` senders.
    pub fn new(skew_ms: u64, window: usize, max_senders: usize) -> Self {
        ReplayGuard {
            skew_ms,
            window: window.max(1),
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
        let window = self.window;
        let w = self.senders.entry(sender).or_default();
        let replay = || ProtocolError::Replay {
            sender: sender.to_string(),
            seq,
        };
        if w.seen.contains(&seq) {
            return Err(replay());
        }
        if w.seen.len() >= window && w.seen.first().is_some_and(|&lowest| seq < lowest) {
            return Err(replay());
        }
        w.seen.insert(seq);
        if w.seen.len() > window {
            w.seen.pop_first();
        }
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
