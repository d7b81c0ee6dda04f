//! The simulated mesh: N real `starling-node` nodes in this process, bootstrapped
//! through the DHT from one address each, their events timestamped into one channel;
//! crash, restart and partition on command. Every agent keeps its state in a data
//! directory of its own (under a fresh temporary root per run, removed at shutdown),
//! as an agent on a host of its own would.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use libp2p::Multiaddr;
use starling_node::{
    Handle, LinkFaults, NodeConfig, NodeEvent, SyntheticHandler, TaskHandler, spawn,
};
use starling_protocol::{AgentConfig, AgentId, Keypair};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tracing::debug;

use crate::{
    SimError, SimOptions, Transport,
    workload::{Hostility, Rng, Workload},
};

/// One node's event, as the simulation saw it.
#[derive(Debug, Clone)]
pub struct Stamped {
    /// When it arrived.
    pub at: Instant,
    /// Which agent (index into the workload's agents).
    pub agent: usize,
    /// The event.
    pub event: NodeEvent,
}

/// One running (or crashed) agent.
struct SimAgent {
    config: NodeConfig,
    handler: Arc<dyn TaskHandler>,
    handle: Handle,
    join: Option<JoinHandle<()>>,
    forwarder: Option<JoinHandle<()>>,
}

/// The running mesh.
pub struct Mesh {
    agents: Vec<Option<SimAgent>>,
    /// Metrics of agents' earlier lives (before a crash), kept for the report.
    retired: Vec<Handle>,
    faults: Arc<LinkFaults>,
    events: mpsc::Sender<Stamped>,
    /// How the agents listen (a restarted agent listens anew).
    transport: Transport,
    /// Node events the forwarders missed because they fell behind, over all agents.
    lagged: Arc<AtomicU64>,
    /// Where the agents' data directories are; `None` once removed.
    data_root: Option<PathBuf>,
    /// The fewest peers the agents' topic meshes keep (their `mesh_n_low`).
    mesh_low: usize,
}

/// Keeps only the events the report uses, so the collector keeps up.
fn wanted(e: &NodeEvent) -> bool {
    use starling_protocol::Event as E;
    match e {
        NodeEvent::AnnouncementReceived { .. } | NodeEvent::Refused { .. } => true,
        NodeEvent::Agent(a) => matches!(
            a,
            E::GroupFormed { .. }
                | E::TaskFinished { .. }
                | E::MemberFailed { .. }
                | E::ReplacementStarted { .. }
                | E::CoordinatorChanged { .. }
        ),
        _ => false,
    }
}

/// Forwards agent `agent`'s wanted events, stamped, to `tx`; counts into `lagged` the
/// events it missed because it fell behind the node's broadcast channel.
fn forward(
    agent: usize,
    handle: &Handle,
    tx: mpsc::Sender<Stamped>,
    lagged: Arc<AtomicU64>,
) -> JoinHandle<()> {
    let mut rx = handle.events();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) if wanted(&event) => {
                    let s = Stamped {
                        at: Instant::now(),
                        agent,
                        event,
                    };
                    if tx.send(s).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    debug!(agent, lagged = n, "event forwarder fell behind");
                    lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

impl Mesh {
    /// Starts every honest and claim-lying agent of `workload` (forgers are not nodes:
    /// see [`crate::hostile`]), each bootstrapped from one earlier agent, and waits
    /// until each is connected.
    pub async fn start(
        workload: &Workload,
        opts: &SimOptions,
        faults: Arc<LinkFaults>,
        events: mpsc::Sender<Stamped>,
        mut progress: impl FnMut(usize),
    ) -> Result<Mesh, SimError> {
        let data_root = fresh_data_root(opts.seed)?;
        let mut rng = Rng::new(opts.seed ^ 0xb007);
        let mut mesh = Mesh {
            agents: Vec::with_capacity(workload.agents.len()),
            retired: Vec::new(),
            faults,
            events,
            transport: opts.transport,
            lagged: Arc::new(AtomicU64::new(0)),
            data_root: Some(data_root),
            mesh_low: 1,
        };
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for (i, plan) in workload.agents.iter().enumerate() {
            if plan.hostile == Some(Hostility::Forger) {
                mesh.agents.push(None);
                continue;
            }
            let keypair = Keypair::from_secret_bytes(plan.key_seed);
            let mut agent = AgentConfig {
                skills: plan.skills.clone(),
                ..AgentConfig::default()
            };
            if let Some(capacity) = opts.capacity {
                agent.max_concurrent_tasks = capacity;
            }
            let mut config = NodeConfig::new(keypair, agent);
            mesh.mesh_low = config.mesh_n_low();
            config.listen = vec![listen_addr(opts.transport)?];
            if !addrs.is_empty() {
                // Like a real host: one known address to join through.
                let k = rng.below(addrs.len().min(8));
                config.bootstrap = vec![addrs[k].clone()];
            }
            config.rng_seed = opts.seed ^ (i as u64).wrapping_mul(0x9e37_79b9);
            config.link_faults = Some(mesh.faults.clone());
            config.data_dir = mesh
                .data_root
                .as_ref()
                .map(|r| r.join(format!("agent-{i}")));
            let handler: Arc<dyn TaskHandler> = Arc::new(SyntheticHandler {
                mean: None,
                failure_rate: match plan.hostile {
                    Some(Hostility::FalseClaims) => Some(1.0),
                    _ => opts.failure_rate,
                },
                time_scale: 1.0,
                steps: 4,
                salt: config.rng_seed,
            });
            let agent = mesh.launch(i, config, handler).await?;
            addrs.push(agent.handle.listen_addrs()[0].clone());
            mesh.agents.push(Some(agent));
            progress(i + 1);
        }
        Ok(mesh)
    }

    async fn launch(
        &mut self,
        i: usize,
        config: NodeConfig,
        handler: Arc<dyn TaskHandler>,
    ) -> Result<SimAgent, SimError> {
        let (handle, join) = spawn(config.clone(), handler.clone())
            .await
            .map_err(|e| SimError::Mesh(format!("agent {i}: {e}")))?;
        let forwarder = forward(i, &handle, self.events.clone(), self.lagged.clone());
        Ok(SimAgent {
            config,
            handler,
            handle,
            join: Some(join),
            forwarder: Some(forwarder),
        })
    }

    /// Handles of the live agents, with their indices.
    pub fn live(&self) -> Vec<(usize, Handle)> {
        self.agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                a.as_ref()
                    .filter(|a| a.join.is_some())
                    .map(|a| (i, a.handle.clone()))
            })
            .collect()
    }

    /// The handle of agent `i`, if it runs.
    pub fn handle(&self, i: usize) -> Option<&Handle> {
        self.agents
            .get(i)?
            .as_ref()
            .filter(|a| a.join.is_some())
            .map(|a| &a.handle)
    }

    /// The agent id of agent `i`, if it is a node.
    pub fn id(&self, i: usize) -> Option<AgentId> {
        self.agents.get(i)?.as_ref().map(|a| a.handle.id())
    }

    /// The metrics text of every live agent (crashed ones excluded).
    pub fn live_metrics(&self) -> Vec<String> {
        self.live().iter().map(|(_, h)| h.metrics_text()).collect()
    }

    /// The counter of node events the forwarders missed (it keeps counting until the
    /// agents are shut down).
    pub fn events_lagged(&self) -> Arc<AtomicU64> {
        self.lagged.clone()
    }

    /// Every handle, live or crashed (metrics survive a crash), for the report.
    pub fn all_metrics(&self) -> Vec<String> {
        self.agents
            .iter()
            .flatten()
            .map(|a| a.handle.metrics_text())
            .chain(self.retired.iter().map(|h| h.metrics_text()))
            .collect()
    }

    /// Waits until every live agent has joined the DHT and has a gossip mesh in each
    /// of its skill topics: its `mesh_n_low` peers, or every other live holder of
    /// the skill if there are fewer (or until the limit passes). If some did not,
    /// says how the first few of them stand. `progress` is told how many have
    /// settled so far after every pass.
    pub async fn wait_settled(
        &self,
        workload: &Workload,
        limit: Duration,
        mut progress: impl FnMut(usize),
    ) -> Result<(), String> {
        let min_mesh = self.mesh_low;
        let deadline = Instant::now() + limit;
        let live = self.live();
        let holders = |skill: &str| {
            live.iter()
                .filter(|(i, _)| workload.agents[*i].skills.iter().any(|s| s.name == skill))
                .count()
        };
        let mut waiting = live.clone();
        loop {
            // Asked all at once: one by one, a pass over a busy mesh takes longer
            // than the mesh takes to settle, and the figure would be the pass's.
            let statuses = futures::future::join_all(waiting.iter().map(|(_, h)| h.status())).await;
            let mut still = Vec::new();
            for ((i, h), status) in waiting.into_iter().zip(statuses) {
                let status = status.ok();
                let settled = status.as_ref().is_some_and(|s| {
                    s.settled(min_mesh, |skill| Some(holders(skill).saturating_sub(1)))
                });
                if !settled {
                    still.push((i, h, status));
                }
            }
            progress(live.len() - still.len());
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = still
                    .iter()
                    .take(3)
                    .map(|(i, _, status)| match status {
                        None => format!("agent {i}: no status (stopped?)"),
                        Some(s) => format!(
                            "agent {i}: {}, {} connections, mesh peers {}",
                            if s.joined { "joined" } else { "not joined" },
                            s.connections,
                            s.topics
                                .iter()
                                .map(|t| format!(
                                    "{} {}/{} (of {} subscribers)",
                                    t.skill,
                                    t.mesh_peers,
                                    holders(&t.skill).saturating_sub(1).min(min_mesh),
                                    t.subscribers
                                ))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                    .collect();
                return Err(format!(
                    "{} of {} agents not settled; {}",
                    still.len(),
                    live.len(),
                    shown.join("; ")
                ));
            }
            waiting = still.into_iter().map(|(i, h, _)| (i, h)).collect();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Crashes agent `i`: its task is aborted, its connections drop; no goodbye.
    pub fn kill(&mut self, i: usize) {
        if let Some(Some(a)) = self.agents.get_mut(i) {
            if let Some(j) = a.join.take() {
                j.abort();
            }
            if let Some(f) = a.forwarder.take() {
                f.abort();
            }
        }
    }

    /// Restarts a crashed agent from its data directory.
    pub async fn restart(&mut self, i: usize) -> Result<(), SimError> {
        let Some(Some(old)) = self.agents.get_mut(i).map(Option::take) else {
            return Ok(());
        };
        // The old actor must be gone (its listener released) before the new one binds.
        if let Some(j) = old.join {
            j.abort();
        }
        self.retired.push(old.handle.clone());
        let mut config = old.config.clone();
        // A new address, as a host coming back may get: a memory-transport port stays
        // taken after its swarm is dropped without closing its listener.
        config.listen = vec![listen_addr(self.transport)?];
        config.bootstrap = self
            .live()
            .first()
            .map(|(_, h)| h.listen_addrs().to_vec())
            .unwrap_or_default();
        let mut attempt = 0;
        let agent = loop {
            match self.launch(i, config.clone(), old.handler.clone()).await {
                Ok(a) => break a,
                // The crashed node's runtime may still be releasing its address.
                Err(_) if attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Stops every live agent (graceful leave) and removes the data directories.
    pub async fn shutdown(mut self) {
        let live = self.live();
        let stops = live.iter().map(|(_, h)| h.shutdown());
        let _ =
            tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(stops)).await;
        self.stop_and_clean();
    }

    /// Aborts every agent's task and forwarder, then removes the data directories.
    fn stop_and_clean(&mut self) {
        for a in self.agents.iter_mut().flatten() {
            if let Some(j) = a.join.take() {
                j.abort();
            }
            if let Some(f) = a.forwarder.take() {
                f.abort();
            }
        }
        if let Some(root) = self.data_root.take() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

impl Drop for Mesh {
    /// A mesh dropped without [`Mesh::shutdown`] (a run that stopped on an error)
    /// still stops its agents and leaves no data directories behind.
    fn drop(&mut self) {
        self.stop_and_clean();
    }
}

static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// A new, empty directory under the system's temporary directory for one run's
/// agent data directories (runs of a benchmark share the process and the seed).
fn fresh_data_root(seed: u64) -> Result<PathBuf, SimError> {
    let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
    let root =
        std::env::temp_dir().join(format!("starling-sim-{}-{seed}-{run}", std::process::id()));
    // Left over from an earlier process with the same id: not this run's state.
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)
        .map_err(|e| SimError::Mesh(format!("data directory {}: {e}", root.display())))?;
    Ok(root)
}

/// A fresh address for an agent to listen on.
fn listen_addr(transport: Transport) -> Result<Multiaddr, SimError> {
    match transport {
        Transport::Memory => format!("/memory/{}", memory_port()),
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0".to_string(),
    }
    .parse()
    .map_err(|e| SimError::Mesh(format!("listen address: {e}")))
}

static NEXT_PORT: AtomicU64 = AtomicU64::new(1);

/// A memory-transport port no other agent of this process uses (runs of a benchmark
/// share the process).
fn memory_port() -> u64 {
    let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    (u64::from(std::process::id()) << 32) + n
}
