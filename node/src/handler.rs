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

/// A worker for simulations: works for a time drawn around the skill's average
/// completion time, reports progress with checkpoints, and fails with the skill's
/// failure rate.
#[derive(Debug, Clone)]
pub struct SyntheticHandler {
    /// Mean work time; the actual time is uniform in 0.5×..1.5× of it.
    pub mean: Duration,
    /// Probability a part fails.
    pub failure_rate: f64,
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
            mean,
            failure_rate: failure_rate.clamp(0.0, 1.0),
            steps: 4,
            salt,
        })
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
            let total = this.mean.mul_f64(factor);
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
            let success = draw(&assignment.task_id, this.salt ^ 2) >= this.failure_rate;
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
