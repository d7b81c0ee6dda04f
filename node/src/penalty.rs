//! Scoring peers down for bad input on the direct path (gossipsub scores gossip
//! itself). Every refusal or protocol-level lie adds to a peer's penalty, which halves
//! every minute; past the threshold the peer is disconnected, blacklisted in gossipsub
//! and ignored for the ban period.

use std::{collections::HashMap, time::Duration};

use libp2p::PeerId;
use tokio::time::Instant;

/// Penalty at which a peer is banned.
pub const BAN_THRESHOLD: f64 = 10.0;
/// How long a ban lasts.
pub const BAN_PERIOD: Duration = Duration::from_secs(600);
/// Half-life of a penalty.
const HALF_LIFE: Duration = Duration::from_secs(60);
/// Peers tracked at most (the least penalised are forgotten first).
const MAX_TRACKED: usize = 10_000;

/// Per-peer penalties and bans.
#[derive(Debug, Default)]
pub struct Penalties {
    scores: HashMap<PeerId, (f64, Instant)>,
    banned: HashMap<PeerId, Instant>,
}

impl Penalties {
    /// Adds `points` to `peer`; returns true if this pushed it over the threshold
    /// (it is now banned).
    pub fn add(&mut self, peer: PeerId, points: f64, now: Instant) -> bool {
        if self.is_banned(&peer, now) {
            return false;
        }
        if self.scores.len() >= MAX_TRACKED && !self.scores.contains_key(&peer) {
            let lowest = self
                .scores
                .iter()
                .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
                .map(|(p, _)| *p);
            if let Some(p) = lowest {
                self.scores.remove(&p);
            }
        }
        let (score, at) = self.scores.entry(peer).or_insert((0.0, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *score = *score * 0.5f64.powf(elapsed / HALF_LIFE.as_secs_f64()) + points;
        *at = now;
        if *score >= BAN_THRESHOLD {
            self.scores.remove(&peer);
            self.banned.insert(peer, now + BAN_PERIOD);
            return true;
        }
        false
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.banned.get(peer).is_some_and(|until| now < *until)
    }

    /// Bans that ran out (to lift them).
    pub fn expired(&mut self, now: Instant) -> Vec<PeerId> {
        let done: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| now >= **until)
            .map(|(p, _)| *p)
            .collect();
        for p in &done {
            self.banned.remove(p);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_add_up_decay_and_ban() {
        let mut p = Penalties::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        for _ in 0..9 {
            assert!(!p.add(peer, 1.0, t0));
        }
        // Two half-lives later the nine points are worth about two.
        assert!(!p.add(peer, 1.0, t0 + 2 * HALF_LIFE));
        assert!(!p.is_banned(&peer, t0 + 2 * HALF_LIFE));
        for _ in 0..6 {
            p.add(peer, 1.0, t0 + 2 * HALF_LIFE);
        }
        assert!(p.add(peer, 1.0, t0 + 2 * HALF_LIFE) || p.is_banned(&peer, t0 + 2 * HALF_LIFE));
        assert!(p.is_banned(&peer, t0 + 2 * HALF_LIFE));
        assert!(p.expired(t0 + 2 * HALF_LIFE + BAN_PERIOD).contains(&peer));
        assert!(!p.is_banned(&peer, t0 + 2 * HALF_LIFE + BAN_PERIOD));
    }
}
