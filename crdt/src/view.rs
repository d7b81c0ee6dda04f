//! The reducer: who is in the group, as a pure function of the document.
//!
//! Write permissions are enforced here, when reading, whatever the document holds:
//! - `members/X` and every field under it count only if written by X.
//! - `invites/W`, `verdicts/W` and `coord/W` count only if written by W **and** W is in
//!   the coordinator chain.
//! - The task spec counts only if written by the initiator.
//!
//! **Coordinator chain.** The initiator is the first coordinator. The current (last)
//! coordinator C is *deposed* when more than half of the group's required size (the
//! sum of the skills' counts) of members have listed C under `suspects` in their own
//! entries. Voters are members that accepted and were not declared failed (leaving
//! later does not withdraw a vote; verdicts written by C itself are ignored here, so a
//! deposed coordinator cannot veto its own replacement). Once C is deposed, a member
//! still in the group takes over by writing `takeovers/C` in its own `coord` slot; if
//! several do so concurrently, the lowest agent id wins. The rule is monotone: later
//! members, later votes and later claims never undo a takeover.
//! Coordinators are replaced only this way: a verdict against a coordinator does not
//! count. Every coordinator in the chain keeps the authority it had, so the
//! initiator's invitations stay valid after it is replaced. The chain is finite: each
//! step adds a member not in it yet.
//!
//! **Refusals.** A member that declines writes `declined`: the `at` of the invitation
//! it answers. A later invitation (a greater `at`, which [`crate::GroupDoc::invite`]
//! guarantees) shows the member as invited again; accepting clears the refusal.
//!
//! **Selection.** For each required skill (in name order): the accepted or active
//! members invited for that skill, ranked by their invitation score (highest first,
//! then lowest agent id), up to the skill's count; the total is capped by the group's
//! maximum size. Replicas that hold the same changes compute equal views.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};

use crate::{
    AgentKey, CrdtError, MemberResult, MemberStatus, Result, SkillNeed, TaskOutcome, TaskStatus,
    schema::*,
};

/// A member as the reducer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// The member's key.
    pub key: AgentKey,
    /// The skill it covers (from its invitation).
    pub skill: String,
    /// Its status.
    pub status: MemberStatus,
    /// The score its invitation carried (used for ranking).
    pub score: f64,
    /// When it was invited (ms).
    pub invited_at: u64,
    /// When it accepted (ms), as it wrote.
    pub joined_at: Option<u64>,
    /// The `at` of the invitation it last declined, while that refusal stands.
    pub declined_invite: Option<u64>,
    /// Progress 0..=1 as it last reported.
    pub progress: f64,
    /// Its latest checkpoint.
    pub checkpoint: Option<Vec<u8>>,
    /// When it wrote that checkpoint (ms).
    pub checkpoint_at: Option<u64>,
    /// Its result, once recorded.
    pub result: Option<MemberResult>,
    /// Why a coordinator declared it failed.
    pub failure_reason: Option<String>,
    /// Coordinators it suspects of having failed.
    pub suspects: BTreeSet<AgentKey>,
}

/// One required skill and the members selected for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillSlot {
    /// Skill name.
    pub name: String,
    /// How many agents the task needs for it.
    pub needed: u32,
    /// The selected members, best first.
    pub selected: Vec<AgentKey>,
}

/// The working group: what every replica with the same changes agrees on.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkingGroup {
    /// The group (task) id.
    pub group_id: Vec<u8>,
    /// Who announced the task.
    pub initiator: AgentKey,
    /// Coordinators in order; the last one is in charge now.
    pub coordinators: Vec<AgentKey>,
    /// How many members the task needs in all (the sum of the skills' counts).
    pub required_size: u32,
    /// Members suspecting the current coordinator of having failed.
    pub votes_against_coordinator: usize,
    /// Maximum members across all skills.
    pub max_group_size: u32,
    /// Creation time (ms).
    pub created_at_ms: u64,
    /// Furthest lifecycle stage any coordinator recorded.
    pub status: TaskStatus,
    /// How it ended, if it has.
    pub outcome: Option<TaskOutcome>,
    /// Required skills with their selected members, in name order.
    pub skills: Vec<SkillSlot>,
    /// Every invited agent, whatever its status.
    pub members: BTreeMap<AgentKey, MemberView>,
}

impl WorkingGroup {
    /// The coordinator in charge now.
    pub fn coordinator(&self) -> AgentKey {
        *self.coordinators.last().unwrap_or(&self.initiator)
    }

    /// Whether a majority of the required size suspects the current coordinator, so a
    /// member may take over (see the module docs).
    pub fn coordinator_deposed(&self) -> bool {
        (self.votes_against_coordinator as u64) * 2 > u64::from(self.required_size)
    }

    /// Whether `agent` is or was a coordinator (and so may invite and declare failures).
    pub fn is_authority(&self, agent: AgentKey) -> bool {
        self.coordinators.contains(&agent)
    }

    /// Names of the skills whose slots are full.
    pub fn skills_covered(&self) -> Vec<String> {
        self.skills
            .iter()
            .filter(|s| s.selected.len() as u32 >= s.needed)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Whether every required skill is covered.
    pub fn is_complete(&self) -> bool {
        self.skills
            .iter()
            .all(|s| s.selected.len() as u32 >= s.needed)
    }

    /// All selected members, skill by skill.
    pub fn selected(&self) -> impl Iterator<Item = (&str, AgentKey)> + '_ {
        self.skills
            .iter()
            .flat_map(|s| s.selected.iter().map(move |k| (s.name.as_str(), *k)))
    }

    /// Whether `agent` is selected for some skill.
    pub fn is_selected(&self, agent: AgentKey) -> bool {
        self.selected().any(|(_, k)| k == agent)
    }

    /// The member entry of `agent`, if it was invited.
    pub fn member(&self, agent: AgentKey) -> Option<&MemberView> {
        self.members.get(&agent)
    }
}

/// Computes the working group from a document whose genesis was written by `initiator`.
pub fn reduce(doc: &Automerge, initiator: AgentKey) -> Result<WorkingGroup> {
    let spec = read_spec(doc, initiator)
        .ok_or_else(|| CrdtError::InvalidGenesis("no task spec written by the initiator".into()))?;
    let containers = ContainerIds::read(doc, initiator)
        .ok_or_else(|| CrdtError::InvalidGenesis("containers missing".into()))?;

    let required: u64 = spec.skills.iter().map(|s| u64::from(s.count)).sum();
    let mut chain = vec![initiator];
    let mut votes;
    let mut read;
    loop {
        let current = *chain.last().unwrap_or(&initiator);
        read = read_members(doc, &containers, &chain);
        let electorate = read.with_verdicts(Some(current));
        votes = count_votes(&electorate, current);
        if (votes as u64) * 2 <= required {
            break;
        }
        let successor = electorate
            .values()
            .filter(|m| m.status.is_in_group() && !chain.contains(&m.key))
            .filter(|m| claims_takeover(doc, &containers, m.key, current))
            .map(|m| m.key)
            .min();
        match successor {
            Some(s) => chain.push(s),
            None => break,
        }
    }
    // The chain is the one last read: the members are that read, every verdict
    // counted.
    let members = read.with_verdicts(None);

    let mut status = TaskStatus::Forming;
    let mut outcome: Option<TaskOutcome> = None;
    for &w in &chain {
        let Some(slot) = map_by(doc, &containers.coord, &w.to_hex(), w) else {
            continue;
        };
        if let Some(s) = str_by(doc, &slot, K_STATUS, w).and_then(|s| TaskStatus::parse(&s)) {
            status = status.max(s);
        }
        let written = match str_by(doc, &slot, K_OUTCOME, w).as_deref() {
            Some("completed") => Some(TaskOutcome::Completed),
            Some("failed") => Some(TaskOutcome::Failed(
                str_by(doc, &slot, K_REASON, w).unwrap_or_default(),
            )),
            _ => None,
        };
        outcome = match (outcome, written) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    let mut remaining = spec.max_group_size;
    let mut skills = Vec::with_capacity(spec.skills.len());
    for need in &spec.skills {
        let mut candidates: Vec<&MemberView> = members
            .values()
            .filter(|m| m.status.is_in_group() && m.skill == need.name)
            .collect();
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
        let take = need.count.min(remaining);
        let selected: Vec<AgentKey> = candidates
            .iter()
            .take(take as usize)
            .map(|m| m.key)
            .collect();
        remaining -= selected.len() as u32;
        skills.push(SkillSlot {
            name: need.name.clone(),
            needed: need.count,
            selected,
        });
    }

    Ok(WorkingGroup {
        group_id: spec.group_id,
        initiator,
        coordinators: chain,
        required_size: required as u32,
        votes_against_coordinator: votes,
        max_group_size: spec.max_group_size,
        created_at_ms: spec.created_at_ms,
        status,
        outcome,
        skills,
        members,
    })
}

/// Reads the task spec, counting only values the initiator wrote.
pub(crate) fn read_spec(doc: &Automerge, initiator: AgentKey) -> Option<GroupSpec> {
    let task = map_by(doc, &ROOT, K_TASK, initiator)?;
    let group_id = bytes_by(doc, &task, K_ID, initiator)?;
    if str_by(doc, &task, K_INITIATOR, initiator)? != initiator.to_hex() {
        return None;
    }
    let max_group_size = u32::try_from(u64_by(doc, &task, K_MAX_GROUP, initiator)?).ok()?;
    let created_at_ms = u64_by(doc, &task, K_CREATED_AT, initiator)?;
    let skills_obj = map_by(doc, &task, K_SKILLS, initiator)?;
    let mut skills = Vec::new();
    for name in doc.keys(&skills_obj) {
        let count = u32::try_from(u64_by(doc, &skills_obj, &name, initiator)?).ok()?;
        skills.push(SkillNeed { name, count });
    }
    Some(GroupSpec {
        group_id,
        initiator,
        skills,
        max_group_size,
        created_at_ms,
    })
}

struct ContainerIds {
    members: ObjId,
    invites: ObjId,
    verdicts: ObjId,
    coord: ObjId,
}

impl ContainerIds {
    fn read(doc: &Automerge, initiator: AgentKey) -> Option<Self> {
        Some(ContainerIds {
            members: map_by(doc, &ROOT, K_MEMBERS, initiator)?,
            invites: map_by(doc, &ROOT, K_INVITES, initiator)?,
            verdicts: map_by(doc, &ROOT, K_VERDICTS, initiator)?,
            coord: map_by(doc, &ROOT, K_COORD, initiator)?,
        })
    }
}

struct Invite {
    skill: String,
    score: f64,
    at: u64,
}

/// Members as the coordinators in a chain made them, before their verdicts, and
/// the verdicts, so that both the electorate (some coordinator's verdicts left
/// out) and the group come from one read of the document: reading is what a view
/// costs.
struct MembersRead {
    /// Every invited agent, as if no verdict had been written.
    members: BTreeMap<AgentKey, MemberView>,
    /// (coordinator, agent, reason), in chain order; verdicts against a
    /// coordinator are not among them.
    verdicts: Vec<(AgentKey, AgentKey, String)>,
}

impl MembersRead {
    /// The members with the verdicts counted, except those written by
    /// `ignore_verdicts_of`; the first counted verdict on an agent (in chain
    /// order) is its reason.
    fn with_verdicts(
        &self,
        ignore_verdicts_of: Option<AgentKey>,
    ) -> BTreeMap<AgentKey, MemberView> {
        let mut members = self.members.clone();
        let mut judged = BTreeSet::new();
        for (w, x, reason) in &self.verdicts {
            if Some(*w) == ignore_verdicts_of || !judged.insert(*x) {
                continue;
            }
            if let Some(m) = members.get_mut(x) {
                m.failure_reason = Some(reason.clone());
                m.status = MemberStatus::Failed;
            }
        }
        members
    }
}

/// Reads the members as the coordinators in `chain` made them (see
/// [`MembersRead`]). Verdicts against a coordinator never count.
fn read_members(doc: &Automerge, c: &ContainerIds, chain: &[AgentKey]) -> MembersRead {
    let mut invites: BTreeMap<AgentKey, Vec<Invite>> = BTreeMap::new();
    let mut verdicts: Vec<(AgentKey, AgentKey, String)> = Vec::new();
    for &w in chain {
        if let Some(slot) = map_by(doc, &c.invites, &w.to_hex(), w) {
            for (x, entry) in agent_maps(doc, &slot, w) {
                let (Some(skill), Some(score)) = (
                    str_by(doc, &entry, K_SKILL, w),
                    f64_by(doc, &entry, K_SCORE, w),
                ) else {
                    continue;
                };
                let at = u64_by(doc, &entry, K_AT, w).unwrap_or(0);
                invites
                    .entry(x)
                    .or_default()
                    .push(Invite { skill, score, at });
            }
        }
        if let Some(slot) = map_by(doc, &c.verdicts, &w.to_hex(), w) {
            for (x, entry) in agent_maps(doc, &slot, w)
                .into_iter()
                .filter(|(x, _)| !chain.contains(x))
            {
                let reason = str_by(doc, &entry, K_REASON, w).unwrap_or_default();
                verdicts.push((w, x, reason));
            }
        }
    }

    let mut members = BTreeMap::new();
    for (x, invs) in invites {
        let own = map_by(doc, &c.members, &x.to_hex(), x);
        let own_skill = own.as_ref().and_then(|o| str_by(doc, o, K_SKILL, x));
        let own_status = own
            .as_ref()
            .and_then(|o| str_by(doc, o, K_STATUS, x))
            .and_then(|s| MemberStatus::parse_own(&s));
        let declined = match own_status {
            Some(MemberStatus::Left) => own.as_ref().and_then(|o| u64_by(doc, o, K_DECLINED, x)),
            _ => None,
        };
        // The member's own claim picks among its invitations; it cannot invent a skill.
        let matching = invs
            .iter()
            .filter(|i| Some(&i.skill) == own_skill.as_ref())
            .max_by(|a, b| a.score.total_cmp(&b.score));
        let best = invs.iter().max_by(|a, b| a.score.total_cmp(&b.score));
        // A refusal answers one invitation: one made after it is open again.
        let reinvited = declined.and_then(|d| {
            invs.iter()
                .filter(|i| i.at > d)
                .max_by(|a, b| a.score.total_cmp(&b.score))
        });
        let (invite, accepted) = match (reinvited, matching, own_status) {
            (Some(i), _, _) => (i, None),
            (None, Some(i), Some(s)) => (i, Some(s)),
            _ => match best {
                Some(i) => (i, None),
                None => continue,
            },
        };
        let status = accepted.unwrap_or(MemberStatus::Invited);
        let mut view = MemberView {
            key: x,
            skill: invite.skill.clone(),
            status,
            score: invite.score,
            invited_at: invite.at,
            joined_at: None,
            declined_invite: declined.filter(|_| reinvited.is_none()),
            progress: 0.0,
            checkpoint: None,
            checkpoint_at: None,
            result: None,
            failure_reason: None,
            suspects: BTreeSet::new(),
        };
        if let (Some(o), Some(_)) = (&own, accepted) {
            view.joined_at = u64_by(doc, o, K_JOINED_AT, x);
            view.progress = f64_by(doc, o, K_PROGRESS, x)
                .filter(|p| (0.0..=1.0).contains(p))
                .unwrap_or(0.0);
            view.checkpoint = bytes_by(doc, o, K_CHECKPOINT, x);
            view.checkpoint_at = u64_by(doc, o, K_CHECKPOINT_AT, x);
            view.result = match (
                str_by(doc, o, K_OUTCOME, x).as_deref(),
                bytes_by(doc, o, K_RESULT, x),
            ) {
                (Some("success"), Some(output)) => Some(MemberResult {
                    success: true,
                    output,
                }),
                (Some("failure"), Some(output)) => Some(MemberResult {
                    success: false,
                    output,
                }),
                _ => None,
            };
            if let Some(s) = map_by(doc, o, K_SUSPECTS, x) {
                view.suspects = doc
                    .keys(&s)
                    .filter_map(|k| AgentKey::from_hex(&k))
                    .filter(|k| is_true(doc, &s, &k.to_hex(), x))
                    .collect();
            }
        }
        members.insert(x, view);
    }
    MembersRead { members, verdicts }
}

/// Members that accepted (including those that left since) and suspect `coordinator`.
fn count_votes(members: &BTreeMap<AgentKey, MemberView>, coordinator: AgentKey) -> usize {
    members
        .values()
        .filter(|m| m.status.is_in_group() || m.status == MemberStatus::Left)
        .filter(|m| m.suspects.contains(&coordinator))
        .count()
}

/// Whether `member` wrote `coord/<member>/takeovers/<coordinator> = true`.
fn claims_takeover(
    doc: &Automerge,
    c: &ContainerIds,
    member: AgentKey,
    coordinator: AgentKey,
) -> bool {
    let Some(slot) = map_by(doc, &c.coord, &member.to_hex(), member) else {
        return false;
    };
    let Some(claims) = map_by(doc, &slot, K_TAKEOVERS, member) else {
        return false;
    };
    is_true(doc, &claims, &coordinator.to_hex(), member)
}

fn is_true(doc: &Automerge, obj: &ObjId, key: &str, author: AgentKey) -> bool {
    scalar_by(doc, obj, key, author) == Some(ScalarValue::Boolean(true))
}

/// The agent-keyed sub-maps of `obj` written by `author`.
fn agent_maps(doc: &Automerge, obj: &ObjId, author: AgentKey) -> Vec<(AgentKey, ObjId)> {
    doc.keys(obj)
        .filter_map(|k| {
            let x = AgentKey::from_hex(&k)?;
            Some((x, map_by(doc, obj, &k, author)?))
        })
        .collect()
}

/// The author of the op that wrote a value (or created an object).
fn op_author(id: &ObjId) -> Option<AgentKey> {
    match id {
        ObjId::Id(_, actor, _) => AgentKey::from_actor(actor),
        ObjId::Root => None,
    }
}

/// The value under `obj[key]` written by `author`, ignoring values by anyone else.
fn by<'a>(
    doc: &'a Automerge,
    obj: &ObjId,
    key: &str,
    author: AgentKey,
) -> Option<(Value<'a>, ObjId)> {
    doc.get_all(obj, key)
        .ok()?
        .into_iter()
        .rfind(|(_, id)| op_author(id) == Some(author))
}

fn map_by(doc: &Automerge, obj: &ObjId, key: &str, author: AgentKey) -> Option<ObjId> {
    match by(doc, obj, key, author)? {
        (Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

fn scalar_by(doc: &Automerge, obj: &ObjId, key: &str, author: AgentKey) -> Option<ScalarValue> {
    match by(doc, obj, key, author)? {
        (Value::Scalar(s), _) => Some(s.into_owned()),
        _ => None,
    }
}

fn str_by(doc: &Automerge, obj: &ObjId, key: &str, author: AgentKey) -> Option<String> {
    match scalar_by(doc, obj, key, author)? {
        ScalarValue::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

fn u64_by(doc: &Automerge, obj: &ObjId, key: &str, author: AgentKey) -> Option<u64> {
    match scalar_by(doc, obj, key, author)? {
        ScalarValue::Uint(n) => Some(n),
        _ => None,
    }
}

fn f64_by(doc: &Automerge, obj: &ObjId, key: &str, author: AgentKey) -> Option<f64> {
    match scalar_by(doc, obj, key, author)? {
        ScalarValue::F64(n) if n.is_finite() => Some(n),
        _ => None,
    }
}

fn bytes_by(doc: &Automerge, obj: &ObjId, key: &str, author: AgentKey) -> Option<Vec<u8>> {
    match scalar_by(doc, obj, key, author)? {
        ScalarValue::Bytes(b) => Some(b),
        _ => None,
    }
}
