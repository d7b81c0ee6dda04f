//! Runs a configured program for each part: the payload on stdin, the result from
//! stdout, `progress <0..1>` and `checkpoint <base64>` lines on stderr, the exit code
//! as the outcome, and a timeout that kills it. The program is started from an argv
//! list — nothing from the task is ever interpreted by a shell.
//!
//! The program's environment also carries `STARLING_TASK_ID`, `STARLING_SKILL`,
//! `STARLING_DESCRIPTION`, `STARLING_DEADLINE_MS` and, when it replaces a failed
//! member, `STARLING_RESUME_FROM` (the last checkpoint, base64).

use std::{
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use starling_protocol::{
    Assignment,
    message::{MAX_CHECKPOINT, MAX_RESULT},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    process::Command,
};
use tracing::{debug, info, warn};

use crate::{PartFuture, PartOutcome, ProgressSink, TaskHandler};

/// Longest stderr line read whole (a 16 KiB checkpoint is about 22 KiB of base64).
const MAX_LINE: u64 = 64 * 1024;
/// Stderr lines kept to explain a failure.
const STDERR_TAIL: usize = 5;

/// Runs one program per part.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    argv: Vec<String>,
    timeout: Duration,
}

fn failure(output: impl Into<String>) -> PartOutcome {
    PartOutcome {
        success: false,
        output: output.into().into_bytes(),
    }
}

impl CommandHandler {
    /// A handler running `argv` (program first), killed after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> CommandHandler {
        CommandHandler { argv, timeout }
    }

    /// How long this part may run: the timeout, or less if the deadline is nearer.
    fn allowed(&self, a: &Assignment) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = Duration::from_millis(a.deadline_ms.saturating_sub(now));
        if a.deadline_ms == 0 {
            self.timeout
        } else {
            self.timeout.min(left.max(Duration::from_secs(1)))
        }
    }

    async fn execute(self, a: Assignment, progress: ProgressSink) -> PartOutcome {
        let Some((program, args)) = self.argv.split_first() else {
            return failure("empty command");
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("STARLING_TASK_ID", a.task_id.to_string())
            .env("STARLING_SKILL", &a.skill)
            .env("STARLING_DESCRIPTION", &a.description)
            .env("STARLING_DEADLINE_MS", a.deadline_ms.to_string());
        if let Some(cp) = &a.resume_from {
            cmd.env(
                "STARLING_RESUME_FROM",
                base64::engine::general_purpose::STANDARD.encode(cp),
            );
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return failure(format!("cannot start {program}: {e}")),
        };
        info!(task = %a.task_id, skill = %a.skill, program, "handler started");
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return failure("cannot open the handler's standard streams");
        };
        let payload = a.payload.clone();
        let feed = async move {
            // A program that exits without reading its input is not an error.
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        };
        let read_result = async move {
            let mut out = Vec::new();
            let n = stdout
                .take(MAX_RESULT as u64 + 1)
                .read_to_end(&mut out)
                .await;
            n.map(|_| out)
        };
        let allowed = self.allowed(&a);
        let run = async {
            let ((), result, tail) =
                tokio::join!(feed, read_result, follow_stderr(stderr, &progress));
            (result, tail)
        };
        let (result, tail) = match tokio::time::timeout(allowed, run).await {
            Ok(r) => r,
            Err(_) => {
                let _ = child.kill().await;
                warn!(task = %a.task_id, program, "handler timed out; killed");
                return failure(format!(
                    "{program} did not finish within {} s and was killed",
                    allowed.as_secs()
                ));
            }
        };
        let output = match result {
            Ok(out) if out.len() > MAX_RESULT => {
                let _ = child.kill().await;
                return failure(format!(
                    "{program} wrote more than {} KiB of result",
                    MAX_RESULT / 1024
                ));
            }
            Ok(out) => out,
            Err(e) => return failure(format!("cannot read {program}'s output: {e}")),
        };
        let status = match tokio::time::timeout(allowed, child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return failure(format!("cannot wait for {program}: {e}")),
            Err(_) => {
                let _ = child.kill().await;
                return failure(format!(
                    "{program} closed its output but did not exit; killed"
                ));
            }
        };
        let success = status.success();
        info!(task = %a.task_id, skill = %a.skill, %status, "handler finished");
        if success || !output.is_empty() {
            return PartOutcome { success, output };
        }
        let mut why = format!("{program} exited with {status}");
        if !tail.is_empty() {
            why.push_str(": ");
            why.push_str(&tail.join(" | "));
        }
        failure(why)
    }
}

/// Reads the program's stderr: reports `progress` and `checkpoint` lines, logs the
/// rest, and returns the last few other lines (to explain a failure).
async fn follow_stderr(stderr: impl AsyncRead + Unpin, progress: &ProgressSink) -> Vec<String> {
    let mut reader = BufReader::new(stderr);
    let mut tail: Vec<String> = Vec::new();
    let mut last_progress = 0.0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_LINE {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            let _ = reader.read_until(b'\n', &mut rest).await;
            debug!("handler stderr line over 64 KiB skipped");
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if let Some(v) = text.strip_prefix("progress ") {
            match v.trim().parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => {
                    last_progress = p;
                    progress.report(p, None).await;
                }
                _ => warn!(line = %text, "handler progress must be a number within 0..=1"),
            }
        } else if let Some(v) = text.strip_prefix("checkpoint ") {
            match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                Ok(cp) if cp.len() <= MAX_CHECKPOINT => {
                    progress.report(last_progress, Some(cp)).await;
                }
                Ok(_) => warn!("handler checkpoint over 16 KiB ignored"),
                Err(e) => warn!(error = %e, "handler checkpoint is not base64"),
            }
        } else if !text.is_empty() {
            info!(line = %text, "handler stderr");
            if tail.len() == STDERR_TAIL {
                tail.remove(0);
            }
            tail.push(text.to_string());
        }
    }
    tail
}

impl TaskHandler for CommandHandler {
    fn run(&self, assignment: Assignment, progress: ProgressSink) -> PartFuture {
        Box::pin(self.clone().execute(assignment, progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::ExecutorReport;
    use starling_protocol::{AgentId, TaskId};
    use tokio::sync::mpsc;

    fn assignment(payload: &str) -> Assignment {
        Assignment {
            task_id: TaskId {
                initiator: AgentId([7; 32]),
                seq: 1,
            },
            skill: "s".into(),
            metrics: None,
            description: "d".into(),
            payload: payload.as_bytes().to_vec(),
            resume_from: Some(b"cp".to_vec()),
            deadline_ms: 0,
        }
    }

    fn sh(script: &str, timeout: Duration) -> CommandHandler {
        CommandHandler::new(vec!["sh".into(), "-c".into(), script.into()], timeout)
    }

    async fn run(h: CommandHandler, payload: &str) -> (PartOutcome, Vec<ExecutorReport>) {
        let (tx, mut rx) = mpsc::channel(16);
        let a = assignment(payload);
        let sink = ProgressSink::new(a.task_id, tx);
        let outcome = h.run(a, sink).await;
        let mut reports = Vec::new();
        while let Ok(r) = rx.try_recv() {
            reports.push(r);
        }
        (outcome, reports)
    }

    #[tokio::test]
    async fn stdin_stdout_progress_checkpoints_and_environment() {
        let script = r#"echo "progress 0.25" >&2; echo "checkpoint aGk=" >&2;
            echo "progress 7" >&2; echo "just talk" >&2;
            printf '%s|%s|%s|' "$STARLING_SKILL" "$STARLING_RESUME_FROM" "$STARLING_DESCRIPTION"; cat"#;
        let (outcome, reports) = run(sh(script, Duration::from_secs(20)), "in put").await;
        assert!(outcome.success, "{outcome:?}");
        assert_eq!(
            String::from_utf8(outcome.output).unwrap(),
            "s|Y3A=|d|in put"
        );
        let task_id = assignment("").task_id;
        assert_eq!(
            reports,
            vec![
                ExecutorReport::Progress {
                    task_id,
                    progress: 0.25,
                    checkpoint: None
                },
                ExecutorReport::Progress {
                    task_id,
                    progress: 0.25,
                    checkpoint: Some(b"hi".to_vec())
                },
            ]
        );
    }

    #[tokio::test]
    async fn exit_codes_timeouts_and_missing_programs_fail_the_part() {
        let (outcome, _) = run(sh("echo oops >&2; exit 3", Duration::from_secs(20)), "").await;
        assert!(!outcome.success);
        let why = String::from_utf8(outcome.output).unwrap();
        assert!(
            why.contains("exit status: 3") && why.contains("oops"),
            "{why}"
        );

        let started = std::time::Instant::now();
        let (outcome, _) = run(sh("sleep 30", Duration::from_millis(300)), "").await;
        assert!(!outcome.success);
        let why = String::from_utf8(outcome.output).unwrap();
        assert!(why.contains("killed"), "{why}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the timeout did not stop it"
        );

        let missing = CommandHandler::new(vec!["/no/such/program".into()], Duration::from_secs(5));
        let (outcome, _) = run(missing, "").await;
        assert!(!outcome.success);
        assert!(
            String::from_utf8(outcome.output)
                .unwrap()
                .contains("cannot start")
        );

        let big = format!("head -c {} /dev/zero", MAX_RESULT + 10);
        let (outcome, _) = run(sh(&big, Duration::from_secs(20)), "").await;
        assert!(!outcome.success);
        assert!(
            String::from_utf8(outcome.output)
                .unwrap()
                .contains("more than 32 KiB")
        );
    }
}
