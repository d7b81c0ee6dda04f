//! Staffing a task: ranking offers, inviting the best, keeping standbys, announcing
//! again when a skill has no offer left.

use std::collections::BTreeSet;

use starling_crdt::{GroupDoc, MemberStatus};
use tracing::debug;

use super::{Candidate, Invitation};
use crate::{
    AgentId, Message, Outcome, RejectReason, Skill, TaskId,
    agent::{Agent, Event},
    scoring, skill_topic,
};

impl Agent {
    pub(in crate::agent) fn coord_on_offer(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        skill: Skill,
        free: u32,
        max: u32,
    ) {
        let rep = self.reputation(&from);
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return self.stray(from, "offer for an unknown task");
        };
        if from == self.id {
            return;
        }
        let Some(req) = c.announce.required.iter().find(|r| r.name == skill.name) else {
            return self.stray(from, "offer for a skill the task does not need");
        };
        if skill.validate().is_err() {
            return self.misbehaved(from, "offer with out-of-range metrics".into());
        }
        if skill.level < req.min_level {
            return self.stray(from, "offer below the minimum level");
        }
        let capacity = self.config.directory_capacity;
        self.directory
            .learn_skill(from, &skill, (free, max), self.now, capacity);
        let list = c.offers.entry(skill.name.clone()).or_default();
        if list.iter().any(|o| o.agent == from) {
            return self.stray(from, "duplicate offer");
        }
        let score = scoring::offer_score(&skill, req.min_level, free, max, rep);
        let pos = list
            .iter()
            .position(|o| o.score < score || (o.score == score && from < o.agent))
            .unwrap_or(list.len());
        list.insert(pos, Candidate { agent: from, score });
        if c.collect_until.is_some() {
            let per_slot = 1 + self.config.standbys_per_slot as usize;
            if self.enough_offers(task_id, per_slot) {
                if let Some(c) = self.coordinating.get_mut(&task_id) {
                    c.collect_until = None;
                }
                self.fill_vacancies(task_id);
            } else if self.enough_offers(task_id, 1) {
                // Every place has an offer but not every standby: wait for better
                // offers as long again as these took (at least a tenth of the
                // window), not the whole window — the window is for when few
                // answer, and the first answers show how long answering takes now.
                let now = self.now;
                let least = self.config.offer_window_ms / 10;
                if let Some(c) = self.coordinating.get_mut(&task_id) {
                    let took = now.saturating_sub(c.collecting_since).max(least);
                    c.collect_until = c.collect_until.map(|t| t.min(now + took));
                }
            }
        } else {
            self.fill_vacancies(task_id);
        }
    }

    /// Open slots per skill: required minus members in the group minus invitations out.
    pub(in crate::agent) fn vacancies(&self, task_id: TaskId) -> Vec<(String, u32)> {
        let (Some(c), Some(doc)) = (self.coordinating.get(&task_id), self.docs.get(&task_id))
        else {
            return Vec::new();
        };
        let Ok(view) = doc.view() else {
            return Vec::new();
        };
        c.announce
            .required
            .iter()
            .map(|r| {
                let in_group = view
                    .members
                    .values()
                    .filter(|m| m.skill == r.name && m.status.is_in_group())
                    .count();
                let out = c.invited.values().filter(|i| i.skill == r.name).count();
                (
                    r.name.clone(),
                    r.count.saturating_sub((in_group + out) as u32),
                )
            })
            .collect()
    }

    /// Agents that may not be invited now: barred ones, ones with an invitation
    /// open, and ones the document shows in the group, failed, or gone for good.
    /// What is left are agents never invited, and agents whose refusal or silence
    /// answered an earlier invitation and who offered again.
    pub(in crate::agent) fn not_invitable(&self, task_id: TaskId) -> BTreeSet<AgentId> {
        let Some(c) = self.coordinating.get(&task_id) else {
            return BTreeSet::new();
        };
        let mut out: BTreeSet<AgentId> = c.barred.iter().chain(c.invited.keys()).copied().collect();
        if let Some(view) = self.docs.get(&task_id).and_then(|d| d.view().ok()) {
            out.extend(
                view.members
                    .values()
                    .filter(|m| match m.status {
                        MemberStatus::Invited => false,
                        // Declined: a new invitation is open again (see the crdt view).
                        MemberStatus::Left => m.declined_invite.is_none(),
                        _ => true,
                    })
                    .map(|m| AgentId::from(m.key)),
            );
        }
        out
    }

    /// Whether every open place has `per_slot` usable offers.
    pub(in crate::agent) fn enough_offers(&self, task_id: TaskId, per_slot: usize) -> bool {
        let Some(c) = self.coordinating.get(&task_id) else {
            return false;
        };
        let skip = self.not_invitable(task_id);
        self.vacancies(task_id).iter().all(|(skill, n)| {
            let usable = c
                .offers
                .get(skill)
                .map_or(0, |l| l.iter().filter(|o| !skip.contains(&o.agent)).count());
            usable >= *n as usize * per_slot
        })
    }

    /// Invites the best invitable offers into open slots; schedules a new announcement
    /// for skills with no offer left.
    pub(in crate::agent) fn fill_vacancies(&mut self, task_id: TaskId) {
        match self.coordinating.get(&task_id) {
            Some(c) if c.collect_until.is_none() => {}
            _ => return,
        }
        for (skill, mut need) in self.vacancies(task_id) {
            while need > 0 {
                // Recomputed per invitation: an agent offering two skills is invited
                // for one part only.
                let skip = self.not_invitable(task_id);
                let Some(c) = self.coordinating.get_mut(&task_id) else {
                    return;
                };
                let list = c.offers.entry(skill.clone()).or_default();
                let next = list.iter().position(|o| !skip.contains(&o.agent));
                let directed = !c.gossiped;
                match next.map(|i| list.remove(i)) {
                    Some(cand) => {
                        self.invite(task_id, cand.agent, &skill, cand.score);
                        need -= 1;
                    }
                    None if directed && self.draw_more(task_id, &skill, need) => {}
                    None => {
                        if let Some(c) = self.coordinating.get_mut(&task_id) {
                            c.needs_announce.insert(skill.clone());
                        }
                        break;
                    }
                }
            }
        }
        let delay = self.config.reannounce_interval_ms;
        let delay = self.jittered(delay);
        if let Some(c) = self.coordinating.get_mut(&task_id)
            && !c.needs_announce.is_empty()
            && c.reannounce_at.is_none()
        {
            // A directed task whose candidates ran out is announced at once: nobody
            // has been asked yet who might offer.
            c.reannounce_at = Some(if c.gossiped {
                self.now + delay
            } else {
                self.now
            });
        }
    }

    pub(in crate::agent) fn invite(
        &mut self,
        task_id: TaskId,
        agent: AgentId,
        skill: &str,
        score: f64,
    ) {
        let now = self.now;
        let Some(doc) = self.docs.get_mut(&task_id) else {
            return;
        };
        if let Err(e) = doc.invite(agent.key(), skill, score, now) {
            debug!(error = %e, "cannot invite");
            return;
        }
        let deadline = now + self.config.invite_timeout_ms;
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        c.tried.insert(agent);
        self.directory.reserve(agent);
        c.invited.insert(
            agent,
            Invitation {
                skill: skill.to_string(),
                deadline,
            },
        );
        let task = c.announce.clone();
        // The whole history: an invitee keeps no replica of a group it declined, so
        // a second invitation cannot build on the first. What follows builds on it.
        let changes = self.encode_all(&task_id);
        let heads = self.docs.get(&task_id).map(GroupDoc::heads);
        if let (Some(c), Some(heads)) = (self.coordinating.get_mut(&task_id), heads) {
            c.shipped.insert(agent, heads);
        }
        debug!(task = ?task_id, peer = %agent, skill, "invite");
        self.send(
            agent,
            Message::GroupInvite {
                task,
                skill: skill.to_string(),
                changes,
            },
        );
    }

    pub(in crate::agent) fn reannounce(&mut self, task_id: TaskId) {
        let max_rounds = self.config.max_announce_rounds;
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        c.reannounce_at = None;
        if c.needs_announce.is_empty() {
            return;
        }
        // The round limit bounds the forming of a group. Once it runs, finished parts
        // are worth waiting for: a failed part is asked for until the deadline, as a
        // holder of its skill may free a slot or join later (members of the group do
        // not count: each agent does one part, see `member_on_announce`).
        if !c.formed && c.announce.round + 1 >= max_rounds {
            let skills: Vec<String> = c.needs_announce.iter().cloned().collect();
            return self.finish(
                task_id,
                Outcome::Failed(format!("no agent available for {}", skills.join(", "))),
            );
        }
        c.announce.round += 1;
        c.gossiped = true;
        c.collect_until = Some(self.now + self.config.offer_window_ms);
        c.collecting_since = self.now;
        let announce = c.announce.clone();
        let skills: Vec<String> = std::mem::take(&mut c.needs_announce).into_iter().collect();
        for s in &skills {
            self.publish(skill_topic(s), Message::TaskAnnounce(announce.clone()));
        }
        self.emit(Event::TaskAnnounced {
            task_id,
            round: announce.round,
            skills,
        });
    }

    pub(in crate::agent) fn coord_on_accept(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        changes: &[u8],
    ) {
        let Some(c) = self.coordinating.get(&task_id) else {
            // A late acceptance changes nothing in a finished group: the invitee
            // gets the end.
            if !self.answer_from_tombstone(from, task_id, &[]) {
                self.stray(from, "accept for an unknown task");
            }
            return;
        };
        if !c.tried.contains(&from) {
            return self.stray(from, "accept without an invitation");
        }
        self.apply_batch(from, task_id, changes);
        if let Some(c) = self.coordinating.get_mut(&task_id) {
            c.invited.remove(&from);
            c.last_seen.insert(from, self.now);
        }
        self.coord_progress(task_id);
        self.fill_vacancies(task_id);
    }

    pub(in crate::agent) fn coord_on_reject(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        reason: RejectReason,
        changes: &[u8],
    ) {
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return self.stray(from, "reject for an unknown task");
        };
        let Some(invitation) = c.invited.remove(&from) else {
            return self.stray(from, "reject without an open invitation");
        };
        // No free slot is a passing state: the agent offers again once it has one.
        // Anything else means it cannot take this part.
        if reason != RejectReason::NoCapacity {
            c.barred.insert(from);
            self.directory.forget_skill(from, &invitation.skill);
        }
        debug!(task = ?task_id, peer = %from, ?reason, "invitation declined");
        if !changes.is_empty() {
            self.apply_batch(from, task_id, changes);
        }
        self.fill_vacancies(task_id);
    }
}
