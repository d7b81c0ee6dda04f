//! Replicas without a role: group documents an agent restored from its store after
//! a restart, for groups it was a member of. It holds them — what it accepted and
//! wrote stays known to it, so it never reuses one of its sequence numbers there —
//! and answers its peers' anti-entropy with them, until the group has long had time
//! to replace it; then the document is closed like any other.

use starling_crdt::GroupDoc;

use super::{Agent, Timestamp};
use crate::TaskId;

impl Agent {
    /// Holds a restored group document without a role, for twice the suspicion
    /// timeout from `now` (the group declares the silent member failed within one,
    /// and a replacement syncs within the next). A task this agent already holds a
    /// document of keeps that one.
    pub fn restore_replica(&mut self, now: Timestamp, task_id: TaskId, doc: GroupDoc) {
        self.now = self.now.max(now);
        if self.docs.contains_key(&task_id) {
            return;
        }
        self.docs.insert(task_id, doc);
        let until = self
            .now
            .saturating_add(2 * self.config.suspicion_timeout_ms);
        self.replicas.insert(task_id, until);
    }

    /// Closes the replicas whose time is up.
    pub(super) fn expire_replicas(&mut self) {
        let now = self.now;
        let due: Vec<TaskId> = self
            .replicas
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(t, _)| *t)
            .collect();
        for task_id in due {
            self.replicas.remove(&task_id);
            self.close_doc_if_unused(task_id);
        }
    }
}
