//! The connection economy: connections are a budget, not a side effect.
//!
//! A connection stays open while something uses it: a Kademlia request or record
//! on its way, a direct message in flight, identify — and then for a short while
//! (`NodeConfig::lookup_connection_timeout`), so a join's walks leave nothing
//! behind. gossipsub's streams do not count, and gossipsub keeps its mesh peers'
//! connections itself (see `keepalive`). A peer this agent exchanged direct
//! messages with is pinned for `NodeConfig::idle_connection_timeout` after the
//! last one (an offer is followed by an invitation, a heartbeat by the next).
//! Beyond that, every sweep pins:
//! - the gossip mesh peers of this agent's skill topics and of the cards topic,
//!   and a couple of spare subscribers per skill topic (so a mesh can heal
//!   without a lookup);
//! - the peers of every open group (coordinator and members);
//! - peers with a direct request in flight;
//! - a few routing peers, so a node never cuts itself off from the mesh — chosen
//!   first among subscribers of topics it published to lately without subscribing,
//!   so that its next announcement there has somewhere to go.
//!
//! Everything else closes once idle: a lookup or a single message never turns into
//! a lasting connection.
//!
//! Only while the agent joins does it keep every connection: the join's walks
//! (the card, then a provider record per skill) meet many of the same peers, and
//! a connection closed between two walks is a handshake again.
//!
//! A sweep runs every `sweep_every` while something waits on it — a connection
//! not pinned (it may close, or have just become worth keeping), one opened since
//! the last sweep, or a join under way — and otherwise, with every connection
//! already kept, only every half linger: at rest it would find nothing to do, and
//! a peer no longer worth keeping may stay that much longer.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::Duration,
};

use libp2p::{PeerId, gossipsub::TopicHash};
use tokio::time::Instant;

use super::NodeActor;
use crate::swarm::peer_id_of;

/// Subscribers kept per topic this agent published to without subscribing.
const COVER_PER_TOPIC: usize = 2;
/// Subscribers kept per own topic beyond its mesh peers.
const SPARE_PER_TOPIC: usize = 2;
/// How long a topic published to counts as one to keep subscribers of.
const PUBLISHED_FOR: Duration = Duration::from_secs(300);
/// Topics remembered as published to, at most.
const PUBLISHED_LIMIT: usize = 64;

/// Topics published to lately, peers talked to lately, and how often to sweep.
#[derive(Debug)]
pub(super) struct Connections {
    /// Topics this agent published to, and when last.
    published: HashMap<String, Instant>,
    /// Peers that exchanged direct messages with this agent, and when last.
    talked: HashMap<PeerId, Instant>,
    /// How long a peer talked to stays pinned.
    linger: Duration,
    /// The idle timeout of a connection nothing pins.
    lookup: Duration,
    /// When the last sweep ran.
    swept: Option<Instant>,
}

impl Connections {
    pub(super) fn new(linger: Duration, lookup: Duration) -> Connections {
        Connections {
            published: HashMap::new(),
            talked: HashMap::new(),
            linger,
            lookup,
            swept: None,
        }
    }

    /// How often to sweep: a peer that became worth keeping (a group opened with
    /// it) is pinned well before its connection could go idle.
    pub(super) fn sweep_every(&self) -> Duration {
        (self.linger / 4).min(self.lookup / 2)
    }

    /// Whether a sweep is due at `now`: always while something waits on it
    /// (`settled` false), otherwise once every half linger. Counts it as run if so.
    pub(super) fn sweep_due(&mut self, now: Instant, settled: bool) -> bool {
        let due = !settled
            || self
                .swept
                .is_none_or(|at| now.duration_since(at) >= self.linger / 2);
        if due {
            self.swept = Some(now);
        }
        due
    }

    /// A direct message went to or came from `peer`. Returns whether the peer was
    /// not pinned as talked to already (the caller pins it at once, not at the
    /// next sweep).
    pub(super) fn talked(&mut self, peer: PeerId, now: Instant) -> bool {
        self.talked.insert(peer, now).is_none()
    }

    /// Peers talked to within the linger; forgets the others.
    fn talking(&mut self, now: Instant) -> impl Iterator<Item = PeerId> + '_ {
        let linger = self.linger;
        self.talked.retain(|_, at| now.duration_since(*at) < linger);
        self.talked.keys().copied()
    }

    /// This agent published on `topic`.
    pub(super) fn published(&mut self, topic: &str, now: Instant) {
        if !self.published.contains_key(topic) && self.published.len() >= PUBLISHED_LIMIT {
            self.published
                .retain(|_, at| now.duration_since(*at) < PUBLISHED_FOR);
            if self.published.len() >= PUBLISHED_LIMIT {
                let oldest = self
                    .published
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(t, _)| t.clone());
                if let Some(t) = oldest {
                    self.published.remove(&t);
                }
            }
        }
        self.published.insert(topic.to_string(), now);
    }
}

/// Which peers to keep, from what the node knows at a sweep: pure, so it is tested
/// without a swarm.
#[derive(Debug, Default)]
pub(super) struct KeepInput {
    /// Connected peers with the topics each subscribes to.
    pub(super) peers: Vec<(PeerId, Vec<TopicHash>)>,
    /// Mesh peers of our own topics.
    pub(super) mesh: HashSet<PeerId>,
    /// Our own topics.
    pub(super) own_topics: BTreeSet<TopicHash>,
    /// Topics published to lately without subscribing.
    pub(super) foreign_topics: BTreeSet<TopicHash>,
    /// Peers that must stay: open groups, requests in flight, recent traffic.
    pub(super) pinned: HashSet<PeerId>,
    /// Routing peers to keep at least (if connected).
    pub(super) routing: usize,
}

/// The peers to keep connected: mesh and pinned peers; spare subscribers of our own
/// topics; and `routing` more, chosen first among subscribers of topics we published
/// to lately (so the next announcement there has somewhere to go), then by peer id.
pub(super) fn keep_set(input: &KeepInput) -> HashSet<PeerId> {
    let connected: HashSet<PeerId> = input.peers.iter().map(|(p, _)| *p).collect();
    let mut keep: HashSet<PeerId> = input
        .mesh
        .iter()
        .chain(&input.pinned)
        .filter(|p| connected.contains(p))
        .copied()
        .collect();
    let mut have: HashMap<&TopicHash, usize> = HashMap::new();
    for (p, ts) in &input.peers {
        if keep.contains(p) {
            for t in ts {
                *have.entry(t).or_default() += 1;
            }
        }
    }
    let mut candidates: Vec<&(PeerId, Vec<TopicHash>)> = input
        .peers
        .iter()
        .filter(|(p, _)| !keep.contains(p))
        .collect();
    candidates.sort_by_key(|(p, _)| *p);
    // Spares for own topics: mesh peers plus a couple more subscribers each.
    let mut want: HashMap<&TopicHash, usize> = HashMap::new();
    for t in &input.own_topics {
        let meshed = input
            .peers
            .iter()
            .filter(|(p, ts)| input.mesh.contains(p) && ts.contains(t))
            .count();
        want.insert(t, meshed + SPARE_PER_TOPIC);
    }
    cover(&mut candidates, &want, &mut have, &mut keep, usize::MAX);
    // Routing peers, preferring cover of the topics published to.
    let want: HashMap<&TopicHash, usize> = input
        .foreign_topics
        .iter()
        .map(|t| (t, COVER_PER_TOPIC))
        .collect();
    let added = cover(&mut candidates, &want, &mut have, &mut keep, input.routing);
    for (p, _) in candidates.into_iter().take(input.routing - added) {
        keep.insert(*p);
    }
    keep
}

/// Moves up to `limit` candidates into `keep`, greedily: each time the one that
/// serves the most topics still below what `want` asks. Returns how many it moved.
fn cover<'a>(
    candidates: &mut Vec<&'a (PeerId, Vec<TopicHash>)>,
    want: &HashMap<&TopicHash, usize>,
    have: &mut HashMap<&'a TopicHash, usize>,
    keep: &mut HashSet<PeerId>,
    limit: usize,
) -> usize {
    let mut added = 0;
    while added < limit {
        let short = |t: &TopicHash| {
            want.get(t)
                .is_some_and(|w| have.get(t).copied().unwrap_or(0) < *w)
        };
        let best = candidates
            .iter()
            .enumerate()
            .map(|(i, (_, ts))| (i, ts.iter().filter(|t| short(t)).count()))
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(i, n)| (*n, std::cmp::Reverse(*i)));
        let Some((i, _)) = best else { break };
        let (p, ts) = candidates.remove(i);
        keep.insert(*p);
        for t in ts {
            *have.entry(t).or_default() += 1;
        }
        added += 1;
    }
    added
}

impl NodeActor {
    /// A direct message went to or came from `peer`: its connection stays for the
    /// linger (see the module docs), pinned now rather than at the next sweep.
    pub(super) fn talked_with(&mut self, peer: PeerId) {
        if self.connections.talked(peer, Instant::now()) {
            self.swarm.behaviour_mut().pins.pin(peer);
        }
    }

    /// Counts a connection that closed because nothing used or pinned it for the
    /// idle timeout.
    pub(super) fn count_closed(&self, cause: Option<&libp2p::swarm::ConnectionError>) {
        if matches!(
            cause,
            Some(libp2p::swarm::ConnectionError::KeepAliveTimeout)
        ) {
            self.metrics.idle_closed.inc();
        }
    }

    /// Pins the connections worth keeping (see the module docs); the rest close
    /// once idle.
    pub(super) fn sweep_connections(&mut self) {
        let now = Instant::now();
        let settled = self.lookups.joined() && self.swarm.behaviour().pins.settled();
        if !self.connections.sweep_due(now, settled) {
            return;
        }
        self.connections
            .published
            .retain(|_, at| now.duration_since(*at) < PUBLISHED_FOR);
        let gossip = &self.swarm.behaviour().gossipsub;
        // The cards topic is everyone's: it wants no spares, and its mesh peers
        // (kept by gossipsub) count as kept.
        let cards = libp2p::gossipsub::IdentTopic::new(starling_protocol::card::CARDS_TOPIC).hash();
        let own_topics: BTreeSet<TopicHash> =
            gossip.topics().filter(|t| **t != cards).cloned().collect();
        let foreign_topics: BTreeSet<TopicHash> = self
            .connections
            .published
            .keys()
            .map(|t| libp2p::gossipsub::IdentTopic::new(t.clone()).hash())
            .filter(|t| !own_topics.contains(t))
            .collect();
        // Only the topics a keep decision looks at (not the cards topic, nor
        // topics nobody here cares about).
        let mut subscriptions: HashMap<PeerId, Vec<TopicHash>> = gossip
            .all_peers()
            .map(|(p, ts)| {
                let ts = ts
                    .into_iter()
                    .filter(|t| own_topics.contains(*t) || foreign_topics.contains(*t))
                    .cloned()
                    .collect();
                (*p, ts)
            })
            .collect();
        let peers: Vec<(PeerId, Vec<TopicHash>)> = self
            .swarm
            .connected_peers()
            .map(|p| (*p, subscriptions.remove(p).unwrap_or_default()))
            .collect();
        let mesh: HashSet<PeerId> = own_topics
            .iter()
            .chain([&cards])
            .flat_map(|t| gossip.mesh_peers(t))
            .copied()
            .collect();
        let mut pinned: HashSet<PeerId> = self
            .agent
            .group_neighbours()
            .iter()
            .filter_map(|a| peer_id_of(a).ok())
            .collect();
        pinned.extend(self.in_flight.keys().copied());
        pinned.extend(self.connections.talking(now));
        tracing::debug!(
            connected = peers.len(),
            mesh = mesh.len(),
            pinned = pinned.len(),
            "sweeping connections"
        );
        // While this agent joins, its walks come back to the peers they met:
        // every connection stays until the join is over.
        if !self.lookups.joined() {
            let all = peers.iter().map(|(p, _)| *p).collect();
            self.swarm.behaviour_mut().pins.set(all);
            return;
        }
        let keep = keep_set(&KeepInput {
            peers,
            mesh,
            own_topics,
            foreign_topics,
            pinned,
            routing: self.config.routing_peers,
        });
        self.swarm.behaviour_mut().pins.set(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicHash {
        libp2p::gossipsub::IdentTopic::new(name).hash()
    }

    fn peers(n: usize) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_peer_talked_to_is_kept_for_the_linger_after_the_last_message_then_forgotten() {
        let mut c = Connections::new(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(c.sweep_every(), Duration::from_secs(1));
        let (p, q) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(c.talked(p, t0), "a new peer is pinned at once");
        assert!(c.talked(q, t0));
        assert!(!c.talked(p, t0 + Duration::from_secs(6)), "already pinned");
        let at = |c: &mut Connections, secs| {
            let mut v: Vec<PeerId> = c.talking(t0 + Duration::from_secs(secs)).collect();
            v.sort();
            v
        };
        let mut both = vec![p, q];
        both.sort();
        assert_eq!(at(&mut c, 9), both);
        // q's last message is ten seconds old; p spoke again at six.
        assert_eq!(at(&mut c, 10), vec![p]);
        assert_eq!(at(&mut c, 16), Vec::<PeerId>::new());
        assert!(c.talked(q, t0 + Duration::from_secs(17)), "pinned anew");
    }

    #[test]
    fn a_settled_agent_sweeps_every_half_linger_and_an_unsettled_one_every_tick() {
        let mut c = Connections::new(Duration::from_secs(10), Duration::from_secs(2));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(c.sweep_due(at(0), true), "the first sweep always runs");
        assert!(!c.sweep_due(at(1), true));
        assert!(!c.sweep_due(at(4), true));
        assert!(c.sweep_due(at(5), true), "half the linger since the last");
        // Something waits (a fresh or unpinned connection): every tick sweeps,
        // and each counts as the last sweep.
        assert!(c.sweep_due(at(6), false));
        assert!(c.sweep_due(at(7), false));
        assert!(!c.sweep_due(at(11), true));
        assert!(c.sweep_due(at(12), true));
    }

    #[test]
    fn unneeded_peers_are_not_kept() {
        let p = peers(10);
        let input = KeepInput {
            peers: p.iter().map(|q| (*q, Vec::new())).collect(),
            mesh: HashSet::new(),
            pinned: [p[3]].into_iter().collect(),
            routing: 2,
            ..Default::default()
        };
        let keep = keep_set(&input);
        assert_eq!(
            keep.len(),
            3,
            "one pinned peer and two routing peers: {keep:?}"
        );
        assert!(keep.contains(&p[3]));
    }

    #[test]
    fn mesh_pinned_spare_and_cover_peers_stay_within_their_bounds() {
        let p = peers(12);
        let (a, b) = (topic("a"), topic("b"));
        // p0, p1 mesh peers on our topic a; p2..p5 also subscribe to a; p6..p11
        // subscribe to b, a topic we published to.
        let mut list: Vec<(PeerId, Vec<TopicHash>)> = Vec::new();
        for (i, q) in p.iter().enumerate() {
            let ts = if i < 6 {
                vec![a.clone()]
            } else {
                vec![b.clone()]
            };
            list.push((*q, ts));
        }
        let input = KeepInput {
            peers: list,
            mesh: [p[0], p[1]].into_iter().collect(),
            own_topics: [a.clone()].into_iter().collect(),
            foreign_topics: [b.clone()].into_iter().collect(),
            pinned: [p[11]].into_iter().collect(),
            routing: 1,
        };
        let keep = keep_set(&input);
        assert!(
            keep.contains(&p[0]) && keep.contains(&p[1]),
            "mesh peers stay"
        );
        assert!(keep.contains(&p[11]), "pinned peers stay");
        let on_a = p[..6].iter().filter(|q| keep.contains(q)).count();
        assert_eq!(on_a, 2 + SPARE_PER_TOPIC, "mesh plus spares on our topic");
        // The one routing peer covers b: the pinned subscriber counts toward it.
        let on_b = p[6..].iter().filter(|q| keep.contains(q)).count();
        assert_eq!(on_b, COVER_PER_TOPIC, "cover of the published topic");
        assert_eq!(keep.len(), 2 + SPARE_PER_TOPIC + COVER_PER_TOPIC);
    }

    #[test]
    fn a_routing_peer_serving_several_published_topics_is_preferred() {
        let p = peers(5);
        let (a, b) = (topic("a"), topic("b"));
        // p0 (on a) and p2 (on b) are pinned: each topic is one subscriber short.
        // p1 serves both, p3 and p4 one each: p1 alone closes both gaps.
        let input = KeepInput {
            peers: vec![
                (p[0], vec![a.clone()]),
                (p[1], vec![a.clone(), b.clone()]),
                (p[2], vec![b.clone()]),
                (p[3], vec![a.clone()]),
                (p[4], vec![b.clone()]),
            ],
            foreign_topics: [a, b].into_iter().collect(),
            pinned: [p[0], p[2]].into_iter().collect(),
            routing: 1,
            ..Default::default()
        };
        let keep = keep_set(&input);
        let expected: HashSet<PeerId> = [p[0], p[1], p[2]].into_iter().collect();
        assert_eq!(keep, expected);
    }

    #[test]
    fn pinned_peers_that_are_not_connected_are_not_counted() {
        let p = peers(3);
        let input = KeepInput {
            peers: vec![(p[0], Vec::new())],
            pinned: [p[1], p[2]].into_iter().collect(),
            routing: 0,
            ..Default::default()
        };
        assert!(keep_set(&input).is_empty());
    }
}
