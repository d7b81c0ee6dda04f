//! `starling-sim`: parses arguments, installs the log subscriber, runs.

use std::process::ExitCode;

use clap::Parser;
use starling_sim::{SimError, cli, resources::CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STARLING_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    starling_sim::resources::mark_installed();
    match cli::execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ SimError::Options { .. }) => {
            eprintln!("starling-sim: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("starling-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
