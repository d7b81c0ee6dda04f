//! The coordination state machine: one [`Agent`] per agent, fed inputs at given times.
//!
//! Calling contract (in the style of quinn-proto): call [`Agent::handle`] with the
//! current time and each input, carry out the returned outputs in order, and call
//! `handle(now, Input::Tick)` no later than [`Agent::next_deadline`]. The agent owns
//! no sockets, no clock and no randomness beyond the seed it was given.
//!
//! An agent plays two roles. As a **coordinator** (of tasks it announced, or took over)
//! it collects offers, invites, records membership in the group document, starts the
//! work, watches members and finishes the task ([`coordinator`]). As a **member** it
//! offers its skills, accepts invitations it can honour, runs its part and watches its
//! coordinator ([`member`]). Both roles of one task share one group document.

mod cards;
mod checkpoints;
pub mod coordinator;
mod directory;
mod handover;
pub mod member;
mod neighbours;
mod replicas;
mod rng;
mod tombstones;
pub mod types;
mod voting;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use starling_crdt::{GroupDoc, SyncMessage, decode_batch, encode_batch};
use tracing::{debug, trace, warn};

pub use cards::CardNews;
pub use types::*;

use crate::{
    AgentConfig, AgentId, Audience, Keypair, Message, Outcome, Result, SeqGenerator,
    SignedEnvelope, Skill, TaskAnnounce, TaskId, scoring::Reputation,
};
use coordinator::Coordination;
use member::{BacklogEntry, Membership};

/// Outcomes remembered for dependencies and late messages.
const FINISHED_MEMORY: usize = 10_000;
/// Loopback messages (to itself) processed per input, at most.
const LOOPBACK_LIMIT: usize = 256;

/// One agent's protocol state.
pub struct Agent {
    config: AgentConfig,
    keypair: Keypair,
    id: AgentId,
    rng: u64,
    now: Timestamp,
    seq: SeqGenerator,
    task_seq: SeqGenerator,
    skills: BTreeMap<String, (Skill, u32)>,
    reputation: BTreeMap<AgentId, Reputation>,
    docs: BTreeMap<TaskId, GroupDoc>,
    coordinating: BTreeMap<TaskId, Coordination>,
    memberships: BTreeMap<TaskId, Membership>,
    waiting: BTreeMap<TaskId, TaskAnnounce>,
    backlog: BTreeMap<TaskId, BacklogEntry>,
    offered: BTreeMap<TaskId, Timestamp>,
    finished: BTreeMap<TaskId, Outcome>,
    finished_order: VecDeque<TaskId>,
    loopback: VecDeque<Message>,
    /// Initiated tasks picked up after a restart whose outcome is being fetched.
    recovering: BTreeSet<TaskId>,
    /// Restored documents held without a role, until when (see [`replicas`]).
    replicas: BTreeMap<TaskId, Timestamp>,
    /// Finished coordinations still answering stragglers (see [`tombstones`]).
    tombstones: tombstones::Tombstones,
    /// Agents met, their skills and load: whom to invite (see [`directory`]).
    directory: directory::Directory,
    /// This agent's card and who asked for cards (see [`cards`]).
    cards: cards::CardExchange,
    out: Vec<Output>,
}

impl Agent {
    /// A new agent. `config` must have passed [`AgentConfig::validate`].
    pub fn new(config: AgentConfig, keypair: Keypair, rng_seed: u64) -> Agent {
        let id = keypair.id();
        let skills = config
            .skills
            .iter()
            .map(|s| (s.name.clone(), (s.clone(), 0)))
            .collect();
        Agent {
            config,
            keypair,
            id,
            rng: rng_seed ^ 0x9E37_79B9_7F4A_7C15,
            now: 0,
            seq: SeqGenerator::default(),
            task_seq: SeqGenerator::default(),
            skills,
            reputation: BTreeMap::new(),
            docs: BTreeMap::new(),
            coordinating: BTreeMap::new(),
            memberships: BTreeMap::new(),
            waiting: BTreeMap::new(),
            backlog: BTreeMap::new(),
            offered: BTreeMap::new(),
            finished: BTreeMap::new(),
            finished_order: VecDeque::new(),
            loopback: VecDeque::new(),
            recovering: BTreeSet::new(),
            replicas: BTreeMap::new(),
            tombstones: Default::default(),
            directory: Default::default(),
            cards: Default::default(),
            out: Vec::new(),
        }
    }

    /// This agent's id.
    pub fn id(&self) -> AgentId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Current skills with their learned metrics.
    pub fn skills(&self) -> impl Iterator<Item = &Skill> {
        self.skills.values().map(|(s, _)| s)
    }

    /// What this agent has observed of others.
    pub fn reputation(&self, agent: &AgentId) -> Reputation {
        self.reputation.get(agent).copied().unwrap_or_default()
    }

    /// Every reputation this agent holds (to persist them).
    pub fn reputations(&self) -> impl Iterator<Item = (AgentId, Reputation)> + '_ {
        self.reputation.iter().map(|(k, v)| (*k, *v))
    }

    /// Restores a skill's learned metrics (a skill no longer configured is ignored).
    pub fn restore_skill(&mut self, skill: Skill) {
        if let Some((s, _)) = self.skills.get_mut(&skill.name) {
            *s = skill;
        }
    }

    /// The announcement of a task this agent initiated and has not finished.
    pub fn announcement(&self, task_id: &TaskId) -> Option<&TaskAnnounce> {
        self.coordinating
            .get(task_id)
            .map(|c| &c.announce)
            .or_else(|| self.waiting.get(task_id))
    }

    /// Task ids whose group document this agent holds.
    pub fn groups(&self) -> impl Iterator<Item = &TaskId> {
        self.docs.keys()
    }

    /// Picks up a task this agent initiated before a restart. With its saved group
    /// document: coordinate it again if still in charge, otherwise ask the members for
    /// what happened meanwhile and record the outcome when it arrives. Without one the
    /// task never left this agent (documents are saved before anything is sent), so
    /// it starts afresh.
    pub fn resume_initiated(
        &mut self,
        now: Timestamp,
        announce: TaskAnnounce,
        doc: Option<GroupDoc>,
    ) -> Vec<Output> {
        self.now = self.now.max(now);
        let task_id = announce.task_id;
        match doc {
            None => {
                if let Err(e) = self.begin_coordination(announce) {
                    self.emit(Event::CommandFailed {
                        reason: e.to_string(),
                    });
                }
            }
            Some(doc) => {
                self.docs.insert(task_id, doc);
                self.recovering.insert(task_id);
                let peers = self.group_peers(task_id);
                if let Some(sync) = self
                    .docs
                    .get(&task_id)
                    .map(|d| d.sync_message(None).encode())
                {
                    for p in peers {
                        self.send(
                            p,
                            Message::CrdtChanges {
                                task_id,
                                sync: sync.clone(),
                            },
                        );
                    }
                }
                let in_charge = self
                    .docs
                    .get(&task_id)
                    .and_then(|d| d.view().ok())
                    .is_some_and(|v| v.coordinator() == self.id.key());
                if !self.recover_outcome(task_id) && in_charge {
                    self.recovering.remove(&task_id);
                    self.resume_coordination(task_id, announce);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// For a task being recovered: once its document holds the outcome, report it.
    fn recover_outcome(&mut self, task_id: TaskId) -> bool {
        if !self.recovering.contains(&task_id) {
            return false;
        }
        let Some(view) = self.docs.get(&task_id).and_then(|d| d.view().ok()) else {
            return false;
        };
        let Some(outcome) = view.outcome.clone() else {
            return false;
        };
        let outcome = match outcome {
            starling_crdt::TaskOutcome::Completed => Outcome::Completed,
            starling_crdt::TaskOutcome::Failed(r) => Outcome::Failed(r),
        };
        let results = view
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
        self.recovering.remove(&task_id);
        self.emit(Event::TaskFinished {
            task_id,
            outcome: outcome.clone(),
            results,
            certificate: None,
        });
        self.remember_outcome(task_id, outcome);
        self.close_doc_if_unused(task_id);
        true
    }

    /// Seeds reputations (e.g. restored from storage).
    pub fn restore_reputation(&mut self, entries: impl IntoIterator<Item = (AgentId, Reputation)>) {
        self.reputation.extend(entries);
    }

    /// The group document of a task this agent coordinates or works on.
    pub fn group(&self, task_id: &TaskId) -> Option<&GroupDoc> {
        self.docs.get(task_id)
    }

    /// The final document of a task this agent finished coordinating, loaded from
    /// its tombstone while that lasts.
    pub fn finished_group(&self, task_id: &TaskId) -> Option<GroupDoc> {
        self.tombstone_doc(task_id)
    }

    /// Tasks this agent coordinates now (finished ones it still answers for are not
    /// listed).
    pub fn coordinating(&self) -> impl Iterator<Item = &TaskId> {
        self.coordinating.keys()
    }

    /// Finished coordinations this agent still answers stragglers for.
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    /// The tasks of those finished coordinations.
    pub fn finished_groups(&self) -> impl Iterator<Item = &TaskId> {
        self.tombstones.tasks()
    }

    /// Tasks this agent is a member of now.
    pub fn memberships(&self) -> impl Iterator<Item = &TaskId> {
        self.memberships.keys()
    }

    /// How a task ended, if this agent knows.
    pub fn outcome(&self, task_id: &TaskId) -> Option<&Outcome> {
        self.finished.get(task_id)
    }

    /// Task slots in use.
    pub fn slots_used(&self) -> u32 {
        self.memberships.values().filter(|m| m.holds_slot).count() as u32
    }

    /// Feeds one input at time `now`; returns the outputs to carry out in order.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Output> {
        self.now = self.now.max(now);
        match input {
            Input::Received { from, message } => self.on_message(from, message),
            Input::Command(cmd) => self.on_command(cmd),
            Input::Tick => self.on_tick(),
            Input::PeerDown(peer) => self.on_peer_down(peer),
        }
        let mut rounds = 0;
        while let Some(message) = self.loopback.pop_front() {
            rounds += 1;
            if rounds > LOOPBACK_LIMIT {
                warn!("loopback limit reached; dropping the rest");
                self.loopback.clear();
                break;
            }
            self.on_message(self.id, message);
        }
        std::mem::take(&mut self.out)
    }

    /// Announces a task and returns its id with the outputs. Fails if the spec is invalid.
    pub fn announce(&mut self, now: Timestamp, spec: TaskSpec) -> Result<(TaskId, Vec<Output>)> {
        self.now = self.now.max(now);
        let id = self.announce_task(spec)?;
        Ok((id, std::mem::take(&mut self.out)))
    }

    /// Seals `message` for `to` with this agent's key and sequence numbers (for
    /// messages outside a task's flow, e.g. an `Alert` to an operator's agent).
    pub fn send_message(&mut self, now: Timestamp, to: AgentId, message: Message) -> Vec<Output> {
        self.now = self.now.max(now);
        if to == self.id {
            return self.handle(now, Input::Received { from: to, message });
        }
        self.send(to, message);
        std::mem::take(&mut self.out)
    }

    /// When `handle(_, Input::Tick)` must next be called, if ever.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let c = self
            .coordinating
            .values()
            .filter_map(|c| c.next_deadline(&self.config));
        let m = self
            .memberships
            .values()
            .filter_map(|m| m.next_deadline(&self.config, self.id));
        let o = self.offered.values().copied();
        let r = self.replicas.values().copied();
        let t = self.tombstones.next_expiry();
        c.chain(m).chain(o).chain(r).chain(t).min()
    }

    fn on_message(&mut self, from: AgentId, message: Message) {
        trace!(peer = %from, kind = message.kind(), "received");
        if let Some(free) = message.free_slots() {
            self.directory.learn_load(from, free, self.now);
        }
        match message {
            Message::TaskAnnounce(a) => self.member_on_announce(from, a),
            Message::SkillOffer {
                task_id,
                skill,
                free_slots,
                max_slots,
            } => self.coord_on_offer(from, task_id, skill, free_slots, max_slots),
            Message::GroupInvite {
                task,
                skill,
                changes,
            } => self.member_on_invite(from, task, skill, &changes),
            Message::GroupAccept {
                task_id, changes, ..
            } => self.coord_on_accept(from, task_id, &changes),
            Message::GroupReject {
                task_id,
                reason,
                changes,
                ..
            } => self.coord_on_reject(from, task_id, reason, &changes),
            Message::GroupFormed { task_id, changes } => {
                self.member_on_group_message(from, task_id, &changes)
            }
            Message::TaskStart {
                task_id,
                resume_from,
                changes,
            } => self.member_on_start(from, task_id, resume_from, &changes),
            Message::TaskUpdate {
                task_id,
                progress,
                changes,
            } => self.coord_on_update(from, task_id, progress, &changes),
            Message::TaskComplete {
                task_id, changes, ..
            } => self.coord_on_complete(from, task_id, &changes),
            Message::GroupDissolve {
                task_id,
                outcome,
                changes,
            } => self.member_on_dissolve(from, task_id, outcome, &changes),
            Message::Heartbeat { task_id, heads } => self.on_heartbeat(from, task_id, heads),
            Message::CrdtChanges { task_id, sync } => self.on_sync(from, task_id, &sync),
            Message::CardsRequest { held } => self.on_cards_request(from, &held),
            Message::Cards { cards } => self.on_cards(from, cards),
            Message::Alert { task_id, text } => self.emit(Event::AlertReceived {
                from,
                task_id,
                text,
            }),
            Message::DataShare {
                task_id,
                name,
                data,
            } => {
                if self.in_group(&task_id, from) {
                    self.emit(Event::DataReceived {
                        task_id,
                        from,
                        name,
                        data,
                    });
                } else {
                    self.stray(from, "data for a group it is not in");
                }
            }
            Message::ConsensusProposal(p) => self.member_on_proposal(from, p),
            Message::ConsensusVote(v) => self.coord_on_vote(from, v),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let result = match cmd {
            Command::Announce(spec) => self.announce_task(spec).map(|_| ()),
            Command::Progress {
                task_id,
                progress,
                checkpoint,
            } => self.member_progress(task_id, progress, checkpoint),
            Command::Complete {
                task_id,
                success,
                result,
            } => self.member_complete(task_id, success, result),
            Command::ShareData {
                task_id,
                name,
                data,
            } => self.share_data(task_id, name, data),
            Command::Leave => {
                self.leave_all();
                Ok(())
            }
        };
        if let Err(e) = result {
            debug!(error = %e, "command failed");
            self.emit(Event::CommandFailed {
                reason: e.to_string(),
            });
        }
    }

    fn on_tick(&mut self) {
        let now = self.now;
        self.offered.retain(|_, exp| *exp > now);
        let tasks: Vec<TaskId> = self.coordinating.keys().copied().collect();
        for t in tasks {
            self.coord_tick(t);
        }
        let tasks: Vec<TaskId> = self.memberships.keys().copied().collect();
        for t in tasks {
            self.member_tick(t);
        }
        self.offer_from_backlog();
        self.expire_replicas();
        self.expire_tombstones();
    }

    fn on_peer_down(&mut self, peer: AgentId) {
        let due = (self.now + self.config.peer_down_grace_ms)
            .saturating_sub(self.config.suspicion_timeout_ms);
        for c in self.coordinating.values_mut() {
            c.peer_down(peer, due, self.now + self.config.peer_down_grace_ms);
        }
        for m in self.memberships.values_mut() {
            if m.coordinator == peer {
                m.coordinator_seen = m.coordinator_seen.min(due);
            }
        }
    }

    fn on_heartbeat(&mut self, from: AgentId, task_id: TaskId, heads: Vec<[u8; 32]>) {
        if self.coordinating.contains_key(&task_id) {
            self.coord_on_heartbeat(from, task_id);
        } else if !self.memberships.contains_key(&task_id)
            && self.answer_from_tombstone(from, task_id, &[])
        {
            return;
        }
        if let Some(m) = self.memberships.get_mut(&task_id)
            && m.coordinator == from
        {
            m.coordinator_seen = self.now;
        }
        if !self.in_group(&task_id, from) {
            return self.stray(from, "heartbeat for a group it is not in");
        }
        let heads: Vec<starling_crdt::ChangeHash> =
            heads.into_iter().map(starling_crdt::ChangeHash).collect();
        let Some(doc) = self.docs.get(&task_id) else {
            return;
        };
        if doc.heads() != heads {
            let msg = doc.sync_message(Some(&heads));
            self.send(
                from,
                Message::CrdtChanges {
                    task_id,
                    sync: msg.encode(),
                },
            );
        }
    }

    /// Anti-entropy. Accepted from anyone for a group this agent holds, because a
    /// member may push changes before this replica knows it is a member (each change
    /// is verified and permission-checked). Senders the document does not list get
    /// only our heads back, never our changes: no amplification, nothing handed out.
    fn on_sync(&mut self, from: AgentId, task_id: TaskId, bytes: &[u8]) {
        if self.docs.contains_key(&task_id) {
            self.sync_doc(from, task_id, bytes);
        } else if !self.sync_with_tombstone(from, task_id, bytes) {
            self.stray(from, "sync for an unknown group");
        }
    }

    /// [`Agent::on_sync`] for a document this agent holds.
    fn sync_doc(&mut self, from: AgentId, task_id: TaskId, bytes: &[u8]) {
        let Some(doc) = self.docs.get_mut(&task_id) else {
            return;
        };
        let msg = match SyncMessage::decode(bytes, doc.limits()) {
            Ok(m) => m,
            Err(e) => return self.misbehaved(from, format!("undecodable sync: {e}")),
        };
        let (report, reply) = doc.receive_sync(msg);
        if let Some(mut reply) = reply {
            if !self.in_group(&task_id, from) {
                reply.changes.clear();
            }
            self.send(
                from,
                Message::CrdtChanges {
                    task_id,
                    sync: reply.encode(),
                },
            );
        }
        if let Some(e) = report.rejected.first() {
            self.misbehaved(from, format!("bad group change: {e}"));
        }
        if !report.applied.is_empty() {
            self.after_doc_change(task_id);
        }
    }

    /// Re-evaluates both roles of a task after its document changed.
    fn after_doc_change(&mut self, task_id: TaskId) {
        if self.coordinating.contains_key(&task_id) {
            if !self.in_charge(&task_id) {
                self.step_down(task_id);
            } else {
                self.adopt_recorded_outcome(task_id);
            }
        }
        if self.coordinating.contains_key(&task_id) {
            self.coord_progress(task_id);
            // A member may have left: its slot goes to a standby.
            self.fill_vacancies(task_id);
        }
        if self.memberships.contains_key(&task_id) {
            self.member_check_coordinator(task_id);
            self.member_try_vote(task_id);
        }
        self.recover_outcome(task_id);
    }

    /// Applies an encoded batch from `from` to a task's document. Returns whether
    /// anything new was applied; refused changes are reported as misbehaviour.
    fn apply_batch(&mut self, from: AgentId, task_id: TaskId, bytes: &[u8]) -> bool {
        self.apply_batch_counted(from, task_id, bytes).1 > 0
    }

    /// Like [`Agent::apply_batch`], returning (changes in the batch, changes applied).
    /// More applied than carried means the batch released changes that were waiting
    /// for it (they arrived first, out of order).
    fn apply_batch_counted(
        &mut self,
        from: AgentId,
        task_id: TaskId,
        bytes: &[u8],
    ) -> (usize, usize) {
        let Some(doc) = self.docs.get_mut(&task_id) else {
            return (0, 0);
        };
        let changes = match decode_batch(bytes, doc.limits()) {
            Ok(c) => c,
            Err(e) => {
                self.misbehaved(from, format!("undecodable changes: {e}"));
                return (0, 0);
            }
        };
        let carried = changes.len();
        let report = doc.apply(changes);
        if let Some(e) = report.rejected.first() {
            self.misbehaved(from, format!("bad group change: {e}"));
        }
        (carried, report.applied.len())
    }

    /// Whether `agent` is in a task's group (a member of any status, or a coordinator).
    fn in_group(&self, task_id: &TaskId, agent: AgentId) -> bool {
        let Some(doc) = self.docs.get(task_id) else {
            return false;
        };
        let Ok(view) = doc.view() else { return false };
        view.is_authority(agent.key()) || view.member(agent.key()).is_some()
    }

    fn share_data(&mut self, task_id: TaskId, name: String, data: Vec<u8>) -> Result<()> {
        let doc = self
            .docs
            .get(&task_id)
            .ok_or_else(|| crate::ProtocolError::Refused(format!("not in group {task_id}")))?;
        let view = doc.view()?;
        let peers: Vec<AgentId> = view
            .selected()
            .map(|(_, k)| AgentId::from(k))
            .chain(std::iter::once(AgentId::from(view.coordinator())))
            .filter(|a| *a != self.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for p in peers {
            self.send(
                p,
                Message::DataShare {
                    task_id,
                    name: name.clone(),
                    data: data.clone(),
                },
            );
        }
        Ok(())
    }

    fn leave_all(&mut self) {
        let tasks: Vec<TaskId> = self.memberships.keys().copied().collect();
        for t in tasks {
            self.member_leave(t);
        }
    }

    // ----- plumbing -------------------------------------------------------------

    fn seal(&mut self, audience: Audience, message: &Message) -> Option<SignedEnvelope> {
        let seq = self.seq.next(self.now);
        match SignedEnvelope::seal(&self.keypair, seq, self.now, audience, message) {
            Ok(e) => Some(e),
            Err(e) => {
                warn!(error = %e, kind = message.kind(), "cannot seal message");
                None
            }
        }
    }

    fn send(&mut self, to: AgentId, message: Message) {
        if to == self.id {
            self.loopback.push_back(message);
            return;
        }
        let kind = message.kind();
        if let Some(envelope) = self.seal(Audience::Agent(to), &message) {
            self.out.push(Output::Send { to, envelope, kind });
        }
    }

    fn publish(&mut self, topic: String, message: Message) {
        let kind = message.kind();
        if let Some(envelope) = self.seal(Audience::Topic(topic.clone()), &message) {
            self.out.push(Output::Publish {
                topic,
                envelope,
                kind,
            });
        }
    }

    fn emit(&mut self, event: Event) {
        self.out.push(Output::Emit(event));
    }

    /// A message with no business here: traced and ignored, no state change.
    fn stray(&self, from: AgentId, what: &str) {
        trace!(peer = %from, what, "ignored stray message");
    }

    /// A message that proves the peer is lying or broken.
    fn misbehaved(&mut self, from: AgentId, reason: String) {
        warn!(peer = %from, %reason, "misbehaving peer");
        self.emit(Event::Misbehaviour { peer: from, reason });
    }

    fn remember_outcome(&mut self, task_id: TaskId, outcome: Outcome) {
        if self.finished.insert(task_id, outcome).is_none() {
            self.finished_order.push_back(task_id);
            while self.finished_order.len() > FINISHED_MEMORY {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
        self.start_ready_waiting();
    }

    /// Drops a task's document when neither role needs it; emits its snapshot.
    fn close_doc_if_unused(&mut self, task_id: TaskId) {
        if self.coordinating.contains_key(&task_id)
            || self.memberships.contains_key(&task_id)
            || self.recovering.contains(&task_id)
            || self.replicas.contains_key(&task_id)
        {
            return;
        }
        if let Some(doc) = self.docs.remove(&task_id) {
            self.emit(Event::GroupClosed {
                task_id,
                snapshot: doc.save(),
            });
        }
    }

    fn encode_all(&self, task_id: &TaskId) -> Vec<u8> {
        self.docs
            .get(task_id)
            .map(|d| encode_batch(&d.all_changes()))
            .unwrap_or_default()
    }
}
