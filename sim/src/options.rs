//! `SimOptions`: what one simulation run does, with documented defaults.

use std::{path::PathBuf, time::Duration};

use crate::SimError;

/// How the simulated agents reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// libp2p's in-process memory transport (noise + yamux over channels).
    Memory,
    /// Real TCP sockets on 127.0.0.1 (noise + yamux), ports chosen by the OS.
    Tcp,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(Transport::Memory),
            "tcp" => Ok(Transport::Tcp),
            other => Err(format!("unknown transport {other:?} (memory or tcp)")),
        }
    }
}

/// One run of the simulation.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Agents in the mesh. Default 100: a realistic team of agents, and what the
    /// benchmark's headline figures use.
    pub agents: usize,
    /// Tasks announced. Default 120: enough for stable p95s, announced over 24 s.
    pub tasks: usize,
    /// Announcement rate, tasks per minute, spread over the honest agents. Default
    /// 300: what 100 agents in one process on two cores carry with room to spare,
    /// even with other work on the machine (the benchmark measures where that stops
    /// being true).
    pub rate: f64,
    /// Distinct skills in the mesh. Default 12; each agent holds 1–4.
    pub skills: usize,
    /// Largest group a task asks for (1..=it, over 1–3 skills). Default 5.
    pub group_size: usize,
    /// Seed of the workload and the fault schedule (printed; replays the run).
    pub seed: u64,
    /// Tasks each agent works on at once (`AgentConfig::max_concurrent_tasks`), 1–64.
    /// Default `None`: the agent's own default, as a real agent has without
    /// `--max-concurrent-tasks`.
    pub capacity: Option<u32>,
    /// Memory or TCP links. Default memory.
    pub transport: Transport,
    /// Mean simulated work per part, ms (each agent's skills vary 0.5×–1.5× around it).
    /// Default 300 ms: short enough that a run takes seconds, long enough that groups
    /// overlap and killed members die mid-part.
    pub work_ms: u64,
    /// Probability that an honest part fails; `None`: 1 − the skill's success rate
    /// (0–10 %). Default `None`.
    pub failure_rate: Option<f64>,
    /// Percentage of agents crashed at `kill_at`. Default 0.
    pub kill_pct: f64,
    /// When to crash them, from the first announcement. Default 5 s.
    pub kill_at: Duration,
    /// Restart crashed agents from their data directories this long after the crash.
    /// Default: never.
    pub restart_after: Option<Duration>,
    /// Fraction of agents cut off from the rest at `partition_at`. Default 0.
    pub partition: f64,
    /// When the partition starts. Default 3 s.
    pub partition_at: Duration,
    /// When it heals. Default 8 s.
    pub heal_at: Duration,
    /// Link latency. Default 0.
    pub latency: Duration,
    /// Link jitter (uniform ±). Default 0.
    pub jitter: Duration,
    /// Percentage of messages that need a retransmission. Default 0.
    pub loss_pct: f64,
    /// Hostile agents (half claim skills they lack, half forge, replay and spam).
    /// Default 0.
    pub byzantine: usize,
    /// How long to wait for stragglers after the last announcement. Default 60 s
    /// (tasks ride out kills and partitions within it).
    pub drain: Duration,
    /// Show a progress bar. Default true.
    pub progress: bool,
    /// Also write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Write every agent's metrics here, summed over the agents, counting only what
    /// accrued during the workload (Prometheus text format).
    pub metrics: Option<PathBuf>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            agents: 100,
            tasks: 120,
            rate: 300.0,
            skills: 12,
            group_size: 5,
            seed: 7,
            capacity: None,
            transport: Transport::Memory,
            work_ms: 300,
            failure_rate: None,
            kill_pct: 0.0,
            kill_at: Duration::from_secs(5),
            restart_after: None,
            partition: 0.0,
            partition_at: Duration::from_secs(3),
            heal_at: Duration::from_secs(8),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_pct: 0.0,
            byzantine: 0,
            drain: Duration::from_secs(60),
            progress: true,
            json: None,
            metrics: None,
        }
    }
}

impl SimOptions {
    /// Checks every option; the error names the flag.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field: &'static str, reason: &str| {
            Err(SimError::Options {
                field,
                reason: reason.into(),
            })
        };
        if self.agents < 2 {
            return bad("agents", "need at least 2 agents");
        }
        if self.agents > 5_000 {
            return bad("agents", "at most 5000 agents in one process");
        }
        if self.byzantine * 2 > self.agents {
            return bad("byzantine", "hostile agents must be fewer than half");
        }
        if self.tasks == 0 {
            return bad("tasks", "must be at least 1");
        }
        if !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            return bad("rate", "tasks per minute must be within (0, 1000000]");
        }
        if self.skills == 0 || self.skills > crate::workload::SKILL_NAMES.len() {
            return bad("skills", "must be within 1..=24");
        }
        if !(1..=16).contains(&self.group_size) {
            return bad("group-size", "must be within 1..=16");
        }
        if !(0.0..=100.0).contains(&self.kill_pct) {
            return bad("kill", "a percentage within 0..=100");
        }
        if !(0.0..1.0).contains(&self.partition) {
            return bad("partition", "a fraction within 0..1");
        }
        if self.partition > 0.0 && self.heal_at <= self.partition_at {
            return bad("heal-at", "must come after --partition-at");
        }
        if !(0.0..=100.0).contains(&self.loss_pct) {
            return bad("loss", "a percentage within 0..=100");
        }
        if self.capacity.is_some_and(|c| !(1..=64).contains(&c)) {
            return bad("capacity", "tasks at once per agent, within 1..=64");
        }
        if self.failure_rate.is_some_and(|f| !(0.0..=1.0).contains(&f)) {
            return bad("failure-rate", "a probability within 0..=1");
        }
        if self.transport == Transport::Tcp && self.agents > 1_000 {
            return bad("agents", "at most 1000 agents over TCP (file descriptors)");
        }
        Ok(())
    }
}
