//! starling-node: a Starling agent as a libp2p peer.
//!
//! One actor, one loop ([`node`]): `tokio::select!` over the swarm, a bounded command
//! channel, executor reports and the protocol's next deadline. The loop moves bytes;
//! every decision is made by `starling_protocol::Agent`.
//!
//! Modules:
//! - [`config`] — [`NodeConfig`] with documented defaults.
//! - [`behaviour`] — the one `NetworkBehaviour` (gossipsub, Kademlia, identify, ping,
//!   request-response, connection limits).
//! - [`codec`] — length-prefixed direct envelopes over request-response.
//! - [`swarm`] — transports (TCP, QUIC, memory) under the agent's identity.
//! - [`node`] — the event loop and [`Handle`].
//! - [`handler`] — [`TaskHandler`] and [`SyntheticHandler`].
//! - [`penalty`] — scoring peers down for bad direct input; bans.
//! - [`flood`] — per-sender broadcast budgets against announcement floods.
//! - [`records`] — the Kademlia record store (providers answered in turn).
//! - [`store`] — what survives a restart (redb in the data directory).
//! - [`metrics`] — Prometheus counters (Starling's and libp2p's).
//! - [`faults`] — partitions, latency and loss on in-process links (simulation).
//! - [`error`] — [`NodeError`].
//! - [`app`] — the `starling` binary: config file, handlers, control API, CLI
//!   commands.

pub mod app;
pub mod behaviour;
pub mod codec;
pub mod config;
pub mod error;
pub mod faults;
pub mod flood;
pub mod handler;
pub mod keepalive;
pub mod metrics;
pub mod node;
pub mod penalty;
pub mod records;
pub mod store;
pub mod swarm;

pub use config::NodeConfig;
pub use error::{NodeError, Result};
pub use faults::LinkFaults;
pub use handler::{PartFuture, PartOutcome, ProgressSink, SyntheticHandler, TaskHandler};
pub use node::{
    FinishedTask, GroupInfo, Handle, MeshStatus, NodeEvent, PeerInfo, TaskInfo, TopicStatus, spawn,
};

#[cfg(test)]
mod tests;
