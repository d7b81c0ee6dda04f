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
    /// The data directory's database is open in another node (or one still
    /// stopping) — checked for a while before this is returned.
    #[error("store: {0} is in use by another node")]
    StoreInUse(String),
    /// The node has stopped; the command could not be delivered.
    #[error("the node has stopped")]
    Stopped,
    /// The protocol refused a command.
    #[error(transparent)]
    Protocol(#[from] starling_protocol::ProtocolError),
    /// A setting of the `starling` binary (config file or flag) is invalid; the
    /// field is named as the config file spells it.
    #[error("invalid config: {field}: {reason}")]
    Setting {
        /// The field, e.g. `skills[1].level` or `handlers.echo.command`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The config file cannot be read or is not valid TOML of the expected shape.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What is wrong (the TOML parser names the key and the line).
        reason: String,
    },
    /// A file or socket operation of the binary failed.
    #[error("{what}: {reason}")]
    Io {
        /// What was being done, e.g. `cannot listen on 127.0.0.1:7401 (control_api)`.
        what: String,
        /// The operating system's answer.
        reason: String,
    },
    /// The control API could not be reached or answered something unreadable.
    #[error("control API at {url}: {reason}")]
    Http {
        /// The API's base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The control API refused a request.
    #[error("control API answered {status}: {message}")]
    Api {
        /// The HTTP status code.
        status: u16,
        /// The error message from the JSON body.
        message: String,
    },
    /// A task the command waited for failed.
    #[error("task {task} failed: {reason}")]
    TaskFailed {
        /// The task id.
        task: String,
        /// Why it failed.
        reason: String,
    },
}

impl NodeError {
    /// The process exit code the `starling` binary uses for this error: 2 for a bad
    /// configuration or invocation (the user must change something), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Config { .. } | NodeError::Setting { .. } | NodeError::ConfigFile { .. } => {
                2
            }
            NodeError::Protocol(starling_protocol::ProtocolError::Config { .. }) => 2,
            _ => 1,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
