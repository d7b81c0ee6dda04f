//! Where a node stands in the mesh: whether it has joined the DHT, and how its skill
//! topics' meshes look. What a launcher waits on before it calls a mesh up.

use std::collections::HashMap;

use libp2p::{PeerId, gossipsub::IdentTopic};

use super::{NodeActor, PeerInfo};
use crate::swarm::agent_of;

/// A node's standing in the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshStatus {
    /// The join is over: the join walk (the card's publication), and the
    /// provider publications it starts, retries included.
    pub joined: bool,
    /// Peers connected now.
    pub connections: usize,
    /// Agents whose current card this node holds (whom it can invite directly).
    pub cards: usize,
    /// One entry per skill of this agent.
    pub topics: Vec<TopicStatus>,
}

/// One skill topic as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStatus {
    /// The skill.
    pub skill: String,
    /// Peers in this node's gossip mesh of the topic.
    pub mesh_peers: usize,
    /// Connected peers that subscribe to the topic, meshed or not.
    pub subscribers: usize,
}

impl MeshStatus {
    /// Joined, and every skill topic has at least `min_mesh` mesh peers — or, for
    /// a skill, the `others` that hold it if they are fewer (`others` gives how
    /// many other agents hold each skill, where the caller knows).
    pub fn settled(&self, min_mesh: usize, others: impl Fn(&str) -> Option<usize>) -> bool {
        self.joined
            && self.topics.iter().all(|t| {
                let want = others(&t.skill).map_or(min_mesh, |n| n.min(min_mesh));
                t.mesh_peers >= want
            })
    }
}

impl NodeActor {
    /// The connected peers, with the topics each told us it subscribes to.
    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        let gossip = &self.swarm.behaviour().gossipsub;
        let mut topics: HashMap<PeerId, Vec<String>> = gossip
            .all_peers()
            .map(|(p, ts)| (*p, ts.iter().map(|t| t.to_string()).collect()))
            .collect();
        self.swarm
            .connected_peers()
            .filter_map(|p| {
                let id = agent_of(p)?;
                let mut topics = topics.remove(p).unwrap_or_default();
                topics.sort();
                Some(PeerInfo {
                    id,
                    addrs: Vec::new(),
                    topics,
                })
            })
            .collect()
    }

    pub(super) fn mesh_status(&self) -> MeshStatus {
        let gossip = &self.swarm.behaviour().gossipsub;
        let topics = self
            .agent
            .skills()
            .map(|s| {
                let hash = IdentTopic::new(starling_protocol::skill_topic(&s.name)).hash();
                let subscribers = gossip
                    .all_peers()
                    .filter(|(_, ts)| ts.contains(&&hash))
                    .count();
                TopicStatus {
                    skill: s.name.clone(),
                    mesh_peers: gossip.mesh_peers(&hash).count(),
                    subscribers,
                }
            })
            .collect();
        MeshStatus {
            joined: self.lookups.joined(),
            connections: self.swarm.connected_peers().count(),
            cards: self.agent.cards_known(),
            topics,
        }
    }
}
