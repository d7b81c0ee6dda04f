//! Link faults between nodes, for simulations and tests: partitions, latency, jitter
//! and loss on the links of in-process nodes.
//!
//! One [`LinkFaults`] controller is shared by every node of a simulated mesh (through
//! [`NodeConfig::link_faults`](crate::NodeConfig::link_faults)). A node consults it for
//! every inbound message and connection:
//!
//! - **Partition**: agents are put on numbered sides; a node blocks every peer on
//!   another side (libp2p's block list: existing connections close, new ones are
//!   denied) until the partition heals. Agents not named are on side 0.
//! - **Latency and jitter**: each inbound message is held for `latency ± jitter`
//!   before the node looks at it, so it also reaches the next gossip hop that much
//!   later — a per-link delay, as on a real network.
//! - **Loss**: Starling's links are streams (TCP, QUIC, yamux), where a lost packet
//!   is retransmitted rather than lost to the application. So a "lost" message is
//!   delivered after one retransmission timeout more ([`RETRANSMIT_TIMEOUT`], or two
//!   round trips if those are longer), which is what a lossy link costs a stream.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use starling_protocol::AgentId;
use tokio::sync::watch;

/// What one retransmission costs a message on a lossy link (Linux's minimum TCP
/// retransmission timeout).
pub const RETRANSMIT_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Clone)]
struct FaultState {
    /// Partition side of each named agent; absent = side 0. Empty = no partition.
    sides: BTreeMap<AgentId, u32>,
    latency: Duration,
    jitter: Duration,
    loss: f64,
}

/// Shared fault controller of a simulated mesh. Cheap to consult; changes take effect
/// at once on every node that holds it.
#[derive(Debug)]
pub struct LinkFaults {
    state: RwLock<FaultState>,
    /// Bumped on every partition change, so nodes re-check their connections.
    generation: watch::Sender<u64>,
}

impl LinkFaults {
    /// A controller with no faults.
    pub fn new() -> Arc<Self> {
        Arc::new(LinkFaults {
            state: RwLock::new(FaultState::default()),
            generation: watch::Sender::new(0),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, FaultState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, FaultState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Splits the mesh: `sides[i]` are the agents on side `i + 1`; everyone else is on
    /// side 0. Links between sides are cut until [`heal`](Self::heal).
    pub fn partition(&self, sides: &[Vec<AgentId>]) {
        {
            let mut s = self.write();
            s.sides.clear();
            for (i, side) in sides.iter().enumerate() {
                for a in side {
                    s.sides.insert(*a, i as u32 + 1);
                }
            }
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Ends the partition: every link may connect again.
    pub fn heal(&self) {
        self.write().sides.clear();
        self.generation.send_modify(|g| *g += 1);
    }

    /// Sets the delay of every link: `latency ± jitter` per message, and the chance
    /// (0..=1) that a message needs a retransmission.
    pub fn set_delay(&self, latency: Duration, jitter: Duration, loss: f64) {
        let mut s = self.write();
        s.latency = latency;
        s.jitter = jitter;
        s.loss = loss.clamp(0.0, 1.0);
    }

    /// Whether the link between `a` and `b` is cut.
    pub fn cut(&self, a: &AgentId, b: &AgentId) -> bool {
        let s = self.read();
        if s.sides.is_empty() {
            return false;
        }
        let side = |x: &AgentId| s.sides.get(x).copied().unwrap_or(0);
        side(a) != side(b)
    }

    /// How long to hold one message, given two uniform draws in `0..1` (one for the
    /// jitter, one for the loss).
    pub fn delay(&self, jitter_draw: f64, loss_draw: f64) -> Duration {
        let s = self.read();
        let jitter = s.jitter.as_secs_f64() * (2.0 * jitter_draw - 1.0);
        let base = (s.latency.as_secs_f64() + jitter).max(0.0);
        let mut d = Duration::from_secs_f64(base);
        if loss_draw < s.loss {
            d += RETRANSMIT_TIMEOUT.max(s.latency * 4);
        }
        d
    }

    /// Whether any delay is configured (so nodes skip the delay queue otherwise).
    pub fn delays(&self) -> bool {
        let s = self.read();
        !s.latency.is_zero() || !s.jitter.is_zero() || s.loss > 0.0
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A small deterministic generator for the delay draws (splitmix64).
#[derive(Debug, Clone)]
pub(crate) struct Draws(u64);

impl Draws {
    pub(crate) fn new(seed: u64) -> Self {
        Draws(seed ^ 0x5eed_f417_u64)
    }

    /// A uniform draw in `0..1`.
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::Keypair;

    #[test]
    fn partitions_cut_links_between_sides_only_until_healed() {
        let [a, b, c] = [1u8, 2, 3].map(|s| Keypair::from_secret_bytes([s; 32]).id());
        let f = LinkFaults::new();
        let mut changes = f.changes();
        assert!(!f.cut(&a, &b));
        f.partition(&[vec![a]]);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert!(f.cut(&a, &b) && f.cut(&c, &a));
        assert!(!f.cut(&b, &c), "unnamed agents share side 0");
        f.heal();
        assert!(changes.has_changed().unwrap());
        assert!(!f.cut(&a, &b));
    }

    #[test]
    fn delays_follow_latency_jitter_and_loss() {
        let f = LinkFaults::new();
        assert!(!f.delays());
        assert_eq!(f.delay(0.9, 0.0), Duration::ZERO);
        f.set_delay(Duration::from_millis(50), Duration::from_millis(10), 0.02);
        assert!(f.delays());
        assert_eq!(f.delay(0.5, 0.5), Duration::from_millis(50));
        assert_eq!(f.delay(0.0, 0.5), Duration::from_millis(40));
        assert_eq!(f.delay(1.0, 0.5), Duration::from_millis(60));
        // A lost message costs one retransmission timeout more.
        assert_eq!(f.delay(0.5, 0.01), Duration::from_millis(250));
        let mut d = Draws::new(7);
        let draws: Vec<f64> = (0..1000).map(|_| d.next()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    }
}
