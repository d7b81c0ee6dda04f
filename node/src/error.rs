//! The node's error type.

/// What can go wrong starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid; the field is named.
    #[error("invalid config: {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The libp2p identity derived from the agent key does not match its AgentId.
    #[error("identity mismatch: libp2p peer id {peer} but agent id {agent}")]
    IdentityMismatch {
        /// The PeerId libp2p computed.
        peer: String,
        /// The AgentId the protocol computed.
        agent: String,
    },
    /// A transport or behaviour could not be built.
    #[error("cannot build the swarm: {0}")]
    Swarm(String),
    /// Listening on an address failed (e.g. the port is in use).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The data directory's database failed or belongs to another agent.
    #[error("store: {0}")]
    Store(String),
    /// The node has stopped; the command could not be delivered.
    #[error("the node has stopped")]
    Stopped,
    /// The protocol refused a command.
    #[error(transparent)]
    Protocol(#[from] starling_protocol::ProtocolError),
}

/// Result alias for this crate.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
