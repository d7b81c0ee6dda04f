//! Running a task: starting members, watching them, reassigning failed parts,
//! heartbeats, and finishing.

use std::collections::BTreeMap;

use starling_crdt::{MemberStatus, TaskOutcome, TaskStatus};
use tracing::debug;

use super::{Part, ToStart};
use crate::{
    AgentId, Message, Outcome, TaskId,
    agent::{Agent, Event, PartResult},
};

impl Agent {
    pub(in crate::agent) fn coord_on_update(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        progress: f64,
        changes: &[u8],
    ) {
        if !self.coord_hears_member(from, task_id, changes) {
            return;
        }
        let (carried, applied) = self.apply_batch_counted(from, task_id, changes);
        if applied > carried {
            // The update released changes that overtook it (a completion, say).
            self.coord_progress(task_id);
        }
        if progress.is_finite() {
            self.emit(Event::TaskProgress {
                task_id,
                member: from,
                progress: progress.clamp(0.0, 1.0),
                // What this update wrote, not what it claims: a refused or
                // already-known change writes nothing.
                checkpointed: applied > 0,
            });
        }
    }

    pub(in crate::agent) fn coord_on_complete(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        changes: &[u8],
    ) {
        if !self.coord_hears_member(from, task_id, changes) {
            return;
        }
        // Progress even if nothing new applied: the result may have arrived by sync.
        self.apply_batch(from, task_id, changes);
        self.coord_progress(task_id);
    }

    pub(in crate::agent) fn coord_on_heartbeat(&mut self, from: AgentId, task_id: TaskId) {
        self.coord_hears_member(from, task_id, &[]);
    }

    /// Records a sign of life from a member; answers a member that missed the end.
    /// Returns whether the message should be processed further.
    ///
    /// After the end, what a member of the group wrote meanwhile (`changes`: say, a
    /// result recorded while it was cut off) is still kept, so that both replicas end
    /// up with the same history; the verdicts already written decide what counts.
    pub(in crate::agent) fn coord_hears_member(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        changes: &[u8],
    ) -> bool {
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            self.answer_from_tombstone(from, task_id, changes);
            return false;
        };
        if !c.last_seen.contains_key(&from) && !c.tried.contains(&from) {
            self.stray(from, "task message from a non-member");
            return false;
        }
        c.last_seen.insert(from, self.now);
        true
    }

    /// Moves a coordinated task forward from what its document says.
    pub(in crate::agent) fn coord_progress(&mut self, task_id: TaskId) {
        let now = self.now;
        let (Some(c), Some(doc)) = (self.coordinating.get(&task_id), self.docs.get_mut(&task_id))
        else {
            return;
        };
        let Ok(view) = doc.view() else { return };
        let selected: Vec<(String, AgentId)> = view
            .selected()
            .map(|(s, k)| (s.to_string(), AgentId::from(k)))
            .collect();
        let mut to_start: Vec<ToStart> = Vec::new();
        let mut newly_formed = false;
        if !c.formed {
            if view.is_complete() {
                newly_formed = true;
                let _ = doc.set_status(TaskStatus::Running, now);
                to_start = selected
                    .iter()
                    .map(|(s, m)| (s.clone(), *m, None, false))
                    .collect();
            }
        } else {
            for (skill, m) in &selected {
                if !c.started.contains(m) {
                    let failed = view
                        .members
                        .values()
                        .filter(|f| f.status == MemberStatus::Failed && &f.skill == skill);
                    let replaces = failed.clone().next().is_some();
                    let checkpoint = failed
                        .filter(|f| f.checkpoint.is_some())
                        .max_by_key(|f| f.checkpoint_at.unwrap_or(0))
                        .and_then(|f| f.checkpoint.clone());
                    to_start.push((skill.clone(), *m, checkpoint, replaces));
                }
            }
        }
        let surplus: Vec<AgentId> = if c.formed || newly_formed {
            view.members
                .values()
                .filter(|m| m.status.is_in_group() && !view.is_selected(m.key))
                .map(|m| AgentId::from(m.key))
                .filter(|m| !c.released.contains(m))
                .collect()
        } else {
            Vec::new()
        };
        let parts: Vec<Part> = selected
            .iter()
            .map(|(s, m)| {
                let r = view
                    .member(m.key())
                    .and_then(|v| v.result.clone())
                    .map(|r| (r.success, r.output));
                (s.clone(), *m, r)
            })
            .collect();
        let complete = view.is_complete();

        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        // A coordinator that is also a member does not watch itself.
        let me = self.id;
        c.watched = parts
            .iter()
            .filter(|(_, m, r)| r.is_none() && *m != me)
            .map(|(_, m, _)| *m)
            .collect();
        for m in c.watched.clone() {
            c.last_seen.entry(m).or_insert(now);
        }
        c.formed |= newly_formed;
        let formed = c.formed;
        for (_, m, _, _) in &to_start {
            c.started.insert(*m);
            c.last_seen.insert(*m, now);
        }
        c.released.extend(surplus.iter().copied());

        if newly_formed {
            for (_, m) in &selected {
                let changes = self.encode_for(&task_id, *m);
                self.send(*m, Message::GroupFormed { task_id, changes });
            }
            debug!(task = ?task_id, members = selected.len(), "group formed");
            self.emit(Event::GroupFormed {
                task_id,
                members: selected.clone(),
            });
        }
        for (skill, m, resume_from, replaces) in to_start {
            let resumed = resume_from.is_some();
            let changes = self.encode_for(&task_id, m);
            self.send(
                m,
                Message::TaskStart {
                    task_id,
                    resume_from,
                    changes,
                },
            );
            if replaces {
                self.emit(Event::ReplacementStarted {
                    task_id,
                    member: m,
                    skill,
                    resumed,
                });
            }
        }
        for m in surplus {
            let outcome = Outcome::Failed("not needed".into());
            let changes = self.encode_for(&task_id, m);
            self.send(
                m,
                Message::GroupDissolve {
                    task_id,
                    outcome,
                    changes,
                },
            );
        }
        if !formed || !complete || parts.iter().any(|(_, _, r)| r.is_none()) {
            return;
        }
        let failed: Vec<(String, AgentId)> = parts
            .iter()
            .filter(|(_, _, r)| matches!(r, Some((false, _))))
            .map(|(s, m, _)| (s.clone(), *m))
            .collect();
        if failed.is_empty() {
            let Some(c) = self.coordinating.get(&task_id) else {
                return;
            };
            if !c.announce.consensus {
                return self.finish(task_id, Outcome::Completed);
            }
            if c.ballot.is_none() {
                self.coord_start_vote(task_id, &view);
            }
            return;
        }
        // Retries are counted per skill, so one unlucky part does not spend the
        // tries of the others: a place of a skill needed twice may fail twice as
        // often before the task fails.
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        let per_place = self.config.max_part_retries;
        let spent = failed.iter().find(|(skill, _)| {
            let places = c
                .announce
                .required
                .iter()
                .find(|r| r.name == *skill)
                .map_or(1, |r| r.count);
            c.retries.get(skill).copied().unwrap_or(0) >= per_place.saturating_mul(places)
        });
        if let Some((skill, m)) = spent {
            let why = format!("part {skill} failed (last tried by {m})");
            return self.finish(task_id, Outcome::Failed(why));
        }
        for (skill, _) in &failed {
            *c.retries.entry(skill.clone()).or_default() += 1;
        }
        for (skill, m) in failed {
            self.fail_member(task_id, m, &skill, "its part failed");
        }
        self.fill_vacancies(task_id);
    }

    /// Declares a member failed in the document; its part goes to a standby.
    pub(in crate::agent) fn fail_member(
        &mut self,
        task_id: TaskId,
        member: AgentId,
        skill: &str,
        reason: &str,
    ) {
        let now = self.now;
        let alpha = self.config.ewma_alpha;
        self.reputation
            .entry(member)
            .or_default()
            .observe(false, alpha);
        let Some(doc) = self.docs.get_mut(&task_id) else {
            return;
        };
        if let Err(e) = doc.declare_failed(member.key(), reason, now) {
            debug!(error = %e, "cannot declare failure");
            return;
        }
        if let Some(c) = self.coordinating.get_mut(&task_id) {
            c.watched.remove(&member);
            c.last_seen.remove(&member);
            c.barred.insert(member);
        }
        debug!(task = ?task_id, peer = %member, reason, "member failed");
        self.emit(Event::MemberFailed {
            task_id,
            member,
            skill: skill.to_string(),
            reason: reason.to_string(),
        });
    }

    pub(in crate::agent) fn coord_tick(&mut self, task_id: TaskId) {
        let now = self.now;
        let timeout = self.config.suspicion_timeout_ms;
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        if c.ballot.as_ref().is_some_and(|b| now > b.deadline()) {
            return self.coord_vote_expired(task_id);
        }
        if now >= c.announce.deadline_ms {
            return self.finish(task_id, Outcome::Failed("deadline passed".into()));
        }
        if c.collect_until.is_some_and(|t| now >= t) {
            c.collect_until = None;
            self.fill_vacancies(task_id);
        }
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        let expired: Vec<AgentId> = c
            .invited
            .iter()
            .filter(|(_, i)| now >= i.deadline)
            .map(|(a, _)| *a)
            .collect();
        for a in &expired {
            c.invited.remove(a);
        }
        let silent: Vec<AgentId> = c
            .watched
            .iter()
            .filter(|m| c.last_seen.get(m).is_none_or(|t| now >= t + timeout))
            .copied()
            .collect();
        let reannounce = c.reannounce_at.is_some_and(|t| now >= t);
        let heartbeat = now >= c.next_heartbeat;
        if heartbeat {
            c.next_heartbeat = now + self.config.heartbeat_interval_ms;
        }
        let alpha = self.config.ewma_alpha;
        for a in &expired {
            debug!(task = ?task_id, peer = %a, "invitation timed out");
            self.reputation.entry(*a).or_default().observe(false, alpha);
            self.directory.forget(*a);
        }
        if !silent.is_empty() {
            let skills: BTreeMap<AgentId, String> = self
                .docs
                .get(&task_id)
                .and_then(|d| d.view().ok())
                .map(|v| {
                    v.members
                        .values()
                        .map(|m| (AgentId::from(m.key), m.skill.clone()))
                        .collect()
                })
                .unwrap_or_default();
            for m in &silent {
                let skill = skills.get(m).cloned().unwrap_or_default();
                self.fail_member(task_id, *m, &skill, "silent past the suspicion timeout");
            }
            self.coord_progress(task_id);
        }
        if !expired.is_empty() || !silent.is_empty() {
            self.fill_vacancies(task_id);
        }
        if reannounce {
            self.reannounce(task_id);
        }
        if heartbeat {
            self.coord_heartbeat(task_id);
        }
    }

    pub(in crate::agent) fn coord_heartbeat(&mut self, task_id: TaskId) {
        let Some(doc) = self.docs.get(&task_id) else {
            return;
        };
        let Ok(view) = doc.view() else { return };
        let heads: Vec<[u8; 32]> = doc.heads().into_iter().map(|h| h.0).collect();
        // Members declared failed are told too: one that is alive after all answers
        // with what it knows, so a coordinator that was itself cut off and replaced
        // learns that it was.
        let members: Vec<AgentId> = view
            .members
            .values()
            .filter(|m| m.status.is_in_group() || m.status == MemberStatus::Failed)
            .map(|m| AgentId::from(m.key))
            .filter(|m| *m != self.id)
            .collect();
        for m in members {
            self.send(
                m,
                Message::Heartbeat {
                    task_id,
                    heads: heads.clone(),
                },
            );
        }
    }

    /// Records the outcome in the document, dissolves the group and reports.
    pub(in crate::agent) fn finish(&mut self, task_id: TaskId, outcome: Outcome) {
        self.finish_with(task_id, outcome, None);
    }

    /// [`Agent::finish`] with the validators' certificate, if the task had a vote.
    pub(in crate::agent) fn finish_with(
        &mut self,
        task_id: TaskId,
        outcome: Outcome,
        certificate: Option<crate::consensus::Certificate>,
    ) {
        let now = self.now;
        let timeout = self.config.suspicion_timeout_ms;
        let alpha = self.config.ewma_alpha;
        let Some(c) = self.coordinating.get(&task_id) else {
            return;
        };
        // Answer stragglers (from a tombstone) for as long as a member may still hold
        // the group: members give up on it at the deadline plus the suspicion
        // timeout. A member cut off meanwhile learns the end, and hands over what it
        // wrote, when it is heard from again.
        let until = (now + 2 * timeout).max(c.announce.deadline_ms + 2 * timeout);
        if !self.in_charge(&task_id) {
            return self.step_down(task_id);
        }
        let Some(doc) = self.docs.get_mut(&task_id) else {
            return;
        };
        let crdt_outcome = match &outcome {
            Outcome::Completed => TaskOutcome::Completed,
            Outcome::Failed(r) => TaskOutcome::Failed(r.chars().take(200).collect()),
        };
        let _ = doc.set_outcome(&crdt_outcome, now);
        let _ = doc.set_status(TaskStatus::Dissolved, now);
        let Ok(view) = doc.view() else { return };
        let results: Vec<PartResult> = view
            .selected()
            .filter_map(|(skill, k)| {
                let r = view.member(k)?.result.clone()?;
                Some(PartResult {
                    skill: skill.to_string(),
                    member: AgentId::from(k),
                    success: r.success,
                    output: r.output,
                })
            })
            .collect();
        let notify: Vec<AgentId> = view
            .members
            .values()
            .filter(|m| m.status.is_in_group() || m.status == MemberStatus::Invited)
            .map(|m| AgentId::from(m.key))
            .collect();
        for r in &results {
            self.reputation
                .entry(r.member)
                .or_default()
                .observe(r.success, alpha);
        }
        for m in notify {
            let changes = self.encode_for(&task_id, m);
            self.send(
                m,
                Message::GroupDissolve {
                    task_id,
                    outcome: outcome.clone(),
                    changes,
                },
            );
        }
        debug!(task = ?task_id, ?outcome, "task finished");
        self.emit(Event::TaskFinished {
            task_id,
            outcome: outcome.clone(),
            results,
            certificate,
        });
        self.bury(task_id, outcome.clone(), until);
        self.remember_outcome(task_id, outcome);
    }
}
