//! Bounds on everything a group document takes from peers.

use crate::{CrdtError, Result};

/// Size and count bounds for one group document. Every decode and every apply checks
/// them before doing work proportional to the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest single encoded change. Default 64 KiB: a member entry with a full
    /// checkpoint is the biggest honest change, and checkpoints are capped well below.
    pub max_change_bytes: usize,
    /// Largest checkpoint a member may store. Default 16 KiB: checkpoints are resume
    /// points, not data transfer (use `DataShare` for bulk data).
    pub max_checkpoint_bytes: usize,
    /// Largest result a member may store. Default 32 KiB.
    pub max_result_bytes: usize,
    /// Most changes in one batch or sync message. Default 256.
    pub max_batch_changes: usize,
    /// Largest encoded batch, sync message or saved document. Default 4 MiB: fits a
    /// whole group history of a few hundred changes with room to spare.
    pub max_batch_bytes: usize,
    /// Most heads a sync message may announce. Default 64: heads are the document's
    /// concurrent tips, bounded by the number of writers (members plus coordinators).
    pub max_heads: usize,
    /// Most changes one document may hold. Default 4,096: a group of 50 members that
    /// reports progress 50 times each stays well inside it.
    pub max_doc_changes: usize,
    /// Most changes held back waiting for missing dependencies. Default 512.
    pub max_pending: usize,
    /// Most distinct skills a task may require. Default 16.
    pub max_skills: usize,
    /// Longest string (skill name, reason, task id). Default 256 bytes.
    pub max_string_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_change_bytes: 64 * 1024,
            max_checkpoint_bytes: 16 * 1024,
            max_result_bytes: 32 * 1024,
            max_batch_changes: 256,
            max_batch_bytes: 4 * 1024 * 1024,
            max_heads: 64,
            max_doc_changes: 4096,
            max_pending: 512,
            max_skills: 16,
            max_string_bytes: 256,
        }
    }
}

impl Limits {
    /// Checks that the bounds are consistent with each other.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(CrdtError::InvalidArgument(format!("limits: {m}")));
        if self.max_change_bytes < 1024 {
            return bad("max_change_bytes must be at least 1024");
        }
        if self.max_checkpoint_bytes + self.max_result_bytes + 1024 > self.max_change_bytes {
            return bad("max_change_bytes must hold a checkpoint, a result and 1 KiB of fields");
        }
        if self.max_batch_bytes < self.max_change_bytes {
            return bad("max_batch_bytes must be at least max_change_bytes");
        }
        if self.max_batch_changes == 0 || self.max_heads == 0 || self.max_doc_changes == 0 {
            return bad("counts must be positive");
        }
        if self.max_skills == 0 || self.max_string_bytes < 64 {
            return bad("max_skills must be positive and max_string_bytes at least 64");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_inconsistent_limits_are_refused() {
        Limits::default().validate().unwrap();
        let small = Limits {
            max_change_bytes: 512,
            ..Limits::default()
        };
        assert!(small.validate().is_err());
        let batch = Limits {
            max_batch_bytes: 1024,
            ..Limits::default()
        };
        assert!(batch.validate().is_err());
    }
}
