//! Building the swarm: TCP + noise + yamux, QUIC, and the memory transport for
//! in-process use, all under the agent's own ed25519 identity.

use std::time::Duration;

use libp2p::{
    PeerId, Swarm, SwarmBuilder, Transport,
    core::{transport::MemoryTransport, upgrade::Version},
    identity, noise, tcp, yamux,
};
use starling_protocol::AgentId;

use crate::{NodeConfig, NodeError, Result, behaviour::StarlingBehaviour};

/// The libp2p keypair of an agent key (the same 32 secret bytes).
pub fn libp2p_keypair(config: &NodeConfig) -> Result<identity::Keypair> {
    identity::Keypair::ed25519_from_bytes(config.keypair.secret_bytes())
        .map_err(|e| NodeError::Swarm(format!("ed25519 key: {e}")))
}

/// The PeerId of an agent (same key, same principal).
pub fn peer_id_of(agent: &AgentId) -> Result<PeerId> {
    PeerId::from_bytes(&agent.peer_id_bytes())
        .map_err(|e| NodeError::Swarm(format!("peer id: {e}")))
}

/// The AgentId of a peer, if it is an ed25519 identity.
pub fn agent_of(peer: &PeerId) -> Option<AgentId> {
    AgentId::from_peer_id_str(&peer.to_string()).ok()
}

/// Builds the swarm and checks that libp2p and the protocol name the agent alike.
/// Bandwidth metrics are registered in `registry`.
pub fn build(
    config: &NodeConfig,
    registry: &mut libp2p::metrics::Registry,
) -> Result<Swarm<StarlingBehaviour>> {
    let key = libp2p_keypair(config)?;
    let peer = key.public().to_peer_id().to_string();
    let agent = config.keypair.id().to_string();
    if peer != agent {
        return Err(NodeError::IdentityMismatch { peer, agent });
    }
    let behaviour = StarlingBehaviour::new(&key, config)?;
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::Swarm(format!("tcp: {e}")))?
        .with_quic()
        .with_other_transport(
            |key| -> std::result::Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default())
                    .timeout(Duration::from_secs(20)))
            },
        )
        .map_err(|e| NodeError::Swarm(format!("memory transport: {e}")))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|_| behaviour)
        .map_err(|e: std::convert::Infallible| -> NodeError { match e {} })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.lookup_connection_timeout))
        .build();
    Ok(swarm)
}
