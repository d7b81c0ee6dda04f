//! starling-sim: many Starling agents in one process — real `starling-node` nodes on
//! the memory transport (or loopback TCP), bootstrapped through the DHT, driven by a
//! seeded workload, hit by seeded faults, and measured.
//!
//! Modules:
//! - [`options`] — [`SimOptions`]: one run, with documented defaults.
//! - [`workload`] — the seeded agents, tasks and fault schedule.
//! - [`mesh`] — the nodes: start, crash, restart, events.
//! - [`hostile`] — forgers: raw swarms sending forged, tampered, replayed and spam
//!   announcements.
//! - [`run`] — one run on its own runtime: the timeline, the drain, the measurements.
//! - [`analysis`] — events to latencies, completion, losses and duplicates.
//! - [`report`] — [`Report`]: the table and the JSON.
//! - [`bench`] — the fixed benchmark suite, `bench.json` and the SVG charts.
//! - [`resources`] — CPU, peak RSS and a counting allocator for heap per agent.
//! - [`sample`] — figures sampled while the mesh runs: connections per agent and the
//!   idle window's CPU.
//! - [`cli`] — the `starling-sim` command line.
//! - [`error`] — [`SimError`].

pub mod analysis;
pub mod bench;
pub mod cli;
pub mod error;
pub mod hostile;
pub mod mesh;
pub mod options;
pub mod report;
pub mod resources;
pub mod run;
pub mod sample;
pub mod workload;

pub use error::SimError;
pub use options::{SimOptions, Transport};
pub use report::Report;
pub use run::run;

#[cfg(test)]
mod tests;
