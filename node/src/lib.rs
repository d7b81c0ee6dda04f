//! starling-node: the libp2p swarm and the agent runtime.
//!
//! Not built yet. This crate will hold the node actor that drives
//! `starling_protocol::Agent` over a libp2p swarm (gossipsub, Kademlia,
//! request-response), persistence, and the `starling` binary.
