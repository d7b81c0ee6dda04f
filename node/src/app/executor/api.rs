//! The api-mode executor: a part waits here until a program — in any language —
//! completes it through the control API (`POST /v1/tasks/{id}/complete`), after
//! optionally claiming it and reporting progress. The part appears as a
//! `task_assigned` event on the API's event stream and in `GET /v1/assignments`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use starling_protocol::{Assignment, TaskId};
use tokio::sync::oneshot;

use crate::{PartFuture, PartOutcome, ProgressSink, TaskHandler};

/// A part waiting for an api-mode program.
#[derive(Debug, Clone)]
pub struct PendingAssignment {
    /// The part.
    pub assignment: Assignment,
    /// Whether a program has claimed it.
    pub claimed: bool,
}

/// Why an API call on an assignment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentError {
    /// No api-mode part of that task is waiting on this agent.
    NotFound,
    /// Another program claimed it first.
    AlreadyClaimed,
}

struct Pending {
    assignment: Assignment,
    claimed: bool,
    sink: ProgressSink,
    done: Option<oneshot::Sender<PartOutcome>>,
    /// Tells a re-assignment of the same task from the one it replaced.
    generation: u64,
}

#[derive(Default)]
struct Parts {
    pending: BTreeMap<TaskId, Pending>,
    next_generation: u64,
}

/// The api-mode executor; clones share the waiting parts.
#[derive(Clone, Default)]
pub struct ApiExecutor {
    parts: Arc<Mutex<Parts>>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for ApiExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiExecutor")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Removes a part when its future ends or is dropped (the group ended).
struct Forget {
    parts: Arc<Mutex<Parts>>,
    task_id: TaskId,
    generation: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        let mut parts = lock(&self.parts);
        if parts
            .pending
            .get(&self.task_id)
            .is_some_and(|p| p.generation == self.generation)
        {
            parts.pending.remove(&self.task_id);
        }
    }
}

fn lock(parts: &Mutex<Parts>) -> MutexGuard<'_, Parts> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    parts.lock().unwrap_or_else(|e| e.into_inner())
}

impl ApiExecutor {
    /// An executor with no timeout of its own (the task's deadline still applies).
    pub fn new() -> ApiExecutor {
        ApiExecutor::default()
    }

    /// The same waiting parts, with parts failing after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> ApiExecutor {
        ApiExecutor {
            parts: self.parts.clone(),
            timeout: Some(timeout),
        }
    }

    /// Parts waiting for a program, oldest task first.
    pub fn pending(&self) -> Vec<PendingAssignment> {
        lock(&self.parts)
            .pending
            .values()
            .map(|p| PendingAssignment {
                assignment: p.assignment.clone(),
                claimed: p.claimed,
            })
            .collect()
    }

    /// Claims a part for one program, so that several programs serving one skill
    /// never do the same part twice.
    pub fn claim(&self, task_id: TaskId) -> Result<Assignment, AssignmentError> {
        let mut parts = lock(&self.parts);
        let p = parts
            .pending
            .get_mut(&task_id)
            .ok_or(AssignmentError::NotFound)?;
        if p.claimed {
            return Err(AssignmentError::AlreadyClaimed);
        }
        p.claimed = true;
        Ok(p.assignment.clone())
    }

    /// Where to report progress on a waiting part.
    pub fn progress_sink(&self, task_id: TaskId) -> Result<ProgressSink, AssignmentError> {
        lock(&self.parts)
            .pending
            .get(&task_id)
            .map(|p| p.sink.clone())
            .ok_or(AssignmentError::NotFound)
    }

    /// Completes a waiting part.
    pub fn complete(&self, task_id: TaskId, outcome: PartOutcome) -> Result<(), AssignmentError> {
        let mut parts = lock(&self.parts);
        let sender = parts
            .pending
            .get_mut(&task_id)
            .and_then(|p| p.done.take())
            .ok_or(AssignmentError::NotFound)?;
        parts.pending.remove(&task_id);
        sender.send(outcome).map_err(|_| AssignmentError::NotFound)
    }
}

impl TaskHandler for ApiExecutor {
    fn run(&self, assignment: Assignment, progress: ProgressSink) -> PartFuture {
        let (tx, rx) = oneshot::channel();
        let task_id = assignment.task_id;
        let generation = {
            let mut parts = lock(&self.parts);
            parts.next_generation += 1;
            let generation = parts.next_generation;
            parts.pending.insert(
                task_id,
                Pending {
                    assignment,
                    claimed: false,
                    sink: progress,
                    done: Some(tx),
                    generation,
                },
            );
            generation
        };
        let forget = Forget {
            parts: self.parts.clone(),
            task_id,
            generation,
        };
        let timeout = self.timeout;
        Box::pin(async move {
            let _forget = forget;
            let outcome = match timeout {
                Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| t),
                None => Ok(rx.await),
            };
            match outcome {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => PartOutcome {
                    success: false,
                    output: b"the api executor went away".to_vec(),
                },
                Err(t) => PartOutcome {
                    success: false,
                    output: format!("no program completed the part within {} s", t.as_secs())
                        .into_bytes(),
                },
            }
        })
    }
}
