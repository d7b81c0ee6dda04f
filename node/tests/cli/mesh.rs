//! Three agents on loopback: tasks announced with the CLI complete through a
//! command handler, through the control API by hand, and through the Python
//! executor; a failing handler fails the task; SIGTERM stops an agent cleanly.

use std::process::Command;

use crate::support::*;

const UPPER: &str = r#"#!/bin/sh
# Reports progress and a checkpoint, then shouts its input.
echo "progress 0.5" >&2
echo "checkpoint aGFsZndheQ==" >&2
tr a-z A-Z
"#;

fn python3() -> String {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python3 is needed to run the Python executor example (.ci/run installs it)"
    );
    "python3".into()
}

#[test]
fn three_agents_complete_tasks_with_a_command_handler_and_the_python_executor() {
    let dir = Scratch::new("mesh");
    let upper = dir.write("upper.sh", UPPER);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let a = Agent::local(&dir, "a", &[]);
    // B works through programs, from a config file.
    let (b_key, _) = dir.key("b.key");
    let b_config = dir.write(
        "b.toml",
        &format!(
            r#"
key = "b.key"
listen = ["/ip4/127.0.0.1/tcp/0"]
bootstrap = ["{}"]
control_api = "127.0.0.1:0"
data_dir = "b-data"
max_concurrent_tasks = 2

[[skills]]
name = "upper"
level = "expert"

[[skills]]
name = "broken"
level = "novice"

[handlers.upper]
command = ["./upper.sh"]
timeout_secs = 30

[handlers.broken]
command = ["sh", "-c", "echo cannot do this >&2; exit 3"]
"#,
            a.listen[0]
        ),
    );
    assert!(b_key.exists());
    let mut b = Agent::start("b", &["--config", b_config.to_str().unwrap()]);
    // C's skill is done by programs talking to its control API.
    let c = Agent::local(
        &dir,
        "c",
        &[
            "--bootstrap",
            &a.listen[0],
            "--skill",
            "words:advanced",
            "--handler",
            "words=api",
        ],
    );
    assert!(
        a.listen[0].ends_with(&format!("/p2p/{}", a.peer_id)),
        "{:?}",
        a.listen
    );

    eventually("A is connected to B and C", || {
        let out = text(&a.cli(&["peers"]).stdout);
        out.contains(&b.peer_id) && out.contains(&c.peer_id)
    });
    let mut watch = Proc::spawn("watch", {
        let mut cmd = starling();
        cmd.args(["watch", "--api", &a.api]);
        cmd
    });
    watch.wait_line("watching", |l| l.contains("watching agent"));

    // 1. A command handler.
    let payload = dir.write("payload.txt", "hello mesh");
    let out = a.cli(&[
        "task",
        "announce",
        "--skill",
        "upper:advanced",
        "--desc",
        "shout it",
        "--payload-file",
        payload.to_str().unwrap(),
        "--wait",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "announce failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    let mut lines = stdout.lines();
    let id = lines.next().unwrap().to_string();
    assert!(id.starts_with(&a.peer_id), "{id}");
    assert_eq!(lines.next(), Some("completed"), "{stdout}");
    assert_eq!(
        lines.next(),
        Some(format!("result upper {} ok", b.peer_id).as_str())
    );
    assert_eq!(lines.next(), Some("HELLO MESH"), "{stdout}");
    let progress = text(&out.stderr);
    assert!(progress.contains("progress 50% running"), "{progress}");
    watch.wait_line("task finished", |l| {
        l.contains("task finished") && l.contains(&id) && l.contains("completed")
    });

    let status = text(&a.cli(&["task", "status", &id]).stdout);
    assert!(status.contains("state       completed"), "{status}");
    assert!(status.contains("progress    100%"), "{status}");
    assert!(
        status.contains(&format!("member      upper {}", b.peer_id)),
        "{status}"
    );
    assert!(text(&a.cli(&["task", "list"]).stdout).contains(&id));

    // The record says when the task was announced, formed and finished, in order.
    let task = get(a.api_addr(), &format!("/v1/tasks/{id}")).json();
    let at = |k: &str| {
        task[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {task}"))
    };
    assert!(
        at("announced_at_ms") <= at("formed_at_ms") && at("formed_at_ms") <= at("finished_at_ms"),
        "{task}"
    );
    // The coordinator keeps the dissolved group's document and shows its heads.
    let groups = get(a.api_addr(), "/v1/groups").json();
    let group = groups
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["task_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("no group for {id}: {groups}"));
    assert_eq!(group["status"], "dissolved", "{group}");
    let heads = group["heads"].as_array().expect("heads");
    assert!(
        !heads.is_empty()
            && heads
                .iter()
                .all(|h| h.as_str().is_some_and(|h| h.len() == 64)),
        "{group}"
    );

    // 2. An api-mode part completed by hand through C's API: it waits, can be
    // claimed once, takes progress, and completes.
    let out = a.cli(&[
        "task",
        "announce",
        "--skill",
        "words:novice",
        "--desc",
        "by hand",
        "--payload",
        "one two",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let by_hand = text(&out.stdout).trim().to_string();
    let c_api = c.api_addr().to_string();
    eventually("the part waits on C", || {
        get(&c_api, "/v1/assignments?skill=words")
            .body
            .contains(&by_hand)
    });
    let path = format!("/v1/tasks/{by_hand}");
    let claim = json_post(&c_api, &format!("{path}/claim"), "");
    assert_eq!(claim.status, 200, "{claim:?}");
    assert_eq!(claim.json()["payload"], "one two");
    let again = json_post(&c_api, &format!("{path}/claim"), "");
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "already_claimed")
    );
    let p = json_post(
        &c_api,
        &format!("{path}/progress"),
        r#"{"progress":0.25,"checkpoint_base64":"AAE="}"#,
    );
    assert_eq!(p.status, 200, "{p:?}");
    let done = json_post(
        &c_api,
        &format!("{path}/complete"),
        r#"{"success":true,"result":"2 words"}"#,
    );
    assert_eq!(done.status, 200, "{done:?}");
    let twice = json_post(
        &c_api,
        &format!("{path}/complete"),
        r#"{"success":true,"result":"again"}"#,
    );
    assert_eq!(twice.status, 404, "{twice:?}");
    eventually("A records the hand-made result", || {
        let t = get(a.api_addr(), &path).json();
        t["state"] == "completed" && t["results"][0]["output"] == "2 words"
    });

    // 3. The Python executor serves C's api-mode skill.
    let mut py = Proc::spawn("python executor", {
        let mut cmd = Command::new(python3());
        cmd.arg(repo_file("examples/python_executor.py")).args([
            "--api",
            &c.api,
            "--skill",
            "words",
            "--max-tasks",
            "1",
        ]);
        cmd
    });
    py.wait_line("ready", |l| l.starts_with("ready words"));
    let out = a.cli(&[
        "task",
        "announce",
        "--skill",
        "words:intermediate",
        "--desc",
        "count them",
        "--payload",
        "the cat and the hat",
        "--priority",
        "high",
        "--wait",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "announce failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("result words {} ok", c.peer_id)),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""words": 5"#) && stdout.contains(r#""most_common": ["the""#),
        "{stdout}"
    );
    let py_id = stdout.lines().next().unwrap().to_string();
    py.wait_line("completed", |l| {
        l.starts_with("completed") && l.contains(&py_id)
    });

    // 4. A handler that exits non-zero fails the task, and --wait says so.
    let out = a.cli(&[
        "task",
        "announce",
        "--skill",
        "broken:novice",
        "--desc",
        "doomed",
        "--deadline",
        "15",
        "--wait",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("failed"), "{stdout}");
    assert!(
        text(&out.stderr).contains("failed"),
        "{}",
        text(&out.stderr)
    );

    b.proc.wait_stderr("cannot do this");

    // 5. SIGTERM: B leaves gracefully and says so.
    let status = b.proc.terminate();
    assert!(status.success(), "{status}: {}", b.proc.stderr());
    b.proc.wait_line("stopped", |l| l == "stopped");
    assert!(dir.path("b-data").join("starling.redb").exists());
}
