//! Signed changes: an automerge change plus its author's ed25519 signature.
//!
//! The signature covers a domain-separated, length-prefixed byte string:
//! `b"starling/crdt-change/v1"`, the group id (u32 length + bytes) and the change's
//! 32-byte hash. The hash is automerge's SHA-256 over the change chunk, so signing it
//! binds the exact change bytes. The signature travels and is stored with the change,
//! so any member can relay it and any receiver can check it.

use automerge::{Change, ChangeHash};
use ed25519_dalek::{Signer, SigningKey};

use crate::{AgentKey, CrdtError, Limits, Result};

/// Domain separator of change signatures.
pub const CHANGE_DOMAIN: &[u8] = b"starling/crdt-change/v1";

/// Magic bytes that open every automerge chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of an uncompressed change.
const CHUNK_TYPE_CHANGE: u8 = 1;

/// A change as it travels between replicas: who signed it, the raw (uncompressed)
/// change bytes, and the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedChange {
    /// The signer; must equal the change's automerge actor.
    pub signer: AgentKey,
    /// The uncompressed automerge change chunk.
    pub bytes: Vec<u8>,
    /// Ed25519 signature over [`signing_bytes`].
    pub signature: [u8; 64],
}

impl std::fmt::Debug for SignedChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedChange")
            .field("signer", &self.signer)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The exact bytes a change signature covers.
pub fn signing_bytes(group_id: &[u8], hash: &ChangeHash) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CHANGE_DOMAIN.len() + 4 + group_id.len() + 32);
    msg.extend_from_slice(CHANGE_DOMAIN);
    msg.extend_from_slice(&(group_id.len() as u32).to_be_bytes());
    msg.extend_from_slice(group_id);
    msg.extend_from_slice(&hash.0);
    msg
}

impl SignedChange {
    /// Signs a change this agent wrote.
    pub(crate) fn sign(signer: &SigningKey, group_id: &[u8], change: &Change) -> Self {
        let signature = signer
            .sign(&signing_bytes(group_id, &change.hash()))
            .to_bytes();
        SignedChange {
            signer: AgentKey::of(signer),
            bytes: change.raw_bytes().to_vec(),
            signature,
        }
    }

    /// Checks size, shape, actor and signature, in that order (cheap checks first), and
    /// returns the parsed change. Nothing is decompressed: compressed chunks are refused.
    pub fn verify(&self, group_id: &[u8], limits: &Limits) -> Result<VerifiedChange> {
        if self.bytes.len() > limits.max_change_bytes {
            return Err(CrdtError::TooLarge {
                size: self.bytes.len(),
                limit: limits.max_change_bytes,
            });
        }
        if self.bytes.len() < 10 || self.bytes[..4] != CHUNK_MAGIC {
            return Err(CrdtError::NotAChange("missing chunk header".into()));
        }
        if self.bytes[8] != CHUNK_TYPE_CHANGE {
            return Err(CrdtError::NotAChange(format!(
                "chunk type {}",
                self.bytes[8]
            )));
        }
        let change =
            Change::try_from(&self.bytes[..]).map_err(|e| CrdtError::NotAChange(e.to_string()))?;
        let actor = AgentKey::from_actor(change.actor_id());
        if actor != Some(self.signer) {
            return Err(CrdtError::ActorMismatch {
                actor: change.actor_id().to_hex_string(),
                signer: self.signer,
            });
        }
        let hash = change.hash();
        if !self
            .signer
            .verify_strict(&signing_bytes(group_id, &hash), &self.signature)
        {
            return Err(CrdtError::BadSignature(self.signer));
        }
        Ok(VerifiedChange {
            signed: self.clone(),
            change,
            hash,
        })
    }
}

/// A change whose size, shape, actor and signature have been checked.
#[derive(Debug, Clone)]
pub struct VerifiedChange {
    /// The change as received, signature included (kept for relaying).
    pub signed: SignedChange,
    /// The parsed automerge change.
    pub change: Change,
    /// Its hash.
    pub hash: ChangeHash,
}

impl VerifiedChange {
    /// The author (= signer = automerge actor).
    pub fn actor(&self) -> AgentKey {
        self.signed.signer
    }

    /// The author's sequence number of this change.
    pub fn seq(&self) -> u64 {
        self.change.seq()
    }
}
