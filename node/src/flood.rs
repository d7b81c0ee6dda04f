//! A per-sender budget for broadcasts. An honest initiator publishes one envelope
//! per required skill when it announces a task, and again while the task lacks
//! agents; an agent publishing far more is flooding. Its envelopes beyond the budget
//! are rejected: gossipsub does not forward them and scores down the peer that
//! delivered them, while other senders' announcements keep flowing.
//!
//! A token bucket per sender: `burst` envelopes at once, refilled at `rate` per
//! second. Memory is bounded: at most [`MAX_SENDERS`] buckets, and a full bucket
//! carries no information, so full ones are forgotten first.

use std::{collections::HashMap, time::Duration};

use starling_protocol::AgentId;
use tokio::time::Instant;

/// Senders tracked at most.
pub const MAX_SENDERS: usize = 10_000;

/// Broadcast budgets of every sender seen lately.
#[derive(Debug)]
pub struct BroadcastLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<AgentId, (f64, Instant)>,
}

impl BroadcastLimiter {
    /// `burst` broadcasts at once per sender, refilled at `rate` per second.
    pub fn new(rate: f64, burst: u32) -> Self {
        BroadcastLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one broadcast from `sender`'s budget; false if it has none left.
    pub fn allow(&mut self, sender: AgentId, now: Instant) -> bool {
        if self.buckets.len() >= MAX_SENDERS && !self.buckets.contains_key(&sender) {
            self.forget_full(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, at) = self.buckets.entry(sender).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Senders tracked.
    pub fn senders(&self) -> usize {
        self.buckets.len()
    }

    /// Drops buckets that have refilled (or, failing that, the fullest half).
    fn forget_full(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        let level = |(tokens, at): &(f64, Instant)| {
            tokens + now.saturating_duration_since(*at).as_secs_f64() * rate
        };
        self.buckets.retain(|_, b| level(b) < burst);
        if self.buckets.len() >= MAX_SENDERS {
            let mut levels: Vec<(AgentId, f64)> =
                self.buckets.iter().map(|(k, b)| (*k, level(b))).collect();
            levels.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (k, _) in levels.into_iter().take(MAX_SENDERS / 2) {
                self.buckets.remove(&k);
            }
        }
    }
}

/// How long a sender with an empty budget waits for its next broadcast.
pub fn refill_time(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate.max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_the_excess_is_refused_and_the_budget_refills() {
        let mut l = BroadcastLimiter::new(10.0, 5);
        let a = AgentId([1; 32]);
        let b = AgentId([2; 32]);
        let t0 = Instant::now();
        assert!((0..5).all(|_| l.allow(a, t0)));
        assert!(!l.allow(a, t0), "the sixth at once is over budget");
        assert!(l.allow(b, t0), "other senders are unaffected");
        assert!(!l.allow(a, t0 + refill_time(10.0) / 2));
        assert!(l.allow(a, t0 + refill_time(10.0) * 2));
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        assert!((0..5).all(|_| l.allow(a, later)));
        assert!(!l.allow(a, later));
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = BroadcastLimiter::new(1.0, 2);
        let t0 = Instant::now();
        for i in 0..(MAX_SENDERS + 10) as u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            l.allow(AgentId(id), t0);
        }
        assert!(l.senders() <= MAX_SENDERS);
    }
}
