//! What a finished coordination leaves behind: a tombstone, not a live document.
//!
//! Once a task is finished, its coordinator must still answer stragglers — a member
//! cut off meanwhile, an invitee whose acceptance arrives late — for as long as one
//! may hold the group (members give up at the deadline plus the suspicion timeout).
//! It does so from a tombstone: the outcome, the heads of the final document, who
//! was in the group, and the document saved in its compact form (a few KiB where
//! the live document with its indexes is many times that). A straggler's message
//! loads the saved document for the moment it takes to merge what the straggler
//! wrote and send it the end with the history it lacks, so both replicas still
//! converge; then the document is saved back and dropped. Tombstones are kept in
//! expiry order, so a tick looks only at the ones due.

use std::collections::{BTreeMap, BTreeSet};

use starling_crdt::{ChangeHash, GroupDoc};
use tracing::debug;

use super::{Agent, Timestamp};
use crate::{AgentId, Message, Outcome, TaskId};

/// Tombstones kept at most; past this the ones that would expire first go.
const MAX_TOMBSTONES: usize = 10_000;

/// A finished coordination.
#[derive(Debug)]
pub(super) struct Tombstone {
    outcome: Outcome,
    /// Heads of the saved document (a merge that adds nothing does not save again).
    heads: Vec<ChangeHash>,
    /// Everyone the document listed (members of any status and coordinators).
    members: BTreeSet<AgentId>,
    /// The final document, saved.
    saved: Vec<u8>,
    until: Timestamp,
}

/// Tombstones by task, and in expiry order.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    by_task: BTreeMap<TaskId, Tombstone>,
    expiry: BTreeSet<(Timestamp, TaskId)>,
}

impl Tombstones {
    pub(super) fn get(&self, task_id: &TaskId) -> Option<&Tombstone> {
        self.by_task.get(task_id)
    }

    /// When the next tombstone expires.
    pub(super) fn next_expiry(&self) -> Option<Timestamp> {
        self.expiry.first().map(|(t, _)| *t)
    }

    pub(super) fn tasks(&self) -> impl Iterator<Item = &TaskId> {
        self.by_task.keys()
    }

    pub(super) fn len(&self) -> usize {
        self.by_task.len()
    }

    fn insert(&mut self, task_id: TaskId, t: Tombstone) {
        if let Some(old) = self.by_task.remove(&task_id) {
            self.expiry.remove(&(old.until, task_id));
        }
        while self.by_task.len() >= MAX_TOMBSTONES {
            let Some((_, oldest)) = self.expiry.pop_first() else {
                break;
            };
            self.by_task.remove(&oldest);
        }
        self.expiry.insert((t.until, task_id));
        self.by_task.insert(task_id, t);
    }

    fn expire(&mut self, now: Timestamp) {
        while let Some(&(until, task_id)) = self.expiry.first() {
            if until > now {
                break;
            }
            self.expiry.pop_first();
            self.by_task.remove(&task_id);
        }
    }
}

impl Agent {
    /// Replaces a finished coordination and its document by a tombstone kept until
    /// `until`. The document closes (its snapshot goes out) unless this agent's
    /// membership in the same group still uses it.
    pub(super) fn bury(&mut self, task_id: TaskId, outcome: Outcome, until: Timestamp) {
        self.coordinating.remove(&task_id);
        let Some(doc) = self.docs.get(&task_id) else {
            return;
        };
        let members = match doc.view() {
            Ok(v) => v
                .members
                .keys()
                .chain(v.coordinators.iter())
                .map(|k| AgentId::from(*k))
                .filter(|a| *a != self.id)
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        let tombstone = Tombstone {
            outcome,
            heads: doc.heads(),
            members,
            saved: doc.save(),
            until,
        };
        self.tombstones.insert(task_id, tombstone);
        self.close_doc_if_unused(task_id);
    }

    /// Drops the tombstones whose time is up.
    pub(super) fn expire_tombstones(&mut self) {
        self.tombstones.expire(self.now);
    }

    /// Answers a message of a finished group's member from its tombstone. With
    /// `changes` (the member's writes, each verified) merged into the saved document,
    /// the member gets the end and the whole history. Returns false if there is no
    /// tombstone for the task.
    pub(super) fn answer_from_tombstone(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        changes: &[u8],
    ) -> bool {
        let Some(opened) = self.open_tombstone(from, task_id) else {
            return false;
        };
        let (Some(loaded), Some(outcome)) = (
            opened,
            self.tombstones.get(&task_id).map(|t| t.outcome.clone()),
        ) else {
            return true;
        };
        if !changes.is_empty() {
            self.apply_batch(from, task_id, changes);
        }
        let changes = self.encode_all(&task_id);
        self.send(
            from,
            Message::GroupDissolve {
                task_id,
                outcome,
                changes,
            },
        );
        self.rebury(task_id, loaded);
        true
    }

    /// Anti-entropy with a finished group's member (the changes it hands over after
    /// learning the end): merged into the saved document, answered like any sync.
    /// Returns false if there is no tombstone for the task.
    pub(super) fn sync_with_tombstone(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        bytes: &[u8],
    ) -> bool {
        let Some(opened) = self.open_tombstone(from, task_id) else {
            return false;
        };
        let Some(loaded) = opened else {
            return true;
        };
        self.sync_doc(from, task_id, bytes);
        self.rebury(task_id, loaded);
        true
    }

    /// For a message from `from` about a finished group: None without a tombstone;
    /// otherwise whether the document was loaded for it (see [`Agent::exhume`]), or
    /// None inside if the sender was not in the group or the document cannot load.
    fn open_tombstone(&mut self, from: AgentId, task_id: TaskId) -> Option<Option<bool>> {
        let member = self.tombstones.get(&task_id)?.members.contains(&from);
        if !member {
            self.stray(from, "message for a finished group from a non-member");
            return Some(None);
        }
        Some(self.exhume(task_id))
    }

    /// A tombstone's document, loaded.
    pub(super) fn tombstone_doc(&self, task_id: &TaskId) -> Option<GroupDoc> {
        let saved = &self.tombstones.get(task_id)?.saved;
        GroupDoc::load(
            self.keypair.signing_key().clone(),
            saved,
            self.config.crdt_limits.clone(),
        )
        .map_err(|e| debug!(task = ?task_id, error = %e, "cannot load a tombstone's document"))
        .ok()
    }

    /// Puts a tombstone's document back among the open ones for a moment. Returns
    /// whether it was loaded (false: it was still open for another role), or None if
    /// it cannot be loaded.
    fn exhume(&mut self, task_id: TaskId) -> Option<bool> {
        if self.docs.contains_key(&task_id) {
            return Some(false);
        }
        let doc = self.tombstone_doc(&task_id)?;
        self.docs.insert(task_id, doc);
        Some(true)
    }

    /// Saves the document back into its tombstone; drops it again if it was loaded
    /// for the occasion.
    fn rebury(&mut self, task_id: TaskId, loaded: bool) {
        let doc = if loaded {
            self.docs.remove(&task_id)
        } else {
            None
        };
        let Some(doc) = doc.as_ref().or_else(|| self.docs.get(&task_id)) else {
            return;
        };
        if let Some(t) = self.tombstones.by_task.get_mut(&task_id)
            && t.heads != doc.heads()
        {
            t.heads = doc.heads();
            t.saved = doc.save();
        }
    }
}
