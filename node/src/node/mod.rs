//! The node actor: one task, one loop, bounded channels. It verifies every inbound
//! envelope once (signature, audience, freshness, replay), feeds the protocol, and
//! carries out the protocol's outputs on the swarm.

mod cards;
mod connections;
mod direct;
mod discovery;
mod links;
mod meshes;
mod persist;
mod status;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify,
    request_response::{self, OutboundRequestId},
    swarm::SwarmEvent,
};
use starling_protocol::{
    Agent, AgentId, Audience, Command, Event, Input, Message, Outcome, Output, PartResult,
    ReplayGuard, SignedEnvelope, TaskId, TaskSpec, consensus::Certificate,
};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tracing::{Instrument, debug, info, trace, warn};

pub use self::status::{MeshStatus, TopicStatus};
use self::{direct::PendingSend, persist::Persister};
use crate::{
    NodeConfig, NodeError, Result,
    behaviour::{StarlingBehaviour, StarlingEvent},
    handler::{ExecutorReport, ProgressSink, TaskHandler},
    metrics::{Metrics, encode_text, refusal_reason},
    store::StoreOp,
    swarm::{self, agent_of, peer_id_of},
};

/// Milliseconds since the Unix epoch.
/// Whether a listen address binds every interface (`0.0.0.0` or `::`).
fn is_unspecified(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => ip.is_unspecified(),
        _ => false,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Publications kept for a topic that has no subscriber yet, at most.
const UNSENT_LIMIT: usize = 256;
/// How long such a publication waits for a subscriber (well inside the receivers'
/// freshness window).
const UNSENT_FOR: Duration = Duration::from_secs(10);

/// Outcomes kept in memory for `Handle::task` (the store keeps all of them).
const FINISHED_IN_MEMORY: usize = 10_000;

/// How a task this node coordinated ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedTask {
    /// The task.
    pub task_id: TaskId,
    /// How it ended.
    pub outcome: Outcome,
    /// The members' results.
    pub results: Vec<PartResult>,
    /// The validators' certificate, for consensus tasks.
    pub certificate: Option<Certificate>,
}

/// A working group this node holds a document of, as the document says.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// The task.
    pub task_id: TaskId,
    /// Who coordinates it now.
    pub coordinator: AgentId,
    /// Lifecycle stage.
    pub status: starling_crdt::TaskStatus,
    /// Whether every required skill is covered.
    pub complete: bool,
    /// (skill, member, status) for every invited agent.
    pub members: Vec<(String, AgentId, starling_crdt::MemberStatus)>,
    /// The document's heads: replicas with equal heads hold the same document.
    pub heads: Vec<starling_crdt::ChangeHash>,
}

/// A task this node is involved in.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    /// The task.
    pub task_id: TaskId,
    /// This node coordinates it.
    pub coordinating: bool,
    /// This node works on it.
    pub member: bool,
    /// How it ended, if it has (for tasks this node finished).
    pub outcome: Option<Outcome>,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its agent id.
    pub id: AgentId,
    /// The addresses we are connected on.
    pub addrs: Vec<Multiaddr>,
    /// The gossip topics it told us it subscribes to (a skill's topic is
    /// `starling_protocol::skill_topic(skill)`), sorted.
    pub topics: Vec<String>,
}

/// What a node reports to its subscribers.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// A protocol event.
    Agent(Event),
    /// Connected to a peer.
    PeerConnected(AgentId),
    /// Lost the last connection to a peer.
    PeerDisconnected(AgentId),
    /// A task announcement arrived by gossip and verified.
    AnnouncementReceived {
        /// The task.
        task_id: TaskId,
        /// Its initiator (the envelope's signer).
        from: AgentId,
    },
    /// An inbound message was refused (bad signature, wrong audience, replay, …).
    Refused {
        /// The peer it came from (the forwarder, for gossip).
        peer: Option<AgentId>,
        /// Why.
        reason: String,
    },
}

type AnnounceReply = oneshot::Sender<Result<(TaskId, oneshot::Receiver<FinishedTask>)>>;

enum NodeCommand {
    Announce {
        spec: TaskSpec,
        reply: AnnounceReply,
    },
    Send {
        to: AgentId,
        message: Message,
        reply: oneshot::Sender<()>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<()>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Status {
        reply: oneshot::Sender<MeshStatus>,
    },
    Groups {
        reply: oneshot::Sender<Vec<GroupInfo>>,
    },
    Tasks {
        reply: oneshot::Sender<Vec<TaskInfo>>,
    },
    Task {
        task_id: TaskId,
        reply: oneshot::Sender<Result<Option<FinishedTask>>>,
    },
    Providers {
        skill: String,
        reply: oneshot::Sender<Vec<AgentId>>,
    },
    Card {
        agent: AgentId,
        reply: oneshot::Sender<Option<starling_protocol::AgentCard>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Talks to a running node. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<NodeCommand>,
    events: broadcast::Sender<NodeEvent>,
    id: AgentId,
    listen_addrs: Vec<Multiaddr>,
    registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
}

impl Handle {
    /// The node's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        encode_text(&self.registry)
    }

    /// This node's agent id.
    pub fn id(&self) -> AgentId {
        self.id
    }

    /// The addresses the node listens on (with `/p2p/<id>` appended).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Subscribes to the node's events.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> NodeCommand) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Announces a task; returns its id and a receiver that resolves when the task
    /// finishes (if this node still coordinates it then).
    pub async fn announce(
        &self,
        spec: TaskSpec,
    ) -> Result<(TaskId, oneshot::Receiver<FinishedTask>)> {
        self.call(|reply| NodeCommand::Announce { spec, reply })
            .await?
    }

    /// Sends a message directly to an agent, sealed by this node's agent.
    pub async fn send(&self, to: AgentId, message: Message) -> Result<()> {
        self.call(|reply| NodeCommand::Send { to, message, reply })
            .await
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.call(|reply| NodeCommand::Dial { addr, reply }).await?
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.call(|reply| NodeCommand::Peers { reply }).await
    }

    /// Agents providing `skill`, found through the DHT.
    pub async fn find_providers(&self, skill: &str) -> Result<Vec<AgentId>> {
        let skill = skill.to_string();
        self.call(|reply| NodeCommand::Providers { skill, reply })
            .await
    }

    /// An agent's signed card from the DHT (verified), if it published one.
    pub async fn card(&self, agent: AgentId) -> Result<Option<starling_protocol::AgentCard>> {
        self.call(|reply| NodeCommand::Card { agent, reply }).await
    }

    /// Whether this node has joined, and its skill topics' meshes.
    pub async fn status(&self) -> Result<MeshStatus> {
        self.call(|reply| NodeCommand::Status { reply }).await
    }

    /// The groups this node holds documents of, and those it finished coordinating
    /// and still answers stragglers for (their final documents, from tombstones).
    pub async fn groups(&self) -> Result<Vec<GroupInfo>> {
        self.call(|reply| NodeCommand::Groups { reply }).await
    }

    /// Tasks this node coordinates or works on now, and those it finished lately.
    pub async fn tasks(&self) -> Result<Vec<TaskInfo>> {
        self.call(|reply| NodeCommand::Tasks { reply }).await
    }

    /// How a task this node coordinated ended (also after a restart, with a data dir).
    pub async fn task(&self, task_id: TaskId) -> Result<Option<FinishedTask>> {
        self.call(|reply| NodeCommand::Task { task_id, reply })
            .await?
    }

    /// Leaves every group, then stops the node.
    pub async fn shutdown(&self) -> Result<()> {
        self.call(|reply| NodeCommand::Shutdown { reply }).await
    }
}

/// Starts a node: builds the swarm, listens, dials the bootstrap peers and runs the
/// actor on the current tokio runtime. Returns once every listen address is bound.
pub async fn spawn(
    config: NodeConfig,
    handler: Arc<dyn TaskHandler>,
) -> Result<(Handle, JoinHandle<()>)> {
    config.validate()?;
    // The store first: a data directory that is in use or belongs to another agent
    // stops the start before any address is bound.
    let store = match &config.data_dir {
        Some(dir) => Some(persist::open_store(dir, config.keypair.id()).await?),
        None => None,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let mut swarm = swarm::build(&config, &mut registry)?;
    let metrics = Metrics::new(registry);
    let me = config.keypair.id();
    let span = tracing::info_span!("node", id = %me.short());
    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        listeners.insert(id);
    }
    // A listener on an unspecified address (`0.0.0.0`) reports one address per
    // interface, one event each: once every listener has reported, keep taking
    // addresses for a moment, so that all of them are known (and printed).
    let wildcard = config.listen.iter().any(is_unspecified);
    let mut listen_addrs = Vec::new();
    let mut reported = HashSet::new();
    loop {
        let all_reported = reported.len() == listeners.len();
        if all_reported && !wildcard {
            break;
        }
        let wait = if all_reported {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(wait, swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr {
                listener_id,
                address,
            }) => {
                reported.insert(listener_id);
                listen_addrs
                    .push(address.with(libp2p::multiaddr::Protocol::P2p(*swarm.local_peer_id())));
            }
            Ok(SwarmEvent::ListenerError { error, .. })
            | Ok(SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            }) => {
                return Err(NodeError::Listen {
                    addr: format!("{:?}", config.listen),
                    reason: error.to_string(),
                });
            }
            Ok(_) => {}
            Err(_) if all_reported => break,
            Err(_) => {
                return Err(NodeError::Listen {
                    addr: format!("{:?}", config.listen),
                    reason: "timed out".into(),
                });
            }
        }
    }
    links::confirm_advertised(&mut swarm, &listen_addrs);
    let topics = config
        .agent
        .skills
        .iter()
        .map(|s| starling_protocol::skill_topic(&s.name));
    for topic in topics.chain([starling_protocol::card::CARDS_TOPIC.to_string()]) {
        let topic = gossipsub::IdentTopic::new(topic);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| NodeError::Swarm(e.to_string()))?;
    }
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, error = %e, "bootstrap peer unreachable; carrying on");
        }
    }
    let (tx, rx) = mpsc::channel(config.command_queue);
    let (events, _) = broadcast::channel(config.event_queue);
    let (exec_tx, exec_rx) = mpsc::channel(1024);
    let mut agent = Agent::new(
        config.agent.clone(),
        config.keypair.clone(),
        config.rng_seed,
    );
    let (persist, initial) = match store {
        Some(store) => {
            let mut restored = Vec::new();
            let initial = persist::restore(&store, &mut agent, &config, &mut restored)?;
            let mut persist = Persister::start(store);
            for (task_id, heads) in restored {
                persist.restored(task_id, heads);
            }
            (Some(persist), initial)
        }
        None => (None, Vec::new()),
    };
    let replay = ReplayGuard::new(
        config.replay_skew_ms,
        starling_protocol::replay::DEFAULT_WINDOW,
        20_000,
    );
    let actor = NodeActor {
        swarm,
        agent,
        me,
        replay,
        broadcasts: crate::flood::BroadcastLimiter::new(
            config.broadcast_rate,
            config.broadcast_burst,
        ),
        events: events.clone(),
        handler,
        exec_tx,
        executors: BTreeMap::new(),
        waiters: BTreeMap::new(),
        sends: BTreeMap::new(),
        retries: Vec::new(),
        in_flight: HashMap::new(),
        registry: metrics.registry(),
        metrics,
        queries: Default::default(),
        persist,
        reputation_saved: 0,
        penalties: Default::default(),
        links: links::Links::new(config.link_faults.clone(), config.rng_seed),
        finished: BTreeMap::new(),
        initial,
        listen_addrs: listen_addrs.clone(),
        discovered_with_peers: false,
        discovery_runs: 0,
        connections: connections::Connections::new(
            config.idle_connection_timeout,
            config.lookup_connection_timeout,
        ),
        card_gossip: Default::default(),
        lookups: Default::default(),
        unsent: Vec::new(),
        config,
    };
    let registry = actor.registry.clone();
    let join = tokio::spawn(actor.run(rx, exec_rx).instrument(span));
    let handle = Handle {
        tx,
        events,
        id: me,
        listen_addrs,
        registry,
    };
    Ok((handle, join))
}

struct NodeActor {
    swarm: Swarm<StarlingBehaviour>,
    agent: Agent,
    me: AgentId,
    replay: ReplayGuard,
    broadcasts: crate::flood::BroadcastLimiter,
    events: broadcast::Sender<NodeEvent>,
    handler: Arc<dyn TaskHandler>,
    exec_tx: mpsc::Sender<ExecutorReport>,
    executors: BTreeMap<TaskId, JoinHandle<()>>,
    waiters: BTreeMap<TaskId, Vec<oneshot::Sender<FinishedTask>>>,
    sends: BTreeMap<OutboundRequestId, PendingSend>,
    retries: Vec<(Instant, PendingSend)>,
    /// Direct requests sent to each peer and not yet answered or failed.
    in_flight: HashMap<PeerId, usize>,
    metrics: Metrics,
    registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
    queries: discovery::Queries,
    /// The store and its writer, with a data directory.
    persist: Option<Persister>,
    /// Observations in the reputation table when it was last saved.
    reputation_saved: u64,
    penalties: crate::penalty::Penalties,
    links: links::Links,
    /// Outcomes of tasks this node finished (also kept in the store, if any).
    finished: BTreeMap<TaskId, FinishedTask>,
    /// Outputs produced while restoring, carried out once the loop runs.
    initial: Vec<Output>,
    listen_addrs: Vec<Multiaddr>,
    /// Whether discovery has run with at least one peer in the routing table.
    discovered_with_peers: bool,
    /// Discovery rounds run with peers (see `discover`).
    discovery_runs: u32,
    /// Card digest and lookup backoff (see `discovery`).
    lookups: discovery::Lookups,
    /// Which connections are in use (see `connections`).
    connections: connections::Connections,
    /// The card as last gossiped (see `cards`).
    card_gossip: cards::CardGossip,
    /// Publications no subscriber was known for: (topic, envelope, when).
    unsent: Vec<(String, Vec<u8>, Instant)>,
    config: NodeConfig,
}

impl NodeActor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<NodeCommand>,
        mut reports: mpsc::Receiver<ExecutorReport>,
    ) {
        info!(peer = %self.me, "node started");
        let initial = std::mem::take(&mut self.initial);
        self.carry(initial);
        let mut discovery = tokio::time::interval(self.config.discovery_interval);
        let mut sweep = tokio::time::interval(self.connections.sweep_every());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                cmd = commands.recv() => match cmd {
                    Some(NodeCommand::Shutdown { reply }) => {
                        self.feed(Input::Command(Command::Leave));
                        self.flush(Duration::from_secs(3)).await;
                        self.save_reputation();
                        self.persist_all().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(report) = reports.recv() => self.on_report(report),
                _ = tokio::time::sleep_until(wake) => self.on_wake(),
                _ = discovery.tick() => self.discover(),
                _ = sweep.tick() => {
                    self.sweep_connections();
                    self.sync_cards();
                }
                _ = Persister::committed(&mut self.persist) => self.on_committed(),
                _ = links::Links::changed(self.links.changes_mut()) => self.on_links_changed(),
            }
        }
        for (_, job) in std::mem::take(&mut self.executors) {
            job.abort();
        }
        if let Some(p) = self.persist.take() {
            p.close().await;
        }
        info!("node stopped");
    }

    /// Keeps the swarm running until every direct message sent so far is
    /// acknowledged or has failed (or `limit` passes), so a leaving node's last words
    /// reach its peers.
    async fn flush(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let holding = |a: &Self| a.persist.as_ref().is_some_and(Persister::holding);
        while (!self.sends.is_empty() || holding(self)) && Instant::now() < deadline {
            tokio::select! {
                _ = Persister::committed(&mut self.persist) => self.on_committed(),
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(StarlingEvent::Direct(
                        request_response::Event::Message {
                            message: request_response::Message::Response { request_id, .. },
                            ..
                        }
                        | request_response::Event::OutboundFailure { request_id, .. },
                    )) = event
                    {
                        self.sends.remove(&request_id);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = now_ms();
        let agent = self
            .agent
            .next_deadline()
            .map(|d| Instant::now() + Duration::from_millis(d.saturating_sub(now)));
        let retry = self.retries.iter().map(|(t, _)| *t).min();
        [agent, retry, self.links.next_due()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn on_wake(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.retries = later;
        for (_, send) in due {
            self.send_direct(send);
        }
        self.deliver_due();
        if self.agent.next_deadline().is_some_and(|d| d <= now_ms()) {
            self.feed(Input::Tick);
        }
    }

    fn feed(&mut self, input: Input) {
        let outputs = self.agent.handle(now_ms(), input);
        self.carry(outputs);
    }

    /// Queues the reputation table for the store if it has changed since it was
    /// last queued (every observation adds to some entry's count).
    fn save_reputation(&mut self) {
        if self.persist.is_none() {
            return;
        }
        let observed: u64 = self
            .agent
            .reputations()
            .map(|(_, r)| u64::from(r.observations))
            .sum();
        if observed == self.reputation_saved {
            return;
        }
        self.reputation_saved = observed;
        let entries: Vec<_> = self.agent.reputations().collect();
        self.record(StoreOp::Reputation(entries));
    }

    /// Carries out outputs whose persistence is done (see `persist`).
    fn carry_now(&mut self, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Publish {
                    topic,
                    envelope,
                    kind,
                } => {
                    self.metrics.message_out(kind);
                    self.connections.published(&topic, Instant::now());
                    self.publish_bytes(topic, envelope.into_bytes());
                }
                Output::Send { to, envelope, kind } => {
                    self.metrics.message_out(kind);
                    self.send_direct(PendingSend {
                        to,
                        bytes: envelope.into_bytes(),
                        attempt: 0,
                        first_at: Instant::now(),
                    });
                }
                Output::Emit(event) => self.on_agent_event(event),
            }
        }
    }

    /// Publishes on `topic`; with no subscriber known yet, the bytes wait for one
    /// (and a skill topic's providers are looked up).
    fn publish_bytes(&mut self, topic: String, bytes: Vec<u8>) {
        let t = gossipsub::IdentTopic::new(topic.clone());
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(t, bytes.clone())
        {
            Ok(_) => trace!(%topic, "published"),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                debug!(%topic, reason = "no subscribers", "publishing once one appears");
                if let Some(skill) = topic.strip_prefix("starling/v1/skill/") {
                    self.find_providers(skill);
                }
                if self.unsent.len() >= UNSENT_LIMIT {
                    self.unsent.remove(0);
                }
                self.unsent.push((topic, bytes, Instant::now()));
            }
            Err(e) => warn!(%topic, error = %e, "publish failed"),
        }
    }

    /// A peer subscribed to `topic`: publish what was waiting for a subscriber there.
    fn publish_unsent(&mut self, topic: &gossipsub::TopicHash) {
        if self.unsent.is_empty() {
            return;
        }
        let now = Instant::now();
        self.unsent
            .retain(|(_, _, at)| now.duration_since(*at) < UNSENT_FOR);
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unsent)
            .into_iter()
            .partition(|(t, _, _)| t.as_str() == topic.as_str());
        self.unsent = keep;
        for (t, bytes, _) in due {
            let ident = gossipsub::IdentTopic::new(t.clone());
            match self.swarm.behaviour_mut().gossipsub.publish(ident, bytes) {
                Ok(_) => debug!(topic = %t, "published once a subscriber appeared"),
                Err(e) => debug!(topic = %t, error = %e, "late publish failed"),
            }
        }
    }

    fn on_agent_event(&mut self, event: Event) {
        self.metrics.agent_event(&event);
        match &event {
            Event::TaskAssigned(a) => {
                let sink = ProgressSink::new(a.task_id, self.exec_tx.clone());
                let work = self.handler.run(a.clone(), sink);
                let tx = self.exec_tx.clone();
                let task_id = a.task_id;
                let job = tokio::spawn(async move {
                    let result = work.await;
                    let _ = tx.send(ExecutorReport::Done { task_id, result }).await;
                });
                if let Some(old) = self.executors.insert(task_id, job) {
                    old.abort();
                }
            }
            Event::AssignmentEnded { task_id, .. } => {
                if let Some(job) = self.executors.remove(task_id) {
                    job.abort();
                }
            }
            Event::TaskFinished {
                task_id,
                outcome,
                results,
                certificate,
            } => {
                self.forget_task(task_id);
                let done = FinishedTask {
                    task_id: *task_id,
                    outcome: outcome.clone(),
                    results: results.clone(),
                    certificate: certificate.clone(),
                };
                self.record(StoreOp::Finished(done.clone()));
                for w in self.waiters.remove(task_id).unwrap_or_default() {
                    let _ = w.send(done.clone());
                }
                if self.finished.len() >= FINISHED_IN_MEMORY
                    && let Some(oldest) = self.finished.keys().next().copied()
                {
                    self.finished.remove(&oldest);
                }
                self.finished.insert(*task_id, done);
            }
            Event::Misbehaviour { peer, .. } => {
                if let Ok(p) = peer_id_of(peer) {
                    self.penalise(p, 2.0);
                }
            }
            Event::TaskAnnounced {
                task_id,
                round,
                skills,
            } if round.is_power_of_two() => {
                // Rounds 1, 2, 4, 8 …: under load every round would mean a DHT lookup
                // and a dozen direct announcements per lacking skill, which only
                // deepens the overload that made offers late in the first place.
                self.seek_candidates(*task_id, skills);
            }
            Event::SkillLearned { skill, .. } => self.record(StoreOp::Skill(skill.clone())),
            // The history is in the store already, appended change by change.
            Event::GroupClosed { task_id, .. } => {
                if let Some(p) = &mut self.persist {
                    p.closed(task_id);
                }
            }
            _ => {}
        }
        let _ = self.events.send(NodeEvent::Agent(event));
    }

    fn on_report(&mut self, report: ExecutorReport) {
        let cmd = match report {
            ExecutorReport::Progress {
                task_id,
                progress,
                checkpoint,
            } => Command::Progress {
                task_id,
                progress,
                checkpoint,
            },
            ExecutorReport::Done { task_id, result } => {
                self.executors.remove(&task_id);
                Command::Complete {
                    task_id,
                    success: result.success,
                    result: result.output,
                }
            }
        };
        self.feed(Input::Command(cmd));
    }

    fn on_command(&mut self, cmd: NodeCommand) {
        match cmd {
            NodeCommand::Announce { spec, reply } => match self.agent.announce(now_ms(), spec) {
                Ok((task_id, outputs)) => {
                    // Durable before the announcement leaves (carry waits for it).
                    if let Some(announce) = self.agent.announcement(&task_id).cloned() {
                        self.record(StoreOp::Initiated(announce));
                    }
                    let (tx, rx) = oneshot::channel();
                    self.waiters.entry(task_id).or_default().push(tx);
                    let _ = reply.send(Ok((task_id, rx)));
                    self.carry(outputs);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            NodeCommand::Send { to, message, reply } => {
                let outputs = self.agent.send_message(now_ms(), to, message);
                self.carry(outputs);
                let _ = reply.send(());
            }
            NodeCommand::Dial { addr, reply } => {
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NodeError::Listen {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    });
                let _ = reply.send(r);
            }
            NodeCommand::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
            NodeCommand::Status { reply } => {
                let _ = reply.send(self.mesh_status());
            }
            NodeCommand::Groups { reply } => {
                let finished: Vec<(TaskId, starling_crdt::GroupDoc)> = self
                    .agent
                    .finished_groups()
                    .filter(|t| self.agent.group(t).is_none())
                    .filter_map(|t| Some((*t, self.agent.finished_group(t)?)))
                    .collect();
                let groups = self
                    .agent
                    .groups()
                    .filter_map(|t| Some((*t, self.agent.group(t)?)))
                    .chain(finished.iter().map(|(t, d)| (*t, d)))
                    .filter_map(|(t, doc)| {
                        let view = doc.view().ok()?;
                        Some(GroupInfo {
                            task_id: t,
                            coordinator: AgentId::from(view.coordinator()),
                            status: view.status,
                            complete: view.is_complete(),
                            heads: doc.heads(),
                            members: view
                                .members
                                .values()
                                .map(|m| (m.skill.clone(), AgentId::from(m.key), m.status))
                                .collect(),
                        })
                    })
                    .collect();
                let _ = reply.send(groups);
            }
            NodeCommand::Tasks { reply } => {
                let mut tasks: BTreeMap<TaskId, TaskInfo> = BTreeMap::new();
                let blank = |task_id| TaskInfo {
                    task_id,
                    coordinating: false,
                    member: false,
                    outcome: None,
                };
                for t in self.agent.coordinating() {
                    tasks.entry(*t).or_insert_with(|| blank(*t)).coordinating = true;
                }
                for t in self.agent.memberships() {
                    tasks.entry(*t).or_insert_with(|| blank(*t)).member = true;
                }
                for (t, done) in &self.finished {
                    tasks.entry(*t).or_insert_with(|| blank(*t)).outcome =
                        Some(done.outcome.clone());
                }
                let _ = reply.send(tasks.into_values().collect());
            }
            NodeCommand::Task { task_id, reply } => {
                let found = match (self.finished.get(&task_id), &self.persist) {
                    (Some(done), _) => Ok(Some(done.clone())),
                    (None, Some(p)) => p.store().finished(task_id),
                    (None, None) => Ok(None),
                };
                let _ = reply.send(found);
            }
            NodeCommand::Providers { skill, reply } => self.query_providers(&skill, reply),
            NodeCommand::Card { agent, reply } => self.query_card(agent, reply),
            NodeCommand::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn refuse(&mut self, peer: Option<AgentId>, label: &'static str, reason: String) {
        warn!(peer = ?peer, %reason, "refused inbound message");
        self.metrics.refused(label);
        // Replays and stale envelopes may be honest retransmissions, and a flood may
        // reach us through an honest forwarder (gossipsub scores that): no penalty.
        if !matches!(label, "replay" | "stale" | "flood")
            && let Some(p) = peer.and_then(|a| peer_id_of(&a).ok())
        {
            self.penalise(p, 1.0);
        }
        let _ = self.events.send(NodeEvent::Refused { peer, reason });
    }

    /// Scores a peer down; past the threshold it is disconnected, blacklisted in
    /// gossipsub and ignored for the ban period.
    fn penalise(&mut self, peer: PeerId, points: f64) {
        let now = Instant::now();
        for lifted in self.penalties.expired(now) {
            let b = self.swarm.behaviour_mut();
            b.gossipsub.remove_blacklisted_peer(&lifted);
            b.blocked.unblock_peer(lifted);
        }
        if self.penalties.add(peer, points, now) {
            warn!(%peer, "banning a peer for repeated bad input");
            self.metrics.banned.inc();
            let b = self.swarm.behaviour_mut();
            b.gossipsub.blacklist_peer(&peer);
            b.blocked.block_peer(peer);
        }
    }

    /// Verifies a gossip message once and tells gossipsub whether to forward it:
    /// Reject (costs the forwarder score) for forgeries and garbage, Ignore for stale
    /// or replayed envelopes, Accept for the rest.
    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        if message.topic.as_str() == starling_protocol::card::CARDS_TOPIC {
            return self.on_card_gossip(source, id, message.data);
        }
        let topic = Audience::Topic(message.topic.as_str().to_string());
        self.metrics.verifications.inc();
        let verdict = SignedEnvelope::open(&message.data)
            .and_then(|env| env.check_audience(&topic).map(|()| env))
            .map_err(|e| (Reject, refusal_reason(&e), e.to_string()))
            .and_then(|env| {
                self.replay
                    .check(env.sender, env.seq, env.sent_at_ms, now_ms())
                    .map(|()| env)
                    .map_err(|e| (Ignore, refusal_reason(&e), e.to_string()))
            })
            .and_then(|env| {
                if self.broadcasts.allow(env.sender, Instant::now()) {
                    Ok(env)
                } else {
                    let reason = format!("{} exceeds its broadcast budget", env.sender);
                    Err((Reject, "flood", reason))
                }
            })
            .and_then(|env| match env.message {
                Message::TaskAnnounce(_) | Message::Alert { .. } => Ok(env),
                ref m => Err((
                    Reject,
                    "not_broadcast",
                    format!("{} is not a broadcast message", m.kind()),
                )),
            });
        match verdict {
            Ok(env) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, Accept);
                self.metrics.message_in(env.message.kind());
                if let Message::TaskAnnounce(a) = &env.message {
                    let _ = self.events.send(NodeEvent::AnnouncementReceived {
                        task_id: a.task_id,
                        from: env.sender,
                    });
                }
                self.feed(Input::Received {
                    from: env.sender,
                    message: env.message,
                });
            }
            Err((acceptance, label, reason)) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
                self.refuse(agent_of(&source), label, reason);
            }
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<StarlingEvent>) {
        use libp2p::metrics::Recorder;
        self.metrics.libp2p.record(&event);
        if matches!(
            event,
            SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. }
        ) {
            let established = self
                .swarm
                .network_info()
                .connection_counters()
                .num_established();
            self.metrics.connections.set(i64::from(established));
        }
        if let SwarmEvent::Behaviour(e) = &event {
            match e {
                StarlingEvent::Gossipsub(e) => self.metrics.libp2p.record(e),
                StarlingEvent::Kad(e) => self.metrics.libp2p.record(e),
                StarlingEvent::Identify(e) => self.metrics.libp2p.record(e.as_ref()),
                StarlingEvent::Ping(e) => self.metrics.libp2p.record(e),
                StarlingEvent::Direct(_) => {}
            }
        }
        match event {
            SwarmEvent::Behaviour(StarlingEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.inbound(links::Inbound::Gossip {
                source: propagation_source,
                id: message_id,
                message,
            }),
            SwarmEvent::Behaviour(StarlingEvent::Gossipsub(gossipsub::Event::Subscribed {
                topic,
                ..
            })) => self.publish_unsent(&topic),
            SwarmEvent::Behaviour(StarlingEvent::Direct(event)) => self.on_direct_event(event),
            SwarmEvent::Behaviour(StarlingEvent::Identify(event)) => {
                if let identify::Event::Received { peer_id, info, .. } = *event {
                    let addrs = links::usable_addrs(&info.listen_addrs, &info.observed_addr);
                    self.links.learned(peer_id, &addrs);
                    for addr in addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                    // The routing table has its first entry: publish and look around
                    // now rather than at the next discovery tick.
                    if !self.discovered_with_peers {
                        self.discovered_with_peers = true;
                        self.on_first_contact(peer_id);
                        self.discover();
                    }
                }
            }
            SwarmEvent::Behaviour(StarlingEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                trace!(%peer_id, ?connection_id, addr = %endpoint.get_remote_address(), dialer = endpoint.is_dialer(), "connection established");
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    self.links.learned(peer_id, &[addr]);
                }
                // A connection across a partition is closed before anyone uses it.
                if self.check_link(peer_id) {
                    return;
                }
                if num_established.get() == 1
                    && let Some(a) = agent_of(&peer_id)
                {
                    debug!(peer = %a, "connected");
                    let _ = self.events.send(NodeEvent::PeerConnected(a));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
                ..
            } => {
                trace!(%peer_id, ?connection_id, addr = %endpoint.get_remote_address(), cause = ?cause, "connection closed");
                self.count_closed(cause.as_ref());
                if num_established > 0 {
                    return;
                }
                if let Some(a) = agent_of(&peer_id) {
                    debug!(peer = %a, "disconnected");
                    self.feed(Input::PeerDown(a));
                    let _ = self.events.send(NodeEvent::PeerDisconnected(a));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }
}
