//! starling-crdt: working groups as signed automerge documents.
//!
//! One automerge document per working group records who was invited, who accepted,
//! who failed, the task's status, and each member's progress, checkpoint and result.
//! Every agent writes with its ed25519 public key as automerge actor id, and every
//! change travels signed, so any member can relay any change and any receiver can
//! check who wrote it. Who is in the group is a pure function of the document.
//!
//! No tokio, no libp2p: time is an argument (`now_ms`) and the crate does no I/O.
//!
//! Modules:
//! - [`key`] — [`AgentKey`], the 32-byte public key naming an actor.
//! - [`limits`] — [`Limits`], the bounds on everything taken from peers.
//! - [`signed`] — [`SignedChange`], signing and verification of changes.
//! - [`schema`] — the document layout, [`GroupSpec`] and the status types.
//! - [`permissions`] — write rules checked on every remote change.
//! - [`doc`] — [`GroupDoc`], applying remote changes, save and load.
//! - [`edits`] — local writes (invite, accept, progress, result, verdicts, status).
//! - [`view`] — the reducer, [`WorkingGroup`] and the coordinator chain.
//! - [`sync`] — anti-entropy, [`SyncMessage`].
//! - [`wire`] — bounded encodings of change batches.
//! - [`error`] — [`CrdtError`].

pub mod doc;
pub mod edits;
pub mod error;
pub mod key;
pub mod limits;
pub mod permissions;
pub mod schema;
pub mod signed;
pub mod sync;
pub mod view;
pub mod wire;

pub use automerge::ChangeHash;
pub use doc::{ApplyReport, GroupDoc};
pub use error::{CrdtError, Result};
pub use key::AgentKey;
pub use limits::Limits;
pub use schema::{GroupSpec, MemberResult, MemberStatus, SkillNeed, TaskOutcome, TaskStatus};
pub use signed::{SignedChange, VerifiedChange};
pub use sync::SyncMessage;
pub use view::{MemberView, SkillSlot, WorkingGroup, reduce};
pub use wire::{decode_batch, encode_batch};

#[cfg(test)]
mod tests;
