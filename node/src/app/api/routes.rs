//! The control API's handlers.

use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use base64::Engine;
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use starling_protocol::{
    Level, Priority, SkillRequirement, TaskId, TaskSpec,
    message::{MAX_CHECKPOINT, MAX_PAYLOAD, MAX_RESULT},
};
use tokio::sync::broadcast;

use super::{ApiError, ApiState, JsonBody};
use crate::{
    FinishedTask, Handle, PartOutcome, TaskInfo,
    app::{executor::AssignmentError, tracker::now_ms, wire},
};

/// Announce bodies: a 256 KiB payload in base64, and the rest.
const TASK_BODY_LIMIT: usize = 512 * 1024;
/// Progress and completion bodies: a 32 KiB result in base64, and the rest.
const PART_BODY_LIMIT: usize = 64 * 1024;

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

fn parse_id(id: &str) -> ApiResult<TaskId> {
    id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{id:?} is not a task id (expected <initiator peer id>-<number>, as announce returned it)"
        ))
    })
}

fn decode_b64(field: &str, value: &str) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| ApiError::invalid(format!("{field} is not base64: {e}")))
}

/// Text or base64 bytes, never both.
fn bytes_of(
    name: &str,
    text: Option<String>,
    base64: Option<String>,
    max: usize,
) -> ApiResult<Vec<u8>> {
    let bytes = match (text, base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(format!(
                "give {name} or {name}_base64, not both"
            )));
        }
        (Some(t), None) => t.into_bytes(),
        (None, Some(b)) => decode_b64(&format!("{name}_base64"), &b)?,
        (None, None) => Vec::new(),
    };
    if bytes.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{name} is {} bytes; at most {max} are allowed", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// `GET /v1/node`: who this agent is.
pub(super) async fn node(State(s): State<ApiState>) -> Json<Value> {
    Json(json!({
        "peer_id": s.handle.id().to_string(),
        "listen": s.handle.listen_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "executors": s.tracker.executors(),
    }))
}

/// One required skill in an announce body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SkillBody {
    name: String,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    count: Option<u32>,
}

/// `POST /v1/tasks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnnounceBody {
    description: String,
    skills: Vec<SkillBody>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    deadline_secs: Option<u64>,
    #[serde(default)]
    max_group_size: Option<u32>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    consensus: bool,
}

impl AnnounceBody {
    fn into_spec(self) -> ApiResult<TaskSpec> {
        if self.skills.is_empty() {
            return Err(ApiError::invalid("skills: at least one skill is required"));
        }
        let required = self
            .skills
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let min_level = match s.level.as_deref() {
                    Some(l) => l
                        .parse::<Level>()
                        .map_err(|e| ApiError::invalid(format!("skills[{i}].level: {e}")))?,
                    None => Level::Novice,
                };
                let count = s.count.unwrap_or(1);
                if count == 0 {
                    return Err(ApiError::invalid(format!(
                        "skills[{i}].count must be at least 1"
                    )));
                }
                Ok(SkillRequirement {
                    name: s.name,
                    min_level,
                    count,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let priority = match self.priority.as_deref() {
            Some(p) => p
                .parse::<Priority>()
                .map_err(|e| ApiError::invalid(format!("priority: {e}")))?,
            None => Priority::Normal,
        };
        let depends_on = self
            .depends_on
            .iter()
            .map(|d| {
                parse_id(d)
                    .map_err(|_| ApiError::invalid(format!("depends_on: {d:?} is not a task id")))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        if self.deadline_secs == Some(0) {
            return Err(ApiError::invalid("deadline_secs must be positive"));
        }
        Ok(TaskSpec {
            description: self.description,
            required,
            priority,
            deadline_ms: self.deadline_secs.map(|s| s.saturating_mul(1000)),
            max_group_size: self.max_group_size,
            depends_on,
            payload: bytes_of("payload", self.payload, self.payload_base64, MAX_PAYLOAD)?,
            consensus: self.consensus,
        })
    }
}

/// `POST /v1/tasks`: announce a task; this agent coordinates it.
pub(super) async fn announce(
    State(s): State<ApiState>,
    JsonBody(body): JsonBody<AnnounceBody, TASK_BODY_LIMIT>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let description = body.description.clone();
    let spec = body.into_spec()?;
    let (task_id, _finished) = s.handle.announce(spec).await?;
    s.tracker.note_announced(task_id, &description);
    let task = s.tracker.task(task_id).unwrap_or(Value::Null);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": task_id.to_string(), "task": task })),
    ))
}

fn finished_json(done: &FinishedTask) -> Value {
    let state = match done.outcome {
        starling_protocol::Outcome::Completed => "completed",
        starling_protocol::Outcome::Failed(_) => "failed",
    };
    json!({
        "id": done.task_id.to_string(),
        "state": state,
        "outcome": wire::outcome(&done.outcome),
        "results": done.results.iter().map(wire::part_result).collect::<Vec<_>>(),
        "members": [],
        "progress": if state == "completed" { 1.0 } else { 0.0 },
    })
}

fn info_json(info: &TaskInfo) -> Value {
    let state = match &info.outcome {
        Some(starling_protocol::Outcome::Completed) => "completed",
        Some(starling_protocol::Outcome::Failed(_)) => "failed",
        None if info.coordinating => "announced",
        None => "working",
    };
    json!({
        "id": info.task_id.to_string(),
        "state": state,
        "outcome": info.outcome.as_ref().map(wire::outcome),
        "members": [],
        "results": [],
        "progress": 0.0,
    })
}

fn with_roles(mut v: Value, info: Option<&TaskInfo>) -> Value {
    if let Value::Object(obj) = &mut v {
        obj.insert(
            "coordinating".into(),
            json!(info.is_some_and(|i| i.coordinating)),
        );
        obj.insert("member".into(), json!(info.is_some_and(|i| i.member)));
    }
    v
}

/// `GET /v1/tasks/{id}`.
pub(super) async fn task(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let task_id = parse_id(&id)?;
    let tasks = s.handle.tasks().await?;
    let info = tasks.iter().find(|t| t.task_id == task_id);
    let v = match s.tracker.task(task_id) {
        Some(v) => v,
        None => match (s.handle.task(task_id).await?, info) {
            (Some(done), _) => finished_json(&done),
            (None, Some(info)) => info_json(info),
            (None, None) => {
                return Err(ApiError::not_found(format!(
                    "no task {task_id} on this agent"
                )));
            }
        },
    };
    Ok(Json(with_roles(v, info)))
}

/// `GET /v1/tasks`: tasks this agent knows of, oldest first.
pub(super) async fn list_tasks(State(s): State<ApiState>) -> ApiResult {
    let tasks = s.handle.tasks().await?;
    let mut ids = s.tracker.task_ids();
    for t in &tasks {
        if !ids.contains(&t.task_id) {
            ids.push(t.task_id);
        }
    }
    let list: Vec<Value> = ids
        .into_iter()
        .filter_map(|id| {
            let info = tasks.iter().find(|t| t.task_id == id);
            let v = s.tracker.task(id).or_else(|| info.map(info_json))?;
            Some(with_roles(v, info))
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

fn assignment_error(task_id: TaskId, e: AssignmentError) -> ApiError {
    match e {
        AssignmentError::NotFound => ApiError::not_found(format!(
            "no api-mode part of task {task_id} is waiting on this agent"
        )),
        AssignmentError::AlreadyClaimed => ApiError::new(
            StatusCode::CONFLICT,
            "already_claimed",
            format!("the part of task {task_id} is claimed by another program"),
        ),
    }
}

/// `POST /v1/tasks/{id}/claim`: take a waiting api-mode part (once).
pub(super) async fn claim(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let task_id = parse_id(&id)?;
    let a = s
        .executor
        .claim(task_id)
        .map_err(|e| assignment_error(task_id, e))?;
    Ok(Json(wire::assignment(&a, "api")))
}

/// `POST /v1/tasks/{id}/progress` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProgressBody {
    progress: f64,
    #[serde(default)]
    checkpoint_base64: Option<String>,
}

/// `POST /v1/tasks/{id}/progress`: progress (and a checkpoint) on an api-mode part.
pub(super) async fn progress(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ProgressBody, PART_BODY_LIMIT>,
) -> ApiResult {
    let task_id = parse_id(&id)?;
    if !(0.0..=1.0).contains(&body.progress) {
        return Err(ApiError::invalid("progress must be within 0..=1"));
    }
    let checkpoint = match body.checkpoint_base64 {
        Some(b) => Some(bytes_of("checkpoint", None, Some(b), MAX_CHECKPOINT)?),
        None => None,
    };
    let sink = s
        .executor
        .progress_sink(task_id)
        .map_err(|e| assignment_error(task_id, e))?;
    if !sink.report(body.progress, checkpoint).await {
        return Err(crate::NodeError::Stopped.into());
    }
    Ok(Json(json!({ "ok": true })))
}

/// `POST /v1/tasks/{id}/complete` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteBody {
    #[serde(default = "yes")]
    success: bool,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    result_base64: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/tasks/{id}/complete`: finish an api-mode part.
pub(super) async fn complete(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CompleteBody, PART_BODY_LIMIT>,
) -> ApiResult {
    let task_id = parse_id(&id)?;
    let output = bytes_of("result", body.result, body.result_base64, MAX_RESULT)?;
    s.executor
        .complete(
            task_id,
            PartOutcome {
                success: body.success,
                output,
            },
        )
        .map_err(|e| assignment_error(task_id, e))?;
    Ok(Json(json!({ "ok": true })))
}

/// `GET /v1/assignments` query.
#[derive(Debug, Deserialize)]
pub(super) struct AssignmentQuery {
    skill: Option<String>,
}

/// `GET /v1/assignments[?skill=NAME]`: api-mode parts waiting on this agent.
pub(super) async fn assignments(
    State(s): State<ApiState>,
    query: Result<Query<AssignmentQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let list: Vec<Value> = s
        .executor
        .pending()
        .into_iter()
        .filter(|p| q.skill.as_ref().is_none_or(|k| *k == p.assignment.skill))
        .map(|p| {
            let mut v = wire::assignment(&p.assignment, "api");
            if let Value::Object(obj) = &mut v {
                obj.insert("claimed".into(), json!(p.claimed));
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `GET /v1/peers`.
pub(super) async fn peers(State(s): State<ApiState>) -> ApiResult {
    let peers = s.handle.peers().await?;
    Ok(Json(Value::Array(
        peers
            .iter()
            .map(|p| {
                json!({
                    "id": p.id.to_string(),
                    "addrs": p.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "topics": p.topics,
                })
            })
            .collect(),
    )))
}

fn lower_debug(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_ascii_lowercase()
}

/// `GET /v1/groups`.
pub(super) async fn groups(State(s): State<ApiState>) -> ApiResult {
    let groups = s.handle.groups().await?;
    Ok(Json(Value::Array(
        groups
            .iter()
            .map(|g| {
                json!({
                    "task_id": g.task_id.to_string(),
                    "coordinator": g.coordinator.to_string(),
                    "status": lower_debug(g.status),
                    "complete": g.complete,
                    "members": g.members.iter().map(|(skill, agent, status)| json!({
                        "skill": skill,
                        "agent": agent.to_string(),
                        "status": lower_debug(status),
                    })).collect::<Vec<_>>(),
                    "heads": g.heads.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )))
}

fn sse(kind: &str, data: &Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event(kind).data(data.to_string()))
}

/// `GET /v1/events`: every event as Server-Sent Events (`event: <kind>`, `data:
/// <json>`), starting with `ready` once the subscription is live.
pub(super) async fn events(
    State(s): State<ApiState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.tracker.subscribe();
    let ready = json!({
        "kind": "ready",
        "peer_id": s.handle.id().to_string(),
        "at_ms": now_ms(),
    });
    let first = stream::once(async move { sse("ready", &ready) });
    let rest = stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(e) => sse(e.kind, &e.data),
            Err(broadcast::error::RecvError::Lagged(n)) => sse(
                "lagged",
                &json!({ "kind": "lagged", "missed": n, "at_ms": now_ms() }),
            ),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((event, rx))
    });
    Sse::new(first.chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The node's metrics as a response.
pub(super) fn metrics_text(handle: &Handle) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        handle.metrics_text(),
    )
        .into_response()
}

/// `GET /metrics`.
pub(super) async fn metrics(State(s): State<ApiState>) -> Response {
    metrics_text(&s.handle)
}

/// Any other path.
pub(super) async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint (see the README's control API section)")
}

/// A known path with the wrong method.
pub(super) async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
