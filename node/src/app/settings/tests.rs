//! Resolving settings: files, flags over them, and errors that name the field.

use super::*;

struct KeyDir(PathBuf);
impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key_dir(name: &str) -> KeyDir {
    let dir = std::env::temp_dir().join(format!("starling-settings-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Keypair::generate()
        .unwrap()
        .save(&dir.join("agent.key"))
        .unwrap();
    KeyDir(dir)
}

fn resolve(dir: &KeyDir, toml_text: &str, args: &AgentArgs) -> Result<AgentPlan> {
    let file: SettingsFile = toml::from_str(toml_text).map_err(|e| NodeError::ConfigFile {
        path: "test".into(),
        reason: e.to_string(),
    })?;
    AgentPlan::resolve(file, &dir.0, args)
}

fn field_of(e: NodeError) -> String {
    match e {
        NodeError::Setting { field, .. } => field,
        other => panic!("not a setting error: {other}"),
    }
}

#[test]
fn a_file_with_flags_over_it_resolves() {
    let dir = key_dir("ok");
    let text = r#"
        key = "agent.key"
        listen = ["/ip4/127.0.0.1/tcp/0"]
        max_concurrent_tasks = 3
        [[skills]]
        name = "upper"
        level = "expert"
        [handlers.upper]
        command = ["tr", "a-z", "A-Z"]
        timeout_secs = 5
    "#;
    let args = AgentArgs {
        max_concurrent_tasks: Some(4),
        control_api: Some("127.0.0.1:0".into()),
        ..AgentArgs::default()
    };
    let plan = resolve(&dir, text, &args).unwrap();
    assert_eq!(plan.node.agent.max_concurrent_tasks, 4);
    assert_eq!(plan.node.agent.skills[0].level, Level::Expert);
    assert_eq!(plan.control_api.port(), 0);
    match &plan.handlers["upper"] {
        HandlerPlan::Command { argv, timeout } => {
            assert!(argv[0].ends_with("/tr"), "{argv:?}");
            assert_eq!(argv[1..], ["a-z", "A-Z"]);
            assert_eq!(*timeout, Duration::from_secs(5));
        }
        other => panic!("{other:?}"),
    }
    // Flags replace the file's skills and add handlers.
    let args = AgentArgs {
        skills: vec!["words:novice".into()],
        handlers: vec!["words=api".into()],
        ..AgentArgs::default()
    };
    let text = "key = \"agent.key\"";
    let plan = resolve(&dir, text, &args).unwrap();
    assert_eq!(plan.handlers["words"].mode(), "api");
    assert_eq!(plan.control_api.to_string(), DEFAULT_CONTROL_API);
}

#[test]
fn bad_settings_name_their_field() {
    let dir = key_dir("bad");
    let none = AgentArgs::default();
    let key = "key = \"agent.key\"\n";
    let cases = [
        ("", "key"),
        ("key = \"missing.key\"", "key"),
        (
            &format!("{key}listen = [\"nonsense\"]") as &str,
            "listen[0]",
        ),
        (
            &format!("{key}[[skills]]\nname = \"a\"\nlevel = \"guru\""),
            "skills[0].level",
        ),
        (
            &format!("{key}[[skills]]\nname = \"a\"\nlevel = \"novice\""),
            "skills[0]",
        ),
        (&format!("{key}[handlers.b]\nmode = \"api\""), "handlers.b"),
        (
            &format!(
                "{key}[[skills]]\nname = \"a\"\nlevel = \"novice\"\n[handlers.a]\ncommand = [\"/no/such/program\"]"
            ),
            "handlers.a.command",
        ),
        (
            &format!(
                "{key}[[skills]]\nname = \"a\"\nlevel = \"novice\"\n[handlers.a]\nmode = \"shell\""
            ),
            "handlers.a.mode",
        ),
        (
            &format!("{key}max_concurrent_tasks = 0"),
            "max_concurrent_tasks",
        ),
        (
            &format!("{key}control_api = \"0.0.0.0:7401\""),
            "control_api",
        ),
        (&format!("{key}control_api = \"localhost\""), "control_api"),
        (&format!("{key}metrics = \"9464\""), "metrics"),
        (&format!("{key}log_level = \"loud\""), "log_level"),
    ];
    for (text, field) in cases {
        let e = resolve(&dir, text, &none).unwrap_err();
        assert_eq!(field_of(e), field, "for {text:?}");
    }
    // A token makes a non-loopback control API acceptable.
    let text = format!("{key}control_api = \"0.0.0.0:7401\"\napi_token = \"s3cret\"");
    assert!(resolve(&dir, &text, &none).is_ok());
    // Unknown keys are refused by the parser, naming the key.
    let e = resolve(&dir, &format!("{key}colour = 1"), &none).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    assert_eq!(e.exit_code(), 2);
    let bad_flag = AgentArgs {
        handlers: vec!["a".into()],
        ..AgentArgs::default()
    };
    assert_eq!(
        field_of(resolve(&dir, key, &bad_flag).unwrap_err()),
        "handler"
    );
}
