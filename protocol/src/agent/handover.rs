//! How a member's own changes reach its group: pushed to the peers that need them as
//! they are written, and handed over at the end if the coordinator's last message
//! shows it lacks some (written while the two could not reach each other).

use std::collections::BTreeSet;

use starling_crdt::{SignedChange, SyncMessage, decode_batch};

use super::Agent;
use crate::{AgentId, Message, TaskId};

impl Agent {
    /// Sends `coordinator` the changes of ours that its final `batch` shows it lacks:
    /// written while the two could not reach each other, they would otherwise be lost
    /// when this replica closes. The batch carries what the coordinator wrote last,
    /// on top of everything it had, so ours that are neither in it nor among its
    /// ancestors are the ones it lacks.
    pub(super) fn hand_over_own_changes(
        &mut self,
        task_id: TaskId,
        coordinator: AgentId,
        batch: &[u8],
    ) {
        let Some(doc) = self.docs.get(&task_id) else {
            return;
        };
        let theirs: Vec<starling_crdt::ChangeHash> = decode_batch(batch, doc.limits())
            .map(|b| b.iter().filter_map(|c| doc.hash_of(c)).collect())
            .unwrap_or_default();
        let me = self.id.key();
        let mut missing: Vec<SignedChange> = doc
            .changes_since(&theirs)
            .into_iter()
            .filter(|c| c.signer == me)
            .collect();
        if missing.is_empty() {
            return;
        }
        missing.truncate(doc.limits().max_batch_changes);
        let sync = SyncMessage {
            heads: doc.heads(),
            changes: missing,
        }
        .encode();
        self.send(coordinator, Message::CrdtChanges { task_id, sync });
    }

    /// Everyone in a group but this agent: members of any status and coordinators.
    pub(super) fn group_peers(&self, task_id: TaskId) -> Vec<AgentId> {
        let Some(view) = self.docs.get(&task_id).and_then(|d| d.view().ok()) else {
            return Vec::new();
        };
        let mut peers: BTreeSet<AgentId> = view.members.keys().map(|k| AgentId::from(*k)).collect();
        peers.extend(view.coordinators.iter().map(|k| AgentId::from(*k)));
        peers.remove(&self.id);
        peers.into_iter().collect()
    }

    /// Pushes one new change of ours to `peers` (they ask for anything else they lack).
    pub(super) fn share_change(
        &mut self,
        task_id: TaskId,
        change: SignedChange,
        peers: &[AgentId],
    ) {
        self.share_changes(task_id, vec![change], peers);
    }

    /// Pushes new changes of ours to `peers`.
    pub(super) fn share_changes(
        &mut self,
        task_id: TaskId,
        changes: Vec<SignedChange>,
        peers: &[AgentId],
    ) {
        let Some(doc) = self.docs.get(&task_id) else {
            return;
        };
        let sync = SyncMessage {
            heads: doc.heads(),
            changes,
        }
        .encode();
        for p in peers {
            self.send(
                *p,
                Message::CrdtChanges {
                    task_id,
                    sync: sync.clone(),
                },
            );
        }
    }
}
