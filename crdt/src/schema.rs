//! The layout of a group document and the value types it stores.
//!
//! ```text
//! root                       written once, by the initiator's genesis change (seq 1)
//! ├─ v: 1                    schema version
//! ├─ task: { id: bytes, initiator: hex, max_group_size: uint, created_at: uint,
//! │          skills: { <name>: uint count } }          frozen after genesis
//! ├─ members:  { <X>: { skill, status, joined_at, declined, progress, checkpoint,
//! │                     checkpoint_at, outcome, result, suspects: { <Y>: true } } }
//! ├─ invites:  { <W>: { <X>: { skill, score, at } } }
//! ├─ verdicts: { <W>: { <X>: { reason, at } } }
//! └─ coord:    { <W>: { status, outcome, reason, takeovers: { <C>: true } } }
//! ```
//!
//! Every key `<X>` / `<W>` is an agent key in lowercase hex. The four containers are
//! partitioned by writer: agent X may only write the slot `members/X`, `invites/X`,
//! `verdicts/X` and `coord/X`. `members/X` is what X says about itself; `invites/W`,
//! `verdicts/W` and `coord/W` count only while W is a coordinator (see [`crate::view`]).

/// Schema version written at the root.
pub(crate) const SCHEMA_VERSION: u64 = 1;

pub(crate) const K_VERSION: &str = "v";
pub(crate) const K_TASK: &str = "task";
pub(crate) const K_MEMBERS: &str = "members";
pub(crate) const K_INVITES: &str = "invites";
pub(crate) const K_VERDICTS: &str = "verdicts";
pub(crate) const K_COORD: &str = "coord";
/// The writer-partitioned containers, in a fixed order.
pub(crate) const CONTAINERS: [&str; 4] = [K_MEMBERS, K_INVITES, K_VERDICTS, K_COORD];

pub(crate) const K_ID: &str = "id";
pub(crate) const K_INITIATOR: &str = "initiator";
pub(crate) const K_MAX_GROUP: &str = "max_group_size";
pub(crate) const K_CREATED_AT: &str = "created_at";
pub(crate) const K_SKILLS: &str = "skills";

pub(crate) const K_SKILL: &str = "skill";
pub(crate) const K_STATUS: &str = "status";
pub(crate) const K_JOINED_AT: &str = "joined_at";
/// In a member's own entry: the `at` of the invitation it declined. A later
/// invitation (a greater `at`) is open again.
pub(crate) const K_DECLINED: &str = "declined";
pub(crate) const K_PROGRESS: &str = "progress";
pub(crate) const K_CHECKPOINT: &str = "checkpoint";
pub(crate) const K_CHECKPOINT_AT: &str = "checkpoint_at";
pub(crate) const K_OUTCOME: &str = "outcome";
pub(crate) const K_RESULT: &str = "result";
pub(crate) const K_SUSPECTS: &str = "suspects";
pub(crate) const K_SCORE: &str = "score";
pub(crate) const K_AT: &str = "at";
pub(crate) const K_REASON: &str = "reason";
pub(crate) const K_TAKEOVERS: &str = "takeovers";

use crate::AgentKey;

/// What the initiator fixes when it creates a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Opaque group id (the task id); every change signature binds it.
    pub group_id: Vec<u8>,
    /// The agent that announced the task and writes the genesis change.
    pub initiator: AgentKey,
    /// Required skills and how many agents each; names are unique.
    pub skills: Vec<SkillNeed>,
    /// Cap on the number of members selected across all skills.
    pub max_group_size: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// One required skill of a task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkillNeed {
    /// Skill name.
    pub name: String,
    /// How many agents with this skill the task needs (at least 1).
    pub count: u32,
}

/// A member's status as the reducer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberStatus {
    /// A coordinator invited it; it has not accepted (yet).
    Invited,
    /// It accepted its invitation.
    Accepted,
    /// It is working on the task.
    Active,
    /// A coordinator declared it failed. Sticky: overrides anything it writes.
    Failed,
    /// It left the group.
    Left,
}

impl MemberStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Invited => "invited",
            MemberStatus::Accepted => "accepted",
            MemberStatus::Active => "active",
            MemberStatus::Failed => "failed",
            MemberStatus::Left => "left",
        }
    }

    /// The statuses a member may write about itself.
    pub(crate) fn parse_own(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(MemberStatus::Accepted),
            "active" => Some(MemberStatus::Active),
            "left" => Some(MemberStatus::Left),
            _ => None,
        }
    }

    /// Accepted or active: counts towards the group.
    pub fn is_in_group(self) -> bool {
        matches!(self, MemberStatus::Accepted | MemberStatus::Active)
    }
}

/// The task's lifecycle as coordinators record it. Ordered: the view takes the
/// furthest stage any coordinator wrote, so the status never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskStatus {
    /// Collecting offers and acceptances.
    Forming,
    /// Every required skill is covered.
    Formed,
    /// Members are executing.
    Running,
    /// Finished; see [`TaskOutcome`].
    Finished,
    /// The group has dissolved; members are released.
    Dissolved,
}

impl TaskStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Forming => "forming",
            TaskStatus::Formed => "formed",
            TaskStatus::Running => "running",
            TaskStatus::Finished => "finished",
            TaskStatus::Dissolved => "dissolved",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "forming" => Some(TaskStatus::Forming),
            "formed" => Some(TaskStatus::Formed),
            "running" => Some(TaskStatus::Running),
            "finished" => Some(TaskStatus::Finished),
            "dissolved" => Some(TaskStatus::Dissolved),
            _ => None,
        }
    }
}

/// How the task ended, as a coordinator recorded it. If coordinators disagree,
/// `Completed` wins: a recorded success is never hidden by a concurrent failure verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskOutcome {
    /// The task failed, with a reason.
    Failed(String),
    /// The task completed.
    Completed,
}

/// What a member recorded as its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberResult {
    /// Whether its part succeeded.
    pub success: bool,
    /// Its output bytes (bounded by `Limits::max_result_bytes`).
    pub output: Vec<u8>,
}
