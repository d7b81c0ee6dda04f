//! `NodeConfig`: the agent's protocol config plus networking, with documented defaults.

use std::{path::PathBuf, time::Duration};

use libp2p::Multiaddr;
use starling_protocol::{AgentConfig, Keypair};

use crate::{NodeError, Result};

/// A node's configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Skills, capacity and protocol timing.
    pub agent: AgentConfig,
    /// The agent's key; it is also the libp2p identity.
    pub keypair: Keypair,
    /// Addresses to listen on (`/ip4/…/tcp/…`, `/ip4/…/udp/…/quic-v1`, `/memory/<n>`).
    /// Default: none (the caller chooses).
    pub listen: Vec<Multiaddr>,
    /// Peers to join the mesh through. One is enough. Default: none.
    pub bootstrap: Vec<Multiaddr>,
    /// Where state that must survive a restart lives (skill metrics, reputation,
    /// initiated tasks and results, group documents). Default: none — nothing is
    /// kept (simulations).
    pub data_dir: Option<PathBuf>,
    /// How long a direct message may take before it counts as failed. Default 10 s.
    pub request_timeout: Duration,
    /// Failed direct messages are tried again this many times. Default 2.
    pub send_retries: u32,
    /// Established connections at most, a hard bound (inbound bursts included).
    /// Default 256. What a node keeps in steady state is far less: see
    /// `lookup_connection_timeout` and `idle_connection_timeout`.
    pub max_connections: u32,
    /// A connection that carried direct messages stays open this long after the
    /// last one, whatever else pins it. Default 10 s: far above a group's
    /// heartbeat interval and an offer–invitation round, so no exchange is cut
    /// and a redial is rare.
    pub idle_connection_timeout: Duration,
    /// A connection nothing pins (no gossip mesh, no open group, no direct
    /// message lately, not a spare or routing peer) closes once no stream has
    /// been open on it for this long: a Kademlia request, a record on its way,
    /// identify. Default 1 s: a join's walks visit dozens of peers once each,
    /// and their connections should not outlive the walk by much (at 2 s, the
    /// 100-agent simulation held 20–25% more heap when its mesh was up, most of
    /// it in the last joiners' walk connections).
    pub lookup_connection_timeout: Duration,
    /// Connections kept at least, whatever else needs them, so that a node with no
    /// mesh and no groups still has a way into the mesh. Default 4.
    pub routing_peers: usize,
    /// Gossipsub mesh degree. Default 4: measured here, degree 3 instead of 6 cut CPU
    /// about 40 % at 100 peers; 4 keeps a spare path per topic.
    pub mesh_n: usize,
    /// Gossip mesh degree of the cards topic, which every agent subscribes to.
    /// Default 3 (at most twice that): the overlay that carries a card to
    /// agents that joined long before it. 0: no mesh there — a card goes only to
    /// the connected agents and on by gossip (IHAVE/IWANT), and a small mesh
    /// keeps no connection for cards' sake.
    pub cards_mesh_n: usize,
    /// Gossipsub heartbeat. Default 700 ms: new skill topics form their mesh within a
    /// second; the message cache covers history_length (5) heartbeats.
    pub gossip_heartbeat: Duration,
    /// How often to check that each of this agent's skill topics has a mesh, and look
    /// up more providers of the skill if not. Card and provider records are published
    /// on the 1st and 4th check, then republished by Kademlia every 10 min.
    /// Default 10 s: a check with full meshes costs nothing on the wire.
    pub discovery_interval: Duration,
    /// Bounded queue of commands from handles. Default 256.
    pub command_queue: usize,
    /// Events kept for slow subscribers before they lag (a subscriber that falls
    /// further behind is told how many it missed: the API's SSE stream sends a
    /// `lagged` event). Default 512: the ring is allocated up front, per node, and a
    /// subscriber that keeps up needs a handful.
    pub event_queue: usize,
    /// Allowed clock skew for envelopes (ms). Default 30 s.
    pub replay_skew_ms: u64,
    /// Broadcasts (announcements, alerts) accepted per sender per second, sustained.
    /// Default 20: an initiator re-announces each task lacking agents about once a
    /// second, one envelope per missing skill, so this carries a dozen such tasks.
    pub broadcast_rate: f64,
    /// Broadcasts accepted per sender at once. Default 100: announcing dozens of
    /// multi-skill tasks together stays within it.
    pub broadcast_burst: u32,
    /// Seed of the protocol's deterministic randomness. Default 0 (set per agent in
    /// simulations to replay runs).
    pub rng_seed: u64,
    /// Faults on this node's links (partitions, latency, loss), shared by the nodes
    /// of a simulated mesh. Default: none.
    pub link_faults: Option<std::sync::Arc<crate::faults::LinkFaults>>,
}

impl NodeConfig {
    /// A config with defaults for `keypair` and `agent`.
    pub fn new(keypair: Keypair, agent: AgentConfig) -> Self {
        NodeConfig {
            agent,
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            data_dir: None,
            request_timeout: Duration::from_secs(10),
            send_retries: 2,
            max_connections: 256,
            idle_connection_timeout: Duration::from_secs(10),
            lookup_connection_timeout: Duration::from_secs(1),
            routing_peers: 4,
            mesh_n: 4,
            cards_mesh_n: 3,
            gossip_heartbeat: Duration::from_millis(700),
            discovery_interval: Duration::from_secs(10),
            command_queue: 256,
            event_queue: 512,
            replay_skew_ms: starling_protocol::replay::DEFAULT_SKEW_MS,
            broadcast_rate: 20.0,
            broadcast_burst: 100,
            rng_seed: 0,
            link_faults: None,
        }
    }

    /// The fewest peers a skill topic's gossip mesh keeps before it grafts more.
    pub fn mesh_n_low(&self) -> usize {
        self.mesh_n.saturating_sub(1).max(1)
    }

    /// Checks every field; run before anything starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(NodeError::Config {
                field,
                reason: reason.into(),
            })
        };
        self.agent.validate()?;
        if self.mesh_n == 0 || self.mesh_n > 32 {
            return bad("mesh_n", "must be within 1..=32");
        }
        if self.cards_mesh_n > 32 {
            return bad("cards_mesh_n", "must be within 0..=32");
        }
        if self.max_connections < 2 {
            return bad("max_connections", "must be at least 2");
        }
        if self.command_queue == 0 || self.event_queue == 0 {
            return bad("command_queue", "queues must hold at least one item");
        }
        if self.idle_connection_timeout < Duration::from_secs(1) {
            return bad("idle_connection_timeout", "must be at least 1 s");
        }
        if self.lookup_connection_timeout < Duration::from_millis(500)
            || self.lookup_connection_timeout > self.idle_connection_timeout
        {
            return bad(
                "lookup_connection_timeout",
                "must be at least 500 ms and at most idle_connection_timeout",
            );
        }
        if self.request_timeout.is_zero()
            || self.gossip_heartbeat.is_zero()
            || self.discovery_interval.is_zero()
        {
            return bad("request_timeout", "durations must be positive");
        }
        if !(self.broadcast_rate.is_finite() && self.broadcast_rate > 0.0) {
            return bad("broadcast_rate", "must be a positive number");
        }
        if self.broadcast_burst == 0 {
            return bad("broadcast_burst", "must be at least 1");
        }
        if self.replay_skew_ms < 1_000 {
            return bad("replay_skew_ms", "must be at least 1000 ms");
        }
        Ok(())
    }
}
