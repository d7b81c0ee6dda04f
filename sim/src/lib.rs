//! starling-sim: many Starling agents in one process.
//!
//! Not built yet. This crate will start real nodes on the memory transport,
//! drive workloads, inject faults and report latency, throughput and cost.
