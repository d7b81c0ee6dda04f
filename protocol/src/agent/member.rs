//! The member role: an agent offers its skills to announced tasks it can take,
//! accepts invitations it can honour (reserving a slot), runs its part, reports
//! progress with checkpoints, records its result, and watches its coordinator —
//! suspecting it when it falls silent and taking over when a majority agrees.

use std::collections::BTreeSet;

use starling_crdt::{GroupDoc, TaskOutcome, decode_batch, encode_batch};
use tracing::debug;

use super::{Agent, Assignment, Event, Timestamp, checkpoints::Pacer};
use crate::{
    AgentConfig, AgentId, Message, Outcome, ProtocolError, RejectReason, Result, TaskAnnounce,
    TaskId, scoring,
};

/// How long an announcement waits in the backlog for a free slot.
const BACKLOG_TTL_MS: u64 = 30_000;

/// An announcement this agent could serve but had no capacity for yet.
#[derive(Debug, Clone)]
pub(crate) struct BacklogEntry {
    announce: TaskAnnounce,
    from: AgentId,
    received_at: Timestamp,
}

/// A group this agent belongs to.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) task: TaskAnnounce,
    skill: String,
    pub(crate) coordinator: AgentId,
    pub(crate) coordinator_seen: Timestamp,
    pub(crate) started_at: Option<Timestamp>,
    part_done: bool,
    pub(crate) holds_slot: bool,
    next_heartbeat: Timestamp,
    suspected: BTreeSet<AgentId>,
    /// A proposal to vote on once this replica holds every result.
    pub(crate) pending_proposal: Option<(AgentId, crate::consensus::Proposal)>,
    /// Checkpoints on their way into the document.
    pub(crate) pacer: Pacer,
}

impl Membership {
    pub(crate) fn next_deadline(&self, config: &AgentConfig, me: AgentId) -> Option<Timestamp> {
        let drop_at = self.task.deadline_ms + config.suspicion_timeout_ms;
        let watching = self.coordinator != me && !self.suspected.contains(&self.coordinator);
        let suspicion = if watching {
            self.coordinator_seen + config.suspicion_timeout_ms
        } else {
            drop_at
        };
        let checkpoint = self
            .pacer
            .next_due(config.checkpoint_interval_ms)
            .unwrap_or(drop_at);
        Some(
            self.next_heartbeat
                .min(suspicion)
                .min(drop_at)
                .min(checkpoint),
        )
    }

    /// A message to the coordinator is as good as a heartbeat: the next one waits
    /// a whole interval from `now`.
    pub(crate) fn spoke(&mut self, now: Timestamp, interval: u64) {
        self.next_heartbeat = self.next_heartbeat.max(now + interval);
    }
}

impl Agent {
    pub(super) fn member_on_announce(&mut self, from: AgentId, announce: TaskAnnounce) {
        if from == self.id {
            return;
        }
        if let Err(e) = announce.validate() {
            return self.misbehaved(from, e.to_string());
        }
        let task_id = announce.task_id;
        // One part per agent: a group document holds one member entry per agent (one
        // skill, one result, one status that a failure verdict overrides), so a
        // member does not offer for a second part of its task, even once its own part
        // is done. A failed part goes to an agent outside the group; the coordinator
        // keeps asking until one is free.
        if self.now >= announce.deadline_ms
            || self.memberships.contains_key(&task_id)
            || self.coordinating.contains_key(&task_id)
            || self.finished.contains_key(&task_id)
            || self.offered.contains_key(&task_id)
        {
            return self.stray(from, "announcement for a task already handled");
        }
        if self.qualifying(&announce).is_empty() {
            return;
        }
        let entry = BacklogEntry {
            announce,
            from,
            received_at: self.now,
        };
        // A free slot goes to the task of highest effective priority this agent
        // knows of, not to whichever announcement arrives first: a waiting task that
        // outranks this one is offered to first, and this one waits its turn.
        let outranked = self
            .backlog
            .values()
            .any(|b| self.effective_priority(b) > self.effective_priority(&entry));
        if self.can_offer() && !outranked {
            self.offer(from, &entry.announce);
        } else {
            self.add_to_backlog(entry);
            self.offer_from_backlog();
        }
    }

    /// The skills this agent has at the level the task asks for.
    fn qualifying(&self, announce: &TaskAnnounce) -> Vec<String> {
        announce
            .required
            .iter()
            .filter(|r| {
                self.skills
                    .get(&r.name)
                    .is_some_and(|(s, _)| s.level >= r.min_level)
            })
            .map(|r| r.name.clone())
            .collect()
    }

    fn free_slots(&self) -> u32 {
        self.config
            .max_concurrent_tasks
            .saturating_sub(self.slots_used())
    }

    /// Whether another offer may go out: a free slot, and not too many offers
    /// outstanding per free slot.
    fn can_offer(&self) -> bool {
        let free = self.free_slots();
        free > 0 && (self.offered.len() as u32) < free * self.config.offers_per_free_slot
    }

    fn offer(&mut self, to: AgentId, announce: &TaskAnnounce) {
        let free_slots = self.free_slots();
        let max_slots = self.config.max_concurrent_tasks;
        for name in self.qualifying(announce) {
            let Some((skill, _)) = self.skills.get(&name) else {
                continue;
            };
            let skill = skill.clone();
            self.send(
                to,
                Message::SkillOffer {
                    task_id: announce.task_id,
                    skill,
                    free_slots,
                    max_slots,
                },
            );
        }
        let expiry = self.now + self.config.offer_window_ms + self.config.invite_timeout_ms;
        self.offered.insert(announce.task_id, expiry);
        self.backlog.remove(&announce.task_id);
    }

    fn effective_priority(&self, e: &BacklogEntry) -> f64 {
        scoring::effective_priority(
            e.announce.priority,
            e.announce.created_at_ms,
            self.now,
            self.config.aging_interval_ms,
        )
    }

    fn add_to_backlog(&mut self, entry: BacklogEntry) {
        let task_id = entry.announce.task_id;
        if !self.backlog.contains_key(&task_id) && self.backlog.len() >= self.config.backlog_size {
            let lowest = self
                .backlog
                .iter()
                .min_by(|a, b| {
                    self.effective_priority(a.1)
                        .total_cmp(&self.effective_priority(b.1))
                })
                .map(|(k, e)| (*k, self.effective_priority(e)));
            match lowest {
                Some((k, p)) if p < self.effective_priority(&entry) => {
                    self.backlog.remove(&k);
                }
                _ => return,
            }
        }
        self.backlog.insert(task_id, entry);
    }

    /// Offers to backlogged tasks, highest effective priority first, while capacity
    /// allows. Effective priority grows with age, so nothing waits forever.
    pub(super) fn offer_from_backlog(&mut self) {
        let now = self.now;
        self.backlog
            .retain(|_, e| now < e.announce.deadline_ms && now < e.received_at + BACKLOG_TTL_MS);
        while self.can_offer() {
            let best = self
                .backlog
                .iter()
                .max_by(|a, b| {
                    self.effective_priority(a.1)
                        .total_cmp(&self.effective_priority(b.1))
                        .then(b.0.cmp(a.0))
                })
                .map(|(k, _)| *k);
            let Some(task_id) = best else { return };
            let Some(entry) = self.backlog.remove(&task_id) else {
                return;
            };
            if self.memberships.contains_key(&task_id) || self.finished.contains_key(&task_id) {
                continue;
            }
            self.offer(entry.from, &entry.announce);
        }
    }

    pub(super) fn member_on_invite(
        &mut self,
        from: AgentId,
        task: TaskAnnounce,
        skill: String,
        changes: &[u8],
    ) {
        if let Err(e) = task.validate() {
            return self.misbehaved(from, e.to_string());
        }
        let task_id = task.task_id;
        if self.coordinating.contains_key(&task_id) && !self.memberships.contains_key(&task_id) {
            return self.stray(from, "invitation to a task this agent coordinates");
        }
        if let Some(m) = self.memberships.get(&task_id) {
            if m.skill == skill && !m.part_done {
                // Our acceptance was lost: send it again (idempotent for the coordinator).
                let changes = self.encode_all(&task_id);
                let free_slots = self.free_slots();
                let accept = Message::GroupAccept {
                    task_id,
                    free_slots,
                    changes,
                };
                self.send(from, accept);
            }
            return;
        }
        if self.finished.contains_key(&task_id) {
            return self.stray(from, "invitation to a finished task");
        }
        // The invitation must be recorded, by a coordinator, in a valid group document.
        let mut replica = match GroupDoc::replica(
            self.keypair.signing_key().clone(),
            task_id.group_id(),
            task_id.initiator.key(),
            self.config.crdt_limits.clone(),
        ) {
            Ok(r) => r,
            Err(e) => return self.misbehaved(from, format!("invitation: {e}")),
        };
        let batch = match decode_batch(changes, replica.limits()) {
            Ok(b) => b,
            Err(e) => {
                return self.misbehaved(from, format!("invitation with undecodable changes: {e}"));
            }
        };
        let report = replica.apply(batch);
        if !report.is_clean() || !replica.is_initialized() {
            return self.misbehaved(from, "invitation with an invalid group document".into());
        }
        let Ok(view) = replica.view() else { return };
        if !view.is_authority(from.key()) {
            return self.misbehaved(
                from,
                "invitation from an agent that does not coordinate the task".into(),
            );
        }
        match view.member(self.id.key()) {
            Some(m) if m.status == starling_crdt::MemberStatus::Invited && m.skill == skill => {}
            _ => {
                return self
                    .misbehaved(from, "invitation not recorded in the group document".into());
            }
        }
        let min_level = task
            .required
            .iter()
            .find(|r| r.name == skill)
            .map(|r| r.min_level);
        let reason = if self.now >= task.deadline_ms {
            Some(RejectReason::Expired)
        } else if min_level
            .is_none_or(|min| self.skills.get(&skill).is_none_or(|(s, _)| s.level < min))
        {
            Some(RejectReason::NotQualified)
        } else if self.free_slots() == 0 {
            Some(RejectReason::NoCapacity)
        } else {
            None
        };
        self.offered.remove(&task_id);
        let accept = match reason {
            None => replica
                .accept(&skill, self.now)
                .map_err(|e| RejectReason::Other(e.to_string())),
            Some(reason) => Err(reason),
        };
        let accept = match accept {
            Ok(c) => c,
            Err(reason) => {
                // Record the refusal in the document too, so the group's history is whole.
                debug!(task = ?task_id, ?reason, "declining invitation");
                let changes = replica
                    .decline(&skill, self.now)
                    .map(|c| encode_batch(&[c]))
                    .unwrap_or_default();
                return self.send(
                    from,
                    Message::GroupReject {
                        task_id,
                        reason,
                        free_slots: self.free_slots(),
                        changes,
                    },
                );
            }
        };
        self.send(
            from,
            Message::GroupAccept {
                task_id,
                // The slot this acceptance takes is not counted yet.
                free_slots: self.free_slots().saturating_sub(1),
                changes: encode_batch(&[accept]),
            },
        );
        self.docs.insert(task_id, replica);
        self.backlog.remove(&task_id);
        self.memberships.insert(
            task_id,
            Membership {
                task,
                skill,
                coordinator: from,
                coordinator_seen: self.now,
                started_at: None,
                part_done: false,
                holds_slot: true,
                next_heartbeat: self.now + self.config.heartbeat_interval_ms,
                suspected: BTreeSet::new(),
                pending_proposal: None,
                pacer: Pacer::default(),
            },
        );
    }

    /// Applies a coordinator's changes to a membership; false if it is a stray.
    fn member_accepts_from(&mut self, from: AgentId, task_id: TaskId, changes: &[u8]) -> bool {
        if !self.memberships.contains_key(&task_id) {
            self.stray(from, "group message for a group this agent is not in");
            return false;
        }
        self.apply_batch(from, task_id, changes);
        let authority = self
            .docs
            .get(&task_id)
            .and_then(|d| d.view().ok())
            .is_some_and(|v| v.is_authority(from.key()));
        if !authority {
            self.misbehaved(
                from,
                "coordinator message from an agent that does not coordinate".into(),
            );
            return false;
        }
        if let Some(m) = self.memberships.get_mut(&task_id) {
            m.coordinator_seen = self.now;
        }
        true
    }

    pub(super) fn member_on_group_message(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        changes: &[u8],
    ) {
        if self.member_accepts_from(from, task_id, changes) {
            self.member_check_coordinator(task_id);
        }
    }

    pub(super) fn member_on_start(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        resume_from: Option<Vec<u8>>,
        changes: &[u8],
    ) {
        if !self.member_accepts_from(from, task_id, changes) {
            return;
        }
        let now = self.now;
        let Some(m) = self.memberships.get_mut(&task_id) else {
            return;
        };
        if m.started_at.is_some() || m.part_done {
            return self.stray(from, "duplicate start");
        }
        m.started_at = Some(now);
        m.pacer = Pacer::started(now);
        let assignment = Assignment {
            task_id,
            skill: m.skill.clone(),
            metrics: None,
            description: m.task.description.clone(),
            payload: m.task.payload.clone(),
            resume_from,
            deadline_ms: m.task.deadline_ms,
        };
        // Sent with the first update or the result (see `checkpoints`).
        if let Some(change) = self
            .docs
            .get_mut(&task_id)
            .and_then(|d| d.activate(now).ok())
            && let Some(m) = self.memberships.get_mut(&task_id)
        {
            m.pacer.send_later(change);
        }
        let mut assignment = assignment;
        assignment.metrics = self
            .skills
            .get(&assignment.skill)
            .map(|(skill, _)| skill.clone());
        debug!(task = ?task_id, skill = %assignment.skill, "assigned");
        self.emit(Event::TaskAssigned(assignment));
    }

    pub(super) fn member_complete(
        &mut self,
        task_id: TaskId,
        success: bool,
        result: Vec<u8>,
    ) -> Result<()> {
        let m = self.working(task_id)?;
        let (coordinator, skill, started) = (
            m.coordinator,
            m.skill.clone(),
            m.started_at.unwrap_or(self.now),
        );
        let now = self.now;
        let doc = self
            .docs
            .get_mut(&task_id)
            .ok_or_else(|| not_member(task_id))?;
        let change = doc.record_result(success, &result, now)?;
        let mut changes = vec![change];
        if let Some(m) = self.memberships.get_mut(&task_id) {
            m.part_done = true;
            m.holds_slot = false;
            m.pacer.discard();
            changes = m.pacer.batch_with(changes.pop());
        }
        self.send(
            coordinator,
            Message::TaskComplete {
                task_id,
                success,
                free_slots: self.free_slots(),
                changes: encode_batch(&changes),
            },
        );
        let (alpha, streak_needed) = (self.config.ewma_alpha, self.config.promotion_streak);
        if let Some((s, streak)) = self.skills.get_mut(&skill) {
            let promoted = scoring::learn(
                s,
                streak,
                success,
                now.saturating_sub(started),
                alpha,
                streak_needed,
            );
            let skill = s.clone();
            self.emit(Event::SkillLearned { skill, promoted });
        }
        self.offer_from_backlog();
        Ok(())
    }

    pub(super) fn working(&self, task_id: TaskId) -> Result<&Membership> {
        match self.memberships.get(&task_id) {
            Some(m) if m.started_at.is_some() && !m.part_done => Ok(m),
            Some(_) => Err(ProtocolError::Refused(format!(
                "no part of {task_id} is running here"
            ))),
            None => Err(not_member(task_id)),
        }
    }

    pub(super) fn member_on_dissolve(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        outcome: Outcome,
        changes: &[u8],
    ) {
        if !self.memberships.contains_key(&task_id) && self.coordinating.contains_key(&task_id) {
            // Another coordinator ended the group: this one was replaced while the
            // group could not hear it. The changes (each verified) say so.
            if self.apply_batch(from, task_id, changes) {
                self.after_doc_change(task_id);
            }
            return;
        }
        if !self.member_accepts_from(from, task_id, changes) {
            return;
        }
        let Some(m) = self.memberships.remove(&task_id) else {
            return;
        };
        self.hand_over_own_changes(task_id, from, changes);
        let now = self.now;
        if !m.part_done
            && let Some(change) = self.docs.get_mut(&task_id).and_then(|d| d.leave(now).ok())
        {
            self.share_change(task_id, change, &[from]);
        }
        let final_outcome = self
            .docs
            .get(&task_id)
            .and_then(|d| d.view().ok())
            .and_then(|v| v.outcome)
            .map(|o| match o {
                TaskOutcome::Completed => Outcome::Completed,
                TaskOutcome::Failed(r) => Outcome::Failed(r),
            });
        debug!(task = ?task_id, ?outcome, "group dissolved");
        self.emit(Event::AssignmentEnded { task_id, outcome });
        if let Some(o) = final_outcome {
            self.remember_outcome(task_id, o);
        }
        self.close_doc_if_unused(task_id);
        self.offer_from_backlog();
    }

    pub(super) fn member_leave(&mut self, task_id: TaskId) {
        let now = self.now;
        let Some(mut m) = self.memberships.remove(&task_id) else {
            return;
        };
        if !m.part_done {
            if let Some(change) = self.docs.get_mut(&task_id).and_then(|d| d.leave(now).ok()) {
                let changes = m.pacer.batch_with(Some(change));
                self.share_changes(task_id, changes, &[m.coordinator]);
            }
            self.emit(Event::AssignmentEnded {
                task_id,
                outcome: Outcome::Failed("left the group".into()),
            });
        }
        self.close_doc_if_unused(task_id);
    }

    pub(super) fn member_tick(&mut self, task_id: TaskId) {
        self.write_due_checkpoint(task_id);
        let now = self.now;
        let timeout = self.config.suspicion_timeout_ms;
        let Some(m) = self.memberships.get_mut(&task_id) else {
            return;
        };
        if now >= m.task.deadline_ms + timeout {
            let running = !m.part_done;
            self.memberships.remove(&task_id);
            if running {
                self.emit(Event::AssignmentEnded {
                    task_id,
                    outcome: Outcome::Failed("deadline passed".into()),
                });
            }
            self.close_doc_if_unused(task_id);
            return self.offer_from_backlog();
        }
        let coordinator = m.coordinator;
        let heartbeat = now >= m.next_heartbeat && coordinator != self.id;
        if now >= m.next_heartbeat {
            m.next_heartbeat = now + self.config.heartbeat_interval_ms;
        }
        let suspect = coordinator != self.id
            && now >= m.coordinator_seen + timeout
            && !m.suspected.contains(&coordinator);
        if suspect {
            m.suspected.insert(coordinator);
        }
        if heartbeat && let Some(doc) = self.docs.get(&task_id) {
            let heads = doc.heads().into_iter().map(|h| h.0).collect();
            self.send(coordinator, Message::Heartbeat { task_id, heads });
        }
        if suspect {
            debug!(task = ?task_id, peer = %coordinator, "suspecting the coordinator");
            if let Some(change) = self
                .docs
                .get_mut(&task_id)
                .and_then(|d| d.suspect(coordinator.key(), now).ok())
            {
                let peers = self.group_peers(task_id);
                let changes = self.with_unsent(task_id, Some(change));
                self.share_changes(task_id, changes, &peers);
            }
            self.member_check_coordinator(task_id);
        }
    }

    /// Follows coordinator changes in the document, and takes over when the current
    /// coordinator is deposed and this agent is the lowest-id member eligible.
    pub(super) fn member_check_coordinator(&mut self, task_id: TaskId) {
        let now = self.now;
        let me = self.id.key();
        let Some(doc) = self.docs.get_mut(&task_id) else {
            return;
        };
        let Ok(view) = doc.view() else { return };
        let eligible = view
            .members
            .values()
            .filter(|m| m.status.is_in_group() && !view.is_authority(m.key))
            .map(|m| m.key)
            .min();
        let mut took_over = None;
        if view.coordinator_deposed() && eligible == Some(me) {
            match doc.take_over(now) {
                Ok(change) => took_over = Some(change),
                Err(e) => debug!(error = %e, "cannot take over"),
            }
        }
        let coordinator = AgentId::from(
            doc.view()
                .map(|v| v.coordinator())
                .unwrap_or(view.coordinator()),
        );
        let Some(m) = self.memberships.get_mut(&task_id) else {
            return;
        };
        if coordinator != m.coordinator {
            m.coordinator = coordinator;
            m.coordinator_seen = now;
        }
        if let Some(change) = took_over {
            let announce = m.task.clone();
            let peers = self.group_peers(task_id);
            self.share_change(task_id, change, &peers);
            if coordinator == self.id && !self.coordinating.contains_key(&task_id) {
                debug!(task = ?task_id, "took over as coordinator");
                self.resume_coordination(task_id, announce);
            }
        }
    }
}

pub(super) fn not_member(task_id: TaskId) -> ProtocolError {
    ProtocolError::Refused(format!("not a member of {task_id}"))
}
