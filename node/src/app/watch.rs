//! `starling watch`: the agent's event stream, one line per event, readable by a
//! person (or one JSON object per line).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::{
    NodeError, Result,
    app::{
        Out,
        cli::ApiArgs,
        commands::{client, percent, short, text},
    },
};

/// `HH:MM:SS` (UTC) now.
fn clock() -> String {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// One event as a person reads it.
pub fn describe(kind: &str, v: &Value) -> String {
    let task = text(v, "task_id");
    match kind {
        "ready" => format!("watching agent {}", text(v, "peer_id")),
        "peer_connected" => format!("peer connected     {}", text(v, "peer")),
        "peer_disconnected" => format!("peer disconnected  {}", text(v, "peer")),
        "task_announced" => format!(
            "task announced     {task} round {} skills {}",
            text(v, "round"),
            v["skills"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        ),
        "task_waiting" => format!("task waiting       {task} for {}", v["waiting_for"]),
        "group_formed" => format!(
            "group formed       {task} {}",
            v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| format!("{}={}", text(m, "skill"), short(&text(m, "agent"))))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "task_assigned" => format!(
            "part assigned here {task} skill {} ({} executor)",
            text(v, "skill"),
            text(v, "executor")
        ),
        "task_progress" => format!(
            "progress           {task} {} by {} (task {})",
            percent(&v["progress"]),
            short(&text(v, "member")),
            percent(&v["task_progress"])
        ),
        "member_failed" => format!(
            "member failed      {task} {} ({}): {}",
            short(&text(v, "member")),
            text(v, "skill"),
            text(v, "reason")
        ),
        "replacement_started" => format!(
            "replacement        {task} {} takes {}",
            short(&text(v, "member")),
            text(v, "skill")
        ),
        "task_finished" => {
            let outcome = match v.pointer("/outcome/status").and_then(Value::as_str) {
                Some("failed") => format!("failed: {}", text(&v["outcome"], "reason")),
                Some(s) => s.to_string(),
                None => "?".into(),
            };
            let n = v["results"].as_array().map_or(0, Vec::len);
            format!("task finished      {task} {outcome} ({n} results)")
        }
        "assignment_ended" => format!(
            "part ended         {task} {}",
            text(&v["outcome"], "status")
        ),
        "skill_learned" => format!(
            "skill learned      {} level {} success {:.2}{}",
            text(&v["skill"], "name"),
            text(&v["skill"], "level"),
            v["skill"]["success_rate"].as_f64().unwrap_or(0.0),
            if v["promoted"].as_bool() == Some(true) {
                " (promoted)"
            } else {
                ""
            }
        ),
        "refused" => format!(
            "refused message    from {}: {}",
            text(v, "peer"),
            text(v, "reason")
        ),
        "lagged" => format!(
            "(missed {} events: this watcher was too slow)",
            text(v, "missed")
        ),
        other => {
            let mut v = v.clone();
            if let Value::Object(o) = &mut v {
                o.remove("kind");
            }
            format!("{other:<18} {v}")
        }
    }
}

/// `starling watch`.
pub async fn watch(api: &ApiArgs, json: bool, out: &Out) -> Result<()> {
    let api = client(api)?;
    let mut events = api.events().await?;
    while let Some((kind, v)) = events.next().await? {
        if json {
            out.line(&v.to_string());
        } else {
            out.line(&format!("{} {}", clock(), describe(&kind, &v)));
        }
    }
    Err(NodeError::Http {
        url: api.url().to_string(),
        reason: "the agent closed the event stream".into(),
    })
}
