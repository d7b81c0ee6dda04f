//! The coordinator role: for its own tasks (or ones it took over), an agent collects
//! offers, ranks them, invites the best per skill and keeps the rest as standbys,
//! records membership in the group document, starts the work, watches the members,
//! reassigns failed parts and finishes the task.
//!
//! Submodules: [`staffing`] (offers, invitations, announcements), [`directed`]
//! (staffing from the skill directory, without an announcement) and [`progress`]
//! (starting, watching, reassigning, finishing).

mod directed;
mod progress;
mod staffing;

use std::collections::{BTreeMap, BTreeSet};

use starling_crdt::{ChangeHash, GroupDoc, GroupSpec, SkillNeed, TaskStatus, encode_batch};
use tracing::debug;

use super::{Agent, Event, TaskSpec, Timestamp};
use crate::{
    AgentConfig, AgentId, Message, Outcome, ProtocolError, Result, TaskAnnounce, TaskId,
    message::{MAX_DEPS, MAX_NAME, MAX_PAYLOAD, MAX_TEXT},
    skill_topic,
};

/// A selected member's part: skill, member, and (success, output) once recorded.
pub(in crate::agent) type Part = (String, AgentId, Option<(bool, Vec<u8>)>);

/// A member to send `TaskStart`: skill, member, checkpoint to resume from, and whether
/// it replaces a failed member.
pub(in crate::agent) type ToStart = (String, AgentId, Option<Vec<u8>>, bool);

/// An offer kept for ranking and as a standby.
#[derive(Debug, Clone)]
pub(in crate::agent) struct Candidate {
    pub(in crate::agent) agent: AgentId,
    pub(in crate::agent) score: f64,
}

#[derive(Debug, Clone)]
pub(in crate::agent) struct Invitation {
    pub(in crate::agent) skill: String,
    pub(in crate::agent) deadline: Timestamp,
}

/// A task this agent coordinates.
#[derive(Debug)]
pub(crate) struct Coordination {
    pub(in crate::agent) announce: TaskAnnounce,
    /// While collecting offers: when the window closes at the latest.
    pub(in crate::agent) collect_until: Option<Timestamp>,
    /// When the current round of collecting offers began.
    pub(in crate::agent) collecting_since: Timestamp,
    /// Offers per skill, best first.
    pub(in crate::agent) offers: BTreeMap<String, Vec<Candidate>>,
    /// Agents invited at some point (whose answers are expected).
    pub(in crate::agent) tried: BTreeSet<AgentId>,
    /// Agents never to invite again for this task: they cannot do the part (not
    /// qualified, or refused for a reason that lasts), or their part failed. An agent
    /// that declined for want of a free slot, or did not answer in time, is not barred:
    /// it may offer again and be invited again.
    pub(in crate::agent) barred: BTreeSet<AgentId>,
    /// Invitations not answered yet.
    pub(in crate::agent) invited: BTreeMap<AgentId, Invitation>,
    /// Last sign of life of each watched member.
    pub(in crate::agent) last_seen: BTreeMap<AgentId, Timestamp>,
    /// Selected members still working (no result yet): the ones whose silence matters.
    pub(in crate::agent) watched: BTreeSet<AgentId>,
    /// Members sent `TaskStart`.
    pub(in crate::agent) started: BTreeSet<AgentId>,
    /// Accepted members that were not needed and were released.
    pub(in crate::agent) released: BTreeSet<AgentId>,
    pub(in crate::agent) formed: bool,
    /// Skills that got no usable offer and must be announced again.
    pub(in crate::agent) needs_announce: BTreeSet<String>,
    /// Whether this coordinator announced the task over gossip yet: a directed task
    /// has not, nor has one taken over from another coordinator. Until it has, a skill
    /// out of candidates is drawn from the directory again and then announced at once.
    pub(in crate::agent) gossiped: bool,
    pub(in crate::agent) reannounce_at: Option<Timestamp>,
    /// Failed results so far, per skill: each place may be tried again
    /// `max_part_retries` times.
    pub(in crate::agent) retries: BTreeMap<String, u32>,
    pub(in crate::agent) next_heartbeat: Timestamp,
    /// The vote on the results, for tasks that ask for consensus.
    pub(in crate::agent) ballot: Option<super::voting::Ballot>,
    /// Proposals made so far (numbers the next one).
    pub(in crate::agent) proposals: u64,
    /// Per peer, the heads of the document as last shipped to it: the next message
    /// carries only what came after (see [`Agent::encode_for`]).
    pub(in crate::agent) shipped: BTreeMap<AgentId, Vec<ChangeHash>>,
}

impl Coordination {
    pub(in crate::agent) fn new(
        announce: TaskAnnounce,
        now: Timestamp,
        config: &AgentConfig,
        collecting: bool,
    ) -> Self {
        Coordination {
            announce,
            collect_until: collecting.then_some(now + config.offer_window_ms),
            collecting_since: now,
            offers: BTreeMap::new(),
            tried: BTreeSet::new(),
            barred: BTreeSet::new(),
            invited: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            watched: BTreeSet::new(),
            started: BTreeSet::new(),
            released: BTreeSet::new(),
            formed: false,
            needs_announce: BTreeSet::new(),
            gossiped: collecting,
            reannounce_at: None,
            retries: BTreeMap::new(),
            next_heartbeat: now + config.heartbeat_interval_ms,
            ballot: None,
            proposals: 0,
            shipped: BTreeMap::new(),
        }
    }

    pub(crate) fn next_deadline(&self, config: &AgentConfig) -> Option<Timestamp> {
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
        // What was shipped to it may not have arrived: the next message carries all.
        self.shipped.remove(&peer);
        if let Some(t) = self.last_seen.get_mut(&peer) {
            *t = (*t).min(seen_due);
        }
        if let Some(i) = self.invited.get_mut(&peer) {
            i.deadline = i.deadline.min(invite_due);
        }
    }
}

impl Agent {
    /// The changes of `task_id`'s document that `to` lacks as far as this coordinator
    /// knows: those after what it last shipped to `to` (the whole history the first
    /// time), so that no message repeats the history. A message lost on the way is
    /// made good by anti-entropy: the member's heartbeat shows heads the coordinator
    /// does not have, or the coordinator's shows heads the member lacks, and the two
    /// sync.
    pub(in crate::agent) fn encode_for(&mut self, task_id: &TaskId, to: AgentId) -> Vec<u8> {
        let Some(doc) = self.docs.get(task_id) else {
            return Vec::new();
        };
        let c = self.coordinating.get_mut(task_id);
        let since = c
            .as_ref()
            .and_then(|c| c.shipped.get(&to))
            .map_or(&[][..], |h| &h[..]);
        let batch = encode_batch(&doc.changes_since(since));
        if let Some(c) = c {
            c.shipped.insert(to, doc.heads());
        }
        batch
    }

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
            consensus: spec.consensus,
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
                certificate: None,
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
                    certificate: None,
                });
                self.remember_outcome(task_id, outcome);
            } else if let Err(e) = self.begin_coordination(announce) {
                self.emit(Event::CommandFailed {
                    reason: e.to_string(),
                });
            }
        }
    }

    pub(super) fn begin_coordination(&mut self, announce: TaskAnnounce) -> Result<()> {
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
        let directed = self.directed_candidates(&announce);
        if directed.is_none() {
            for r in &announce.required {
                self.publish(
                    skill_topic(&r.name),
                    Message::TaskAnnounce(announce.clone()),
                );
            }
        }
        debug!(task = ?task_id, skills = announce.required.len(), directed = directed.is_some(), "announced");
        let skills = announce.required.iter().map(|r| r.name.clone()).collect();
        let mut c = Coordination::new(announce, self.now, &self.config, directed.is_none());
        c.offers = directed.unwrap_or_default();
        let directed = !c.gossiped;
        self.coordinating.insert(task_id, c);
        self.emit(Event::TaskAnnounced {
            task_id,
            round: 0,
            skills,
        });
        if directed {
            self.fill_vacancies(task_id);
        }
        Ok(())
    }

    /// Whether the task's document names this agent as its coordinator now.
    pub(in crate::agent) fn in_charge(&self, task_id: &TaskId) -> bool {
        self.docs
            .get(task_id)
            .and_then(|d| d.view().ok())
            .is_some_and(|v| v.coordinator() == self.id.key())
    }

    /// Stops coordinating a task the document hands to another agent: a majority of
    /// the group suspected this one (it was paused, overloaded or cut off) and a
    /// member took over. The new coordinator finishes the task; if this one carried
    /// on too, the task would be finished twice, possibly with different results.
    /// The initiator keeps the document and reports the outcome once the group has
    /// recorded it (as after a restart).
    pub(in crate::agent) fn step_down(&mut self, task_id: TaskId) {
        let Some(coordinator) = self
            .docs
            .get(&task_id)
            .and_then(|d| d.view().ok())
            .map(|v| AgentId::from(v.coordinator()))
        else {
            return;
        };
        if self.coordinating.remove(&task_id).is_none() {
            return;
        }
        debug!(task = ?task_id, peer = %coordinator, "replaced as coordinator; stepping down");
        self.emit(Event::CoordinatorChanged {
            task_id,
            coordinator,
        });
        if task_id.initiator == self.id {
            self.recovering.insert(task_id);
        }
        self.close_doc_if_unused(task_id);
    }

    /// A coordinator that took over may learn only afterwards that the one before it
    /// had already finished the task (the outcome arrives in the document): the task
    /// is over, and must not be run and finished again. It answers stragglers for a
    /// while from a tombstone, like any finished coordination, without reporting a
    /// second finish.
    pub(in crate::agent) fn adopt_recorded_outcome(&mut self, task_id: TaskId) {
        let Some(outcome) = self
            .docs
            .get(&task_id)
            .and_then(|d| d.view().ok())
            .and_then(|v| v.outcome)
        else {
            return;
        };
        let outcome = match outcome {
            starling_crdt::TaskOutcome::Completed => Outcome::Completed,
            starling_crdt::TaskOutcome::Failed(r) => Outcome::Failed(r),
        };
        if !self.coordinating.contains_key(&task_id) {
            return;
        }
        debug!(task = ?task_id, ?outcome, "the task was finished by the previous coordinator");
        let until = self.now + 2 * self.config.suspicion_timeout_ms;
        self.bury(task_id, outcome.clone(), until);
        self.remember_outcome(task_id, outcome);
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
}
