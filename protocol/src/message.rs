//! Every message agents exchange, and the types they carry.
//!
//! Caps (enforced while decoding, see [`crate::codec`]): names 64 bytes, texts 1 KiB,
//! payloads 256 KiB, results 32 KiB, checkpoints 16 KiB, CRDT batches 768 KiB,
//! 16 skills, 32 dependencies, 64 members or validators or heads.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AgentId, ProtocolError, Result, codec::*};

/// Longest skill or data name.
pub const MAX_NAME: usize = 64;
/// Longest free text (description, alert).
pub const MAX_TEXT: usize = 1024;
/// Largest task payload.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Largest member result.
pub const MAX_RESULT: usize = 32 * 1024;
/// Largest checkpoint.
pub const MAX_CHECKPOINT: usize = 16 * 1024;
/// Largest encoded CRDT batch or sync message inside a message.
pub const MAX_CHANGES: usize = 768 * 1024;
/// Most required skills per task.
pub const MAX_SKILLS: usize = 16;
/// Most dependencies per task.
pub const MAX_DEPS: usize = 32;
/// Most members, validators, votes or heads in one message.
pub const MAX_LIST: usize = 64;

/// A task's id: its initiator and a sequence number unique to that initiator.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// Who announced the task.
    pub initiator: AgentId,
    /// Unique per initiator (microsecond-clock based, so it survives restarts).
    pub seq: u64,
}

impl TaskId {
    /// The group id the task's CRDT document binds into every change signature.
    pub fn group_id(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.extend_from_slice(&self.initiator.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out
    }
}

impl fmt::Display for TaskId {
    /// `<initiator peer id>-<seq>`: parseable back with `str::parse`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.initiator, self.seq)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Task({}-{})", self.initiator.short(), self.seq)
    }
}

impl std::str::FromStr for TaskId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self> {
        let (peer, seq) = s
            .rsplit_once('-')
            .ok_or_else(|| ProtocolError::Invalid(format!("task id {s:?}")))?;
        let seq = seq
            .parse()
            .map_err(|_| ProtocolError::Invalid(format!("task id {s:?}")))?;
        Ok(TaskId {
            initiator: peer.parse()?,
            seq,
        })
    }
}

/// Proficiency, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Just starting.
    Novice,
    /// Competent.
    Intermediate,
    /// Strong.
    Advanced,
    /// The best.
    Expert,
}

impl Level {
    /// 0..=3.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The next level up, if any.
    pub fn promoted(self) -> Option<Level> {
        match self {
            Level::Novice => Some(Level::Intermediate),
            Level::Intermediate => Some(Level::Advanced),
            Level::Advanced => Some(Level::Expert),
            Level::Expert => None,
        }
    }
}

impl std::str::FromStr for Level {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "novice" => Ok(Level::Novice),
            "intermediate" => Ok(Level::Intermediate),
            "advanced" => Ok(Level::Advanced),
            "expert" => Ok(Level::Expert),
            _ => Err(ProtocolError::Invalid(format!(
                "level {s:?} (expected novice, intermediate, advanced or expert)"
            ))),
        }
    }
}

/// Task priority, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    Normal,
    /// Ahead of normal work.
    High,
    /// Ahead of everything.
    Critical,
}

impl Priority {
    /// 0..=3, the base of the effective priority.
    pub fn value(self) -> f64 {
        f64::from(self as u8)
    }
}

impl std::str::FromStr for Priority {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            "critical" => Ok(Priority::Critical),
            _ => Err(ProtocolError::Invalid(format!(
                "priority {s:?} (expected low, normal, high or critical)"
            ))),
        }
    }
}

/// A skill an agent has, with the metrics that evolve after every task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    /// Skill name.
    #[serde(deserialize_with = "bounded_string::<_, MAX_NAME>")]
    pub name: String,
    /// Proficiency.
    pub level: Level,
    /// EWMA of outcomes, 0..=1.
    pub success_rate: f64,
    /// EWMA of completion times, milliseconds.
    pub avg_completion_ms: f64,
    /// Tasks completed with this skill.
    pub completed: u64,
}

impl Skill {
    /// A fresh skill at `level` with neutral metrics.
    pub fn new(name: impl Into<String>, level: Level) -> Skill {
        Skill {
            name: name.into(),
            level,
            success_rate: 0.9,
            avg_completion_ms: 1000.0,
            completed: 0,
        }
    }

    /// Checks ranges (a peer's offer is untrusted).
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || !(0.0..=1.0).contains(&self.success_rate) {
            return Err(ProtocolError::Invalid("skill name or success rate".into()));
        }
        if !self.avg_completion_ms.is_finite() || self.avg_completion_ms < 0.0 {
            return Err(ProtocolError::Invalid("skill completion time".into()));
        }
        Ok(())
    }
}

/// What a task needs of one skill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRequirement {
    /// Skill name.
    #[serde(deserialize_with = "bounded_string::<_, MAX_NAME>")]
    pub name: String,
    /// Minimum level.
    pub min_level: Level,
    /// How many agents.
    pub count: u32,
}

/// A task, as its initiator announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAnnounce {
    /// The task.
    pub task_id: TaskId,
    /// What it is.
    #[serde(deserialize_with = "bounded_string::<_, MAX_TEXT>")]
    pub description: String,
    /// Skills it needs.
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_SKILLS>")]
    pub required: Vec<SkillRequirement>,
    /// Priority.
    pub priority: Priority,
    /// When it was first announced (ms); ages the effective priority.
    pub created_at_ms: u64,
    /// When it must be done by (ms since the epoch).
    pub deadline_ms: u64,
    /// Cap on the group size.
    pub max_group_size: u32,
    /// Tasks that must complete first.
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_DEPS>")]
    pub depends_on: Vec<TaskId>,
    /// Input for the executors.
    #[serde(
        deserialize_with = "bounded_bytes::<_, MAX_PAYLOAD>",
        serialize_with = "serde_bytes::serialize"
    )]
    pub payload: Vec<u8>,
    /// How many times it has been announced before (re-announcements).
    pub round: u32,
    /// Whether the result must be approved by two thirds of the members
    /// (see [`crate::consensus`]).
    pub consensus: bool,
}

impl TaskAnnounce {
    /// Checks the fields a peer could get wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ProtocolError::Invalid(format!("task announce: {m}")));
        if self.required.is_empty() {
            return bad("no required skills");
        }
        let mut names: Vec<&str> = self.required.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != self.required.len() || names.iter().any(|n| n.is_empty()) {
            return bad("skill names must be unique and non-empty");
        }
        let total: u64 = self.required.iter().map(|r| u64::from(r.count)).sum();
        if self.required.iter().any(|r| r.count == 0) || total > u64::from(self.max_group_size) {
            return bad("counts must be positive and fit max_group_size");
        }
        if self.max_group_size as usize > MAX_LIST {
            return bad("max_group_size too large");
        }
        Ok(())
    }
}

/// Why an invitation was declined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// No free slot.
    NoCapacity,
    /// The agent does not have the skill at the level needed.
    NotQualified,
    /// The task's deadline has passed.
    Expired,
    /// Anything else.
    Other(#[serde(deserialize_with = "bounded_string::<_, MAX_TEXT>")] String),
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every part succeeded.
    Completed,
    /// It failed, with a reason.
    Failed(#[serde(deserialize_with = "bounded_string::<_, MAX_TEXT>")] String),
}

/// The body of a signed envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Initiator → skill topic: here is a task.
    TaskAnnounce(TaskAnnounce),
    /// Agent → initiator: I can do this part.
    SkillOffer {
        /// The task.
        task_id: TaskId,
        /// The skill offered, with its metrics.
        skill: Skill,
        /// Free task slots.
        free_slots: u32,
        /// Total task slots.
        max_slots: u32,
    },
    /// Coordinator → agent: join the group for `skill`. Carries the group document.
    GroupInvite {
        /// The task, whole (the invitee may not have seen the announcement).
        task: TaskAnnounce,
        /// The skill to cover.
        #[serde(deserialize_with = "bounded_string::<_, MAX_NAME>")]
        skill: String,
        /// Encoded CRDT batch: the group document so far.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Invitee → coordinator: accepted (its acceptance change attached).
    GroupAccept {
        /// The task.
        task_id: TaskId,
        /// The invitee's free slots after accepting (for the coordinator's directory).
        free_slots: u32,
        /// Encoded CRDT batch.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Invitee → coordinator: declined (the refusal recorded in the changes).
    GroupReject {
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: RejectReason,
        /// The invitee's free slots.
        free_slots: u32,
        /// Encoded CRDT batch: the invitee's refusal, if it could record one.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Coordinator → members: every skill is covered.
    GroupFormed {
        /// The task.
        task_id: TaskId,
        /// Encoded CRDT batch (what the members may lack).
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Coordinator → member: start (or resume from a checkpoint).
    TaskStart {
        /// The task.
        task_id: TaskId,
        /// Checkpoint of the member this one replaces.
        #[serde(
            deserialize_with = "bounded_opt_bytes::<_, MAX_CHECKPOINT>",
            serialize_with = "serde_bytes::serialize"
        )]
        resume_from: Option<Vec<u8>>,
        /// Encoded CRDT batch.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Member → coordinator: progress and a checkpoint (both also in the changes).
    TaskUpdate {
        /// The task.
        task_id: TaskId,
        /// 0..=1.
        progress: f64,
        /// Encoded CRDT batch.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Member → coordinator: my part is done (the result is in the changes).
    TaskComplete {
        /// The task.
        task_id: TaskId,
        /// Whether the part succeeded.
        success: bool,
        /// The member's free slots now that its part is done.
        free_slots: u32,
        /// Encoded CRDT batch.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Coordinator → members: the group is dissolved; release the slot.
    GroupDissolve {
        /// The task.
        task_id: TaskId,
        /// How it ended.
        outcome: Outcome,
        /// Encoded CRDT batch.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        changes: Vec<u8>,
    },
    /// Group member → group member: alive; my document heads.
    Heartbeat {
        /// The task.
        task_id: TaskId,
        /// The sender's document heads.
        #[serde(deserialize_with = "bounded_vec::<_, _, MAX_LIST>")]
        heads: Vec<[u8; 32]>,
    },
    /// Coordinator → validators: vote on this value.
    ConsensusProposal(crate::consensus::Proposal),
    /// Validator → coordinator: a signed vote.
    ConsensusVote(crate::consensus::Vote),
    /// Anyone → topic: something operators should see.
    Alert {
        /// The task it concerns, if any.
        task_id: Option<TaskId>,
        /// What happened.
        #[serde(deserialize_with = "bounded_string::<_, MAX_TEXT>")]
        text: String,
    },
    /// Member → member: a named blob for the task.
    DataShare {
        /// The task.
        task_id: TaskId,
        /// The blob's name.
        #[serde(deserialize_with = "bounded_string::<_, MAX_NAME>")]
        name: String,
        /// The data.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_PAYLOAD>",
            serialize_with = "serde_bytes::serialize"
        )]
        data: Vec<u8>,
    },
    /// Group member → group member: an anti-entropy message (encoded `SyncMessage`).
    CrdtChanges {
        /// The task.
        task_id: TaskId,
        /// Encoded CRDT sync message.
        #[serde(
            deserialize_with = "bounded_bytes::<_, MAX_CHANGES>",
            serialize_with = "serde_bytes::serialize"
        )]
        sync: Vec<u8>,
    },
    /// Agent → agent: send me the agent cards you hold that I lack or hold older
    /// versions of. A joining agent asks this of its first peer (holding nothing,
    /// it gets every card), and every agent now and then of another, so a card
    /// gossip missed still arrives.
    CardsRequest {
        /// The current cards the asker holds.
        #[serde(deserialize_with = "bounded_vec::<_, _, MAX_CARDS>")]
        held: Vec<crate::card::CardStamp>,
    },
    /// Agent → agent: agent cards the sender holds, each signed by its own agent
    /// (unverified until the receiver checks each one).
    Cards {
        /// The cards.
        #[serde(deserialize_with = "bounded_vec::<_, _, MAX_CARDS>")]
        cards: Vec<crate::SignedCard>,
    },
}

/// Most cards in one [`Message::Cards`] (the message's byte limit bounds it first
/// for large cards).
pub const MAX_CARDS: usize = 4096;

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::TaskAnnounce(_) => "task_announce",
            Message::SkillOffer { .. } => "skill_offer",
            Message::GroupInvite { .. } => "group_invite",
            Message::GroupAccept { .. } => "group_accept",
            Message::GroupReject { .. } => "group_reject",
            Message::GroupFormed { .. } => "group_formed",
            Message::TaskStart { .. } => "task_start",
            Message::TaskUpdate { .. } => "task_update",
            Message::TaskComplete { .. } => "task_complete",
            Message::GroupDissolve { .. } => "group_dissolve",
            Message::Heartbeat { .. } => "heartbeat",
            Message::ConsensusProposal(_) => "consensus_proposal",
            Message::ConsensusVote(_) => "consensus_vote",
            Message::Alert { .. } => "alert",
            Message::DataShare { .. } => "data_share",
            Message::CrdtChanges { .. } => "crdt_changes",
            Message::CardsRequest { .. } => "cards_request",
            Message::Cards { .. } => "cards",
        }
    }

    /// The free slots the sender says it has, for messages that carry them.
    pub fn free_slots(&self) -> Option<u32> {
        match self {
            Message::SkillOffer { free_slots, .. }
            | Message::GroupAccept { free_slots, .. }
            | Message::GroupReject { free_slots, .. }
            | Message::TaskComplete { free_slots, .. } => Some(*free_slots),
            _ => None,
        }
    }

    /// The task the message concerns.
    pub fn task_id(&self) -> Option<TaskId> {
        Some(match self {
            Message::TaskAnnounce(a) => a.task_id,
            Message::GroupInvite { task, .. } => task.task_id,
            Message::SkillOffer { task_id, .. }
            | Message::GroupAccept { task_id, .. }
            | Message::GroupReject { task_id, .. }
            | Message::GroupFormed { task_id, .. }
            | Message::TaskStart { task_id, .. }
            | Message::TaskUpdate { task_id, .. }
            | Message::TaskComplete { task_id, .. }
            | Message::GroupDissolve { task_id, .. }
            | Message::Heartbeat { task_id, .. }
            | Message::DataShare { task_id, .. }
            | Message::CrdtChanges { task_id, .. } => *task_id,
            Message::ConsensusProposal(p) => p.task_id,
            Message::ConsensusVote(v) => v.task_id,
            Message::Alert { task_id, .. } => return *task_id,
            Message::CardsRequest { .. } | Message::Cards { .. } => return None,
        })
    }
}

/// The gossip topic of a skill.
pub fn skill_topic(skill: &str) -> String {
    format!("starling/v1/skill/{skill}")
}
