//! Replay protection for received envelopes.
//!
//! An envelope is accepted only if its `sent_at` lies within ±`skew` of the local
//! clock, and its `(sender, seq)` has not been seen. Anything older than the freshness
//! window is refused as stale, so a replay after gossipsub's 60 s duplicate cache is
//! caught as well.
//!
//! Senders number their envelopes densely ([`crate::SeqGenerator`]), so per sender the
//! guard keeps a sliding anti-replay window in the style of IPsec and WireGuard: the
//! highest sequence number seen and a bitmap of the `window` numbers ending at it (bit
//! `i` set: `highest - i` was seen). A number above `highest` slides the window forward
//! (bits that fall off its end are forgotten); one inside the window is accepted once;
//! one at or below `highest - window` is refused, since it cannot be told apart from a
//! replay. So an envelope overtaken on its way by one of its sender's numbered at least
//! `window` above it is refused: the sender would have to send `window` more envelopes
//! (to anyone, not only to us) for that to happen.
//!
//! Memory is fixed per sender (`window` bits rounded up to whole 64-bit words, plus a
//! few words of bookkeeping; `window` is capped at [`MAX_WINDOW`]) and bounded overall:
//! senders silent for longer than twice the skew are forgotten (their old envelopes
//! are stale anyway), and at most `max_senders` are tracked. When the table is full
//! and a new sender turns up, the silent ones are dropped and, if that is not enough,
//! the tenth of the table with the oldest `sent_at`, in one pass; so a stream of fresh
//! keys costs O(log n) amortised per envelope rather than a scan each. Evicting a
//! sender that is still fresh forgets its window, and its envelopes from the last
//! `skew` could then be accepted once more: `max_senders` should be well above the
//! number of senders active within twice the skew.

use std::collections::BTreeMap;

use crate::{AgentId, ProtocolError, Result};

/// Default allowed clock skew: 30 s.
pub const DEFAULT_SKEW_MS: u64 = 30_000;

/// The largest per-sender window, in sequence numbers (512 bytes of bitmap); a larger
/// `window` given to [`ReplayGuard::new`] is reduced to this.
pub const MAX_WINDOW: usize = 4096;

const WORD_BITS: u64 = u64::BITS as u64;

#[derive(Debug)]
struct SenderWindow {
    /// The highest sequence number seen.
    highest: u64,
    /// Bit `i` (bit `i % 64` of word `i / 64`) set: `highest - i` was seen.
    seen: Box<[u64]>,
    newest_sent_at_ms: u64,
}

impl SenderWindow {
    fn new(seq: u64, sent_at_ms: u64, words: usize) -> Self {
        let mut seen = vec![0u64; words].into_boxed_slice();
        seen[0] = 1;
        SenderWindow {
            highest: seq,
            seen,
            newest_sent_at_ms: sent_at_ms,
        }
    }

    /// Records `seq` unless it was seen or lies at or below `highest - window`;
    /// returns whether it was recorded.
    fn record(&mut self, seq: u64, window: u64) -> bool {
        if seq > self.highest {
            self.slide(seq - self.highest);
            self.highest = seq;
        }
        let back = self.highest - seq;
        if back >= window {
            return false;
        }
        // `back < window <= 64 * words`, so the index is in range.
        let word = (back / WORD_BITS) as usize;
        let bit = 1u64 << (back % WORD_BITS);
        if self.seen[word] & bit != 0 {
            return false;
        }
        self.seen[word] |= bit;
        true
    }

    /// Moves every bit `by` places towards the old end (bit `i` becomes bit `i + by`),
    /// dropping those that fall off and clearing the ones that come in.
    fn slide(&mut self, by: u64) {
        let words = usize::try_from(by / WORD_BITS).unwrap_or(usize::MAX);
        let bits = (by % WORD_BITS) as u32;
        // From the old end down, so every word is read before it is overwritten.
        for k in (0..self.seen.len()).rev() {
            self.seen[k] = if k >= words {
                let from = k - words;
                let mut w = self.seen[from] << bits;
                if bits > 0 && from > 0 {
                    w |= self.seen[from - 1] >> (u64::BITS - bits);
                }
                w
            } else {
                0
            };
        }
    }
}

/// Freshness and duplicate checks for envelopes.
#[derive(Debug)]
pub struct ReplayGuard {
    skew_ms: u64,
    /// Sequence numbers per sender's window, in `1..=MAX_WINDOW`.
    window: u64,
    /// 64-bit words per sender's bitmap: `window` rounded up.
    words: usize,
    max_senders: usize,
    senders: BTreeMap<AgentId, SenderWindow>,
    last_prune_ms: u64,
}

impl Default for ReplayGuard {
    /// ±30 s skew, a window of 512 sequence numbers per sender (an envelope is refused
    /// only if one of its sender's numbered 512 or more above it reached us first), and
    /// 20,000 senders. A sender costs a fixed ~200 bytes (a 64-byte bitmap, its key and
    /// bookkeeping), so a full table takes about 4 MiB.
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_SKEW_MS, 512, 20_000)
    }
}

impl ReplayGuard {
    /// A guard allowing `skew_ms` of clock difference, remembering a window of `window`
    /// sequence numbers per sender (at least 1, at most [`MAX_WINDOW`]) and at most
    /// `max_senders` senders.
    pub fn new(skew_ms: u64, window: usize, max_senders: usize) -> Self {
        let window = window.clamp(1, MAX_WINDOW);
        ReplayGuard {
            skew_ms,
            window: window as u64,
            words: window.div_ceil(WORD_BITS as usize),
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
        if now_ms.saturating_sub(self.last_prune_ms) >= self.skew_ms.max(1) {
            self.forget_silent(now_ms);
        }
        if let Some(w) = self.senders.get_mut(&sender) {
            if !w.record(seq, self.window) {
                return Err(ProtocolError::Replay {
                    sender: sender.to_string(),
                    seq,
                });
            }
            w.newest_sent_at_ms = w.newest_sent_at_ms.max(sent_at_ms);
            return Ok(());
        }
        if self.senders.len() >= self.max_senders {
            self.make_room(now_ms);
        }
        self.senders
            .insert(sender, SenderWindow::new(seq, sent_at_ms, self.words));
        Ok(())
    }

    /// Number of senders tracked.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Forgets the senders silent for longer than twice the skew.
    fn forget_silent(&mut self, now_ms: u64) {
        let horizon = self.skew_ms.saturating_mul(2);
        self.senders
            .retain(|_, w| now_ms.saturating_sub(w.newest_sent_at_ms) <= horizon);
        self.last_prune_ms = now_ms;
    }

    /// Called with the table full: forgets the silent senders, then, if fewer than a
    /// tenth of the table went, the oldest (by newest `sent_at`) down to nine tenths.
    /// One O(n log n) pass per n/10 new senders.
    fn make_room(&mut self, now_ms: u64) {
        self.forget_silent(now_ms);
        let keep = self.max_senders - self.max_senders.div_ceil(10);
        let excess = self.senders.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(u64, AgentId)> = self
            .senders
            .iter()
            .map(|(id, w)| (w.newest_sent_at_ms, *id))
            .collect();
        by_age.sort_unstable();
        by_age.truncate(excess);
        for (_, id) in by_age {
            self.senders.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn id(i: u32) -> AgentId {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        AgentId(k)
    }

    fn is_replay(r: Result<()>) -> bool {
        matches!(r, Err(ProtocolError::Replay { .. }))
    }

    /// A guard with the given window and room to spare, sender 1 already at `highest`.
    fn guard_at(window: usize, highest: u64) -> ReplayGuard {
        let mut g = ReplayGuard::new(DEFAULT_SKEW_MS, window, 100);
        g.check(id(1), highest, NOW, NOW).unwrap();
        g
    }

    #[test]
    fn a_duplicate_is_refused_and_names_the_sender_and_seq() {
        let mut g = ReplayGuard::default();
        g.check(id(1), 100, NOW, NOW).unwrap();
        match g.check(id(1), 100, NOW, NOW + 1) {
            Err(ProtocolError::Replay { sender, seq }) => {
                assert_eq!(sender, id(1).to_string());
                assert_eq!(seq, 100);
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        // The highest one, and one below it.
        g.check(id(1), 101, NOW, NOW).unwrap();
        assert!(is_replay(g.check(id(1), 101, NOW, NOW)));
        assert!(is_replay(g.check(id(1), 100, NOW, NOW)));
        // Another sender is independent.
        g.check(id(2), 100, NOW, NOW).unwrap();
        assert!(is_replay(g.check(id(2), 100, NOW, NOW)));
        assert_eq!(g.senders(), 2);
    }

    #[test]
    fn an_out_of_order_seq_inside_the_window_is_accepted_once() {
        for window in [64usize, 100, 512] {
            let mut g = guard_at(window, 1_000);
            for back in [1u64, 2, 63, 64, 65, 99] {
                if back >= window as u64 {
                    continue;
                }
                g.check(id(1), 1_000 - back, NOW, NOW).unwrap();
                let again = g.check(id(1), 1_000 - back, NOW, NOW);
                assert!(is_replay(again), "window {window}, {back} back");
            }
            // Their neighbours are still open, and the highest has not moved.
            g.check(id(1), 1_000 - 3, NOW, NOW).unwrap();
            assert!(is_replay(g.check(id(1), 1_000, NOW, NOW)));
            g.check(id(1), 1_001, NOW, NOW).unwrap();
        }
    }

    #[test]
    fn the_window_boundary_is_exact() {
        let h = 1_000_000u64;
        for window in [1usize, 2, 3, 63, 64, 65, 100, 512, MAX_WINDOW] {
            let w = window as u64;
            let mut g = guard_at(window, h);
            assert!(is_replay(g.check(id(1), h - w, NOW, NOW)), "{window}");
            assert!(is_replay(g.check(id(1), h - w - 1, NOW, NOW)), "{window}");
            assert!(is_replay(g.check(id(1), 0, NOW, NOW)), "{window}");
            if window > 1 {
                g.check(id(1), h - w + 1, NOW, NOW).unwrap();
                assert!(is_replay(g.check(id(1), h - w + 1, NOW, NOW)), "{window}");
            }
            // Slid forward by one, the last number inside has dropped out.
            let mut g = guard_at(window, h);
            g.check(id(1), h + 1, NOW, NOW).unwrap();
            assert!(is_replay(g.check(id(1), h + 1 - w, NOW, NOW)), "{window}");
            if window > 2 {
                g.check(id(1), h + 2 - w, NOW, NOW).unwrap();
            }
        }
        // Near zero the window reaches down to 0.
        let mut g = guard_at(512, 511);
        g.check(id(1), 0, NOW, NOW).unwrap();
        assert!(is_replay(g.check(id(1), 0, NOW, NOW)));
        let mut g = guard_at(512, 512);
        assert!(is_replay(g.check(id(1), 0, NOW, NOW)));
        // And at the top of the range.
        let mut g = guard_at(64, u64::MAX - 1);
        g.check(id(1), u64::MAX, NOW, NOW).unwrap();
        assert!(is_replay(g.check(id(1), u64::MAX, NOW, NOW)));
        assert!(is_replay(g.check(id(1), u64::MAX - 1, NOW, NOW)));
        g.check(id(1), u64::MAX - 63, NOW, NOW).unwrap();
        assert!(is_replay(g.check(id(1), u64::MAX - 64, NOW, NOW)));
    }

    #[test]
    fn the_window_is_at_least_one_and_at_most_the_cap() {
        // Window 0 acts as 1: only numbers above the highest pass.
        let mut g = guard_at(0, 10);
        assert!(is_replay(g.check(id(1), 9, NOW, NOW)));
        g.check(id(1), 11, NOW, NOW).unwrap();
        // An oversized window is capped.
        let h = 1_000_000u64;
        let cap = MAX_WINDOW as u64;
        let mut g = guard_at(usize::MAX, h);
        g.check(id(1), h - cap + 1, NOW, NOW).unwrap();
        assert!(is_replay(g.check(id(1), h - cap, NOW, NOW)));
    }

    #[test]
    fn the_bitmap_is_the_window_rounded_up_to_whole_words() {
        for (window, words) in [(0, 1), (1, 1), (64, 1), (65, 2), (512, 8), (usize::MAX, 64)] {
            let g = guard_at(window, 7);
            assert_eq!(g.senders[&id(1)].seen.len(), words, "window {window}");
        }
    }

    #[test]
    fn a_jump_far_ahead_clears_the_window_without_leaking_old_bits() {
        let base = 1_000u64;
        for window in [64usize, 100, 512] {
            let w = window as u64;
            let jumps = [
                1,
                2,
                63,
                64,
                65,
                127,
                128,
                129,
                w - 1,
                w,
                w + 1,
                10 * w,
                u64::MAX / 2,
            ];
            for jump in jumps {
                let mut g = guard_at(window, base);
                // Every other number below the base is taken.
                for back in (2..w).step_by(2) {
                    g.check(id(1), base - back, NOW, NOW).unwrap();
                }
                let top = base + jump;
                g.check(id(1), top, NOW, NOW).unwrap();
                let lowest_inside = top - (w - 1);
                for s in base - w - 2..=base + 2 {
                    let taken = s == base
                        || s == top
                        || (s < base && (base - s).is_multiple_of(2) && base - s < w);
                    let r = g.check(id(1), s, NOW, NOW);
                    if s < lowest_inside || taken {
                        assert!(is_replay(r), "window {window}, jump {jump}, seq {s}");
                    } else {
                        assert!(r.is_ok(), "window {window}, jump {jump}, seq {s}: {r:?}");
                    }
                }
            }
        }
    }

    /// A deterministic xorshift stream, so that failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_window_agrees_with_a_set_of_everything_seen() {
        for window in [1usize, 2, 63, 64, 65, 100, 130, 512] {
            let w = window as u64;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ w);
            let mut g = ReplayGuard::new(DEFAULT_SKEW_MS, window, 10);
            let mut highest = 5_000u64;
            let mut seen = BTreeSet::from([highest]);
            g.check(id(1), highest, NOW, NOW).unwrap();
            for step in 0..4_000 {
                let r = rng.next();
                let seq = match r % 8 {
                    0..=2 => highest + 1 + r / 8 % 3,
                    3 => highest + r / 8 % (3 * w + 2),
                    4 => highest + 1 + r / 8 % 200,
                    _ => highest.saturating_sub(r / 8 % (w + 3)),
                };
                let fresh = seq > highest || (highest - seq < w && !seen.contains(&seq));
                let got = g.check(id(1), seq, NOW, NOW);
                assert_eq!(
                    got.is_ok(),
                    fresh,
                    "window {window}, step {step}, seq {seq}"
                );
                if fresh {
                    seen.insert(seq);
                    highest = highest.max(seq);
                }
            }
        }
    }

    #[test]
    fn sent_at_exactly_the_skew_away_is_fresh_and_one_more_is_stale() {
        let skew = 1_000;
        let mut g = ReplayGuard::new(skew, 64, 10);
        assert_eq!(g.skew_ms(), skew);
        g.check(id(1), 1, NOW - skew, NOW).unwrap();
        g.check(id(1), 2, NOW + skew, NOW).unwrap();
        match g.check(id(1), 3, NOW - skew - 1, NOW) {
            Err(ProtocolError::Stale { age_ms, window_ms }) => {
                assert_eq!(age_ms, -1_001);
                assert_eq!(window_ms, skew);
            }
            other => panic!("expected stale, got {other:?}"),
        }
        match g.check(id(1), 4, NOW + skew + 1, NOW) {
            Err(ProtocolError::Stale { age_ms, .. }) => assert_eq!(age_ms, 1_001),
            other => panic!("expected stale, got {other:?}"),
        }
        // Stale envelopes are not recorded: the same numbers pass once fresh.
        g.check(id(1), 3, NOW, NOW).unwrap();
        g.check(id(1), 4, NOW, NOW).unwrap();
        // A skew of zero accepts only the present millisecond.
        let mut z = ReplayGuard::new(0, 64, 10);
        z.check(id(1), 1, NOW, NOW).unwrap();
        assert!(z.check(id(1), 2, NOW - 1, NOW).is_err());
        assert!(z.check(id(1), 2, NOW + 1, NOW).is_err());
        z.check(id(1), 2, NOW + 1, NOW + 1).unwrap();
    }

    #[test]
    fn a_sender_silent_for_over_twice_the_skew_is_forgotten() {
        // Skew 1 s: a prune is due 1 s after the last, and forgets senders silent for
        // more than 2 s.
        let t0 = NOW;
        let (a, b, c, d, e, f) = (id(1), id(2), id(3), id(4), id(5), id(6));
        let mut g = ReplayGuard::new(1_000, 64, 100);
        g.check(a, 50, t0, t0).unwrap();
        g.check(b, 1, t0 + 1_000, t0 + 1_000).unwrap();
        // Pruned here with `a` silent for exactly 2 s: kept.
        g.check(c, 1, t0 + 2_000, t0 + 2_000).unwrap();
        assert_eq!(g.senders(), 3);
        // `b` speaks again; no prune is due.
        g.check(b, 2, t0 + 2_500, t0 + 2_500).unwrap();
        g.check(d, 1, t0 + 2_999, t0 + 2_999).unwrap();
        assert_eq!(g.senders(), 4);
        // Due exactly 1 s after the last: `a` (silent 3 s) goes.
        g.check(e, 1, t0 + 3_000, t0 + 3_000).unwrap();
        assert_eq!(g.senders(), 4);
        // Its old envelope is stale anyway.
        assert!(matches!(
            g.check(a, 50, t0, t0 + 3_000),
            Err(ProtocolError::Stale { .. })
        ));
        assert_eq!(g.senders(), 4);
        // At t0 + 4 s `b` has been silent for 1.5 s since it spoke again: kept, like
        // `c` (exactly 2 s).
        g.check(f, 1, t0 + 4_000, t0 + 4_000).unwrap();
        assert_eq!(g.senders(), 5);
        assert!(is_replay(g.check(b, 2, t0 + 4_000, t0 + 4_000)));
        assert!(is_replay(g.check(c, 1, t0 + 4_000, t0 + 4_000)));
        // A fresh envelope from the forgotten sender starts a new window, even with an
        // old number.
        g.check(a, 50, t0 + 4_000, t0 + 4_000).unwrap();
        assert_eq!(g.senders(), 6);
        assert!(is_replay(g.check(a, 50, t0 + 4_000, t0 + 4_000)));
    }

    #[test]
    fn at_capacity_silent_senders_make_room_before_fresh_ones_are_evicted() {
        let t0 = NOW;
        let mut g = ReplayGuard::new(1_000, 64, 10);
        g.check(id(0), 1, t0, t0).unwrap();
        g.check(id(1), 1, t0, t0).unwrap();
        // Pruned here with both silent for exactly twice the skew: kept.
        g.check(id(2), 1, t0 + 2_000, t0 + 2_000).unwrap();
        // No prune is due before t0 + 3 s; the table fills up.
        for i in 3..10 {
            g.check(id(i), 1, t0 + 2_500, t0 + 2_500).unwrap();
        }
        assert_eq!(g.senders(), 10);
        // A newcomer: the two silent ones make room (more than the tenth an eviction
        // would take), and nobody fresh is evicted.
        g.check(id(10), 1, t0 + 2_500, t0 + 2_500).unwrap();
        assert_eq!(g.senders(), 9);
        for i in 2..=10 {
            assert!(is_replay(g.check(id(i), 1, t0 + 2_500, t0 + 2_500)), "{i}");
        }
        // The silent ones were forgotten: their numbers pass again, and the second one
        // evicts the oldest, id(2).
        g.check(id(0), 1, t0 + 2_500, t0 + 2_500).unwrap();
        assert_eq!(g.senders(), 10);
        g.check(id(1), 1, t0 + 2_500, t0 + 2_500).unwrap();
        assert_eq!(g.senders(), 10);
        for i in (0..=10).filter(|&i| i != 2) {
            assert!(is_replay(g.check(id(i), 1, t0 + 2_500, t0 + 2_500)), "{i}");
        }
        g.check(id(2), 1, t0 + 2_500, t0 + 2_500).unwrap();
    }

    /// A full table of 100 senders, id(i) last heard from `age(i)` ms ago: ages
    /// unrelated to key order and to arrival order.
    fn full_table() -> (ReplayGuard, impl Fn(u32) -> u64) {
        let age = |i: u32| u64::from((i * 37) % 100);
        let mut g = ReplayGuard::new(DEFAULT_SKEW_MS, 64, 100);
        for i in 0..100 {
            g.check(id(i), 7, NOW - age(i), NOW).unwrap();
        }
        assert_eq!(g.senders(), 100);
        (g, age)
    }

    #[test]
    fn eviction_drops_the_oldest_tenth_in_one_pass() {
        let (mut g, age) = full_table();
        // A newcomer evicts ten at once; then there is room for nine more.
        g.check(id(1_000), 7, NOW, NOW).unwrap();
        assert_eq!(g.senders(), 91);
        for j in 1..=9 {
            g.check(id(1_000 + j), 7, NOW, NOW).unwrap();
            assert_eq!(g.senders(), 91 + j as usize);
        }
        // The next newcomer: the ten oldest left (ages 80 to 89) go.
        g.check(id(2_000), 7, NOW, NOW).unwrap();
        assert_eq!(g.senders(), 91);
        for i in (0..100).filter(|&i| age(i) < 80) {
            assert!(
                is_replay(g.check(id(i), 7, NOW, NOW)),
                "id {i}, age {}",
                age(i)
            );
        }
        for j in 0..=9 {
            assert!(is_replay(g.check(id(1_000 + j), 7, NOW, NOW)));
        }
        assert!(is_replay(g.check(id(2_000), 7, NOW, NOW)));
    }

    #[test]
    fn the_evicted_are_the_oldest_not_the_newest() {
        let (mut g, age) = full_table();
        g.check(id(1_000), 7, NOW, NOW).unwrap();
        // Refusals record nothing, so the survivors can be probed first.
        for i in (0..100).filter(|&i| age(i) < 90) {
            assert!(
                is_replay(g.check(id(i), 7, NOW, NOW)),
                "id {i}, age {}",
                age(i)
            );
        }
        assert!(is_replay(g.check(id(1_000), 7, NOW, NOW)));
        // The ten oldest were forgotten: each is accepted as new.
        for i in (0..100).filter(|&i| age(i) >= 90) {
            g.check(id(i), 7, NOW, NOW).unwrap();
        }
    }

    #[test]
    fn rotating_keys_keeps_the_table_bounded_and_the_latest_senders_remembered() {
        for max in [1usize, 2, 10, 100] {
            let mut g = ReplayGuard::new(DEFAULT_SKEW_MS, 512, max);
            let keep = max - max.div_ceil(10);
            let n = 5 * max as u32 + 7;
            for i in 0..n {
                // Sent at increasing times, all within the skew.
                g.check(id(i), 1, NOW - u64::from(n - i), NOW).unwrap();
                let tracked = g.senders();
                assert!(tracked <= max, "max {max}: {tracked} tracked");
                let least = (i as usize + 1).min(keep + 1);
                assert!(tracked >= least, "max {max}: {tracked} tracked");
                // The table holds exactly the latest `tracked` senders.
                let first = (i + 1).saturating_sub(tracked as u32);
                for j in first..=i {
                    assert!(is_replay(g.check(id(j), 1, NOW, NOW)), "max {max}: id {j}");
                }
            }
            let first = n - g.senders() as u32;
            g.check(id(first - 1), 1, NOW, NOW).unwrap();
        }
    }

    #[test]
    fn the_default_is_thirty_seconds_512_numbers_and_20000_senders() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.skew_ms(), 30_000);
        let h = 10_000;
        g.check(id(0), h, NOW, NOW).unwrap();
        g.check(id(0), h - 511, NOW - 30_000, NOW).unwrap();
        assert!(is_replay(g.check(id(0), h - 512, NOW, NOW)));
        assert!(g.check(id(0), h + 1, NOW + 30_001, NOW).is_err());
        for i in 1..20_000 {
            g.check(id(i), 1, NOW, NOW).unwrap();
        }
        assert_eq!(g.senders(), 20_000);
        g.check(id(20_000), 1, NOW, NOW).unwrap();
        assert_eq!(g.senders(), 18_001);
    }
}
