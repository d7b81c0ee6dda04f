//! The node's network behaviour: one struct, every part documented.

use std::time::Duration;

use libp2p::{
    StreamProtocol, allow_block_list, connection_limits, gossipsub, identify, identity, kad, ping,
    request_response, swarm::NetworkBehaviour,
};
use starling_protocol::codec::MAX_MESSAGE_BYTES;

use crate::{
    NodeConfig, NodeError, Result,
    codec::{DirectCodec, DirectFrame},
    keepalive::{Pins, QuietGossip},
};

/// Topic prefix every Starling topic starts with.
pub const TOPIC_PREFIX: &str = "starling/v1/";
/// How long Kademlia records (cards, provider records) live unless republished.
pub const RECORD_TTL: Duration = Duration::from_secs(30 * 60);

/// Peers a Kademlia record is stored on (Kademlia's replication factor).
pub const REPLICATION: usize = 6;
/// Kademlia protocol name.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/starling/kad/1.0.0");

/// Accepts only `starling/v1/` topics.
#[derive(Debug, Clone, Default)]
pub struct PrefixFilter;

impl gossipsub::TopicSubscriptionFilter for PrefixFilter {
    fn can_subscribe(&mut self, topic_hash: &gossipsub::TopicHash) -> bool {
        topic_hash.as_str().starts_with(TOPIC_PREFIX)
    }
}

/// The gossipsub flavour used: identity topics, prefix filter with a topic cap.
pub type Gossipsub = gossipsub::Behaviour<
    gossipsub::IdentityTransform,
    gossipsub::MaxCountSubscriptionFilter<PrefixFilter>,
>;

/// What the behaviour reports to the node.
#[derive(Debug)]
pub enum StarlingEvent {
    /// Gossip (messages to validate).
    Gossipsub(gossipsub::Event),
    /// Kademlia (inbound records to validate, query results).
    Kad(kad::Event),
    /// Identify (peers' listen addresses).
    Identify(Box<identify::Event>),
    /// Ping (liveness).
    Ping(ping::Event),
    /// Direct envelopes.
    Direct(request_response::Event<DirectFrame, u8>),
}

macro_rules! from_event {
    ($ty:ty, $variant:ident, $wrap:expr) => {
        impl From<$ty> for StarlingEvent {
            fn from(e: $ty) -> Self {
                StarlingEvent::$variant($wrap(e))
            }
        }
    };
}
from_event!(gossipsub::Event, Gossipsub, |e| e);
from_event!(kad::Event, Kad, |e| e);
from_event!(identify::Event, Identify, Box::new);
from_event!(ping::Event, Ping, |e| e);
from_event!(request_response::Event<DirectFrame, u8>, Direct, |e| e);

impl From<std::convert::Infallible> for StarlingEvent {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

/// Everything a Starling node speaks.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "StarlingEvent")]
pub struct StarlingBehaviour {
    // The two behaviours that refuse connections come first: the derived behaviour
    // asks its fields in order, and a refusal must come before any other field has
    // counted the connection as established.
    /// Bounds on connections.
    pub limits: connection_limits::Behaviour,
    /// Peers refused at the connection level: banned peers, and peers across a
    /// simulated partition.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Task announcements on `starling/v1/skill/<name>` topics. Messages are anonymous
    /// at the gossipsub layer (`MessageAuthenticity::Anonymous`): the envelope inside is
    /// signed, and the node verifies it once and reports Accept/Reject/Ignore, so an
    /// invalid message is never forwarded and duplicates are dropped before any
    /// signature check. Message ids are the SHA-256 of the envelope bytes. Its
    /// streams do not keep a connection open; its meshes do (see `keepalive`).
    pub gossipsub: QuietGossip,
    /// Routing and discovery: agents provide `/starling/skill/<name>` and store their
    /// signed card under `/starling/agent/<peer id>`. Server mode; inbound records are
    /// validated by the node before they are stored (`StoreInserts::FilterBoth`).
    pub kad: kad::Behaviour<crate::records::RotatingStore>,
    /// Learns peers' listen addresses (fed into Kademlia's routing table).
    pub identify: identify::Behaviour,
    /// Liveness; also required by other implementations before they route to us.
    pub ping: ping::Behaviour,
    /// Direct envelopes: offers, invitations, acceptances, updates, CRDT sync.
    pub direct: request_response::Behaviour<DirectCodec>,
    /// The connections the node chose to keep (groups, spare subscribers, routing
    /// peers); every other connection closes once idle (see `keepalive`).
    pub pins: Pins,
}

/// Gossipsub message id: SHA-256 of the data (stable across implementations and
/// Rust releases).
fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    use sha2::{Digest, Sha256};
    gossipsub::MessageId::from(Sha256::digest(&message.data).to_vec())
}

impl StarlingBehaviour {
    /// Builds the behaviour for `key` with the node's settings.
    pub fn new(key: &identity::Keypair, config: &NodeConfig) -> Result<Self> {
        let err = |e: String| NodeError::Swarm(e);
        let cards_topic = gossipsub::IdentTopic::new(starling_protocol::card::CARDS_TOPIC).hash();
        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .message_id_fn(message_id)
            .validate_messages()
            .max_transmit_size(MAX_MESSAGE_BYTES)
            .heartbeat_interval(config.gossip_heartbeat)
            .mesh_n(config.mesh_n)
            .mesh_n_low(config.mesh_n_low())
            .mesh_n_high(config.mesh_n * 2)
            .mesh_outbound_min(1.min(config.mesh_n / 2))
            .gossip_lazy(config.mesh_n)
            // The cards topic has a thin mesh of its own (`cards_mesh_n`): every
            // agent subscribes, a card is published rarely, and it must reach
            // agents that joined long before it, whose join connections are long
            // closed. gossipsub keeps the mesh peers connected — often peers kept
            // for a skill topic anyway.
            .mesh_n_for_topic(config.cards_mesh_n, cards_topic.clone())
            .mesh_n_low_for_topic(
                config
                    .cards_mesh_n
                    .saturating_sub(1)
                    .max(config.cards_mesh_n.min(1)),
                cards_topic.clone(),
            )
            .mesh_n_high_for_topic(config.cards_mesh_n * 2, cards_topic.clone())
            .mesh_outbound_min_for_topic(config.cards_mesh_n / 2, cards_topic)
            .build()
            .map_err(|e| err(format!("gossipsub config: {e}")))?;
        let filter = gossipsub::MaxCountSubscriptionFilter {
            filter: PrefixFilter,
            max_subscribed_topics: 64,
            max_subscriptions_per_request: 64,
        };
        let mut gossipsub = Gossipsub::new_with_subscription_filter(
            gossipsub::MessageAuthenticity::Anonymous,
            gossip_config,
            filter,
        )
        .map_err(|e| err(format!("gossipsub: {e}")))?;
        gossipsub
            .with_peer_score(
                score_params(config),
                gossipsub::PeerScoreThresholds::default(),
            )
            .map_err(|e| err(format!("peer scoring: {e}")))?;

        let peer_id = key.public().to_peer_id();
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            // One query path, not disjoint ones: disjoint paths contact about three
            // times the peers per lookup, and with idle connections closed each
            // contact is a fresh handshake. What a lookup returns is verified
            // anyway (cards are signed, providers are dialled and identified), so an
            // eclipsing peer can hide agents, not forge them.
            .disjoint_query_paths(false)
            .set_query_timeout(Duration::from_secs(30))
            // Six replicas of each record (Kademlia's default is twenty): a record
            // is lost only if all six holders leave within half its lifetime (it
            // is republished then), and cards travel by gossip besides. A walk
            // ends once the six closest peers have answered: measured on the
            // 100-agent simulation, a join took a third less time than with ten.
            .set_replication_factor(
                std::num::NonZeroUsize::new(REPLICATION).unwrap_or(kad::K_VALUE),
            )
            // Buckets keep Kademlia's twenty entries, though each of the 256
            // reserves room for all of them up front (1.6 MiB per agent): whenever
            // a peer enters a table of fewer than twenty, libp2p-kad bootstraps
            // again, whatever the configuration. With eight per bucket, tables of
            // the 100-agent simulation sat below that mark, and in the ten seconds
            // after the mesh was up agents ran 56 bootstraps and opened 220
            // connections (2 with twenty), at 1.9 ms of CPU per agent per second
            // instead of 1.35.
            // Records of agents that left expire within half an hour. Live agents'
            // are republished at half their lifetime, by their publisher
            // (publication) and by the peers holding them (replication), so a
            // record never expires while its agent lives. The node republishes its
            // card sooner when it changes materially (see `discovery`).
            .set_record_ttl(Some(RECORD_TTL))
            .set_publication_interval(Some(RECORD_TTL / 2))
            .set_replication_interval(Some(RECORD_TTL / 2))
            .set_provider_record_ttl(Some(RECORD_TTL))
            .set_provider_publication_interval(Some(RECORD_TTL / 2))
            // The node walks its own id to join and refreshes the table itself,
            // rarely (see `discovery`): a bootstrap walks the whole key space and
            // dials the peers it meets.
            .set_periodic_bootstrap_interval(None);
        let mut kad = kad::Behaviour::with_config(
            peer_id,
            crate::records::RotatingStore::new(peer_id),
            kad_config,
        );
        kad.set_mode(Some(kad::Mode::Server));

        // No address cache in identify: it would offer every address a peer
        // reports when something dials it — loopback ones too, which on another
        // host reach the dialler itself or a neighbour, and the wrong peer id fails
        // the whole dial. The node keeps the usable addresses itself (Kademlia's
        // routing table, and its own list that direct sends dial with).
        let identify = identify::Behaviour::new(
            identify::Config::new("/starling/1.0.0".into(), key.public()).with_cache_size(0),
        );
        let direct = request_response::Behaviour::with_codec(
            DirectCodec,
            [(
                crate::codec::DIRECT_PROTOCOL,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(config.request_timeout),
        );
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(2))
                .with_max_pending_incoming(Some(config.max_connections / 2 + 1)),
        );
        Ok(StarlingBehaviour {
            gossipsub: QuietGossip(gossipsub),
            kad,
            identify,
            // Liveness of group members is the protocol's heartbeats' job; ping only
            // keeps idle links honest, so once a minute is enough (default: 15 s).
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(60))),
            direct,
            limits,
            blocked: Default::default(),
            pins: Pins::default(),
        })
    }
}

/// Peer scoring with the skill topics listed, so a rejected message costs its
/// forwarder on that topic.
///
/// gossipsub's IP colocation penalty (more than ten peers behind one address score
/// below zero, and a peer below zero is neither grafted nor accepted into a mesh)
/// stays on for real addresses, but not for loopback: agents on one host talking
/// over 127.0.0.1 are one operator's, not a Sybil swarm — and with the penalty a
/// host running a few dozen agents could never form its meshes.
pub fn score_params(config: &NodeConfig) -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams::default();
    params.ip_colocation_factor_whitelist.extend([
        std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]);
    for skill in &config.agent.skills {
        let topic = gossipsub::IdentTopic::new(starling_protocol::skill_topic(&skill.name));
        params.topics.insert(topic.hash(), skill_topic_params());
    }
    params
}

/// Score parameters of one skill topic: rejected messages weigh heavily.
pub fn skill_topic_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..gossipsub::TopicScoreParams::default()
    }
}
