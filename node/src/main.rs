//! The `starling` binary: parses the command line, installs the log subscriber
//! (stderr; `RUST_LOG` overrides the configured level) and hands over to
//! `starling_node::app`.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use starling_node::app::{self, cli::Cli};
use tracing_subscriber::EnvFilter;

// mimalloc rather than the system allocator: under connection churn glibc's malloc
// spent about a third of an idle agent's CPU in its slow paths.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::run(cli, |level| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    })
}
