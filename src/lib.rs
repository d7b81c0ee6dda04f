//! Starling: a peer-to-peer mesh in which autonomous agents find each other by
//! skill, form temporary working groups, run a task together and dissolve —
//! with no hub, no broker and no leader.
//!
//! This facade re-exports the workspace crates:
//! - [`crdt`]: working groups as signed automerge documents.
//! - [`protocol`]: identity, signed envelopes and the coordination state machine.
//! - [`node`]: an agent as a libp2p peer.

pub use starling_crdt as crdt;
pub use starling_node as node;
pub use starling_protocol as protocol;
