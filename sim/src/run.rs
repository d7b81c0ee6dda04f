//! One run: start the mesh, play the workload and the fault schedule on a timeline,
//! wait for the stragglers, then measure.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use indicatif::{ProgressBar, ProgressStyle};
use starling_node::{LinkFaults, NodeEvent};
use starling_protocol::{AgentId, Event, TaskId, TaskSpec};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{
    SimError, SimOptions,
    analysis::{Announced, Crashes, analyse},
    hostile,
    mesh::{Mesh, Stamped},
    report::{FaultReport, Report},
    resources,
    sample::{ConnectionSampler, idle_window},
    workload::{Hostility, TaskPlan, Workload, generate},
};

/// Runs the simulation `opts` describes on a runtime of its own (two worker threads,
/// like the machine) and returns its report.
pub fn run(opts: &SimOptions) -> Result<Report, SimError> {
    opts.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SimError::Mesh(format!("runtime: {e}")))?;
    let report = rt.block_on(run_on(opts));
    rt.shutdown_timeout(Duration::from_secs(5));
    report
}

/// What happens when, from the first announcement.
#[derive(Debug, Clone)]
enum Action {
    Announce(usize),
    Kill,
    Restart,
    Partition,
    Heal,
}

fn timeline(opts: &SimOptions, w: &Workload) -> Vec<(Duration, Action)> {
    let mut t: Vec<(Duration, Action)> = w
        .tasks
        .iter()
        .enumerate()
        .map(|(i, p)| (p.at, Action::Announce(i)))
        .collect();
    if !w.killed.is_empty() {
        t.push((opts.kill_at, Action::Kill));
        if let Some(after) = opts.restart_after {
            t.push((opts.kill_at + after, Action::Restart));
        }
    }
    if !w.cut_off.is_empty() {
        t.push((opts.partition_at, Action::Partition));
        t.push((opts.heal_at, Action::Heal));
    }
    // Stable: at equal times, faults act after the announcements already due.
    t.sort_by_key(|(at, _)| *at);
    t
}

/// Three gossip heartbeats: long enough for every skill topic to have its mesh.
const GOSSIP_SETTLING: Duration = Duration::from_millis(2_100);

fn spec(plan: &TaskPlan, i: usize) -> TaskSpec {
    TaskSpec {
        description: format!("simulated task {i}"),
        required: plan.required.clone(),
        priority: plan.priority,
        deadline_ms: Some(120_000),
        max_group_size: None,
        depends_on: Vec::new(),
        payload: (i as u64).to_le_bytes().to_vec(),
        consensus: false,
    }
}

fn bar(opts: &SimOptions, len: usize, what: &str) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(what.to_string());
    pb
}

/// Collects every stamped event until told to stop; counts distinct finished tasks.
fn collector(
    mut rx: mpsc::Receiver<Stamped>,
    finished: Arc<AtomicUsize>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Vec<Stamped>>) {
    let (stop_tx, mut stop) = oneshot::channel::<()>();
    let job = tokio::spawn(async move {
        let mut all = Vec::new();
        let mut done: BTreeSet<TaskId> = BTreeSet::new();
        let note = |s: &Stamped, done: &mut BTreeSet<TaskId>| {
            if let NodeEvent::Agent(Event::TaskFinished { task_id, .. }) = &s.event
                && done.insert(*task_id)
            {
                finished.fetch_add(1, Ordering::Relaxed);
            }
        };
        loop {
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => { note(&s, &mut done); all.push(s); }
                    None => break,
                },
                _ = &mut stop => break,
            }
        }
        while let Ok(s) = rx.try_recv() {
            note(&s, &mut done);
            all.push(s);
        }
        all
    });
    (stop_tx, job)
}

/// Sums a counter over every node's metrics text; `filter` must appear in the line.
fn metric_sum(texts: &[String], name: &str, filter: &str) -> f64 {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `kind` labels of delivered messages in the nodes' metrics.
fn message_kinds(texts: &[String]) -> std::collections::BTreeSet<String> {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with("starling_messages_in_total{"))
        .filter_map(|l| {
            l.split("kind=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .collect()
}

async fn run_on(opts: &SimOptions) -> Result<Report, SimError> {
    let workload = generate(opts);
    let faults = LinkFaults::new();
    faults.set_delay(opts.latency, opts.jitter, opts.loss_pct / 100.0);
    let (tx, rx) = mpsc::channel(1 << 16);
    let finished = Arc::new(AtomicUsize::new(0));
    let (stop_collector, collected) = collector(rx, finished.clone());

    resources::reset_peak_rss();
    let heap0 = resources::heap_bytes();
    let startup = Instant::now();
    let nodes = workload
        .agents
        .iter()
        .filter(|a| a.hostile != Some(Hostility::Forger))
        .count();
    let pb = bar(opts, nodes, "starting");
    let mut mesh = Mesh::start(&workload, opts, faults.clone(), tx, |n| {
        pb.set_position(n as u64)
    })
    .await?;
    pb.finish_and_clear();
    // Settled agents: joined, with their topic meshes.
    let pb = bar(opts, nodes, "joining");
    // A mesh is up when every agent has joined the DHT and has its skill
    // topics' gossip meshes (mesh_n_low peers each, or every other holder).
    // Joining is sequential work for the DHT: allow more time for bigger meshes.
    let limit = Duration::from_secs(120) + Duration::from_millis(300) * nodes as u32;
    let settled = mesh.wait_settled(&workload, limit, |n| pb.set_position(n as u64));
    if let Err(why) = settled.await {
        pb.abandon();
        return Err(SimError::Mesh(format!(
            "not every agent joined with its topic meshes within {} s: {why}",
            limit.as_secs()
        )));
    }
    pb.finish_and_clear();
    let startup_s = startup.elapsed().as_secs_f64();
    let heap_per_agent_kib = match (heap0, resources::heap_bytes()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / nodes as f64 / 1024.0),
        _ => None,
    };
    let idle = idle_window(&mesh, nodes).await;
    // Forgers are hostile traffic, part of the workload: they join after the idle
    // window, and get their own heartbeats to join the skill topics' meshes.
    let forgers = hostile::spawn_forgers(&workload, opts, &mesh)?;
    if !forgers.is_empty() {
        tokio::time::sleep(GOSSIP_SETTLING).await;
    }
    let ids: BTreeMap<AgentId, usize> = (0..workload.agents.len())
        .filter_map(|i| mesh.id(i).map(|id| (id, i)))
        .collect();

    // Counters at the start of the workload: the report counts only what tasks cost.
    let texts0 = mesh.all_metrics();
    let cpu0 = resources::cpu_seconds().unwrap_or(0.0);
    let pb = bar(opts, workload.tasks.len(), "tasks");
    let start = Instant::now();
    let mut sampler = ConnectionSampler::new(start, nodes);
    let mut crashes = Crashes::default();
    let mut announces = Vec::new();
    let mut heal_at = None;
    let mut spanning: BTreeSet<TaskId> = BTreeSet::new();
    for (at, action) in timeline(opts, &workload) {
        sampler.sleep_until(start + at, &mesh).await;
        pb.set_position(finished.load(Ordering::Relaxed) as u64);
        match action {
            Action::Announce(i) => {
                let plan = &workload.tasks[i];
                // A crashed initiator announces nothing: the next live agent does.
                let n = workload.agents.len();
                let initiator = (0..n)
                    .map(|k| (plan.initiator + k) % n)
                    .find(|k| workload.agents[*k].hostile.is_none() && mesh.handle(*k).is_some());
                let Some((initiator, handle)) =
                    initiator.and_then(|k| mesh.handle(k).map(|h| (k, h.clone())))
                else {
                    continue;
                };
                let spec = spec(plan, i);
                announces.push(tokio::spawn(async move {
                    let t0 = Instant::now();
                    handle.announce(spec).await.map(|(task_id, _)| Announced {
                        task_id,
                        at: t0,
                        initiator,
                    })
                }));
                pb.set_message(format!("announced {}", announces.len()));
            }
            Action::Kill => {
                for i in &workload.killed {
                    mesh.kill(*i);
                    crashes.killed.insert(*i, Instant::now());
                }
            }
            Action::Restart => {
                for i in &workload.killed {
                    if mesh.id(*i).is_some() {
                        mesh.restart(*i).await?;
                        crashes.restarted.insert(*i, Instant::now());
                    }
                }
            }
            Action::Partition => {
                let side: Vec<AgentId> = workload
                    .cut_off
                    .iter()
                    .filter_map(|i| mesh.id(*i))
                    .collect();
                faults.partition(&[side]);
            }
            Action::Heal => {
                spanning = spanning_groups(&mesh, &workload.cut_off).await;
                faults.heal();
                heal_at = Some(Instant::now());
            }
        }
    }
    let mut announced = Vec::new();
    for a in announces {
        if let Ok(Ok(a)) = a.await {
            announced.push(a);
        }
    }
    pb.set_message(format!("announced {}", announced.len()));
    let drain_until = Instant::now() + opts.drain;
    let mut convergence_ms = None;
    while Instant::now() < drain_until {
        sampler.sample_if_due(&mesh);
        let done = finished.load(Ordering::Relaxed);
        pb.set_position(done as u64);
        if let Some(h) = heal_at
            && convergence_ms.is_none()
            && converged(&mesh, &spanning).await
        {
            convergence_ms = Some(h.elapsed().as_secs_f64() * 1000.0);
        }
        if done >= announced.len() && (heal_at.is_none() || convergence_ms.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pb.finish_and_clear();
    let cpu_s = resources::cpu_seconds().unwrap_or(0.0) - cpu0;
    let peak_rss_mib = resources::peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
    let texts = mesh.all_metrics();
    if let Some(path) = &opts.metrics {
        std::fs::write(path, summed_metrics(&texts, &texts0)).map_err(|e| SimError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    for f in forgers {
        f.abort();
    }
    let lagged = mesh.events_lagged();
    mesh.shutdown().await;
    let _ = stop_collector.send(());
    let events = collected
        .await
        .map_err(|e| SimError::Mesh(format!("collector: {e}")))?;
    // Every forwarder has stopped: this counts every event the analysis missed.
    let events_lagged = lagged.load(Ordering::Relaxed);
    let mut connections = *sampler.samples();
    connections.merge(&idle.connections);
    let fig = analyse(&announced, &events, &crashes, &ids);

    let run_s = fig
        .last_finish
        .map_or(start.elapsed(), |t| t.saturating_duration_since(start))
        .as_secs_f64()
        .max(1e-3);
    let during = |name: &str, filter: &str| {
        (metric_sum(&texts, name, filter) - metric_sum(&texts0, name, filter)).max(0.0)
    };
    let sent = during("starling_messages_out_total", "");
    let delivered = during("starling_messages_in_total", "");
    let deliveries_by_kind = message_kinds(&texts)
        .into_iter()
        .map(|kind| {
            let filter = format!("kind=\"{kind}\"");
            let n = during("starling_messages_in_total", &filter);
            (kind, n / announced.len().max(1) as f64)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let verifications = during("starling_signature_verifications_total", "");
    let bytes = during("libp2p_bandwidth_bytes_total", "direction=\"Outbound\"");
    let n_tasks = announced.len().max(1) as f64;
    Ok(Report {
        seed: opts.seed,
        agents: opts.agents,
        transport: format!("{:?}", opts.transport).to_lowercase(),
        tasks: announced.len(),
        rate_per_min: opts.rate,
        capacity: opts.capacity,
        valid: events_lagged == 0,
        events_lagged,
        startup_s,
        run_s,
        completed: fig.completed,
        failed: fig.failed,
        failure_reasons: fig.failure_reasons.clone(),
        lost: fig.lost,
        orphaned: fig.orphaned,
        duplicated: fig.duplicated,
        formation_ms: fig.formation,
        formation_samples: fig.formation_samples,
        completion_ms: fig.completion,
        delivery_ms: fig.delivery,
        tasks_per_min: fig.completed as f64 / run_s * 60.0,
        messages_per_task: sent / n_tasks,
        bytes_per_task: bytes / n_tasks,
        delivered: delivered as u64,
        deliveries_per_task: delivered / n_tasks,
        deliveries_by_kind,
        cpu_ms_per_task: cpu_s * 1000.0 / n_tasks,
        verifications_per_delivery: if delivered > 0.0 {
            verifications / delivered
        } else {
            0.0
        },
        cpu_s,
        cpu_per_delivery_us: if delivered > 0.0 {
            cpu_s / delivered * 1e6
        } else {
            0.0
        },
        peak_rss_mib,
        heap_per_agent_kib,
        idle_cpu_ms_per_agent_s: idle.cpu_ms_per_agent_s,
        idle_s: idle.seconds,
        connections_idle: idle.connections.figure(),
        connections_per_agent: connections.figure(),
        faults: FaultReport {
            killed: crashes.killed.len(),
            restarted: crashes.restarted.len(),
            partitioned: workload.cut_off.len(),
            hostile: opts.byzantine,
            latency_ms: opts.latency.as_secs_f64() * 1000.0,
            jitter_ms: opts.jitter.as_secs_f64() * 1000.0,
            loss_pct: opts.loss_pct,
            reassignment_ms: fig.reassignment,
            convergence_ms,
            refused: fig.refused,
        },
    })
}

/// Every sample line of the agents' metrics, summed over the agents by series, less
/// what the same series held when the workload started (`before`).
fn summed_metrics(texts: &[String], before: &[String]) -> String {
    let sum = |texts: &[String]| {
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for line in texts.iter().flat_map(|t| t.lines()) {
            if line.starts_with('#') {
                continue;
            }
            if let Some((series, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.parse::<f64>()
            {
                *sums.entry(series.to_string()).or_default() += v;
            }
        }
        sums
    };
    let start = sum(before);
    sum(texts)
        .into_iter()
        .map(|(k, v)| format!("{k} {}\n", v - start.get(&k).copied().unwrap_or(0.0)))
        .collect()
}

/// Groups held on both sides of the partition.
async fn spanning_groups(mesh: &Mesh, cut_off: &[usize]) -> BTreeSet<TaskId> {
    let cut: BTreeSet<usize> = cut_off.iter().copied().collect();
    let mut sides: BTreeMap<TaskId, (bool, bool)> = BTreeMap::new();
    for (i, h) in mesh.live() {
        for g in h.groups().await.unwrap_or_default() {
            let e = sides.entry(g.task_id).or_default();
            if cut.contains(&i) {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    sides
        .into_iter()
        .filter(|(_, (a, b))| *a && *b)
        .map(|(t, _)| t)
        .collect()
}

/// Whether every live holder of each of `groups` has the same heads (groups every
/// holder has closed count as converged: they finished).
async fn converged(mesh: &Mesh, groups: &BTreeSet<TaskId>) -> bool {
    let mut heads: BTreeMap<TaskId, BTreeSet<Vec<starling_crdt::ChangeHash>>> = BTreeMap::new();
    for (_, h) in mesh.live() {
        for g in h.groups().await.unwrap_or_default() {
            if groups.contains(&g.task_id) {
                heads.entry(g.task_id).or_default().insert(g.heads);
            }
        }
    }
    heads.values().all(|h| h.len() <= 1)
}
