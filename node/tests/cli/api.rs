//! The control API refuses bad input with 4xx and a JSON error, bounds bodies,
//! streams events, serves metrics, and with a token refuses anyone without it.

use crate::support::*;

#[test]
fn bad_requests_get_4xx_with_a_json_error() {
    let dir = Scratch::new("api");
    let a = Agent::local(&dir, "a", &[]);
    let api = a.api_addr();
    let unknown = format!("{}-42", a.peer_id);

    let cases = [
        (json_post(api, "/v1/tasks", "{not json"), 400, "bad_request"),
        (
            json_post(api, "/v1/tasks", r#"{"description":"no skills"}"#),
            422,
            "invalid",
        ),
        (
            json_post(
                api,
                "/v1/tasks",
                r#"{"description":"x","skills":[{"name":"a","level":"guru"}]}"#,
            ),
            422,
            "invalid",
        ),
        (
            json_post(
                api,
                "/v1/tasks",
                r#"{"description":"x","skills":[{"name":"a"}],"colour":1}"#,
            ),
            422,
            "invalid",
        ),
        (
            http(
                api,
                "POST",
                "/v1/tasks",
                &[("Content-Type", "text/plain")],
                Some(b"{}"),
            ),
            415,
            "unsupported_media_type",
        ),
        // Declared too large: refused before the body is read.
        (
            http(
                api,
                "POST",
                "/v1/tasks",
                &[
                    ("Content-Type", "application/json"),
                    ("Content-Length", "2097152"),
                ],
                None,
            ),
            413,
            "too_large",
        ),
        // Sent too large.
        (
            json_post(
                api,
                &format!("/v1/tasks/{unknown}/complete"),
                &format!("{{\"result\":\"{}\"}}", "x".repeat(100_000)),
            ),
            413,
            "too_large",
        ),
        (get(api, &format!("/v1/tasks/{unknown}")), 404, "not_found"),
        (get(api, "/v1/tasks/not-a-task-id"), 400, "bad_request"),
        (
            json_post(
                api,
                &format!("/v1/tasks/{unknown}/complete"),
                r#"{"success":true}"#,
            ),
            404,
            "not_found",
        ),
        (
            json_post(api, &format!("/v1/tasks/{unknown}/claim"), ""),
            404,
            "not_found",
        ),
        (
            json_post(
                api,
                &format!("/v1/tasks/{unknown}/progress"),
                r#"{"progress":7}"#,
            ),
            422,
            "invalid",
        ),
        (get(api, "/v1/nothing-here"), 404, "not_found"),
        (
            http(api, "DELETE", "/v1/tasks", &[], None),
            405,
            "method_not_allowed",
        ),
    ];
    for (answer, status, code) in cases {
        assert_eq!(answer.status, status, "{answer:?}");
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{answer:?}"
        );
        assert_eq!(answer.error_code(), code, "{answer:?}");
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // A good request still works, and the task can be read back.
    let created = json_post(
        api,
        "/v1/tasks",
        r#"{"description":"nobody has this","skills":[{"name":"rare","level":"expert"}],"deadline_secs":30,"payload":"p"}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["id"].as_str().unwrap().to_string();
    let task = get(api, &format!("/v1/tasks/{id}"));
    assert_eq!(task.status, 200);
    assert_eq!(task.json()["description"], "nobody has this");
    assert_eq!(task.json()["coordinating"], true);
    let listed = get(api, "/v1/tasks").json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str())
    );

    let node = get(api, "/v1/node").json();
    assert_eq!(node["peer_id"], a.peer_id.as_str());
    assert_eq!(get(api, "/v1/peers").status, 200);
    assert_eq!(get(api, "/v1/groups").status, 200);
    let metrics = get(api, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("starling_"),
        "{}",
        &metrics.body[..200.min(metrics.body.len())]
    );

    // The event stream opens with `ready`.
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET /v1/events HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
    let mut lines = BufReader::new(s).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("200"), "{first}");
    let mut head = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        head.push_str(&line);
        head.push('\n');
        if line.starts_with("event:") {
            assert_eq!(line, "event: ready");
            break;
        }
    }
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
}

#[test]
fn a_token_guards_the_api() {
    let dir = Scratch::new("token");
    let (key, _) = dir.key("agent.key");
    let mut cmd = starling();
    cmd.args([
        "agent",
        "--key",
        key.to_str().unwrap(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--control-api",
        "127.0.0.1:0",
        "--api-token",
        "s3cret-token",
        "--metrics",
        "127.0.0.1:0",
    ])
    .env_remove("STARLING_API_TOKEN");
    let mut proc = Proc::spawn("agent", cmd);
    let line = proc.wait_line("control-api", |l| l.starts_with("control-api "));
    assert!(line.ends_with(" bearer-token-required"), "{line}");
    let url = line.split(' ').nth(1).unwrap().to_string();
    let api = url.trim_start_matches("http://").to_string();
    // Metrics have their own address, for scrapers (no token there).
    let metrics = proc.wait_line("metrics", |l| l.starts_with("metrics "));
    let metrics = metrics.trim_start_matches("metrics http://");
    let (metrics_addr, metrics_path) = metrics.split_once('/').unwrap();
    let scraped = get(metrics_addr, &format!("/{metrics_path}"));
    assert_eq!(scraped.status, 200, "{scraped:?}");
    assert!(
        scraped.body.contains("starling_groups_formed"),
        "{}",
        scraped.body
    );

    let refused = get(&api, "/v1/peers");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (401, "unauthorised")
    );
    let wrong = http(
        &api,
        "GET",
        "/v1/peers",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.status, 401);
    let ok = http(
        &api,
        "GET",
        "/v1/peers",
        &[("Authorization", "Bearer s3cret-token")],
        None,
    );
    assert_eq!(ok.status, 200, "{ok:?}");

    let out = run(&["peers", "--api", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = run(&["peers", "--api", &url, "--token", "s3cret-token"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
