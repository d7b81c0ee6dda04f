//! The crate's error type.

/// Everything that can go wrong in the protocol layer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Input bytes are larger than allowed; refused before decoding.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The bound.
        limit: usize,
    },
    /// The bytes do not decode (truncated, malformed, a cap exceeded, trailing bytes).
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The envelope's version is not one this build speaks.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// The signature does not verify with the sender's key.
    #[error("bad signature from {0}")]
    BadSignature(String),
    /// The envelope is addressed to another agent or topic.
    #[error("envelope addressed elsewhere: {0}")]
    WrongAudience(String),
    /// The envelope is older or newer than the freshness window allows.
    #[error("stale envelope: sent {age_ms} ms from now, window is ±{window_ms} ms")]
    Stale {
        /// Signed time minus local time (negative: from the past).
        age_ms: i64,
        /// The allowed skew.
        window_ms: u64,
    },
    /// The envelope (sender, seq) was already seen.
    #[error("replayed envelope seq {seq} from {sender}")]
    Replay {
        /// The sender.
        sender: String,
        /// The reused sequence number.
        seq: u64,
    },
    /// A message field is out of range.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A key file is missing, unreadable, or not a key.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid config: {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A local command cannot be carried out.
    #[error("command refused: {0}")]
    Refused(String),
    /// The group document refused something.
    #[error(transparent)]
    Crdt(#[from] starling_crdt::CrdtError),
}

/// Result alias for this crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
