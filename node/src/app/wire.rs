//! The JSON shapes of the control API and its event stream. Bytes travel twice: as
//! `<name>` (the text, when it is UTF-8; else null) and as `<name>_base64`.

use base64::Engine;
use serde_json::{Map, Value, json};
use starling_protocol::{Assignment, Event, Outcome, PartResult, Skill};

use crate::NodeEvent;

/// Standard base64 of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Inserts `name` (text or null) and `name_base64` into `obj`.
pub fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).map_or(Value::Null, |s| Value::String(s.into()));
    obj.insert(name.to_string(), text);
    obj.insert(format!("{name}_base64"), Value::String(b64(bytes)));
}

/// `{"status":"completed"}` or `{"status":"failed","reason":…}`.
pub fn outcome(o: &Outcome) -> Value {
    match o {
        Outcome::Completed => json!({ "status": "completed" }),
        Outcome::Failed(reason) => json!({ "status": "failed", "reason": reason }),
    }
}

/// One member's result.
pub fn part_result(r: &PartResult) -> Value {
    let mut obj = Map::new();
    obj.insert("skill".into(), json!(r.skill));
    obj.insert("member".into(), json!(r.member.to_string()));
    obj.insert("success".into(), json!(r.success));
    put_bytes(&mut obj, "output", &r.output);
    Value::Object(obj)
}

/// A part handed to this agent; `executor` is `api` or `command`.
pub fn assignment(a: &Assignment, executor: &str) -> Value {
    let mut obj = Map::new();
    obj.insert("task_id".into(), json!(a.task_id.to_string()));
    obj.insert("skill".into(), json!(a.skill));
    obj.insert("executor".into(), json!(executor));
    obj.insert("description".into(), json!(a.description));
    put_bytes(&mut obj, "payload", &a.payload);
    obj.insert(
        "resume_from_base64".into(),
        a.resume_from
            .as_deref()
            .map_or(Value::Null, |c| json!(b64(c))),
    );
    obj.insert("deadline_ms".into(), json!(a.deadline_ms));
    Value::Object(obj)
}

/// A skill with its metrics.
pub fn skill(s: &Skill) -> Value {
    json!({
        "name": s.name,
        "level": format!("{:?}", s.level).to_ascii_lowercase(),
        "success_rate": s.success_rate,
        "avg_completion_ms": s.avg_completion_ms,
        "completed": s.completed,
    })
}

/// The stream name and JSON body of a node event. `executor_of` names the executor
/// mode of a skill (for `task_assigned`).
pub fn event(e: &NodeEvent, executor_of: impl Fn(&str) -> &'static str) -> (&'static str, Value) {
    match e {
        NodeEvent::PeerConnected(p) => ("peer_connected", json!({ "peer": p.to_string() })),
        NodeEvent::PeerDisconnected(p) => ("peer_disconnected", json!({ "peer": p.to_string() })),
        NodeEvent::Refused { peer, reason } => (
            "refused",
            json!({ "peer": peer.map(|p| p.to_string()), "reason": reason }),
        ),
        NodeEvent::AnnouncementReceived { task_id, from } => (
            "announcement_received",
            json!({ "task_id": task_id.to_string(), "from": from.to_string() }),
        ),
        NodeEvent::Agent(e) => agent_event(e, executor_of),
    }
}

fn agent_event(e: &Event, executor_of: impl Fn(&str) -> &'static str) -> (&'static str, Value) {
    match e {
        Event::TaskAnnounced {
            task_id,
            round,
            skills,
        } => (
            "task_announced",
            json!({ "task_id": task_id.to_string(), "round": round, "skills": skills }),
        ),
        Event::TaskWaiting {
            task_id,
            waiting_for,
        } => (
            "task_waiting",
            json!({
                "task_id": task_id.to_string(),
                "waiting_for": waiting_for.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
        Event::GroupFormed { task_id, members } => (
            "group_formed",
            json!({
                "task_id": task_id.to_string(),
                "members": members
                    .iter()
                    .map(|(s, m)| json!({ "skill": s, "agent": m.to_string() }))
                    .collect::<Vec<_>>(),
            }),
        ),
        Event::TaskAssigned(a) => ("task_assigned", assignment(a, executor_of(&a.skill))),
        Event::TaskProgress {
            task_id,
            member,
            progress,
            checkpointed,
        } => (
            "task_progress",
            json!({
                "task_id": task_id.to_string(),
                "member": member.to_string(),
                "progress": progress,
                "checkpointed": checkpointed,
            }),
        ),
        Event::MemberFailed {
            task_id,
            member,
            skill,
            reason,
        } => (
            "member_failed",
            json!({
                "task_id": task_id.to_string(), "member": member.to_string(),
                "skill": skill, "reason": reason,
            }),
        ),
        Event::ReplacementStarted {
            task_id,
            member,
            skill,
            resumed,
        } => (
            "replacement_started",
            json!({
                "task_id": task_id.to_string(), "member": member.to_string(),
                "skill": skill, "resumed": resumed,
            }),
        ),
        Event::CoordinatorChanged {
            task_id,
            coordinator,
        } => (
            "coordinator_changed",
            json!({ "task_id": task_id.to_string(), "coordinator": coordinator.to_string() }),
        ),
        Event::TaskFinished {
            task_id,
            outcome: o,
            results,
            certificate,
        } => (
            "task_finished",
            json!({
                "task_id": task_id.to_string(),
                "outcome": outcome(o),
                "results": results.iter().map(part_result).collect::<Vec<_>>(),
                "certified": certificate.is_some(),
            }),
        ),
        Event::AssignmentEnded {
            task_id,
            outcome: o,
        } => (
            "assignment_ended",
            json!({ "task_id": task_id.to_string(), "outcome": outcome(o) }),
        ),
        Event::SkillLearned { skill: s, promoted } => (
            "skill_learned",
            json!({ "skill": skill(s), "promoted": promoted }),
        ),
        Event::GroupClosed { task_id, snapshot } => (
            "group_closed",
            json!({ "task_id": task_id.to_string(), "snapshot_bytes": snapshot.len() }),
        ),
        Event::DataReceived {
            task_id,
            from,
            name,
            data,
        } => {
            let mut obj = Map::new();
            obj.insert("task_id".into(), json!(task_id.to_string()));
            obj.insert("from".into(), json!(from.to_string()));
            obj.insert("name".into(), json!(name));
            put_bytes(&mut obj, "data", data);
            ("data_received", Value::Object(obj))
        }
        Event::AlertReceived {
            from,
            task_id,
            text,
        } => (
            "alert",
            json!({
                "from": from.to_string(),
                "task_id": task_id.map(|t| t.to_string()),
                "text": text,
            }),
        ),
        Event::Misbehaviour { peer, reason } => (
            "misbehaviour",
            json!({ "peer": peer.to_string(), "reason": reason }),
        ),
        Event::CommandFailed { reason } => ("command_failed", json!({ "reason": reason })),
    }
}
