//! The commands that ask a running agent: `task announce|status|list`, `peers` and
//! `groups`, printing for people (or JSON with `--json`).

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use serde_json::{Value, json};
use starling_protocol::message::MAX_PAYLOAD;

use crate::{
    NodeError, Result,
    app::{
        Out,
        cli::{AnnounceArgs, ApiArgs},
        client::ApiClient,
    },
};

pub(crate) fn client(api: &ApiArgs) -> Result<ApiClient> {
    ApiClient::new(&api.api, api.token.clone())
}

fn usage(field: &str, reason: impl Into<String>) -> NodeError {
    NodeError::Setting {
        field: field.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The last characters of a PeerId, as logs abbreviate it.
pub(crate) fn short(id: &str) -> String {
    let n = id.len().saturating_sub(6);
    format!("…{}", &id[n..])
}

pub(crate) fn percent(v: &Value) -> String {
    format!("{:.0}%", v.as_f64().unwrap_or(0.0) * 100.0)
}

/// The announce body for `args`.
fn announce_body(args: &AnnounceArgs) -> Result<Value> {
    let mut skills = Vec::new();
    for (i, s) in args.skills.iter().enumerate() {
        let field = format!("skill[{i}]");
        let parts: Vec<&str> = s.split(':').collect();
        let (name, level, count) = match parts[..] {
            [name, level] => (name, level, 1),
            [name, level, count] => {
                let count = count
                    .parse::<u32>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| {
                        usage(&field, format!("{s:?}: COUNT must be a positive number"))
                    })?;
                (name, level, count)
            }
            _ => {
                return Err(usage(
                    &field,
                    format!(
                        "{s:?}: expected NAME:LEVEL or NAME:LEVEL:COUNT, e.g. summarise:expert"
                    ),
                ));
            }
        };
        skills.push(json!({ "name": name, "level": level, "count": count }));
    }
    let mut body = json!({
        "description": args.desc,
        "skills": skills,
        "priority": args.priority,
        "consensus": args.consensus,
        "depends_on": args.depends_on,
    });
    let payload = match (&args.payload_file, &args.payload) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).map_err(|e| NodeError::Io {
                what: format!("cannot read the payload file {}", path.display()),
                reason: e.to_string(),
            })?;
            if bytes.len() > MAX_PAYLOAD {
                return Err(usage(
                    "payload-file",
                    format!("{} bytes; a payload may be at most 256 KiB", bytes.len()),
                ));
            }
            Some(bytes)
        }
        (None, Some(t)) => Some(t.clone().into_bytes()),
        (None, None) => None,
    };
    if let Some(p) = payload {
        body["payload_base64"] = json!(crate::app::wire::b64(&p));
    }
    if let Some(d) = args.deadline {
        body["deadline_secs"] = json!(d);
    }
    if let Some(m) = args.max_group_size {
        body["max_group_size"] = json!(m);
    }
    Ok(body)
}

/// How often `--wait` asks for the task's state besides following events.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// A progress bar on stderr: redrawn in place on a terminal, a line per change
/// otherwise.
struct Bar {
    tty: bool,
    shown: Option<(u32, String)>,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal(),
            shown: None,
        }
    }

    fn show(&mut self, fraction: f64, stage: &str) {
        let pct = (fraction.clamp(0.0, 1.0) * 100.0).round() as u32;
        if self
            .shown
            .as_ref()
            .is_some_and(|(p, s)| *p == pct && s == stage)
        {
            return;
        }
        self.shown = Some((pct, stage.to_string()));
        let mut err = std::io::stderr().lock();
        if self.tty {
            let filled = (pct / 5) as usize;
            let _ = write!(
                err,
                "\r[{}{}] {pct:>3}% {stage:<24}",
                "#".repeat(filled),
                "·".repeat(20 - filled)
            );
        } else {
            let _ = writeln!(err, "progress {pct}% {stage}");
        }
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.tty && self.shown.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// `starling task announce`.
pub async fn announce(args: &AnnounceArgs, out: &Out) -> Result<()> {
    let body = announce_body(args)?;
    let api = client(&args.api)?;
    // Subscribe before announcing, so no event of the task is missed.
    let mut events = if args.wait {
        let mut stream = api.events().await?;
        stream.next().await?;
        Some(stream)
    } else {
        None
    };
    let answer = api.post("/v1/tasks", &body).await?;
    let id = text(&answer, "id");
    out.line(&id);
    let Some(events) = events.as_mut() else {
        return Ok(());
    };
    let mut bar = Bar::new();
    bar.show(0.0, "announced");
    let path = format!("/v1/tasks/{id}");
    let mut stream_open = true;
    loop {
        if !stream_open {
            // The stream ended (the agent is restarting?): ask now and then.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let task = api.get(&path).await?;
            if matches!(text(&task, "state").as_str(), "completed" | "failed") {
                break;
            }
            continue;
        }
        // Ask now and then too: a task another agent took over finishes there.
        let next = tokio::time::timeout(STATUS_EVERY, events.next()).await;
        let Ok(next) = next else {
            let task = api.get(&path).await?;
            if matches!(text(&task, "state").as_str(), "completed" | "failed") {
                break;
            }
            continue;
        };
        let Some((kind, v)) = next? else {
            stream_open = false;
            continue;
        };
        if kind == "lagged" {
            let task = api.get(&path).await?;
            if matches!(text(&task, "state").as_str(), "completed" | "failed") {
                break;
            }
            continue;
        }
        if text(&v, "task_id") != id {
            continue;
        }
        let progress = bar.shown.as_ref().map_or(0, |(p, _)| *p);
        let fraction = f64::from(progress) / 100.0;
        match kind.as_str() {
            "task_announced" => {
                let round = v.get("round").and_then(Value::as_u64).unwrap_or(0);
                bar.show(fraction, &format!("announced (round {round})"));
            }
            "task_waiting" => bar.show(fraction, "waiting for dependencies"),
            "group_formed" => bar.show(fraction, "group formed"),
            "task_progress" => {
                let p = v
                    .get("task_progress")
                    .and_then(Value::as_f64)
                    .unwrap_or(fraction);
                bar.show(p, "running");
            }
            "member_failed" => bar.show(fraction, "member failed; replacing"),
            "task_finished" => break,
            _ => {}
        }
    }
    let task = api.get(&path).await?;
    let state = text(&task, "state");
    bar.show(if state == "completed" { 1.0 } else { 0.0 }, &state);
    bar.finish();
    if args.json {
        out.line(&serde_json::to_string_pretty(&task).unwrap_or_default());
    } else {
        print_outcome(&task, out);
    }
    if state == "completed" {
        Ok(())
    } else {
        Err(NodeError::TaskFailed {
            task: id,
            reason: task
                .pointer("/outcome/reason")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
        })
    }
}

fn print_outcome(task: &Value, out: &Out) {
    match task.pointer("/outcome/status").and_then(Value::as_str) {
        Some("failed") => out.line(&format!("failed: {}", text(&task["outcome"], "reason"))),
        Some(s) => out.line(s),
        None => out.line(&text(task, "state")),
    }
    for r in task
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ok = if r.get("success").and_then(Value::as_bool) == Some(true) {
            "ok"
        } else {
            "failed"
        };
        out.line(&format!(
            "result {} {} {ok}",
            text(r, "skill"),
            text(r, "member")
        ));
        match r.get("output").and_then(Value::as_str) {
            Some(t) => out.text(t),
            None => out.line(&format!("(binary, base64) {}", text(r, "output_base64"))),
        }
    }
}

/// `starling task status`.
pub async fn status(id: &str, api: &ApiArgs, json: bool, out: &Out) -> Result<()> {
    let task = client(api)?.get(&format!("/v1/tasks/{id}")).await?;
    if json {
        out.line(&serde_json::to_string_pretty(&task).unwrap_or_default());
        return Ok(());
    }
    out.line(&format!("task        {}", text(&task, "id")));
    out.line(&format!("state       {}", text(&task, "state")));
    out.line(&format!("progress    {}", percent(&task["progress"])));
    let role = match (task["coordinating"].as_bool(), task["member"].as_bool()) {
        (Some(true), Some(true)) => "coordinator and member",
        (Some(true), _) => "coordinator",
        (_, Some(true)) => "member",
        _ => "observer",
    };
    out.line(&format!("this agent  {role}"));
    let desc = text(&task, "description");
    if !desc.is_empty() {
        out.line(&format!("description {desc}"));
    }
    for m in task
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.line(&format!(
            "member      {} {} {}",
            text(m, "skill"),
            text(m, "agent"),
            percent(&m["progress"])
        ));
    }
    if task.get("outcome").is_some_and(|o| !o.is_null()) {
        print_outcome(&task, out);
    }
    Ok(())
}

/// `starling task list`.
pub async fn list(api: &ApiArgs, json: bool, out: &Out) -> Result<()> {
    let tasks = client(api)?.get("/v1/tasks").await?;
    if json {
        out.line(&serde_json::to_string_pretty(&tasks).unwrap_or_default());
        return Ok(());
    }
    for t in tasks.as_array().into_iter().flatten() {
        out.line(&format!(
            "{}  {:<10} {:>4}  {}",
            text(t, "id"),
            text(t, "state"),
            percent(&t["progress"]),
            text(t, "description")
        ));
    }
    Ok(())
}

/// `starling peers`.
pub async fn peers(api: &ApiArgs, json: bool, out: &Out) -> Result<()> {
    let peers = client(api)?.get("/v1/peers").await?;
    if json {
        out.line(&serde_json::to_string_pretty(&peers).unwrap_or_default());
        return Ok(());
    }
    for p in peers.as_array().into_iter().flatten() {
        out.line(&text(p, "id"));
    }
    Ok(())
}

/// `starling groups`.
pub async fn groups(api: &ApiArgs, json: bool, out: &Out) -> Result<()> {
    let groups = client(api)?.get("/v1/groups").await?;
    if json {
        out.line(&serde_json::to_string_pretty(&groups).unwrap_or_default());
        return Ok(());
    }
    for g in groups.as_array().into_iter().flatten() {
        let members: Vec<String> = g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{}={}({})",
                    text(m, "skill"),
                    short(&text(m, "agent")),
                    text(m, "status")
                )
            })
            .collect();
        out.line(&format!(
            "{}  {:<10} coordinator {}  {}",
            text(g, "task_id"),
            text(g, "status"),
            short(&text(g, "coordinator")),
            members.join(" ")
        ));
    }
    Ok(())
}
