//! Follows a node's events: keeps what the control API shows of each task (state,
//! group, progress, results) and re-publishes every event, as JSON, to the API's
//! event stream. A record is updated before its event is published, so a client
//! that sees `task_finished` and then asks for the task sees it finished. Every
//! event carries `at_ms`, the wall-clock time (Unix ms) at which this agent saw it,
//! and every record the times its task was announced, formed and finished here:
//! latencies can be read without trusting a client's clock or its delays.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use starling_protocol::{AgentId, Event, Outcome, PartResult, TaskId};
use tokio::sync::broadcast;

use crate::{Handle, NodeEvent, app::wire};

/// Task records kept (the oldest are forgotten first).
const MAX_RECORDS: usize = 10_000;
/// Stream events buffered for a slow subscriber before it misses some.
const STREAM_QUEUE: usize = 1024;

/// Wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where a task stands, as this agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Announced; looking for agents.
    Announced,
    /// Waiting for the tasks it depends on.
    Waiting,
    /// The group is formed and working.
    Running,
    /// This agent works on a part of it (someone else coordinates).
    Working,
    /// Every part succeeded.
    Completed,
    /// It failed.
    Failed,
}

impl TaskState {
    /// The name the API uses.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Announced => "announced",
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Working => "working",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
        }
    }
}

/// What is known of one task.
#[derive(Debug, Clone)]
struct TaskRecord {
    description: Option<String>,
    state: TaskState,
    round: u32,
    members: Vec<(String, AgentId)>,
    progress: BTreeMap<AgentId, f64>,
    outcome: Option<Outcome>,
    results: Vec<PartResult>,
    /// The skill of this agent's own part, if it has one.
    my_part: Option<String>,
    /// When this agent first saw the task announced (Unix ms).
    announced_at_ms: Option<u64>,
    /// When it first saw the group formed.
    formed_at_ms: Option<u64>,
    /// When it saw the task finish.
    finished_at_ms: Option<u64>,
}

impl TaskRecord {
    fn new(state: TaskState) -> TaskRecord {
        TaskRecord {
            description: None,
            state,
            round: 0,
            members: Vec::new(),
            progress: BTreeMap::new(),
            outcome: None,
            results: Vec::new(),
            my_part: None,
            announced_at_ms: None,
            formed_at_ms: None,
            finished_at_ms: None,
        }
    }

    /// Mean progress of the group's members (1 once completed).
    fn overall(&self) -> f64 {
        if self.state == TaskState::Completed {
            return 1.0;
        }
        if self.members.is_empty() {
            let n = self.progress.len().max(1) as f64;
            return self.progress.values().sum::<f64>() / n;
        }
        let sum: f64 = self
            .members
            .iter()
            .map(|(_, m)| self.progress.get(m).copied().unwrap_or(0.0))
            .sum();
        sum / self.members.len() as f64
    }

    fn finished(&self) -> bool {
        matches!(self.state, TaskState::Completed | TaskState::Failed)
    }
}

/// One event of the API's stream: its name and JSON body.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// `task_finished`, `peer_connected`, … (see [`wire::event`]).
    pub kind: &'static str,
    /// The body; it also carries `kind`.
    pub data: Value,
}

#[derive(Default)]
struct Records {
    tasks: BTreeMap<TaskId, TaskRecord>,
    order: VecDeque<TaskId>,
}

/// The tracker; shared by the API's handlers.
pub struct TaskTracker {
    records: Mutex<Records>,
    stream: broadcast::Sender<StreamEvent>,
    executors: BTreeMap<String, &'static str>,
}

impl TaskTracker {
    /// Starts following `handle`'s events. `executors` maps skills to their executor
    /// mode (`command` or `api`).
    pub fn start(handle: &Handle, executors: BTreeMap<String, &'static str>) -> Arc<TaskTracker> {
        let (stream, _) = broadcast::channel(STREAM_QUEUE);
        let tracker = Arc::new(TaskTracker {
            records: Mutex::new(Records::default()),
            stream,
            executors,
        });
        let mut events = handle.events();
        let t = tracker.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => t.observe(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        t.publish("lagged", json!({ "missed": n }));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        t.publish("node_stopped", json!({}));
                        break;
                    }
                }
            }
        });
        tracker
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to the event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.stream.subscribe()
    }

    /// Skill → executor mode.
    pub fn executors(&self) -> &BTreeMap<String, &'static str> {
        &self.executors
    }

    /// The executor mode of a skill.
    pub fn executor_of(&self, skill: &str) -> &'static str {
        self.executors.get(skill).copied().unwrap_or("none")
    }

    fn publish(&self, kind: &'static str, mut data: Value) {
        if let Value::Object(obj) = &mut data {
            obj.insert("kind".into(), json!(kind));
            obj.entry("at_ms").or_insert_with(|| json!(now_ms()));
        }
        let _ = self.stream.send(StreamEvent { kind, data });
    }

    /// Notes a task announced through the API (so its description is shown).
    pub fn note_announced(&self, task_id: TaskId, description: &str) {
        let mut records = self.lock();
        let at = now_ms();
        Self::with(&mut records, task_id, TaskState::Announced, |r| {
            r.description = Some(description.to_string());
            r.announced_at_ms.get_or_insert(at);
        });
    }

    fn with(
        records: &mut Records,
        task_id: TaskId,
        state: TaskState,
        f: impl FnOnce(&mut TaskRecord),
    ) {
        if !records.tasks.contains_key(&task_id) {
            if records.order.len() >= MAX_RECORDS {
                // Forget the oldest finished record, or else the oldest.
                let pos = records
                    .order
                    .iter()
                    .position(|t| records.tasks.get(t).is_some_and(TaskRecord::finished))
                    .unwrap_or(0);
                if let Some(old) = records.order.remove(pos) {
                    records.tasks.remove(&old);
                }
            }
            records.order.push_back(task_id);
            records.tasks.insert(task_id, TaskRecord::new(state));
        }
        if let Some(r) = records.tasks.get_mut(&task_id) {
            f(r);
        }
    }

    fn observe(&self, e: &NodeEvent) {
        let (kind, mut data) = wire::event(e, |s| self.executor_of(s));
        let at = now_ms();
        if let Value::Object(obj) = &mut data {
            obj.insert("at_ms".into(), json!(at));
        }
        {
            let mut records = self.lock();
            if let NodeEvent::Agent(e) = e {
                self.update(&mut records, e, at, &mut data);
            }
        }
        self.publish(kind, data);
    }

    fn update(&self, records: &mut Records, e: &Event, at: u64, data: &mut Value) {
        use TaskState::*;
        match e {
            Event::TaskAnnounced { task_id, round, .. } => {
                Self::with(records, *task_id, Announced, |r| {
                    r.announced_at_ms.get_or_insert(at);
                    r.round = *round;
                    if r.state == Waiting {
                        r.state = Announced;
                    }
                });
            }
            Event::TaskWaiting { task_id, .. } => {
                Self::with(records, *task_id, Waiting, |r| r.state = Waiting);
            }
            Event::GroupFormed { task_id, members } => {
                Self::with(records, *task_id, Running, |r| {
                    r.formed_at_ms.get_or_insert(at);
                    r.state = Running;
                    r.members = members.clone();
                });
            }
            Event::TaskAssigned(a) => {
                Self::with(records, a.task_id, Working, |r| {
                    r.my_part = Some(a.skill.clone());
                    if r.description.is_none() {
                        r.description = Some(a.description.clone());
                    }
                });
            }
            Event::TaskProgress {
                task_id,
                member,
                progress,
                ..
            } => {
                let mut overall = 0.0;
                Self::with(records, *task_id, Running, |r| {
                    r.progress.insert(*member, *progress);
                    overall = r.overall();
                });
                if let Value::Object(obj) = data {
                    obj.insert("task_progress".into(), json!(overall));
                }
            }
            Event::ReplacementStarted {
                task_id,
                member,
                skill,
                ..
            } => {
                Self::with(records, *task_id, Running, |r| {
                    for (s, m) in &mut r.members {
                        if s == skill && !r.progress.contains_key(member) {
                            *m = *member;
                            break;
                        }
                    }
                });
            }
            Event::TaskFinished {
                task_id,
                outcome,
                results,
                ..
            } => {
                let state = match outcome {
                    Outcome::Completed => Completed,
                    Outcome::Failed(_) => Failed,
                };
                Self::with(records, *task_id, state, |r| {
                    r.finished_at_ms.get_or_insert(at);
                    r.state = state;
                    r.outcome = Some(outcome.clone());
                    r.results = results.clone();
                });
            }
            Event::AssignmentEnded { task_id, outcome } => {
                if let Some(r) = records.tasks.get_mut(task_id)
                    && r.state == Working
                {
                    r.outcome = Some(outcome.clone());
                    r.state = match outcome {
                        Outcome::Completed => Completed,
                        Outcome::Failed(_) => Failed,
                    };
                }
            }
            _ => {}
        }
    }

    /// Task ids known here, oldest first.
    pub fn task_ids(&self) -> Vec<TaskId> {
        self.lock().order.iter().copied().collect()
    }

    /// A task as the API shows it, if known here.
    pub fn task(&self, task_id: TaskId) -> Option<Value> {
        let records = self.lock();
        let r = records.tasks.get(&task_id)?;
        Some(json!({
            "id": task_id.to_string(),
            "state": r.state.name(),
            "description": r.description,
            "round": r.round,
            "progress": r.overall(),
            "my_part": r.my_part,
            "members": r.members.iter().map(|(s, m)| json!({
                "skill": s,
                "agent": m.to_string(),
                "progress": r.progress.get(m).copied().unwrap_or(0.0),
            })).collect::<Vec<_>>(),
            "outcome": r.outcome.as_ref().map(wire::outcome),
            "results": r.results.iter().map(wire::part_result).collect::<Vec<_>>(),
            "announced_at_ms": r.announced_at_ms,
            "formed_at_ms": r.formed_at_ms,
            "finished_at_ms": r.finished_at_ms,
        }))
    }
}
