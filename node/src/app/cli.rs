//! The command line: every command, flag and its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Starling: autonomous agents on a peer-to-peer mesh with no hub.
///
/// Run an agent with `starling agent --config agent.toml`; talk to a running agent
/// through its control API with `starling task …`, `starling peers` and
/// `starling watch`.
#[derive(Debug, Parser)]
#[command(name = "starling", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Create a new agent key (ed25519, 32 raw bytes, mode 0600) and print its PeerId.
    ///
    /// Refuses to overwrite an existing file.
    Keygen {
        /// Where to write the key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the PeerId of an agent key.
    Id {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Run an agent on this host until SIGINT or SIGTERM.
    ///
    /// Settings come from a TOML file (--config) and each can be overridden by a
    /// flag. On start the agent prints, on stdout, one line each:
    /// `peer-id <PeerId>`, `listening <multiaddr>/p2p/<PeerId>` (per address),
    /// `control-api http://<addr>` and, if enabled, `metrics http://<addr>/metrics`.
    /// On SIGINT/SIGTERM it leaves its groups gracefully, saves its state and prints
    /// `stopped`.
    Agent(Box<AgentArgs>),
    /// Announce tasks and look at them.
    Task {
        /// Which task command.
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// List the peers the agent is connected to.
    Peers {
        /// The control API to ask.
        #[command(flatten)]
        api: ApiArgs,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// List the working groups the agent holds documents of.
    Groups {
        /// The control API to ask.
        #[command(flatten)]
        api: ApiArgs,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Follow the agent's event stream (peers, announcements, groups, progress,
    /// results), one readable line per event, until interrupted.
    Watch {
        /// The control API to follow.
        #[command(flatten)]
        api: ApiArgs,
        /// Print each event as one line of JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// Where the control API of a running agent is.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the agent's control API (as printed in its `control-api` line).
    #[arg(
        long,
        value_name = "URL",
        env = "STARLING_API",
        default_value = "http://127.0.0.1:7401"
    )]
    pub api: String,
    /// Bearer token, if the agent requires one.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "STARLING_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Task commands.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Announce a task on the mesh through an agent, which coordinates it. Prints the
    /// task id; with --wait, shows progress on stderr and then prints the result, and
    /// exits 0 if the task completed, 1 if it failed.
    Announce(Box<AnnounceArgs>),
    /// Show one task: its state, group, progress and results.
    Status {
        /// The task id (as `task announce` printed it).
        id: String,
        /// The control API to ask.
        #[command(flatten)]
        api: ApiArgs,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// List the tasks the agent coordinates, works on, or finished lately.
    List {
        /// The control API to ask.
        #[command(flatten)]
        api: ApiArgs,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// `starling task announce`.
#[derive(Debug, Args)]
pub struct AnnounceArgs {
    /// The control API of the agent that announces and coordinates the task.
    #[command(flatten)]
    pub api: ApiArgs,
    /// A required skill as NAME:LEVEL or NAME:LEVEL:COUNT (level: novice,
    /// intermediate, advanced or expert; count: agents needed, default 1). Repeat for
    /// several skills.
    #[arg(long = "skill", value_name = "NAME:LEVEL[:COUNT]", required = true)]
    pub skills: Vec<String>,
    /// What the task is (up to 1 KiB).
    #[arg(long, value_name = "TEXT")]
    pub desc: String,
    /// A file whose bytes are the task's payload (up to 256 KiB), handed to every
    /// member's executor.
    #[arg(long, value_name = "FILE", conflicts_with = "payload")]
    pub payload_file: Option<PathBuf>,
    /// The payload as text.
    #[arg(long, value_name = "TEXT")]
    pub payload: Option<String>,
    /// low, normal, high or critical.
    #[arg(long, value_name = "P", default_value = "normal")]
    pub priority: String,
    /// Seconds the task has to finish (default: the agent's, 5 minutes).
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<u64>,
    /// Largest group (default: the sum of the skills' counts).
    #[arg(long, value_name = "N")]
    pub max_group_size: Option<u32>,
    /// A task that must complete first. Repeatable.
    #[arg(long, value_name = "ID")]
    pub depends_on: Vec<String>,
    /// Require two thirds of the members to approve the combined result.
    #[arg(long)]
    pub consensus: bool,
    /// Wait for the task to finish: progress on stderr, then the result on stdout.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: print the finished task as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `starling agent`: every setting of the config file, as a flag that overrides it.
#[derive(Debug, Default, Args)]
pub struct AgentArgs {
    /// The TOML config file. Relative paths inside it are relative to the file.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The agent's key file (create one with `starling keygen`). [config: key]
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Directory for state that survives restarts: skill metrics, reputation, tasks
    /// and results, group documents. [config: data_dir]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A multiaddr to listen on, e.g. /ip4/0.0.0.0/tcp/7400 or
    /// /ip4/0.0.0.0/udp/7400/quic-v1 (port 0: any free port). Repeatable; replaces
    /// the file's list. [config: listen]
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// A peer to join the mesh through, e.g. /ip4/10.0.0.5/tcp/7400/p2p/12D3Koo….
    /// Repeatable; replaces the file's list. [config: bootstrap]
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// A skill this agent offers, as NAME:LEVEL. Repeatable; replaces the file's
    /// list. [config: skills]
    #[arg(long = "skill", value_name = "NAME:LEVEL")]
    pub skills: Vec<String>,
    /// Tasks worked on at once. [config: max_concurrent_tasks]
    #[arg(long, value_name = "N")]
    pub max_concurrent_tasks: Option<u32>,
    /// How a skill's work is done, as SKILL=api (a program completes it through the
    /// control API), SKILL=PROGRAM, or SKILL='["program","arg",…]' (an argv list, run
    /// with the payload on stdin). Repeatable; overrides the file per skill.
    /// [config: handlers.<skill>]
    #[arg(long = "handler", value_name = "SKILL=SPEC")]
    pub handlers: Vec<String>,
    /// Seconds a handler given by --handler may take before it is killed.
    /// [config: handlers.<skill>.timeout_secs]
    #[arg(long, value_name = "SECS")]
    pub handler_timeout: Option<u64>,
    /// Address of the control API (loopback unless a token is set; port 0: any
    /// free port). [config: control_api]
    #[arg(long, value_name = "ADDR")]
    pub control_api: Option<String>,
    /// Bearer token the control API requires; needed to bind a non-loopback address.
    /// [config: api_token]
    #[arg(
        long,
        value_name = "TOKEN",
        env = "STARLING_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Address of a Prometheus endpoint (`GET /metrics`), off by default.
    /// [config: metrics]
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Log level or filter (error, warn, info, debug, trace, or e.g.
    /// `info,starling_node=debug`); RUST_LOG overrides it. Logs go to stderr.
    /// [config: log_level]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}
