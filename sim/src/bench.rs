//! `starling-sim bench`: one command, a fixed suite, results to `bench.json`, a table,
//! and two SVG charts (formation-latency CDF; latency against offered rate).

use std::{io::Write as _, path::Path, time::Instant};

use serde::Serialize;

use crate::{
    Report, SimError, SimOptions,
    cli::{BenchArgs, write_json},
    run,
};

/// Formation p99 a throughput step must stay under, ms.
pub const RAMP_P99_MS: f64 = 250.0;
/// Formation p99 a scale step must stay under, ms.
pub const SCALE_P99_MS: f64 = 1_000.0;

/// One step of the throughput ramp.
#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    /// Offered tasks per minute.
    pub rate: f64,
    /// The run.
    pub report: Report,
    /// A valid run (no node events missed), 100% completion and formation p99
    /// within [`RAMP_P99_MS`].
    pub sustained: bool,
}

/// One step of the scale test.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleStep {
    /// Agents.
    pub agents: usize,
    /// The run.
    pub report: Report,
    /// A valid run (no node events missed), 100% completion and formation p99
    /// within [`SCALE_P99_MS`].
    pub ok: bool,
    /// Why the run could not be made, if it could not.
    pub error: Option<String>,
}

/// The whole suite's results (the schema of `bench.json`).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResults {
    /// Seed of every run.
    pub seed: u64,
    /// Whether this was the shortened suite.
    pub quick: bool,
    /// (a) N=100 at 1,000 tasks/min.
    pub formation: Report,
    /// (b) The throughput ramp at N=100.
    pub ramp: Vec<RampStep>,
    /// (b) Highest rate sustained (tasks/min), if any step was.
    pub max_sustained_rate: Option<f64>,
    /// (c) Scale at 1,000 tasks/min.
    pub scale: Vec<ScaleStep>,
    /// (c) Largest N that completed everything with formation p99 ≤ 1 s.
    pub max_agents: Option<usize>,
    /// (d) One ed25519 `verify_strict`, µs (measured in this run).
    pub verify_us: f64,
    /// (d) CPU per delivered message at N=100, µs (from (a)).
    pub cpu_per_delivery_us: f64,
    /// (d) CPU per delivered message ÷ one verification.
    pub cpu_per_delivery_in_verifies: f64,
    /// (d) Bytes on the wire per task at N=100 (from (a)).
    pub bytes_per_task: f64,
    /// (e) 20% of agents crashed mid-run.
    pub faults: Report,
    /// Seconds the suite took.
    pub wall_s: f64,
}

/// The raw cost of one ed25519 `verify_strict` on this machine, µs.
pub fn verify_cost_us() -> f64 {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7; 32]);
    let msg = [0x5au8; 200];
    let sig = key.sign(&msg);
    let public = key.verifying_key();
    let rounds = 3_000;
    let t = Instant::now();
    let mut ok = 0;
    for _ in 0..rounds {
        if public
            .verify_strict(std::hint::black_box(&msg), std::hint::black_box(&sig))
            .is_ok()
        {
            ok += 1;
        }
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    std::hint::black_box(ok);
    per
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// The suite's reference load: 1,000 tasks/min, no work failures.
fn base(seed: u64) -> SimOptions {
    SimOptions {
        seed,
        rate: 1_000.0,
        failure_rate: Some(0.0),
        drain: std::time::Duration::from_secs(30),
        ..SimOptions::default()
    }
}

fn complete(r: &Report) -> bool {
    r.tasks > 0 && r.completed == r.tasks
}

/// Why a run counts for no target, if it counts for none: the simulation missed
/// node events, so its losses and latencies cannot be trusted.
fn invalid_note(r: &Report) -> String {
    if r.valid {
        String::new()
    } else {
        format!(
            " (invalid run: {} node events missed; it counts for no target)",
            r.events_lagged
        )
    }
}

/// Runs the suite and writes `bench.json`, `formation-cdf.svg` and
/// `latency-vs-rate.svg` into `args.out`.
pub fn run_suite(args: &BenchArgs) -> Result<(), SimError> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out).map_err(|e| SimError::Write {
        path: args.out.display().to_string(),
        reason: e.to_string(),
    })?;
    let scale_tasks = if args.quick { 150 } else { 300 };
    say("(d) measuring one ed25519 verify_strict");
    let verify_us = verify_cost_us();

    say("(a) formation latency: 100 agents, 1,000 tasks/min");
    let formation = run(&SimOptions {
        tasks: if args.quick { 200 } else { 500 },
        ..base(args.seed)
    })?;
    say(&formation.table());

    say("(b) throughput ramp at 100 agents");
    let rates: &[f64] = if args.quick {
        &[250.0, 1_000.0, 4_000.0, 15_000.0]
    } else {
        &[
            250.0, 500.0, 1_000.0, 2_000.0, 4_000.0, 8_000.0, 15_000.0, 20_000.0, 30_000.0,
        ]
    };
    let mut ramp = Vec::new();
    for &rate in rates {
        // About 15 s of load per step (at least 200 tasks).
        let tasks = ((rate / 60.0 * 15.0) as usize).max(200);
        let report = run(&SimOptions {
            rate,
            tasks,
            ..base(args.seed)
        })?;
        let sustained = report.valid && complete(&report) && report.formation_ms.p99 <= RAMP_P99_MS;
        say(&format!(
            "  {rate:>7.0}/min: completed {}/{}  formation p50 {:.1} p99 {:.1} ms  achieved {:.0}/min  {}{}",
            report.completed,
            report.tasks,
            report.formation_ms.p50,
            report.formation_ms.p99,
            report.tasks_per_min,
            if sustained {
                "sustained"
            } else {
                "NOT sustained"
            },
            invalid_note(&report)
        ));
        ramp.push(RampStep {
            rate,
            report,
            sustained,
        });
        if !sustained {
            break;
        }
    }
    let max_sustained_rate = ramp
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.rate)
        .reduce(f64::max);

    say("(c) scale at 1,000 tasks/min");
    let sizes: &[usize] = if args.quick {
        &[100, 300]
    } else {
        &[100, 300, 1_000]
    };
    let mut scale = Vec::new();
    for &agents in sizes {
        let report = match run(&SimOptions {
            agents,
            tasks: scale_tasks,
            ..base(args.seed)
        }) {
            Ok(r) => r,
            // A mesh that cannot even start at this size is a result, not the end
            // of the suite.
            Err(e) => {
                say(&format!("  N={agents:>5}: did not run: {e}"));
                scale.push(ScaleStep {
                    agents,
                    report: Report {
                        agents,
                        ..Report::default()
                    },
                    ok: false,
                    error: Some(e.to_string()),
                });
                break;
            }
        };
        let ok = report.valid && complete(&report) && report.formation_ms.p99 <= SCALE_P99_MS;
        say(&format!(
            "  N={agents:>5}: completed {}/{}  formation p99 {:.1} ms  RSS {:.0} MiB  heap/agent {}  start {:.1} s  idle CPU {}  connections {}{}",
            report.completed,
            report.tasks,
            report.formation_ms.p99,
            report.peak_rss_mib,
            report
                .heap_per_agent_kib
                .map_or("n/a".into(), |h| format!("{h:.0} KiB")),
            report.startup_s,
            report
                .idle_cpu_ms_per_agent_s
                .map_or("n/a".into(), |c| format!("{c:.2} ms/agent/s")),
            report
                .connections_per_agent
                .map_or("n/a".into(), |c| format!(
                    "mean {:.1} max {}",
                    c.mean, c.max
                )),
            invalid_note(&report)
        ));
        scale.push(ScaleStep {
            agents,
            report,
            ok,
            error: None,
        });
    }
    let max_agents = scale.iter().filter(|s| s.ok).map(|s| s.agents).max();

    say("(e) faults: 20% of 100 agents crashed mid-run");
    let faults = run(&SimOptions {
        tasks: if args.quick { 200 } else { 400 },
        kill_pct: 20.0,
        kill_at: std::time::Duration::from_secs(6),
        drain: std::time::Duration::from_secs(60),
        ..base(args.seed)
    })?;
    say(&faults.table());

    let results = BenchResults {
        seed: args.seed,
        quick: args.quick,
        cpu_per_delivery_us: formation.cpu_per_delivery_us,
        cpu_per_delivery_in_verifies: formation.cpu_per_delivery_us / verify_us.max(1e-9),
        bytes_per_task: formation.bytes_per_task,
        formation,
        ramp,
        max_sustained_rate,
        scale,
        max_agents,
        verify_us,
        faults,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let json = args.out.join("bench.json");
    write_json(&json, &results)?;
    charts::formation_cdf(&args.out.join("formation-cdf.svg"), &results)?;
    charts::latency_vs_rate(&args.out.join("latency-vs-rate.svg"), &results)?;
    say(&summary(&results));
    say(&format!(
        "results: {} (and formation-cdf.svg, latency-vs-rate.svg)",
        json.display()
    ));
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "met" } else { "NOT met" }
}

/// The suite's table, with each target and whether it was met.
pub fn summary(r: &BenchResults) -> String {
    let f = &r.formation.formation_ms;
    let n1000 = r
        .scale
        .iter()
        .any(|s| s.agents >= 1_000 && s.report.valid && complete(&s.report));
    let e = &r.faults;
    let a = &r.formation;
    let lines = [
        "target                                         measured                     ".to_string(),
        format!(
            "formation p50 <= 10 ms, p99 <= 50 ms (N=100)  p50 {:.1} / p99 {:.1} ms        {}{}",
            f.p50,
            f.p99,
            yes(a.valid && f.p50 <= 10.0 && f.p99 <= 50.0),
            invalid_note(a)
        ),
        format!(
            ">= 15,000 tasks/min sustained (N=100)         {}        {}",
            r.max_sustained_rate
                .map_or("none".into(), |x| format!("{x:.0}/min")),
            yes(r.max_sustained_rate.unwrap_or(0.0) >= 15_000.0)
        ),
        format!(
            "N = 1,000 agents in one process              largest ok N = {}        {}",
            r.max_agents.map_or("none".into(), |n| n.to_string()),
            yes(n1000)
        ),
        format!(
            "CPU per delivery <= 3x verify ({:.1} µs)       {:.1} µs = {:.1}x        {}",
            r.verify_us,
            r.cpu_per_delivery_us,
            r.cpu_per_delivery_in_verifies,
            yes(r.cpu_per_delivery_in_verifies <= 3.0)
        ),
        format!(
            "20% killed: 100% done, 0 lost, 0 twice       {}/{} done, {} lost, {} orphaned, {} twice, reassign p50 {:.0} / p99 {:.0} ms   {}{}",
            e.completed,
            e.tasks,
            e.lost,
            e.orphaned,
            e.duplicated,
            e.faults.reassignment_ms.p50,
            e.faults.reassignment_ms.p99,
            yes(e.valid && e.lost == 0 && e.duplicated == 0 && e.completed + e.orphaned == e.tasks),
            invalid_note(e)
        ),
        format!(
            "idle CPU per agent (N=100, no tasks)          {}",
            a.idle_cpu_ms_per_agent_s
                .map_or("n/a".into(), |c| format!("{c:.2} ms per second"))
        ),
        format!(
            "connections per agent (N=100)                 {}",
            a.connections_per_agent.map_or("n/a".into(), |c| format!(
                "mean {:.1}, max {}",
                c.mean, c.max
            ))
        ),
        format!(
            "bytes on the wire per task (N=100)            {:.0}",
            r.bytes_per_task
        ),
        format!(
            "suite wall time                               {:.0} s",
            r.wall_s
        ),
    ];
    lines.join("\n")
}

mod charts {
    //! The two SVG charts.

    use plotters::prelude::*;

    use super::{BenchResults, Path, SimError};

    fn err(path: &Path, e: impl std::fmt::Display) -> SimError {
        SimError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// The formation-latency CDF of run (a).
    pub(super) fn formation_cdf(path: &Path, r: &BenchResults) -> Result<(), SimError> {
        let mut samples = r.formation.formation_samples.clone();
        samples.sort_by(f64::total_cmp);
        let max = samples.last().copied().unwrap_or(1.0).max(1.0);
        let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "announce -> group formed, N=100 at 1,000 tasks/min",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max * 1.05, 0f64..1f64)
            .map_err(|e| err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("latency (ms)")
            .y_desc("fraction of tasks")
            .draw()
            .map_err(|e| err(path, e))?;
        let n = samples.len().max(1) as f64;
        chart
            .draw_series(LineSeries::new(
                samples
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (*x, (i + 1) as f64 / n)),
                &BLUE,
            ))
            .map_err(|e| err(path, e))?;
        root.present().map_err(|e| err(path, e))
    }

    /// Formation p50 and p99 against the offered rate (the ramp).
    pub(super) fn latency_vs_rate(path: &Path, r: &BenchResults) -> Result<(), SimError> {
        let points: Vec<(f64, f64, f64)> = r
            .ramp
            .iter()
            .map(|s| (s.rate, s.report.formation_ms.p50, s.report.formation_ms.p99))
            .collect();
        let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
        let max_y = points.iter().map(|p| p.2).fold(1.0, f64::max);
        let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "formation latency vs offered rate, N=100",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max_x * 1.05, 0f64..max_y * 1.1)
            .map_err(|e| err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("offered tasks/min")
            .y_desc("latency (ms)")
            .draw()
            .map_err(|e| err(path, e))?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), &BLUE))
            .map_err(|e| err(path, e))?
            .label("p50")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), &RED))
            .map_err(|e| err(path, e))?
            .label("p99")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(path, e))?;
        root.present().map_err(|e| err(path, e))
    }
}
