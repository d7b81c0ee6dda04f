//! Anti-entropy between replicas: exchange heads, then send the missing signed changes.
//!
//! A round: A sends [`SyncMessage`] with its heads (and, if it knows B's heads, the
//! changes B lacks). B applies what came, then answers if either side still lacks
//! something: with the changes A lacks, or just its heads when A has changes B has not
//! seen. When both have the same heads nobody answers. Each message carries at most
//! `Limits::max_batch_changes` changes, in causal order; a long history takes several
//! rounds.
//!
//! Encoding (big-endian): `version: u8 = 1`, `heads: u16` count then 32 bytes each,
//! then a change batch body (see [`crate::wire`]).

use automerge::ChangeHash;

use crate::{
    ApplyReport, CrdtError, GroupDoc, Limits, Result, SignedChange,
    wire::{Reader, check_size, read_batch_body, write_batch_body},
};

const SYNC_VERSION: u8 = 1;

/// One anti-entropy message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMessage {
    /// The sender's heads after applying everything it had.
    pub heads: Vec<ChangeHash>,
    /// Changes the sender believes the receiver lacks.
    pub changes: Vec<SignedChange>,
}

impl SyncMessage {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.heads.len() * 32);
        out.push(SYNC_VERSION);
        out.extend_from_slice(&(self.heads.len() as u16).to_be_bytes());
        for h in &self.heads {
            out.extend_from_slice(&h.0);
        }
        write_batch_body(&mut out, &self.changes);
        out
    }

    /// Decodes a message within `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<SyncMessage> {
        check_size(bytes, limits)?;
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != SYNC_VERSION {
            return Err(CrdtError::Malformed(format!(
                "unknown sync version {version}"
            )));
        }
        let count = r.u16()? as usize;
        if count > limits.max_heads {
            return Err(CrdtError::TooMany {
                what: "heads",
                count: count as u64,
                limit: limits.max_heads as u64,
            });
        }
        let mut heads = Vec::with_capacity(count);
        for _ in 0..count {
            heads.push(ChangeHash(r.array::<32>()?));
        }
        let changes = read_batch_body(&mut r, limits)?;
        r.finish()?;
        Ok(SyncMessage { heads, changes })
    }
}

impl GroupDoc {
    /// Opens (or continues) a sync with a peer whose heads are `their_heads` (`None`
    /// when unknown: then only our heads are sent and the peer answers with what we
    /// lack and asks for what it lacks).
    pub fn sync_message(&self, their_heads: Option<&[ChangeHash]>) -> SyncMessage {
        let mut heads = self.heads();
        heads.truncate(self.limits().max_heads);
        let changes = match their_heads {
            Some(theirs) => {
                let mut missing = self.changes_since(theirs);
                missing.truncate(self.limits().max_batch_changes);
                missing
            }
            None => Vec::new(),
        };
        SyncMessage { heads, changes }
    }

    /// Takes a peer's sync message: applies its changes and returns the answer to
    /// send back, or `None` when both sides are level.
    pub fn receive_sync(&mut self, msg: SyncMessage) -> (ApplyReport, Option<SyncMessage>) {
        let sent_changes = !msg.changes.is_empty();
        let pending_before = self.pending_count();
        let report = self.apply(msg.changes);
        let they_lack = !self.changes_since(&msg.heads).is_empty();
        let we_lack = msg.heads.iter().any(|h| !self.has_change(h));
        // Progress: something applied, or something now waits for dependencies the
        // sender holds (a sender only sends changes it has applied). If everything it
        // sent was refused, asking again would loop; wait for the next round instead.
        let progressed = !report.applied.is_empty() || self.pending_count() > pending_before;
        let reply = if they_lack {
            Some(self.sync_message(Some(&msg.heads)))
        } else if we_lack && (!sent_changes || progressed) {
            Some(self.sync_message(None))
        } else {
            None
        };
        (report, reply)
    }
}
