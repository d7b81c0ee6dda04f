//! The `starling` binary's logic: `main` parses the command line, installs the log
//! subscriber and calls [`run`].
//!
//! Modules:
//! - [`cli`] — the commands and flags (clap).
//! - [`settings`] — the agent's TOML config file, flag overrides and checks.
//! - [`agent`] — `starling agent`: start-up, the printed lines, signals.
//! - [`executor`] — handlers per skill: a program per part, or api mode.
//! - [`tracker`] — task records and the event stream the control API serves.
//! - [`api`] — the control API (axum).
//! - [`wire`] — the API's JSON shapes.
//! - [`client`] — the HTTP client of the CLI commands.
//! - [`commands`] — `task …`, `peers`, `groups`.
//! - [`watch`] — `watch`: the event stream for people.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod executor;
pub mod settings;
pub mod tracker;
pub mod watch;
pub mod wire;

use std::{io::Write, process::ExitCode};

use starling_protocol::Keypair;

use crate::{NodeError, Result};
use cli::{Cli, CliCommand, TaskCommand};
use settings::AgentPlan;

/// Writes the command's output lines to stdout (flushed per line, so a process
/// reading them sees each at once).
#[derive(Debug, Default)]
pub struct Out;

impl Out {
    /// One line.
    pub fn line(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Text as it is, ending with a newline.
    pub fn text(&self, text: &str) {
        if text.ends_with('\n') {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{text}");
            let _ = out.flush();
        } else {
            self.line(text);
        }
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> NodeError {
    move |e| NodeError::Io {
        what,
        reason: e.to_string(),
    }
}

/// Creates a key file and prints its PeerId.
fn keygen(out: &std::path::Path, o: &Out) -> Result<()> {
    let key = Keypair::generate()?;
    key.save(out)?;
    o.line(&key.id().to_string());
    Ok(())
}

async fn dispatch(command: CliCommand, plan: Option<AgentPlan>, out: &Out) -> Result<()> {
    match command {
        CliCommand::Keygen { out: path } => keygen(&path, out),
        CliCommand::Id { key } => {
            out.line(&Keypair::load(&key)?.id().to_string());
            Ok(())
        }
        CliCommand::Agent(_) => match plan {
            Some(plan) => agent::run(plan, out).await,
            None => Err(NodeError::Stopped),
        },
        CliCommand::Task { command } => match command {
            TaskCommand::Announce(args) => commands::announce(&args, out).await,
            TaskCommand::Status { id, api, json } => commands::status(&id, &api, json, out).await,
            TaskCommand::List { api, json } => commands::list(&api, json, out).await,
        },
        CliCommand::Peers { api, json } => commands::peers(&api, json, out).await,
        CliCommand::Groups { api, json } => commands::groups(&api, json, out).await,
        CliCommand::Watch { api, json } => watch::watch(&api, json, out).await,
    }
}

fn report(e: &NodeError) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {e}");
    ExitCode::from(e.exit_code())
}

/// Runs a parsed command line. `init_logging` receives the log filter to install
/// (the agent's `log_level`, or `warn` for the other commands). Exit codes: 0
/// success, 1 failure (including a task that failed), 2 a bad config or invocation.
pub fn run(cli: Cli, init_logging: impl FnOnce(&str)) -> ExitCode {
    let plan = match &cli.command {
        CliCommand::Agent(args) => match AgentPlan::from_args(args) {
            Ok(plan) => Some(plan),
            Err(e) => return report(&e),
        },
        _ => None,
    };
    init_logging(plan.as_ref().map_or("warn", |p| p.log_level.as_str()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start the runtime".into()))
    {
        Ok(r) => r,
        Err(e) => return report(&e),
    };
    let out = Out;
    match runtime.block_on(dispatch(cli.command, plan, &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}
