//! The crate's error type.

use crate::AgentKey;

/// Everything that can go wrong when a group document reads, writes or takes in input.
///
/// Errors about input from peers never leave the document half-changed: a rejected
/// change is not applied, and nothing after it in a batch is lost because of it.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CrdtError {
    /// The input is larger than the configured bound; it was rejected before parsing.
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected input.
        size: usize,
        /// The bound it exceeded.
        limit: usize,
    },
    /// A batch or sync message carries more items than allowed.
    #[error("{what}: {count} items exceed the limit of {limit}")]
    TooMany {
        /// What was counted (changes, heads, ...).
        what: &'static str,
        /// How many were announced or sent.
        count: u64,
        /// The bound it exceeded.
        limit: u64,
    },
    /// The bytes are not a valid encoding of the expected structure.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The change bytes are not a single uncompressed automerge change.
    #[error("not an uncompressed automerge change: {0}")]
    NotAChange(String),
    /// The change's automerge actor is not the key that signed it.
    #[error("change actor {actor} is not its signer {signer}")]
    ActorMismatch {
        /// The actor id written in the change.
        actor: String,
        /// The key that claims to have signed it.
        signer: AgentKey,
    },
    /// The signature does not verify with the signer's key.
    #[error("bad signature on change from {0}")]
    BadSignature(AgentKey),
    /// The change is not for this group (its signature binds another group id).
    #[error("change does not belong to this group")]
    WrongGroup,
    /// The same actor produced two different changes with the same sequence number.
    /// The actor is recorded in [`crate::GroupDoc::equivocators`] so it can be evicted.
    #[error("equivocation: {actor} signed two different changes with seq {seq}")]
    Equivocation {
        /// The equivocating actor.
        actor: AgentKey,
        /// The sequence number it used twice.
        seq: u64,
    },
    /// The change writes somewhere its author may not write.
    #[error("forbidden write by {actor}: {reason}")]
    ForbiddenWrite {
        /// The author of the change.
        actor: AgentKey,
        /// What it tried to do.
        reason: String,
    },
    /// The first change of the group is not a valid genesis by the expected initiator.
    #[error("invalid genesis change: {0}")]
    InvalidGenesis(String),
    /// The document has not received its genesis change yet.
    #[error("the group document has no genesis change yet")]
    NotInitialized,
    /// Too many changes are waiting for missing dependencies; this one was dropped
    /// (anti-entropy will offer it again once its dependencies arrive).
    #[error("pending buffer full ({0} changes waiting for dependencies)")]
    PendingFull(usize),
    /// The document holds as many changes as it is allowed to.
    #[error("document is full ({0} changes)")]
    DocumentFull(usize),
    /// A local write was refused because this agent has no authority for it.
    #[error("not authorised: {0}")]
    NotAuthorised(String),
    /// A local write had an invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Automerge refused an operation (a bug or a corrupt document).
    #[error("automerge: {0}")]
    Automerge(String),
}

impl From<automerge::AutomergeError> for CrdtError {
    fn from(e: automerge::AutomergeError) -> Self {
        CrdtError::Automerge(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = CrdtError> = std::result::Result<T, E>;
