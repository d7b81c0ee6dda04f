//! Progress is news; a checkpoint is state. An executor may report as often as it
//! likes, and every report reaches the coordinator at once as a plain signed
//! `TaskUpdate` — but only a checkpoint goes into the group document (where a
//! replacement resumes from it), and at most once per
//! [`AgentConfig::checkpoint_interval_ms`](crate::AgentConfig): a document change
//! is signed, verified by every replica, stored and kept for the group's life, so a
//! part that reports every few milliseconds must not turn each report into one.
//!
//! The interval runs from the start of the part: a part shorter than it writes no
//! checkpoint at all (a replacement would redo less than an interval of work). A
//! checkpoint that arrives early is held — the newest replaces an older one — and
//! written when the interval has passed, by the next report or by the agent's tick,
//! whichever comes first. The result supersedes a held checkpoint.
//!
//! The member's own status change when it starts (active) rides on its first
//! update or its completion, not a message of its own: nothing waits on it, and a
//! part's first report follows its start closely. If neither comes before the next
//! heartbeat, the heads in that heartbeat bring it to the coordinator by
//! anti-entropy.

use starling_crdt::{SignedChange, encode_batch};

use super::{Agent, Timestamp, member::not_member};
use crate::{Message, Result, TaskId};

/// One part's checkpoint pacing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Pacer {
    /// When the last checkpoint was written (the part's start before the first).
    written_at: Timestamp,
    /// The newest checkpoint not written yet, with the progress it came with.
    held: Option<(f64, Vec<u8>)>,
    /// Own changes written but not yet sent: they go with the next update.
    unsent: Vec<SignedChange>,
}

impl Pacer {
    /// Pacing for a part that started at `now`.
    pub(crate) fn started(now: Timestamp) -> Pacer {
        Pacer {
            written_at: now,
            held: None,
            unsent: Vec::new(),
        }
    }

    /// A change of ours to send with the next update.
    pub(crate) fn send_later(&mut self, change: SignedChange) {
        self.unsent.push(change);
    }

    /// The changes waiting for an update, followed by `change`, if any.
    pub(crate) fn batch_with(&mut self, change: Option<SignedChange>) -> Vec<SignedChange> {
        let mut out = std::mem::take(&mut self.unsent);
        out.extend(change);
        out
    }

    /// Takes a report: a checkpoint is held; returns the checkpoint to write now, if
    /// one is held and the interval has passed.
    pub(crate) fn report(
        &mut self,
        now: Timestamp,
        interval: u64,
        progress: f64,
        checkpoint: Option<Vec<u8>>,
    ) -> Option<(f64, Vec<u8>)> {
        if let Some(cp) = checkpoint {
            self.held = Some((progress, cp));
        }
        self.due(now, interval)
    }

    /// The held checkpoint, if the interval since the last one has passed.
    pub(crate) fn due(&mut self, now: Timestamp, interval: u64) -> Option<(f64, Vec<u8>)> {
        if self.held.is_some() && now >= self.written_at.saturating_add(interval) {
            self.written_at = now;
            self.held.take()
        } else {
            None
        }
    }

    /// When a held checkpoint is due, if one is held.
    pub(crate) fn next_due(&self, interval: u64) -> Option<Timestamp> {
        self.held
            .as_ref()
            .map(|_| self.written_at.saturating_add(interval))
    }

    /// The part is over: nothing held is written any more.
    pub(crate) fn discard(&mut self) {
        self.held = None;
    }
}

impl Agent {
    /// The executor reports progress, perhaps with a checkpoint: the coordinator
    /// hears of it at once; the document gets the checkpoint when one is due.
    pub(super) fn member_progress(
        &mut self,
        task_id: TaskId,
        progress: f64,
        checkpoint: Option<Vec<u8>>,
    ) -> Result<()> {
        let coordinator = self.working(task_id)?.coordinator;
        let (now, interval) = (self.now, self.config.checkpoint_interval_ms);
        let heartbeat = self.config.heartbeat_interval_ms;
        let m = self
            .memberships
            .get_mut(&task_id)
            .ok_or_else(|| not_member(task_id))?;
        m.spoke(now, heartbeat);
        let due = m.pacer.report(now, interval, progress, checkpoint);
        let change = match due {
            Some((at, cp)) => {
                let doc = self
                    .docs
                    .get_mut(&task_id)
                    .ok_or_else(|| not_member(task_id))?;
                Some(doc.report_progress(at, Some(&cp), now)?)
            }
            None => None,
        };
        self.send_update(coordinator, task_id, progress, change);
        Ok(())
    }

    /// A `TaskUpdate` to `coordinator` carrying our unsent changes and `change`.
    fn send_update(
        &mut self,
        coordinator: crate::AgentId,
        task_id: TaskId,
        progress: f64,
        change: Option<SignedChange>,
    ) {
        let changes = self.with_unsent(task_id, change);
        self.send(
            coordinator,
            Message::TaskUpdate {
                task_id,
                progress,
                changes: encode_batch(&changes),
            },
        );
    }

    /// Our changes for `task_id` not sent yet, followed by `change`: what the next
    /// message carrying our changes carries.
    pub(super) fn with_unsent(
        &mut self,
        task_id: TaskId,
        change: Option<SignedChange>,
    ) -> Vec<SignedChange> {
        match self.memberships.get_mut(&task_id) {
            Some(m) => m.pacer.batch_with(change),
            None => change.into_iter().collect(),
        }
    }

    /// Writes a held checkpoint whose interval has passed (from the tick).
    pub(super) fn write_due_checkpoint(&mut self, task_id: TaskId) {
        let (now, interval) = (self.now, self.config.checkpoint_interval_ms);
        let Some(m) = self.memberships.get_mut(&task_id) else {
            return;
        };
        let Some((progress, cp)) = m.pacer.due(now, interval) else {
            return;
        };
        let coordinator = m.coordinator;
        m.spoke(now, self.config.heartbeat_interval_ms);
        let Some(doc) = self.docs.get_mut(&task_id) else {
            return;
        };
        match doc.report_progress(progress, Some(&cp), now) {
            Ok(change) => self.send_update(coordinator, task_id, progress, Some(change)),
            Err(e) => tracing::debug!(task = ?task_id, error = %e, "checkpoint not written"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_before_the_interval_are_held_and_the_newest_is_written_when_due() {
        let mut p = Pacer::started(1_000);
        assert_eq!(p.report(1_100, 1_000, 0.25, Some(b"a".to_vec())), None);
        assert_eq!(p.report(1_200, 1_000, 0.5, None), None);
        assert_eq!(p.report(1_300, 1_000, 0.75, Some(b"b".to_vec())), None);
        assert_eq!(p.next_due(1_000), Some(2_000));
        assert_eq!(p.due(1_999, 1_000), None);
        assert_eq!(p.due(2_000, 1_000), Some((0.75, b"b".to_vec())));
        assert_eq!(p.next_due(1_000), None, "nothing held once written");
        // The next interval runs from the write.
        assert_eq!(p.report(2_500, 1_000, 0.9, Some(b"c".to_vec())), None);
        assert_eq!(
            p.report(3_000, 1_000, 0.95, Some(b"d".to_vec())),
            Some((0.95, b"d".to_vec()))
        );
    }

    #[test]
    fn progress_alone_is_never_written_and_a_discarded_checkpoint_never_is() {
        let mut p = Pacer::started(0);
        assert_eq!(p.report(5_000, 1_000, 0.5, None), None);
        assert_eq!(p.next_due(1_000), None);
        assert_eq!(
            p.report(5_100, 1_000, 0.6, Some(b"x".to_vec())),
            Some((0.6, b"x".to_vec()))
        );
        assert_eq!(p.report(5_200, 1_000, 0.7, Some(b"y".to_vec())), None);
        p.discard();
        assert_eq!(p.due(10_000, 1_000), None);
    }
}
