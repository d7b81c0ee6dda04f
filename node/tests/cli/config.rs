//! Errors a person can act on: bad settings exit 2 naming the field; ports in use
//! are named; an unreachable bootstrap peer is a warning; keys are handled safely.

use crate::support::*;

/// Runs `starling agent` with a config file and flags; returns (exit code, stderr).
fn agent_fails(dir: &Scratch, toml: &str, flags: &[&str]) -> (Option<i32>, String) {
    let config = dir.write("agent.toml", toml);
    let mut args = vec!["agent", "--config", config.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = run(&args);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn bad_settings_exit_2_and_name_the_field() {
    let dir = Scratch::new("config");
    dir.key("agent.key");
    let base =
        "key = \"agent.key\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\ncontrol_api = \"127.0.0.1:0\"\n";
    let skill = "[[skills]]\nname = \"upper\"\nlevel = \"expert\"\n[handlers.upper]\ncommand = [\"tr\", \"a-z\", \"A-Z\"]\n";
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            format!("{base}max_concurrent_tasks = 0\n{skill}"),
            vec![],
            "max_concurrent_tasks",
        ),
        (
            format!("{base}{skill}"),
            vec!["--max-concurrent-tasks", "0"],
            "max_concurrent_tasks",
        ),
        (
            format!("{base}[[skills]]\nname = \"upper\"\nlevel = \"guru\"\n"),
            vec![],
            "skills[0].level",
        ),
        (format!("{base}colour = \"blue\"\n"), vec![], "colour"),
        (
            format!("{base}max_concurrent_tasks = \"two\"\n"),
            vec![],
            "max_concurrent_tasks",
        ),
        (
            base.to_string(),
            vec!["--listen", "not-a-multiaddr"],
            "listen[0]",
        ),
        (
            base.to_string(),
            vec!["--control-api", "0.0.0.0:0"],
            "control_api",
        ),
        (
            base.to_string(),
            vec!["--key", "/nonexistent/agent.key"],
            "key",
        ),
        (
            format!("{base}{skill}"),
            vec!["--handler", "upper=[\"/no/such/program\"]"],
            "handlers.upper.command",
        ),
        (
            format!("{base}[[skills]]\nname = \"words\"\nlevel = \"novice\"\n"),
            vec![],
            "skills[0]",
        ),
        (base.to_string(), vec!["--log-level", "shouty"], "log_level"),
    ];
    for (toml, flags, field) in cases {
        let (code, stderr) = agent_fails(&dir, &toml, &flags);
        assert_eq!(code, Some(2), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field} not named: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    // A config file that does not exist.
    let out = run(&[
        "agent",
        "--config",
        dir.path("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        text(&out.stderr)
    );
    // Bad client invocations are usage errors too.
    let out = run(&[
        "task",
        "announce",
        "--skill",
        "x",
        "--desc",
        "d",
        "--api",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("skill[0]"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ports_in_use_and_unreachable_bootstrap_peers_are_explained() {
    let dir = Scratch::new("ports");
    let a = Agent::local(&dir, "a", &[]);
    let (key, _) = dir.key("b.key");
    let key = key.to_str().unwrap();

    // The control API's port is taken.
    let out = run(&[
        "agent",
        "--key",
        key,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--control-api",
        a.api_addr(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(a.api_addr()) && stderr.contains("control_api"),
        "{stderr}"
    );

    // The peer-to-peer port is taken.
    let taken = a.listen[0].split("/p2p/").next().unwrap();
    let out = run(&[
        "agent",
        "--key",
        key,
        "--listen",
        taken,
        "--control-api",
        "127.0.0.1:0",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(taken) && stderr.contains("in use"),
        "{stderr}"
    );

    // A bootstrap peer nobody answers at: a warning, and the agent keeps running.
    let (_, ghost) = dir.key("ghost.key");
    let nowhere = format!("/ip4/127.0.0.1/tcp/1/p2p/{ghost}");
    let mut c = Agent::local(&dir, "c", &["--bootstrap", &nowhere]);
    c.proc.wait_stderr("bootstrap peer unreachable");
    assert!(c.proc.stderr().contains(&nowhere), "{}", c.proc.stderr());
    assert!(
        c.proc.child.try_wait().unwrap().is_none(),
        "the agent stopped"
    );
    assert!(c.cli(&["peers"]).status.success());
}

#[test]
fn keys_are_private_never_overwritten_and_name_the_agent() {
    let dir = Scratch::new("keys");
    let (key, id) = dir.key("agent.key");
    assert!(id.starts_with("12D3KooW"), "{id}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let before = std::fs::read(&key).unwrap();
    let again = run(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("refusing to overwrite"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let shown = run(&["id", "--key", key.to_str().unwrap()]);
    assert_eq!(text(&shown.stdout).trim(), id);
    let agent = Agent::start(
        "agent",
        &[
            "--key",
            key.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--control-api",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(agent.peer_id, id);
}
