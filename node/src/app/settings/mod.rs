//! The agent's settings: a TOML file, each field overridable by a flag, checked and
//! turned into an [`AgentPlan`] before anything starts. Every problem names the field
//! as the file spells it.
//!
//! ```toml
//! key = "agent.key"                 # required; `starling keygen --out agent.key`
//! data_dir = "data"                 # optional; state survives restarts only with it
//! listen = ["/ip4/0.0.0.0/tcp/7400", "/ip4/0.0.0.0/udp/7400/quic-v1"]
//! bootstrap = ["/ip4/10.0.0.5/tcp/7400/p2p/12D3KooW…"]
//! max_concurrent_tasks = 2
//! control_api = "127.0.0.1:7401"
//! # api_token = "…"                 # required for a non-loopback control_api
//! # metrics = "127.0.0.1:9464"
//! log_level = "info"
//!
//! [[skills]]
//! name = "summarise"
//! level = "advanced"
//!
//! [handlers.summarise]
//! command = ["python3", "summarise.py"]   # argv; the payload arrives on stdin
//! timeout_secs = 300
//! # or: mode = "api"  (a program completes the work through the control API)
//! ```

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use libp2p::Multiaddr;
use serde::Deserialize;
use starling_protocol::{AgentConfig, Keypair, Level, Skill};

use crate::{NodeConfig, NodeError, Result, app::cli::AgentArgs};

/// Default peer-to-peer port (TCP and QUIC).
pub const DEFAULT_P2P_PORT: u16 = 7400;
/// Default control API address: loopback, so nothing outside the host can reach it
/// without a token.
pub const DEFAULT_CONTROL_API: &str = "127.0.0.1:7401";
/// Default handler timeout: five minutes, the protocol's default task deadline.
pub const DEFAULT_HANDLER_TIMEOUT_SECS: u64 = 300;
/// Longest handler timeout accepted: a day.
const MAX_HANDLER_TIMEOUT_SECS: u64 = 86_400;

/// The config file, as written. Every field is optional here; [`AgentPlan::resolve`]
/// says which are required.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// Key file.
    pub key: Option<PathBuf>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen multiaddrs.
    pub listen: Option<Vec<String>>,
    /// Bootstrap multiaddrs.
    pub bootstrap: Option<Vec<String>>,
    /// Skills offered.
    pub skills: Option<Vec<SkillSetting>>,
    /// Tasks at once.
    pub max_concurrent_tasks: Option<u32>,
    /// Handler per skill.
    pub handlers: Option<BTreeMap<String, HandlerSetting>>,
    /// Control API address.
    pub control_api: Option<String>,
    /// Bearer token of the control API.
    pub api_token: Option<String>,
    /// Metrics address.
    pub metrics: Option<String>,
    /// Log level or filter.
    pub log_level: Option<String>,
}

/// One `[[skills]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillSetting {
    /// Skill name.
    pub name: String,
    /// novice, intermediate, advanced or expert.
    pub level: String,
}

/// One `[handlers.<skill>]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSetting {
    /// `command` (the default when `command` is given) or `api`.
    pub mode: Option<String>,
    /// The program and its arguments.
    pub command: Option<Vec<String>>,
    /// Seconds the work may take before it is abandoned (the program killed).
    pub timeout_secs: Option<u64>,
}

/// How one skill's work is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerPlan {
    /// Run a program: payload on stdin, result on stdout, progress on stderr.
    Command {
        /// Program and arguments (the program resolved to a path).
        argv: Vec<String>,
        /// Killed after this long.
        timeout: Duration,
    },
    /// A program completes the work through the control API.
    Api {
        /// Failed if not completed within this long.
        timeout: Duration,
    },
}

impl HandlerPlan {
    /// `command` or `api`, as events and the API name the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            HandlerPlan::Command { .. } => "command",
            HandlerPlan::Api { .. } => "api",
        }
    }
}

/// Everything `starling agent` needs, checked.
#[derive(Debug)]
pub struct AgentPlan {
    /// The node's configuration (validated).
    pub node: NodeConfig,
    /// Handler per skill; every skill has one.
    pub handlers: BTreeMap<String, HandlerPlan>,
    /// Where the control API listens.
    pub control_api: SocketAddr,
    /// The token it requires, if any.
    pub api_token: Option<String>,
    /// Where the metrics endpoint listens, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Log filter.
    pub log_level: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> NodeError {
    NodeError::Setting {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads and parses a config file.
pub fn read_file(path: &Path) -> Result<SettingsFile> {
    let err = |reason: String| NodeError::ConfigFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))
}

fn parse_addrs(field: &str, values: &[String]) -> Result<Vec<Multiaddr>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse::<Multiaddr>().map_err(|e| {
                bad(
                    format!("{field}[{i}]"),
                    format!("{v:?} is not a multiaddr: {e}"),
                )
            })
        })
        .collect()
}

fn parse_socket(field: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        bad(
            field,
            format!("{value:?} is not an address (expected IP:PORT, e.g. 127.0.0.1:7401)"),
        )
    })
}

/// Parses `NAME:LEVEL` (a `--skill` flag).
pub fn parse_skill_flag(field: &str, value: &str) -> Result<SkillSetting> {
    let (name, level) = value.split_once(':').ok_or_else(|| {
        bad(
            field,
            format!("{value:?}: expected NAME:LEVEL, e.g. summarise:expert"),
        )
    })?;
    Ok(SkillSetting {
        name: name.to_string(),
        level: level.to_string(),
    })
}

/// Parses `SKILL=api`, `SKILL=PROGRAM` or `SKILL=["program","arg"]` (a `--handler` flag).
fn parse_handler_flag(value: &str, timeout: Option<u64>) -> Result<(String, HandlerSetting)> {
    let (skill, spec) = value.split_once('=').ok_or_else(|| {
        bad(
            "handler",
            format!(
                "{value:?}: expected SKILL=api, SKILL=PROGRAM or SKILL='[\"program\",\"arg\"]'"
            ),
        )
    })?;
    let field = format!("handlers.{skill}");
    let setting = if spec == "api" {
        HandlerSetting {
            mode: Some("api".into()),
            command: None,
            timeout_secs: timeout,
        }
    } else if spec.trim_start().starts_with('[') {
        let argv: Vec<String> = serde_json::from_str(spec).map_err(|e| {
            bad(
                &field,
                format!("{spec:?} is not a JSON list of strings: {e}"),
            )
        })?;
        HandlerSetting {
            mode: None,
            command: Some(argv),
            timeout_secs: timeout,
        }
    } else {
        HandlerSetting {
            mode: None,
            command: Some(vec![spec.to_string()]),
            timeout_secs: timeout,
        }
    };
    Ok((skill.to_string(), setting))
}

/// `path` relative to `base` (the config file's directory), unless absolute.
fn relative_to(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

/// Finds a program as a shell would (without running one): a path if it has a
/// slash, else the first match on PATH.
fn find_program(program: &str, base: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let p = relative_to(base, PathBuf::from(program));
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn handler_plan(skill: &str, h: HandlerSetting, base: &Path) -> Result<HandlerPlan> {
    let field = |f: &str| format!("handlers.{skill}.{f}");
    let secs = h.timeout_secs.unwrap_or(DEFAULT_HANDLER_TIMEOUT_SECS);
    if secs == 0 || secs > MAX_HANDLER_TIMEOUT_SECS {
        return Err(bad(
            field("timeout_secs"),
            "must be within 1..=86400 seconds",
        ));
    }
    let timeout = Duration::from_secs(secs);
    let mode = h
        .mode
        .as_deref()
        .unwrap_or(if h.command.is_some() { "command" } else { "" });
    match mode {
        "api" => {
            if h.command.is_some() {
                return Err(bad(field("command"), "an api-mode handler runs no command"));
            }
            Ok(HandlerPlan::Api { timeout })
        }
        "command" => {
            let argv = h
                .command
                .ok_or_else(|| bad(field("command"), "missing: the program and its arguments"))?;
            let Some(program) = argv.first() else {
                return Err(bad(
                    field("command"),
                    "empty: give the program and its arguments",
                ));
            };
            let resolved = find_program(program, base).ok_or_else(|| {
                bad(
                    field("command"),
                    format!("program {program:?} not found (not a file, nor on PATH)"),
                )
            })?;
            let mut argv = argv.clone();
            argv[0] = resolved.display().to_string();
            Ok(HandlerPlan::Command { argv, timeout })
        }
        "" => Err(bad(
            format!("handlers.{skill}"),
            "give a `command` list or `mode = \"api\"`",
        )),
        other => Err(bad(
            field("mode"),
            format!("{other:?} (expected \"command\" or \"api\")"),
        )),
    }
}

impl AgentPlan {
    /// Reads the config file named by `--config` (if any), applies the flags over
    /// it, and checks everything.
    pub fn from_args(args: &AgentArgs) -> Result<AgentPlan> {
        let (file, base) = match &args.config {
            Some(path) => {
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (read_file(path)?, base)
            }
            None => (SettingsFile::default(), PathBuf::new()),
        };
        AgentPlan::resolve(file, &base, args)
    }

    /// Merges `file` (paths relative to `base`) with the flags in `args`, then checks.
    pub fn resolve(mut file: SettingsFile, base: &Path, args: &AgentArgs) -> Result<AgentPlan> {
        let cwd = PathBuf::new();
        let key = match (&args.key, file.key.take()) {
            (Some(k), _) => k.clone(),
            (None, Some(k)) => relative_to(base, k),
            (None, None) => {
                return Err(bad(
                    "key",
                    "missing: set `key` in the config file or pass --key (create a key with `starling keygen --out FILE`)",
                ));
            }
        };
        let keypair = Keypair::load(&key).map_err(|e| bad("key", e.to_string()))?;
        let data_dir = match (&args.data_dir, file.data_dir.take()) {
            (Some(d), _) => Some(relative_to(&cwd, d.clone())),
            (None, Some(d)) => Some(relative_to(base, d)),
            (None, None) => None,
        };
        let listen_src = if args.listen.is_empty() {
            file.listen.take().unwrap_or_else(|| {
                vec![
                    format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
                    format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
                ]
            })
        } else {
            args.listen.clone()
        };
        let listen = parse_addrs("listen", &listen_src)?;
        if listen.is_empty() {
            return Err(bad("listen", "at least one address is needed"));
        }
        let bootstrap_src = if args.bootstrap.is_empty() {
            file.bootstrap.take().unwrap_or_default()
        } else {
            args.bootstrap.clone()
        };
        let bootstrap = parse_addrs("bootstrap", &bootstrap_src)?;

        let skill_settings = if args.skills.is_empty() {
            file.skills.take().unwrap_or_default()
        } else {
            args.skills
                .iter()
                .enumerate()
                .map(|(i, s)| parse_skill_flag(&format!("skills[{i}]"), s))
                .collect::<Result<_>>()?
        };
        let mut skills = Vec::with_capacity(skill_settings.len());
        for (i, s) in skill_settings.iter().enumerate() {
            let level: Level = s
                .level
                .parse()
                .map_err(|e: starling_protocol::ProtocolError| {
                    bad(format!("skills[{i}].level"), e.to_string())
                })?;
            skills.push(Skill::new(s.name.clone(), level));
        }

        let mut handler_settings = file.handlers.take().unwrap_or_default();
        for flag in &args.handlers {
            let (skill, setting) = parse_handler_flag(flag, args.handler_timeout)?;
            handler_settings.insert(skill, setting);
        }
        let mut handlers = BTreeMap::new();
        for (skill, setting) in handler_settings {
            if !skills.iter().any(|s| s.name == skill) {
                return Err(bad(
                    format!("handlers.{skill}"),
                    "no such skill in `skills`; a handler needs a skill to serve",
                ));
            }
            let plan = handler_plan(&skill, setting, base)?;
            handlers.insert(skill, plan);
        }
        if let Some((i, s)) = skills
            .iter()
            .enumerate()
            .find(|(_, s)| !handlers.contains_key(&s.name))
        {
            return Err(bad(
                format!("skills[{i}]"),
                format!(
                    "skill {:?} has no handler: add [handlers.{}] with a `command` or `mode = \"api\"` (or --handler {}=…)",
                    s.name, s.name, s.name
                ),
            ));
        }

        let mut agent = AgentConfig {
            skills,
            ..AgentConfig::default()
        };
        if let Some(n) = args.max_concurrent_tasks.or(file.max_concurrent_tasks) {
            agent.max_concurrent_tasks = n;
        }
        if agent.max_concurrent_tasks == 0 {
            return Err(bad("max_concurrent_tasks", "must be at least 1"));
        }
        let mut node = NodeConfig::new(keypair, agent);
        node.listen = listen;
        node.bootstrap = bootstrap;
        node.data_dir = data_dir;
        node.validate().map_err(|e| match e {
            NodeError::Protocol(starling_protocol::ProtocolError::Config { field, reason }) => {
                bad(field, reason)
            }
            other => other,
        })?;

        let api_token = args.api_token.clone().or(file.api_token.take());
        if let Some(t) = &api_token
            && (t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(bad("api_token", "must be non-empty, without spaces"));
        }
        let control_src = args
            .control_api
            .clone()
            .or(file.control_api.take())
            .unwrap_or_else(|| DEFAULT_CONTROL_API.to_string());
        let control_api = parse_socket("control_api", &control_src)?;
        if !control_api.ip().is_loopback() && api_token.is_none() {
            return Err(bad(
                "control_api",
                format!(
                    "{control_api} is not a loopback address: set api_token (or --api-token) so only holders of the token can use the API"
                ),
            ));
        }
        let metrics = match args.metrics.clone().or(file.metrics.take()) {
            Some(m) => Some(parse_socket("metrics", &m)?),
            None => None,
        };
        let log_level = args
            .log_level
            .clone()
            .or(file.log_level.take())
            .unwrap_or_else(|| "info".to_string());
        if !valid_log_filter(&log_level) {
            return Err(bad(
                "log_level",
                format!(
                    "{log_level:?} (expected error, warn, info, debug, trace or a filter like info,starling_node=debug)"
                ),
            ));
        }
        Ok(AgentPlan {
            node,
            handlers,
            control_api,
            api_token,
            metrics,
            log_level,
        })
    }
}

/// A level name, or a filter whose bare words are level names (`info,libp2p=warn`).
fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    !filter.is_empty()
        && filter
            .split(',')
            .all(|d| d.contains('=') || LEVELS.contains(&d.trim().to_ascii_lowercase().as_str()))
        && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
}

#[cfg(test)]
mod tests;
