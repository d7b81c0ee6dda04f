//! Executors: the `TaskHandler` trait a user implements, and a synthetic handler for
//! simulation.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use starling_protocol::{Assignment, TaskId};
use tokio::sync::mpsc;

/// What an executor reports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExecutorReport {
    /// Progress, with a checkpoint to resume from.
    Progress {
        task_id: TaskId,
        progress: f64,
        checkpoint: Option<Vec<u8>>,
    },
    /// The part is done.
    Done {
        task_id: TaskId,
        result: PartOutcome,
    },
}

/// The result of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOutcome {
    /// Whether the part succeeded.
    pub success: bool,
    /// Its output.
    pub output: Vec<u8>,
}

/// Where an executor reports progress and checkpoints.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    task_id: TaskId,
    tx: mpsc::Sender<ExecutorReport>,
}

impl ProgressSink {
    pub(crate) fn new(task_id: TaskId, tx: mpsc::Sender<ExecutorReport>) -> Self {
        ProgressSink { task_id, tx }
    }

    /// Reports progress (0..=1) and optionally a checkpoint a replacement could resume
    /// from. Waits if the node is busy; returns false once the node has stopped.
    pub async fn report(&self, progress: f64, checkpoint: Option<Vec<u8>>) -> bool {
        let report = ExecutorReport::Progress {
            task_id: self.task_id,
            progress,
            checkpoint,
        };
        self.tx.send(report).await.is_ok()
    }
}

/// A future an executor returns.
pub type PartFuture = Pin<Box<dyn Future<Output = PartOutcome> + Send>>;

/// Runs this agent's part of a task. The node calls `run` when the group starts the
/// task (or when this agent replaces a failed member: `assignment.resume_from` then
/// holds the last checkpoint). Dropping the future (the group ended) cancels the work.
pub trait TaskHandler: Send + Sync + 'static {
    /// Does the work.
    fn run(&self, assignment: Assignment, progress: ProgressSink) -> PartFuture;
}

/// A worker for simulations: works for a time drawn around a mean, reports progress
/// with checkpoints, and fails with a given rate. The mean and the rate are fixed, or
/// taken from the agent's metrics for the skill (average completion time, 1 − success
/// rate), so simulated agents behave as their advertised skills say.
#[derive(Debug, Clone)]
pub struct SyntheticHandler {
    /// Mean work time; `None`: the skill's average completion time × `time_scale`.
    /// The actual time is uniform in 0.5×..1.5× of the mean.
    pub mean: Option<Duration>,
    /// Probability a part fails; `None`: 1 − the skill's success rate.
    pub failure_rate: Option<f64>,
    /// Multiplies the skill's completion time (to compress simulated time).
    pub time_scale: f64,
    /// Progress reports per part.
    pub steps: u32,
    /// Mixed into every draw, so different agents fail different parts (give each
    /// agent its own, e.g. derived from its id and the run's seed).
    pub salt: u64,
}

impl SyntheticHandler {
    /// A handler working for `mean` on average and failing with `failure_rate`.
    pub fn new(mean: Duration, failure_rate: f64, salt: u64) -> Arc<Self> {
        Arc::new(SyntheticHandler {
            mean: Some(mean),
            failure_rate: Some(failure_rate.clamp(0.0, 1.0)),
            time_scale: 1.0,
            steps: 4,
            salt,
        })
    }

    /// A handler that works and fails as the agent's skill metrics say, with work
    /// times scaled by `time_scale`.
    pub fn from_skills(time_scale: f64, salt: u64) -> Arc<Self> {
        Arc::new(SyntheticHandler {
            mean: None,
            failure_rate: None,
            time_scale: time_scale.max(0.0),
            steps: 4,
            salt,
        })
    }

    fn mean_for(&self, a: &Assignment) -> Duration {
        self.mean.unwrap_or_else(|| {
            let ms = a
                .metrics
                .as_ref()
                .map_or(1000.0, |s| s.avg_completion_ms)
                .max(0.0)
                * self.time_scale;
            Duration::from_secs_f64(ms / 1000.0)
        })
    }

    fn failure_for(&self, a: &Assignment) -> f64 {
        self.failure_rate
            .unwrap_or_else(|| 1.0 - a.metrics.as_ref().map_or(1.0, |s| s.success_rate))
            .clamp(0.0, 1.0)
    }
}

/// A small deterministic hash of the task id, so runs with the same seed repeat.
fn draw(task_id: &TaskId, salt: u64) -> f64 {
    let mut x = task_id.seq
        ^ salt
        ^ u64::from_le_bytes(task_id.initiator.0[..8].try_into().unwrap_or([0; 8]));
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl TaskHandler for SyntheticHandler {
    fn run(&self, assignment: Assignment, progress: ProgressSink) -> PartFuture {
        let this = self.clone();
        Box::pin(async move {
            let factor = 0.5 + draw(&assignment.task_id, this.salt ^ 1);
            let total = this.mean_for(&assignment).mul_f64(factor);
            let steps = this.steps.max(1);
            let start = assignment
                .resume_from
                .as_deref()
                .and_then(|cp| std::str::from_utf8(cp).ok())
                .and_then(|s| s.strip_prefix("step-"))
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0)
                .min(steps);
            for step in start + 1..=steps {
                tokio::time::sleep(total / steps).await;
                let cp = format!("step-{step}").into_bytes();
                if !progress
                    .report(f64::from(step) / f64::from(steps), Some(cp))
                    .await
                {
                    break;
                }
            }
            let success = draw(&assignment.task_id, this.salt ^ 2) >= this.failure_for(&assignment);
            let output = format!(
                "{}:{}",
                assignment.skill,
                if success { "done" } else { "failed" }
            )
            .into_bytes();
            PartOutcome { success, output }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::{AgentId, Level, Skill};

    fn assignment(seq: u64, metrics: Option<Skill>) -> Assignment {
        Assignment {
            task_id: TaskId {
                initiator: AgentId([1; 32]),
                seq,
            },
            skill: "x".into(),
            metrics,
            description: String::new(),
            payload: Vec::new(),
            resume_from: None,
            deadline_ms: 0,
        }
    }

    #[test]
    fn skill_metrics_drive_time_and_failures() {
        let h = SyntheticHandler::from_skills(0.5, 3);
        let skill = Skill {
            avg_completion_ms: 800.0,
            success_rate: 0.75,
            ..Skill::new("x", Level::Expert)
        };
        let a = assignment(1, Some(skill));
        assert_eq!(h.mean_for(&a), Duration::from_millis(400));
        assert!((h.failure_for(&a) - 0.25).abs() < 1e-9);
        // Over many tasks the failure share is near the rate.
        let failures = (0..2000u64)
            .filter(|i| draw(&assignment(*i, None).task_id, h.salt ^ 2) < h.failure_for(&a))
            .count();
        assert!(
            (400..600).contains(&failures),
            "{failures} failures in 2000"
        );
        let fixed = SyntheticHandler::new(Duration::from_millis(10), 0.0, 3);
        assert_eq!(fixed.mean_for(&a), Duration::from_millis(10));
        assert_eq!(fixed.failure_for(&a), 0.0);
    }
}
