//! The agent's inputs, outputs, commands and events.

use crate::{AgentId, Message, Outcome, Priority, SignedEnvelope, Skill, SkillRequirement, TaskId};

/// Milliseconds since the Unix epoch: the only clock the state machine knows.
pub type Timestamp = u64;

/// Something that happened to the agent.
#[derive(Debug, Clone)]
pub enum Input {
    /// A verified message from a peer (signature, freshness, replay and audience
    /// already checked by the transport).
    Received {
        /// The sender.
        from: AgentId,
        /// The message.
        message: Message,
    },
    /// A local command (from the API, the CLI or an executor).
    Command(Command),
    /// Time passed; due timers fire.
    Tick,
    /// The transport lost every connection to this peer.
    PeerDown(AgentId),
}

/// A task as a user describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// What it is.
    pub description: String,
    /// Skills it needs.
    pub required: Vec<SkillRequirement>,
    /// Priority.
    pub priority: Priority,
    /// Time allowed from now (ms); the config's default if `None`.
    pub deadline_ms: Option<u64>,
    /// Cap on the group size; the sum of the skills' counts if `None`.
    pub max_group_size: Option<u32>,
    /// Tasks that must complete first (ones this agent initiated or worked on).
    pub depends_on: Vec<TaskId>,
    /// Input for the executors.
    pub payload: Vec<u8>,
    /// Whether two thirds of the members must approve the combined result.
    pub consensus: bool,
}

/// A local command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Announce a task (the id comes back in [`Event::TaskAnnounced`] or
    /// [`Event::TaskWaiting`]; use [`crate::agent::Agent::announce`] to get it directly).
    Announce(TaskSpec),
    /// The executor reports progress on this agent's part.
    Progress {
        /// The task.
        task_id: TaskId,
        /// 0..=1.
        progress: f64,
        /// A point to resume from if this agent fails.
        checkpoint: Option<Vec<u8>>,
    },
    /// The executor finished this agent's part.
    Complete {
        /// The task.
        task_id: TaskId,
        /// Whether it succeeded.
        success: bool,
        /// The result bytes.
        result: Vec<u8>,
    },
    /// Send a named blob to the other members of a group.
    ShareData {
        /// The task.
        task_id: TaskId,
        /// Name.
        name: String,
        /// Data.
        data: Vec<u8>,
    },
    /// Leave every group this agent is in (graceful shutdown).
    Leave,
}

/// What the caller must do, in order.
#[derive(Debug, Clone)]
pub enum Output {
    /// Publish on a gossip topic.
    Publish {
        /// The topic.
        topic: String,
        /// The sealed message.
        envelope: SignedEnvelope,
        /// Its kind, for metrics.
        kind: &'static str,
    },
    /// Send directly to one agent (retry if the transport fails; the protocol
    /// tolerates loss and duplicates).
    Send {
        /// The recipient.
        to: AgentId,
        /// The sealed message.
        envelope: SignedEnvelope,
        /// Its kind, for metrics.
        kind: &'static str,
    },
    /// Tell the application.
    Emit(Event),
}

/// A part of a task handed to this agent's executor.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The task.
    pub task_id: TaskId,
    /// The skill this agent covers.
    pub skill: String,
    /// This agent's current metrics for that skill (level, success rate, average
    /// completion time), e.g. for simulated work.
    pub metrics: Option<crate::Skill>,
    /// What the task is.
    pub description: String,
    /// Its input.
    pub payload: Vec<u8>,
    /// Checkpoint left by the member this agent replaces.
    pub resume_from: Option<Vec<u8>>,
    /// The task's deadline (ms since the epoch).
    pub deadline_ms: u64,
}

/// One member's result.
#[derive(Debug, Clone, PartialEq)]
pub struct PartResult {
    /// The skill.
    pub skill: String,
    /// Who did it.
    pub member: AgentId,
    /// Whether it succeeded.
    pub success: bool,
    /// The output.
    pub output: Vec<u8>,
}

/// Something the application may want to know.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A task of ours was announced (round 0) or announced again.
    TaskAnnounced {
        /// The task.
        task_id: TaskId,
        /// 0 for the first announcement.
        round: u32,
        /// The skills announced: all of them in round 0, then those still lacking
        /// agents (the transport may look for their providers and announce to them
        /// directly, in case gossip does not reach them).
        skills: Vec<String>,
    },
    /// A task of ours waits for its dependencies.
    TaskWaiting {
        /// The task.
        task_id: TaskId,
        /// The dependencies not yet complete.
        waiting_for: Vec<TaskId>,
    },
    /// Every required skill of a task we coordinate is covered.
    GroupFormed {
        /// The task.
        task_id: TaskId,
        /// (skill, member) pairs.
        members: Vec<(String, AgentId)>,
    },
    /// Our executor must do this part.
    TaskAssigned(Assignment),
    /// A member of a task we coordinate reported progress.
    TaskProgress {
        /// The task.
        task_id: TaskId,
        /// The member.
        member: AgentId,
        /// 0..=1.
        progress: f64,
        /// Whether the update wrote a checkpoint into the group document (a
        /// replacement would resume from it). Checkpoints are paced (see
        /// `AgentConfig::checkpoint_interval_ms`): a held one is written later with
        /// the progress it came with, so a progress value may be reported twice,
        /// the second time with its checkpoint.
        checkpointed: bool,
    },
    /// A member of a task we coordinate was declared failed; its part is reassigned.
    MemberFailed {
        /// The task.
        task_id: TaskId,
        /// The member.
        member: AgentId,
        /// Its skill.
        skill: String,
        /// Why.
        reason: String,
    },
    /// A replacement started a failed member's part.
    ReplacementStarted {
        /// The task.
        task_id: TaskId,
        /// The new member.
        member: AgentId,
        /// The skill.
        skill: String,
        /// Whether it got a checkpoint to resume from.
        resumed: bool,
    },
    /// The coordinator of a task changed: this agent took over from a failed
    /// coordinator (`coordinator` is this agent), or this agent was replaced and
    /// stopped coordinating (`coordinator` is its successor).
    CoordinatorChanged {
        /// The task.
        task_id: TaskId,
        /// The new coordinator.
        coordinator: AgentId,
    },
    /// A task we coordinate finished (emitted by whoever coordinates it at the end).
    TaskFinished {
        /// The task.
        task_id: TaskId,
        /// How it ended.
        outcome: Outcome,
        /// The selected members' results.
        results: Vec<PartResult>,
        /// For tasks that asked for consensus: the members' signed approval.
        certificate: Option<crate::consensus::Certificate>,
    },
    /// A group this agent was a member of ended; stop the executor if still running.
    AssignmentEnded {
        /// The task.
        task_id: TaskId,
        /// How the task ended.
        outcome: Outcome,
    },
    /// A skill's metrics changed after a task (persist them).
    SkillLearned {
        /// The skill, updated.
        skill: Skill,
        /// Whether it went up a level.
        promoted: bool,
    },
    /// A group document is closed; here is its final snapshot (persist it).
    GroupClosed {
        /// The task.
        task_id: TaskId,
        /// `GroupDoc::save` bytes.
        snapshot: Vec<u8>,
    },
    /// A member shared data.
    DataReceived {
        /// The task.
        task_id: TaskId,
        /// The sender.
        from: AgentId,
        /// Name.
        name: String,
        /// Data.
        data: Vec<u8>,
    },
    /// A peer raised an alert.
    AlertReceived {
        /// The sender.
        from: AgentId,
        /// The task, if any.
        task_id: Option<TaskId>,
        /// Text.
        text: String,
    },
    /// A peer sent something it had no business sending (score it down).
    Misbehaviour {
        /// The peer.
        peer: AgentId,
        /// What it did.
        reason: String,
    },
    /// A local command could not be carried out.
    CommandFailed {
        /// Why.
        reason: String,
    },
}
