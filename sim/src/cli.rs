//! The `starling-sim` command line: one simulation (the default) or the benchmark.

use std::{io::Write as _, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{SimError, SimOptions, Transport, bench, run};

/// Many Starling agents in one process: real libp2p nodes on the memory transport,
/// bootstrapped through the DHT, a seeded workload of tasks, optional faults — then a
/// report of latency, throughput, completion and cost.
///
/// With no arguments: 100 agents, 12 skills, 120 tasks at 300 tasks/min.
#[derive(Debug, Parser)]
#[command(name = "starling-sim", version, about, long_about)]
pub struct Cli {
    /// What to run (default: one simulation).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The simulation's options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The fixed benchmark suite: formation latency at N=100, the throughput ramp,
    /// scale to N=1,000, the cost of a delivery against one ed25519 verification,
    /// and 20% of agents killed mid-run. Writes bench.json and SVG charts.
    Bench(BenchArgs),
}

/// Options of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Directory for bench.json and the charts.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Seed of every run in the suite.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A shorter suite (fewer tasks per run, N up to 300) for a quick look.
    #[arg(long)]
    pub quick: bool,
}

/// Options of one simulation run.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Agents in the mesh.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Tasks to announce.
    #[arg(long, default_value_t = 120)]
    pub tasks: usize,
    /// Announcement rate, tasks per minute.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Distinct skills (each agent holds 1–4 of them).
    #[arg(long, default_value_t = 12)]
    pub skills: usize,
    /// Largest working group a task asks for (tasks need 1–3 skills).
    #[arg(long = "group-size", default_value_t = 5)]
    pub group_size: usize,
    /// Seed of the workload and fault schedule; the same seed replays the same run.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Tasks each agent works on at once (its max_concurrent_tasks), 1–64. Without it
    /// every agent keeps its own default, as `starling agent` does without
    /// --max-concurrent-tasks. An agent with every slot taken offers for nothing new
    /// and keeps announcements in its backlog until a slot frees up.
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// Links between agents: memory (in-process) or tcp (loopback sockets).
    #[arg(long, default_value = "memory")]
    pub transport: Transport,
    /// Mean simulated work per part, milliseconds.
    #[arg(long = "work-ms", default_value_t = 300)]
    pub work_ms: u64,
    /// Probability an honest part fails (default: each skill's own failure rate).
    #[arg(long = "failure-rate")]
    pub failure_rate: Option<f64>,
    /// Crash this percentage of agents (no goodbye) at --kill-at.
    #[arg(long = "kill", value_name = "PCT", default_value_t = 0.0)]
    pub kill: f64,
    /// When to crash them, seconds after the first announcement.
    #[arg(long = "kill-at", value_name = "SECS", default_value_t = 5.0)]
    pub kill_at: f64,
    /// Restart crashed agents from their data directories this many seconds later.
    #[arg(long = "restart-after", value_name = "SECS")]
    pub restart_after: Option<f64>,
    /// Cut this fraction of agents off from the rest at --partition-at.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub partition: f64,
    /// When the partition starts, seconds.
    #[arg(long = "partition-at", value_name = "SECS", default_value_t = 3.0)]
    pub partition_at: f64,
    /// When the partition heals, seconds.
    #[arg(long = "heal-at", value_name = "SECS", default_value_t = 8.0)]
    pub heal_at: f64,
    /// Latency added to every link, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    pub latency: f64,
    /// Jitter (uniform ±) on every link, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    pub jitter: f64,
    /// Percentage of messages that need a retransmission.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub loss: f64,
    /// Hostile agents: half claim skills they lack, half forge, tamper, replay and
    /// spam announcements.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub byzantine: usize,
    /// Seconds to wait for unfinished tasks after the last announcement.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub drain: f64,
    /// Write the report as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write all agents' metrics, summed, as accrued during the workload, to this
    /// file (Prometheus text format).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn secs(field: &'static str, s: f64) -> Result<Duration, SimError> {
    Duration::try_from_secs_f64(s).map_err(|_| SimError::Options {
        field,
        reason: format!("{s} is not a duration in seconds"),
    })
}

impl RunArgs {
    /// The options these arguments describe.
    pub fn options(&self) -> Result<SimOptions, SimError> {
        Ok(SimOptions {
            agents: self.agents,
            tasks: self.tasks,
            rate: self.rate,
            skills: self.skills,
            group_size: self.group_size,
            seed: self.seed,
            capacity: self.capacity,
            transport: self.transport,
            work_ms: self.work_ms,
            failure_rate: self.failure_rate,
            kill_pct: self.kill,
            kill_at: secs("kill-at", self.kill_at)?,
            restart_after: self
                .restart_after
                .map(|s| secs("restart-after", s))
                .transpose()?,
            partition: self.partition,
            partition_at: secs("partition-at", self.partition_at)?,
            heal_at: secs("heal-at", self.heal_at)?,
            latency: secs("latency", self.latency / 1000.0)?,
            jitter: secs("jitter", self.jitter / 1000.0)?,
            loss_pct: self.loss,
            byzantine: self.byzantine,
            drain: secs("drain", self.drain)?,
            progress: !self.quiet,
            json: self.json.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// Writes a JSON value to `path`.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), SimError> {
    let err = |reason: String| SimError::Write {
        path: path.display().to_string(),
        reason,
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| err(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| err(e.to_string()))
}

/// Runs what the command line asks for, printing to stdout.
pub fn execute(cli: Cli) -> Result<(), SimError> {
    match cli.command {
        Some(Command::Bench(args)) => bench::run_suite(&args),
        None => {
            let opts = cli.run.options()?;
            opts.validate()?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "starling-sim: {} agents, {} tasks at {}/min, seed {} (--seed {} replays this run)",
                opts.agents, opts.tasks, opts.rate, opts.seed, opts.seed
            );
            drop(out);
            let report = run(&opts)?;
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\n{}", report.table());
            if let Some(path) = &opts.json {
                write_json(path, &report)?;
                let _ = writeln!(out, "report written to {}", path.display());
            }
            Ok(())
        }
    }
}
