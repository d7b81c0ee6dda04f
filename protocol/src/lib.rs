//! starling-protocol: messages, identity, signed envelopes, the codec, scoring and
//! the coordination state machine. No I/O, no tokio, no libp2p: time and randomness
//! are inputs, so everything here is tested with a fake clock.
//!
//! Modules:
//! - [`agent`] — [`Agent`], the coordination state machine, and its inputs and outputs.
//! - [`config`] — [`AgentConfig`] with documented defaults.
//! - [`scoring`] — offer ranking, priority ageing, skill metrics and reputation.
//! - [`identity`] — [`Keypair`] and [`AgentId`] (displayed as the libp2p PeerId).
//! - [`message`] — every message agents exchange and the types they carry.
//! - [`codec`] — the one place bincode is used; bounded decoding.
//! - [`envelope`] — [`SignedEnvelope`]: domain-separated signatures over the exact wire bytes.
//! - [`replay`] — [`ReplayGuard`]: freshness window and per-sender duplicate detection.
//! - [`card`] — [`AgentCard`], the signed self-description stored in the DHT.
//! - [`consensus`] — signed votes, 2f+1 tallies and verifiable certificates.
//! - [`error`] — [`ProtocolError`].

pub mod agent;
pub mod card;
pub mod codec;
pub mod config;
pub mod consensus;
pub mod envelope;
pub mod error;
pub mod identity;
pub mod message;
pub mod replay;
pub mod scoring;

pub use agent::{
    Agent, Assignment, CardNews, Command, Event, Input, Output, PartResult, TaskSpec, Timestamp,
};
pub use card::{AgentCard, SignedCard};
pub use config::AgentConfig;
pub use envelope::{Audience, OpenedEnvelope, SeqGenerator, SignedEnvelope};
pub use error::{ProtocolError, Result};
pub use identity::{AgentId, Keypair};
pub use message::{
    Level, Message, Outcome, Priority, RejectReason, Skill, SkillRequirement, TaskAnnounce, TaskId,
    skill_topic,
};
pub use replay::ReplayGuard;
pub use starling_crdt as crdt;

#[cfg(test)]
mod tests;
