//! Thin skill topics: where a topic's gossip mesh finds its peers.
//!
//! gossipsub grafts a topic's mesh from the connected peers that subscribe to it;
//! a topic whose mesh stays below `mesh_n_low` needs more connections — too few
//! subscribers are connected, or those that are will not graft us. The card
//! directory names every agent holding a skill, with its addresses (cards reach
//! every agent by gossip and anti-entropy, see `cards`): a few of those not
//! connected are dialled directly, one connection each, and gossipsub learns their
//! subscriptions on it. Only when the directory names nobody to dial does the node
//! look the skill's providers up in the DHT — a walk over a dozen peers, a
//! connection to each — with a backoff that doubles while lookups find nobody.

use std::hash::{DefaultHasher, Hash, Hasher};

use libp2p::{
    PeerId,
    swarm::{DialError, dial_opts::DialOpts},
};
use starling_protocol::AgentId;
use tokio::time::Instant;
use tracing::debug;

use super::NodeActor;
use crate::swarm::peer_id_of;

/// The longest wait between provider lookups for a skill whose topic stays thin.
const LOOKUP_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// The order in which holders are tried in round `round`: a different one each
/// round and on each agent, so that a holder that does not graft is not dialled
/// again and again, and the agents seeking a topic do not all dial the same few.
fn spread(seed: u64, me: &PeerId, round: u32, peer: &PeerId) -> u64 {
    let mut h = DefaultHasher::new();
    (seed, me, round, peer).hash(&mut h);
    h.finish()
}

/// A skill topic as gossipsub sees it: peers in our mesh, connected subscribers.
#[derive(Debug, Clone, Copy)]
struct TopicState {
    meshed: usize,
    subscribers: usize,
}

impl TopicState {
    /// How many more holders to dial (none once there are `low`). Just joined,
    /// the subscribers count (gossipsub grafts them at its next heartbeat), and
    /// enough are dialled for a mesh of `mesh_n`. Later only the mesh counts — a
    /// subscriber still outside it by then will not graft, for now — and only
    /// enough to reach `low` are dialled: gossipsub grafts up to `mesh_n` from
    /// the subscribers it has, and every dial is a connection more.
    fn holders_wanted(self, low: usize, mesh_n: usize, just_joined: bool) -> usize {
        let (have, target) = if just_joined {
            (self.subscribers.max(self.meshed), mesh_n)
        } else {
            (self.meshed, low)
        };
        if have >= low {
            0
        } else {
            target.saturating_sub(have)
        }
    }
}

impl NodeActor {
    /// Fills each skill topic whose gossip mesh is below `mesh_n_low`: from the
    /// card directory first, from the DHT only when the directory has nobody to
    /// dial. What counts is the mesh, not the connected subscribers: a subscriber
    /// that pruned us (its mesh was full) stays connected a while but cannot be
    /// grafted again before gossipsub's prune backoff (a minute) is over, and a
    /// topic whose subscribers were all such peers used to wait that long for a
    /// mesh. Right after the join, gossipsub has yet to graft the subscribers the
    /// walk met (it does at its next heartbeat), and some may not have told us
    /// their subscriptions yet: then the subscribers count, and a topic with any
    /// is not looked up in the DHT.
    pub(super) fn seek_thin_meshes(&mut self, just_joined: bool) {
        let now = Instant::now();
        let low = self.config.mesh_n_low();
        let skills: Vec<String> = self.agent.skills().map(|s| s.name.clone()).collect();
        for skill in skills {
            let hash =
                libp2p::gossipsub::IdentTopic::new(starling_protocol::skill_topic(&skill)).hash();
            let gossip = &self.swarm.behaviour().gossipsub;
            let state = TopicState {
                meshed: gossip.mesh_peers(&hash).count(),
                subscribers: gossip
                    .all_peers()
                    .filter(|(_, ts)| ts.contains(&&hash))
                    .count(),
            };
            let (meshed, subscribers) = (state.meshed, state.subscribers);
            if meshed >= low {
                self.lookups.backoff.remove(&skill);
                continue;
            }
            let want = state.holders_wanted(low, self.config.mesh_n, just_joined);
            if want == 0 {
                continue;
            }
            let dialled = self.dial_holders(&skill, want);
            if dialled > 0 || (just_joined && subscribers > 0) {
                debug!(%skill, meshed, subscribers, dialled, "thin mesh: dialling holders from their cards");
                continue;
            }
            let (next, wait) = self
                .lookups
                .backoff
                .get(&skill)
                .copied()
                .unwrap_or((now, self.config.discovery_interval / 2));
            if now < next {
                continue;
            }
            debug!(%skill, meshed, subscribers, reason = "thin mesh", "looking up providers");
            self.find_providers(&skill);
            let wait = (wait * 2).min(LOOKUP_BACKOFF_MAX);
            self.lookups.backoff.insert(skill, (now + wait, wait));
        }
    }

    /// Dials up to `want` agents that hold `skill` by their cards and are not
    /// connected, at the addresses they reported or their cards give. Returns how many dials are under way
    /// (one already under way to a holder counts).
    fn dial_holders(&mut self, skill: &str, want: usize) -> usize {
        let (seed, round) = (self.config.rng_seed, self.discovery_runs);
        let me = *self.swarm.local_peer_id();
        let mut fresh: Vec<(u64, PeerId, AgentId)> = self
            .agent
            .skill_holders(skill)
            .into_iter()
            .filter_map(|a| Some((peer_id_of(&a).ok()?, a)))
            .filter(|(p, _)| !self.swarm.is_connected(p))
            .map(|(p, a)| (spread(seed, &me, round, &p), p, a))
            .collect();
        fresh.sort();
        let mut dialled = 0;
        for (_, peer, agent) in fresh {
            if dialled >= want {
                break;
            }
            let addrs = self.addrs_to_dial(&peer, &agent);
            if addrs.is_empty() {
                continue;
            }
            match self
                .swarm
                .dial(DialOpts::peer_id(peer).addresses(addrs).build())
            {
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => dialled += 1,
                Err(e) => debug!(%peer, error = %e, "cannot dial a skill holder"),
            }
        }
        dialled
    }
}

#[cfg(test)]
mod tests {
    use super::{TopicState, spread};

    #[test]
    fn connected_subscribers_outside_the_mesh_do_not_stop_the_search_after_the_join() {
        let (low, mesh_n) = (3, 4);
        let pruned_us = TopicState {
            meshed: 0,
            subscribers: 4,
        };
        assert_eq!(
            pruned_us.holders_wanted(low, mesh_n, true),
            0,
            "just joined: the heartbeat grafts them"
        );
        assert_eq!(
            pruned_us.holders_wanted(low, mesh_n, false),
            3,
            "later they will not graft: enough holders more for a mesh of low"
        );
        let thin = TopicState {
            meshed: 1,
            subscribers: 2,
        };
        assert_eq!(thin.holders_wanted(low, mesh_n, true), 2, "up to mesh_n");
        assert_eq!(thin.holders_wanted(low, mesh_n, false), 2, "up to low");
        let full = TopicState {
            meshed: 3,
            subscribers: 3,
        };
        assert_eq!(full.holders_wanted(low, mesh_n, false), 0);
    }

    #[test]
    fn holders_come_in_another_order_each_round_and_on_each_agent() {
        let peers: Vec<libp2p::PeerId> = (0..8).map(|_| libp2p::PeerId::random()).collect();
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let order = |me, round| {
            let mut v: Vec<_> = peers
                .iter()
                .map(|p| (spread(0, me, round, p), *p))
                .collect();
            v.sort();
            v.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
        };
        assert_eq!(order(&a, 1), order(&a, 1), "one agent's round is one order");
        assert_ne!(
            order(&a, 1),
            order(&a, 2),
            "the next round tries others first"
        );
        assert_ne!(
            order(&a, 1),
            order(&b, 1),
            "another agent tries others first"
        );
    }
}
