//! The report of one run: the figures a person reads at a glance (a table) and the
//! same as JSON (the schema is in README.md).

use std::fmt::Write as _;

use serde::Serialize;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (nearest rank); all zero when there are none.
    pub fn of(mut samples: Vec<f64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let rank = (p * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Percentiles {
            count: samples.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// Established connections per agent, over samples of every live agent.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ConnectionFigure {
    /// Mean over agents × samples.
    pub mean: f64,
    /// Largest any agent had in any sample.
    pub max: u64,
}

/// What the faults of a run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FaultReport {
    /// Agents crashed.
    pub killed: usize,
    /// Agents restarted from their data directories.
    pub restarted: usize,
    /// Agents cut off by the partition.
    pub partitioned: usize,
    /// Hostile agents.
    pub hostile: usize,
    /// Link latency ms, jitter ms, loss %.
    pub latency_ms: f64,
    /// Jitter (±) ms.
    pub jitter_ms: f64,
    /// Messages needing a retransmission, %.
    pub loss_pct: f64,
    /// Crash → a replacement started the part, ms.
    pub reassignment_ms: Percentiles,
    /// Heal → every shared group document has equal heads everywhere, ms (`None`:
    /// no partition, or it did not converge within the drain time).
    pub convergence_ms: Option<f64>,
    /// Inbound messages refused (forged, replayed, garbage, …).
    pub refused: u64,
}

/// One run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// Seed (the same seed replays the same workload and fault schedule).
    pub seed: u64,
    /// Agents in the mesh.
    pub agents: usize,
    /// `memory` or `tcp`.
    pub transport: String,
    /// Tasks announced.
    pub tasks: usize,
    /// Offered load, tasks per minute.
    pub rate_per_min: f64,
    /// Tasks each agent worked on at once, if `--capacity` set it (`None`: the
    /// agents' own default).
    pub capacity: Option<u32>,
    /// Whether the figures can be trusted: false when the simulation missed node
    /// events (`events_lagged` > 0), so tasks may be counted lost that were not.
    pub valid: bool,
    /// Node events the simulation's forwarders missed because they fell behind.
    pub events_lagged: u64,
    /// Seconds from the first node's start until the mesh was connected (before the
    /// idle window).
    pub startup_s: f64,
    /// Seconds from the first announcement until the last task finished (or the
    /// drain time ran out).
    pub run_s: f64,
    /// Tasks that completed.
    pub completed: usize,
    /// Tasks that finished failed (work failed past its retries, or no agents).
    pub failed: usize,
    /// Failed tasks per reason.
    pub failure_reasons: std::collections::BTreeMap<String, usize>,
    /// Tasks that never finished although someone could have finished them.
    pub lost: usize,
    /// Tasks whose initiator crashed before any agent joined the group (nobody else
    /// knew of them; a restarted initiator resumes them).
    pub orphaned: usize,
    /// Tasks whose result was committed more than once.
    pub duplicated: usize,
    /// Announce → group formed, ms.
    pub formation_ms: Percentiles,
    /// Every formation latency, ms (for charts; not in the JSON).
    #[serde(skip)]
    pub formation_samples: Vec<f64>,
    /// Announce → task completed, ms.
    pub completion_ms: Percentiles,
    /// Announce → each agent with the skill received the announcement, ms.
    pub delivery_ms: Percentiles,
    /// Completed tasks per minute over the run.
    pub tasks_per_min: f64,
    /// Messages sent (gossip publishes and direct) per announced task.
    pub messages_per_task: f64,
    /// Bytes on the wire (all protocols, outbound) per announced task.
    pub bytes_per_task: f64,
    /// Messages delivered to the protocol (verified envelopes).
    pub delivered: u64,
    /// Deliveries per announced task (every receiver of a publish counts).
    pub deliveries_per_task: f64,
    /// The same, per message kind (`task_update`, `heartbeat`, `card`, …).
    pub deliveries_by_kind: std::collections::BTreeMap<String, f64>,
    /// Process CPU per announced task over the run, ms (all agents' work, Kademlia
    /// and gossip upkeep included).
    pub cpu_ms_per_task: f64,
    /// Envelope signature checks per delivered message (1.0: each verified once).
    pub verifications_per_delivery: f64,
    /// Process CPU seconds during the run (startup excluded).
    pub cpu_s: f64,
    /// CPU per delivered message, µs.
    pub cpu_per_delivery_us: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// Heap held per agent once the mesh is up, KiB (`None`: allocator not counted).
    pub heap_per_agent_kib: Option<f64>,
    /// Process CPU per agent per second over the idle window (mesh up, no tasks), ms
    /// (`None`: CPU time not readable).
    pub idle_cpu_ms_per_agent_s: Option<f64>,
    /// Seconds the idle window lasted.
    pub idle_s: f64,
    /// Connections per agent at the end of the idle window (`None`: the nodes expose
    /// no connection gauge).
    pub connections_idle: Option<ConnectionFigure>,
    /// Connections per agent over the idle sample and the samples taken during the
    /// workload (`None`: the nodes expose no connection gauge).
    pub connections_per_agent: Option<ConnectionFigure>,
    /// What faults did.
    pub faults: FaultReport,
}

fn connections(c: Option<ConnectionFigure>) -> String {
    c.map_or("n/a".to_string(), |c| {
        format!("mean {:.1}   max {}", c.mean, c.max)
    })
}

fn pct_row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {name:<26} p50 {:>8.1}   p95 {:>8.1}   p99 {:>8.1}   max {:>8.1} ms   (n={})",
        p.p50, p.p95, p.p99, p.max, p.count
    );
}

impl Report {
    /// The table a person reads.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let capacity = self
            .capacity
            .map_or(String::new(), |c| format!(", capacity {c}"));
        let _ = writeln!(
            out,
            "Starling simulation — {} agents ({}), {} tasks at {:.0}/min, seed {}{capacity}",
            self.agents, self.transport, self.tasks, self.rate_per_min, self.seed
        );
        if !self.valid {
            let _ = writeln!(
                out,
                "  INVALID RUN                {} node events were missed: tasks may be counted as lost that were not",
                self.events_lagged
            );
        }
        let _ = writeln!(
            out,
            "  tasks                      completed {}   failed {}   lost {}   orphaned {}   committed twice {}",
            self.completed, self.failed, self.lost, self.orphaned, self.duplicated
        );
        for (why, n) in &self.failure_reasons {
            let _ = writeln!(out, "    failed ×{n:<3}                {why}");
        }
        pct_row(&mut out, "announce -> group formed", &self.formation_ms);
        pct_row(&mut out, "announce -> completed", &self.completion_ms);
        pct_row(&mut out, "announcement delivery", &self.delivery_ms);
        let _ = writeln!(
            out,
            "  throughput                 {:.0} tasks/min over {:.1} s (mesh up in {:.1} s)",
            self.tasks_per_min, self.run_s, self.startup_s
        );
        let _ = writeln!(
            out,
            "  per task                   {:.1} messages ({:.1} deliveries), {:.0} bytes on the wire, {:.1} ms CPU",
            self.messages_per_task,
            self.deliveries_per_task,
            self.bytes_per_task,
            self.cpu_ms_per_task
        );
        let _ = writeln!(
            out,
            "  verification               {:.3} signature checks per delivered message ({} delivered)",
            self.verifications_per_delivery, self.delivered
        );
        let heap = self
            .heap_per_agent_kib
            .map_or("n/a".to_string(), |h| format!("{h:.0} KiB"));
        let _ = writeln!(
            out,
            "  cost                       {:.1} CPU s ({:.0} µs per delivery), peak RSS {:.0} MiB, heap {heap} per agent",
            self.cpu_s, self.cpu_per_delivery_us, self.peak_rss_mib
        );
        let idle_cpu = self
            .idle_cpu_ms_per_agent_s
            .map_or("n/a".to_string(), |c| format!("{c:.2} ms"));
        let _ = writeln!(
            out,
            "  idle ({:.0} s, no tasks)      {idle_cpu} CPU per agent per second, connections per agent {}",
            self.idle_s,
            connections(self.connections_idle)
        );
        let _ = writeln!(
            out,
            "  connections per agent      {} (idle and during the workload)",
            connections(self.connections_per_agent)
        );
        let f = &self.faults;
        if f.killed + f.partitioned + f.hostile > 0 || f.latency_ms + f.jitter_ms + f.loss_pct > 0.0
        {
            let _ = writeln!(
                out,
                "  faults                     killed {}  restarted {}  partitioned {}  hostile {}  latency {}±{} ms  loss {}%  refused {}",
                f.killed,
                f.restarted,
                f.partitioned,
                f.hostile,
                f.latency_ms,
                f.jitter_ms,
                f.loss_pct,
                f.refused
            );
            if f.reassignment_ms.count > 0 {
                pct_row(&mut out, "crash -> replacement", &f.reassignment_ms);
            }
            if f.partitioned > 0 {
                let conv = f
                    .convergence_ms
                    .map_or("did not converge".to_string(), |c| format!("{c:.0} ms"));
                let _ = writeln!(out, "  convergence after heal     {conv}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (p.count, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        let one = Percentiles::of(vec![7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
    }

    #[test]
    fn the_table_names_every_headline_figure() {
        let r = Report {
            completed: 9,
            lost: 1,
            faults: FaultReport {
                killed: 3,
                ..FaultReport::default()
            },
            ..Report::default()
        };
        let t = r.table();
        for word in [
            "completed 9",
            "lost 1",
            "group formed",
            "killed 3",
            "per delivery",
        ] {
            assert!(t.contains(word), "{word} missing from\n{t}");
        }
    }

    #[test]
    fn the_table_says_when_a_run_is_invalid_and_shows_the_idle_figures() {
        let r = Report {
            valid: true,
            capacity: Some(5),
            idle_s: 10.0,
            idle_cpu_ms_per_agent_s: Some(0.25),
            connections_idle: Some(ConnectionFigure { mean: 4.5, max: 9 }),
            ..Report::default()
        };
        let t = r.table();
        assert!(!t.contains("INVALID"), "{t}");
        for word in ["capacity 5", "0.25 ms CPU per agent", "mean 4.5   max 9"] {
            assert!(t.contains(word), "{word} missing from\n{t}");
        }
        let lagged = Report {
            valid: false,
            events_lagged: 17,
            ..r
        };
        let t = lagged.table();
        assert!(
            t.contains("INVALID RUN") && t.contains("17 node events were missed"),
            "{t}"
        );
        let json = serde_json::to_value(&lagged).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["events_lagged"], 17);
        assert_eq!(json["connections_idle"]["max"], 9);
        assert!(json["connections_per_agent"].is_null());
    }
}
