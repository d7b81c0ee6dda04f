//! The coordinator role: for its own tasks (or ones it took over), an agent collects
//! offers, ranks them, invites the best per skill and keeps the rest as standbys,
//! records membership in the group document, starts the work, watches the members,
//! reassigns failed parts and finishes the task.

use std::collections::{BTreeMap, BTreeSet};

use starling_crdt::{GroupDoc, GroupSpec, MemberStatus, SkillNeed, TaskOutcome, TaskStatus};
use tracing::debug;

use super::{Agent, Event, PartResult, TaskSpec, Timestamp};
use crate::{
    AgentConfig, AgentId, Message, Outcome, ProtocolError, RejectReason, Result, Skill,
    TaskAnnounce, TaskId,
    message::{MAX_DEPS, MAX_NAME, MAX_PAYLOAD, MAX_TEXT},
    scoring, skill_topic,
};

/// A selected member's part: skill, member, and (success, output) once recorded.
type Part = (String, AgentId, Option<(bool, Vec<u8>)>);

/// A member to send `TaskStart`: skill, member, checkpoint to resume from, and whether
/// it replaces a failed member.
type ToStart = (String, AgentId, Option<Vec<u8>>, bool);

/// An offer kept for ranking and as a standby.
#[derive(Debug, Clone)]
struct Candidate {
    agent: AgentId,
    score: f64,
}

#[derive(Debug, Clone)]
struct Invitation {
    skill: String,
    deadline: Timestamp,
}

/// A task this agent coordinates.
#[derive(Debug)]
pub(crate) struct Coordination {
    pub(crate) announce: TaskAnnounce,
    /// While collecting offers: when the window closes at the latest.
    collect_until: Option<Timestamp>,
    /// Offers per skill, best first.
    offers: BTreeMap<String, Vec<Candidate>>,
    /// Agents invited at some point (never invited twice).
    tried: BTreeSet<AgentId>,
    /// Invitations not answered yet.
    invited: BTreeMap<AgentId, Invitation>,
    /// Last sign of life of each watched member.
    last_seen: BTreeMap<AgentId, Timestamp>,
    /// Selected members still working (no result yet): the ones whose silence matters.
    watched: BTreeSet<AgentId>,
    /// Members sent `TaskStart`.
    started: BTreeSet<AgentId>,
    /// Accepted members that were not needed and were released.
    released: BTreeSet<AgentId>,
    formed: bool,
    /// Skills that got no usable offer and must be announced again.
    needs_announce: BTreeSet<String>,
    reannounce_at: Option<Timestamp>,
    retries: u32,
    next_heartbeat: Timestamp,
    /// After the task finished: how long to keep answering stragglers.
    done_until: Option<Timestamp>,
    outcome: Option<Outcome>,
}

impl Coordination {
    fn new(announce: TaskAnnounce, now: Timestamp, config: &AgentConfig, collecting: bool) -> Self {
        Coordination {
            announce,
            collect_until: collecting.then_some(now + config.offer_window_ms),
            offers: BTreeMap::new(),
            tried: BTreeSet::new(),
            invited: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            watched: BTreeSet::new(),
            started: BTreeSet::new(),
            released: BTreeSet::new(),
            formed: false,
            needs_announce: BTreeSet::new(),
            reannounce_at: None,
            retries: 0,
            next_heartbeat: now + config.heartbeat_interval_ms,
            done_until: None,
            outcome: None,
        }
    }

    pub(crate) fn next_deadline(&self, config: &AgentConfig) -> Option<Timestamp> {
        if let Some(t) = self.done_until {
            return Some(t);
        }
        let silent = self
            .watched
            .iter()
            .filter_map(|m| self.last_seen.get(m))
            .map(|t| t + config.suspicion_timeout_ms);
        let heartbeat =
            (!self.watched.is_empty() || !self.invited.is_empty()).then_some(self.next_heartbeat);
        [
            self.collect_until,
            self.reannounce_at,
            heartbeat,
            Some(self.announce.deadline_ms),
        ]
        .into_iter()
        .flatten()
        .chain(self.invited.values().map(|i| i.deadline))
        .chain(silent)
        .min()
    }

    pub(crate) fn peer_down(&mut self, peer: AgentId, seen_due: Timestamp, invite_due: Timestamp) {
        if let Some(t) = self.last_seen.get_mut(&peer) {
            *t = (*t).min(seen_due);
        }
        if let Some(i) = self.invited.get_mut(&peer) {
            i.deadline = i.deadline.min(invite_due);
        }
    }

    fn is_done(&self) -> bool {
        self.done_until.is_some()
    }
}

impl Agent {
    /// Validates a spec, then announces the task, waits for its dependencies, or fails
    /// it at once if a dependency failed.
    pub(super) fn announce_task(&mut self, spec: TaskSpec) -> Result<TaskId> {
        let bad = |m: String| Err(ProtocolError::Refused(m));
        if spec.description.len() > MAX_TEXT {
            return bad(format!("description longer than {MAX_TEXT} bytes"));
        }
        if spec.payload.len() > MAX_PAYLOAD {
            return bad(format!("payload longer than {MAX_PAYLOAD} bytes"));
        }
        if spec.depends_on.len() > MAX_DEPS {
            return bad(format!("more than {MAX_DEPS} dependencies"));
        }
        if spec.required.iter().any(|r| r.name.len() > MAX_NAME) {
            return bad(format!("skill names are at most {MAX_NAME} bytes"));
        }
        let total: u32 = spec.required.iter().map(|r| r.count).sum();
        let now = self.now;
        let announce = TaskAnnounce {
            task_id: TaskId {
                initiator: self.id,
                seq: self.task_seq.next(now),
            },
            description: spec.description,
            required: spec.required,
            priority: spec.priority,
            created_at_ms: now,
            deadline_ms: now + spec.deadline_ms.unwrap_or(self.config.default_deadline_ms),
            max_group_size: spec.max_group_size.unwrap_or(total),
            depends_on: spec.depends_on,
            payload: spec.payload,
            round: 0,
        };
        announce
            .validate()
            .map_err(|e| ProtocolError::Refused(e.to_string()))?;
        let task_id = announce.task_id;
        let failed_dep = announce
            .depends_on
            .iter()
            .find(|d| matches!(self.finished.get(d), Some(Outcome::Failed(_))))
            .copied();
        if let Some(dep) = failed_dep {
            let outcome = Outcome::Failed(format!("dependency {dep} failed"));
            self.emit(Event::TaskFinished {
                task_id,
                outcome: outcome.clone(),
                results: Vec::new(),
            });
            self.remember_outcome(task_id, outcome);
            return Ok(task_id);
        }
        let waiting_for: Vec<TaskId> = announce
            .depends_on
            .iter()
            .filter(|d| self.finished.get(d) != Some(&Outcome::Completed))
            .copied()
            .collect();
        if !waiting_for.is_empty() {
            debug!(task = ?task_id, waiting = waiting_for.len(), "task waits for dependencies");
            self.waiting.insert(task_id, announce);
            self.emit(Event::TaskWaiting {
                task_id,
                waiting_for,
            });
            return Ok(task_id);
        }
        self.begin_coordination(announce)?;
        Ok(task_id)
    }

    /// Starts waiting tasks whose dependencies are now complete (or fails them).
    pub(super) fn start_ready_waiting(&mut self) {
        let ready: Vec<TaskId> = self
            .waiting
            .values()
            .filter(|a| a.depends_on.iter().all(|d| self.finished.contains_key(d)))
            .map(|a| a.task_id)
            .collect();
        for task_id in ready {
            let Some(announce) = self.waiting.remove(&task_id) else {
                continue;
            };
            let failed = announce
                .depends_on
                .iter()
                .find(|d| self.finished.get(d) != Some(&Outcome::Completed))
                .copied();
            if let Some(dep) = failed {
                let outcome = Outcome::Failed(format!("dependency {dep} failed"));
                self.emit(Event::TaskFinished {
                    task_id,
                    outcome: outcome.clone(),
                    results: Vec::new(),
                });
                self.remember_outcome(task_id, outcome);
            } else if let Err(e) = self.begin_coordination(announce) {
                self.emit(Event::CommandFailed {
                    reason: e.to_string(),
                });
            }
        }
    }

    fn begin_coordination(&mut self, announce: TaskAnnounce) -> Result<()> {
        let task_id = announce.task_id;
        let spec = GroupSpec {
            group_id: task_id.group_id(),
            initiator: self.id.key(),
            skills: announce
                .required
                .iter()
                .map(|r| SkillNeed {
                    name: r.name.clone(),
                    count: r.count,
                })
                .collect(),
            max_group_size: announce.max_group_size,
            created_at_ms: announce.created_at_ms,
        };
        let (doc, _genesis) = GroupDoc::create(
            self.keypair.signing_key().clone(),
            &spec,
            self.config.crdt_limits.clone(),
        )?;
        self.docs.insert(task_id, doc);
        for r in &announce.required {
            self.publish(
                skill_topic(&r.name),
                Message::TaskAnnounce(announce.clone()),
            );
        }
        debug!(task = ?task_id, skills = announce.required.len(), "announced");
        self.coordinating.insert(
            task_id,
            Coordination::new(announce, self.now, &self.config, true),
        );
        self.emit(Event::TaskAnnounced { task_id, round: 0 });
        Ok(())
    }

    /// Becomes coordinator of a task this agent is a member of (after a takeover).
    pub(super) fn resume_coordination(&mut self, task_id: TaskId, announce: TaskAnnounce) {
        let Some(view) = self.docs.get(&task_id).and_then(|d| d.view().ok()) else {
            return;
        };
        let mut c = Coordination::new(announce, self.now, &self.config, false);
        // Whether the old coordinator's starts arrived is unknown: `coord_progress`
        // sends `TaskStart` again to every selected member without a result (members
        // ignore a second start).
        c.formed = view.status >= TaskStatus::Running || view.is_complete();
        for (_, m) in view.selected() {
            let m = AgentId::from(m);
            let done = view.member(m.key()).is_some_and(|v| v.result.is_some());
            let own_running = m == self.id
                && self
                    .memberships
                    .get(&task_id)
                    .is_some_and(|ms| ms.started_at.is_some());
            if done || own_running {
                c.started.insert(m);
            }
            c.last_seen.insert(m, self.now);
        }
        c.tried
            .extend(view.members.keys().map(|k| AgentId::from(*k)));
        self.coordinating.insert(task_id, c);
        self.emit(Event::CoordinatorChanged {
            task_id,
            coordinator: self.id,
        });
        self.coord_progress(task_id);
        self.fill_vacancies(task_id);
    }

    pub(super) fn coord_on_offer(
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
        if c.is_done() || from == self.id {
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
            if self.enough_offers(task_id) {
                if let Some(c) = self.coordinating.get_mut(&task_id) {
                    c.collect_until = None;
                }
                self.fill_vacancies(task_id);
            }
        } else {
            self.fill_vacancies(task_id);
        }
    }

    /// Open slots per skill: required minus members in the group minus invitations out.
    fn vacancies(&self, task_id: TaskId) -> Vec<(String, u32)> {
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

    fn enough_offers(&self, task_id: TaskId) -> bool {
        let Some(c) = self.coordinating.get(&task_id) else {
            return false;
        };
        let per_slot = 1 + self.config.standbys_per_slot as usize;
        self.vacancies(task_id).iter().all(|(skill, n)| {
            let usable = c.offers.get(skill).map_or(0, |l| {
                l.iter().filter(|o| !c.tried.contains(&o.agent)).count()
            });
            usable >= *n as usize * per_slot
        })
    }

    /// Invites the best untried offers into open slots; schedules a new announcement
    /// for skills with no offer left.
    pub(super) fn fill_vacancies(&mut self, task_id: TaskId) {
        match self.coordinating.get(&task_id) {
            Some(c) if !c.is_done() && c.collect_until.is_none() => {}
            _ => return,
        }
        for (skill, mut need) in self.vacancies(task_id) {
            while need > 0 {
                let Some(c) = self.coordinating.get_mut(&task_id) else {
                    return;
                };
                let list = c.offers.entry(skill.clone()).or_default();
                let next = list.iter().position(|o| !c.tried.contains(&o.agent));
                match next.map(|i| list.remove(i)) {
                    Some(cand) => {
                        self.invite(task_id, cand.agent, &skill, cand.score);
                        need -= 1;
                    }
                    None => {
                        c.needs_announce.insert(skill.clone());
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
            c.reannounce_at = Some(self.now + delay);
        }
    }

    fn invite(&mut self, task_id: TaskId, agent: AgentId, skill: &str, score: f64) {
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
        c.invited.insert(
            agent,
            Invitation {
                skill: skill.to_string(),
                deadline,
            },
        );
        let task = c.announce.clone();
        let changes = self.encode_all(&task_id);
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

    fn reannounce(&mut self, task_id: TaskId) {
        let max_rounds = self.config.max_announce_rounds;
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        c.reannounce_at = None;
        if c.needs_announce.is_empty() {
            return;
        }
        if c.announce.round + 1 >= max_rounds {
            let skills: Vec<String> = c.needs_announce.iter().cloned().collect();
            return self.finish(
                task_id,
                Outcome::Failed(format!("no agent available for {}", skills.join(", "))),
            );
        }
        c.announce.round += 1;
        c.collect_until = Some(self.now + self.config.offer_window_ms);
        let announce = c.announce.clone();
        let skills: Vec<String> = std::mem::take(&mut c.needs_announce).into_iter().collect();
        for s in skills {
            self.publish(skill_topic(&s), Message::TaskAnnounce(announce.clone()));
        }
        self.emit(Event::TaskAnnounced {
            task_id,
            round: announce.round,
        });
    }

    pub(super) fn coord_on_accept(&mut self, from: AgentId, task_id: TaskId, changes: &[u8]) {
        let Some(c) = self.coordinating.get(&task_id) else {
            return self.stray(from, "accept for an unknown task");
        };
        if !c.tried.contains(&from) {
            return self.stray(from, "accept without an invitation");
        }
        if let Some(outcome) = c.outcome.clone() {
            let changes = self.encode_all(&task_id);
            return self.send(
                from,
                Message::GroupDissolve {
                    task_id,
                    outcome,
                    changes,
                },
            );
        }
        self.apply_batch(from, task_id, changes);
        if let Some(c) = self.coordinating.get_mut(&task_id) {
            c.invited.remove(&from);
            c.last_seen.insert(from, self.now);
        }
        self.coord_progress(task_id);
        self.fill_vacancies(task_id);
    }

    pub(super) fn coord_on_reject(&mut self, from: AgentId, task_id: TaskId, reason: RejectReason) {
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return self.stray(from, "reject for an unknown task");
        };
        if c.invited.remove(&from).is_none() {
            return self.stray(from, "reject without an open invitation");
        }
        debug!(task = ?task_id, peer = %from, ?reason, "invitation declined");
        self.fill_vacancies(task_id);
    }

    pub(super) fn coord_on_update(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        progress: f64,
        changes: &[u8],
    ) {
        if !self.coord_hears_member(from, task_id) {
            return;
        }
        self.apply_batch(from, task_id, changes);
        if progress.is_finite() {
            self.emit(Event::TaskProgress {
                task_id,
                member: from,
                progress: progress.clamp(0.0, 1.0),
            });
        }
    }

    pub(super) fn coord_on_complete(&mut self, from: AgentId, task_id: TaskId, changes: &[u8]) {
        if !self.coord_hears_member(from, task_id) {
            return;
        }
        // Progress even if nothing new applied: the result may have arrived by sync.
        self.apply_batch(from, task_id, changes);
        self.coord_progress(task_id);
    }

    pub(super) fn coord_on_heartbeat(&mut self, from: AgentId, task_id: TaskId) {
        self.coord_hears_member(from, task_id);
    }

    /// Records a sign of life from a member; answers a member that missed the end.
    /// Returns whether the message should be processed further.
    fn coord_hears_member(&mut self, from: AgentId, task_id: TaskId) -> bool {
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return false;
        };
        if let Some(outcome) = c.outcome.clone() {
            let changes = self.encode_all(&task_id);
            self.send(
                from,
                Message::GroupDissolve {
                    task_id,
                    outcome,
                    changes,
                },
            );
            return false;
        }
        if !c.last_seen.contains_key(&from) && !c.tried.contains(&from) {
            self.stray(from, "task message from a non-member");
            return false;
        }
        c.last_seen.insert(from, self.now);
        true
    }

    /// Moves a coordinated task forward from what its document says.
    pub(super) fn coord_progress(&mut self, task_id: TaskId) {
        let now = self.now;
        let (Some(c), Some(doc)) = (self.coordinating.get(&task_id), self.docs.get_mut(&task_id))
        else {
            return;
        };
        if c.is_done() {
            return;
        }
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

        let changes = self.encode_all(&task_id);
        if newly_formed {
            for (_, m) in &selected {
                self.send(
                    *m,
                    Message::GroupFormed {
                        task_id,
                        changes: changes.clone(),
                    },
                );
            }
            debug!(task = ?task_id, members = selected.len(), "group formed");
            self.emit(Event::GroupFormed {
                task_id,
                members: selected.clone(),
            });
        }
        for (skill, m, resume_from, replaces) in to_start {
            let resumed = resume_from.is_some();
            self.send(
                m,
                Message::TaskStart {
                    task_id,
                    resume_from,
                    changes: changes.clone(),
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
            self.send(
                m,
                Message::GroupDissolve {
                    task_id,
                    outcome,
                    changes: changes.clone(),
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
            return self.finish(task_id, Outcome::Completed);
        }
        let retries = self.coordinating.get(&task_id).map_or(0, |c| c.retries);
        if retries >= self.config.max_part_retries {
            let (skill, m) = &failed[0];
            return self.finish(
                task_id,
                Outcome::Failed(format!("part {skill} failed (last tried by {m})")),
            );
        }
        if let Some(c) = self.coordinating.get_mut(&task_id) {
            c.retries += 1;
        }
        for (skill, m) in failed {
            self.fail_member(task_id, m, &skill, "its part failed");
        }
        self.fill_vacancies(task_id);
    }

    /// Declares a member failed in the document; its part goes to a standby.
    fn fail_member(&mut self, task_id: TaskId, member: AgentId, skill: &str, reason: &str) {
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
        }
        debug!(task = ?task_id, peer = %member, reason, "member failed");
        self.emit(Event::MemberFailed {
            task_id,
            member,
            skill: skill.to_string(),
            reason: reason.to_string(),
        });
    }

    pub(super) fn coord_tick(&mut self, task_id: TaskId) {
        let now = self.now;
        let timeout = self.config.suspicion_timeout_ms;
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        if let Some(until) = c.done_until {
            if now >= until {
                self.coordinating.remove(&task_id);
                self.close_doc_if_unused(task_id);
            }
            return;
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

    fn coord_heartbeat(&mut self, task_id: TaskId) {
        let Some(doc) = self.docs.get(&task_id) else {
            return;
        };
        let Ok(view) = doc.view() else { return };
        let heads: Vec<[u8; 32]> = doc.heads().into_iter().map(|h| h.0).collect();
        let members: Vec<AgentId> = view
            .members
            .values()
            .filter(|m| m.status.is_in_group())
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
    pub(super) fn finish(&mut self, task_id: TaskId, outcome: Outcome) {
        let now = self.now;
        let linger = 2 * self.config.suspicion_timeout_ms;
        let alpha = self.config.ewma_alpha;
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        if c.is_done() {
            return;
        }
        c.done_until = Some(now + linger);
        c.outcome = Some(outcome.clone());
        c.invited.clear();
        c.watched.clear();
        c.collect_until = None;
        c.reannounce_at = None;
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
        let changes = self.encode_all(&task_id);
        for m in notify {
            self.send(
                m,
                Message::GroupDissolve {
                    task_id,
                    outcome: outcome.clone(),
                    changes: changes.clone(),
                },
            );
        }
        debug!(task = ?task_id, ?outcome, "task finished");
        self.emit(Event::TaskFinished {
            task_id,
            outcome: outcome.clone(),
            results,
        });
        self.remember_outcome(task_id, outcome);
    }
}
