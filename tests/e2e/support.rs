//! The harness: real nodes on the memory transport with short protocol timers, one
//! log of every node's events that tests wait on, and crash/restart of nodes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use libp2p::Multiaddr;
use starling::{
    node::{Handle, NodeConfig, NodeEvent, SyntheticHandler, TaskHandler, spawn},
    protocol::{
        AgentConfig, AgentId, Event, Keypair, Level, Outcome, Priority, Skill, SkillRequirement,
        TaskId, TaskSpec,
    },
};
use tokio::{
    sync::{Notify, broadcast},
    task::JoinHandle,
    time::Instant,
};

static NEXT_PORT: AtomicU64 = AtomicU64::new(0);

/// A memory address no other test in this process uses.
pub(crate) fn memory_addr() -> Multiaddr {
    let base = u64::from(std::process::id()) << 20;
    let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed) + 1;
    format!("/memory/{}", base + n).parse().unwrap()
}

/// A key unique to (test, index): tests never share identities.
pub(crate) fn key(test: u8, index: usize) -> Keypair {
    let mut secret = [0u8; 32];
    secret[0] = test;
    secret[1..9].copy_from_slice(&(index as u64).to_be_bytes());
    secret[31] = 0x5a;
    Keypair::from_secret_bytes(secret)
}

/// Protocol timers for tests: the default heartbeat and suspicion timeout (fifty
/// debug-build nodes share two cores with other work: a shorter timeout fails
/// members that are only slow), announcements repeated every 500 ms for up to a
/// minute, invitations answered within 3 s.
pub(crate) fn agent_config(skills: &[(&str, Level)]) -> AgentConfig {
    AgentConfig {
        skills: skills.iter().map(|(n, l)| Skill::new(*n, *l)).collect(),
        max_concurrent_tasks: 1,
        offer_window_ms: 300,
        invite_timeout_ms: 3_000,
        heartbeat_interval_ms: 1_000,
        suspicion_timeout_ms: 4_000,
        peer_down_grace_ms: 300,
        reannounce_interval_ms: 500,
        max_announce_rounds: 120,
        ..AgentConfig::default()
    }
}

/// A node config around `agent`: memory transport, fast gossip heartbeat, short
/// discovery interval, a large event queue so the log never lags.
pub(crate) fn node_config(key: Keypair, agent: AgentConfig, bootstrap: &[Multiaddr]) -> NodeConfig {
    let seed = u64::from_be_bytes(key.secret_bytes()[..8].try_into().unwrap());
    let mut c = NodeConfig::new(key, agent);
    c.listen = vec![memory_addr()];
    c.bootstrap = bootstrap.to_vec();
    c.gossip_heartbeat = Duration::from_millis(300);
    // Discovery runs once a node's routing table gets its first entry, and again when
    // a task lacks candidates; the periodic refresh only adds load in short tests.
    c.discovery_interval = Duration::from_secs(600);
    c.request_timeout = Duration::from_secs(5);
    c.event_queue = 1 << 15;
    c.rng_seed = seed;
    c
}

/// Synthetic work of about `ms` that always succeeds, with four checkpoints.
pub(crate) fn work(ms: u64, salt: u64) -> Arc<dyn TaskHandler> {
    SyntheticHandler::new(Duration::from_millis(ms), 0.0, salt)
}

/// A task needing one agent of each skill, at least Novice.
pub(crate) fn spec(skills: &[&str]) -> TaskSpec {
    TaskSpec {
        description: format!("needs {}", skills.join("+")),
        required: skills
            .iter()
            .map(|s| SkillRequirement {
                name: (*s).into(),
                min_level: Level::Novice,
                count: 1,
            })
            .collect(),
        priority: Priority::Normal,
        deadline_ms: Some(120_000),
        max_group_size: None,
        depends_on: Vec::new(),
        payload: b"input".to_vec(),
        consensus: false,
    }
}

/// Every event of every node, in arrival order, with the node's index.
#[derive(Clone, Default)]
pub(crate) struct EventLog {
    inner: Arc<LogInner>,
}

#[derive(Default)]
struct LogInner {
    events: Mutex<Vec<(usize, NodeEvent)>>,
    notify: Notify,
    lagged: AtomicUsize,
    ids: Mutex<BTreeMap<usize, AgentId>>,
}

impl EventLog {
    fn follow(&self, index: usize, handle: &Handle) -> JoinHandle<()> {
        self.inner.ids.lock().unwrap().insert(index, handle.id());
        let mut rx = handle.events();
        let log = self.inner.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        log.events.lock().unwrap().push((index, e));
                        log.notify.notify_waiters();
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        log.lagged.fetch_add(n as usize, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// Events lost because a node's queue overflowed (tests that count assert 0).
    pub(crate) fn lagged(&self) -> usize {
        self.inner.lagged.load(Ordering::Relaxed)
    }

    /// A copy of the log.
    pub(crate) fn snapshot(&self) -> Vec<(usize, NodeEvent)> {
        self.inner.events.lock().unwrap().clone()
    }

    /// Protocol events matching `f`, with the node index.
    pub(crate) fn agent_events(
        &self,
        mut f: impl FnMut(usize, &Event) -> bool,
    ) -> Vec<(usize, Event)> {
        self.snapshot()
            .into_iter()
            .filter_map(|(i, e)| match e {
                NodeEvent::Agent(a) if f(i, &a) => Some((i, a)),
                _ => None,
            })
            .collect()
    }

    /// Waits (up to `secs`, a generous bound) until `f` finds what it looks for in
    /// the log; panics with `what` otherwise. Woken by every new event.
    pub(crate) async fn wait<T>(
        &self,
        secs: u64,
        what: &str,
        mut f: impl FnMut(&[(usize, NodeEvent)]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let notified = self.inner.notify.notified();
            if let Some(t) = f(&self.inner.events.lock().unwrap()) {
                return t;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out after {secs} s waiting for {what}");
            }
        }
    }

    /// Like [`EventLog::wait`], but returns `None` on timeout (the caller's
    /// assertions then say what is missing).
    pub(crate) async fn wait_quietly<T>(
        &self,
        secs: u64,
        mut f: impl FnMut(&[(usize, NodeEvent)]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let notified = self.inner.notify.notified();
            if let Some(t) = f(&self.inner.events.lock().unwrap()) {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits for a protocol event matching `f`; returns it with the node index.
    pub(crate) async fn wait_event(
        &self,
        secs: u64,
        what: &str,
        mut f: impl FnMut(usize, &Event) -> bool,
    ) -> (usize, Event) {
        self.wait(secs, what, |log| {
            log.iter().find_map(|(i, e)| match e {
                NodeEvent::Agent(a) if f(*i, a) => Some((*i, a.clone())),
                _ => None,
            })
        })
        .await
    }

    /// `TaskFinished` events per task, across all nodes.
    pub(crate) fn finishes(&self) -> BTreeMap<TaskId, Vec<(usize, Outcome)>> {
        let mut out: BTreeMap<TaskId, Vec<(usize, Outcome)>> = BTreeMap::new();
        for (i, e) in self.agent_events(|_, e| matches!(e, Event::TaskFinished { .. })) {
            if let Event::TaskFinished {
                task_id, outcome, ..
            } = e
            {
                out.entry(task_id).or_default().push((i, outcome));
            }
        }
        out
    }

    /// Waits until every task in `tasks` has finished somewhere.
    pub(crate) async fn wait_all_finished(&self, secs: u64, tasks: &[TaskId]) {
        let what = format!("{} tasks to finish", tasks.len());
        let this = self.clone();
        let tasks_owned = tasks.to_vec();
        let report = move || this.progress_report(&tasks_owned);
        let guard = PanicReport(Some(Box::new(report)));
        self.wait(secs, &what, |log| {
            let done: BTreeSet<TaskId> = log
                .iter()
                .filter_map(|(_, e)| match e {
                    NodeEvent::Agent(Event::TaskFinished { task_id, .. }) => Some(*task_id),
                    _ => None,
                })
                .collect();
            tasks.iter().all(|t| done.contains(t)).then_some(())
        })
        .await;
        guard.disarm();
    }

    /// Checks that exactly one coordinator finished `task`, with `outcome`, and that
    /// every other report of it (an initiator that was replaced, or restarted,
    /// learning the outcome from the group) agrees.
    /// Waits for the task's first finish to reach the log first.
    pub(crate) async fn assert_finished_once(&self, task: TaskId, outcome: &Outcome) {
        self.wait_all_finished(60, &[task]).await;
        let mut stepped_down = BTreeSet::new();
        let mut coordinated = Vec::new();
        let mut learned = Vec::new();
        for (i, e) in self.agent_events(|_, e| task_of(e) == Some(task)) {
            match e {
                Event::CoordinatorChanged { coordinator, .. } if coordinator != self.id_of(i) => {
                    stepped_down.insert(i);
                }
                Event::TaskFinished {
                    outcome: o,
                    results,
                    ..
                } => {
                    let members: BTreeSet<AgentId> = results.iter().map(|r| r.member).collect();
                    if stepped_down.contains(&i) {
                        learned.push((i, o, members));
                    } else {
                        coordinated.push((i, o, members));
                    }
                }
                _ => {}
            }
        }
        assert_eq!(
            coordinated.len(),
            1,
            "{task:?} finished by {} coordinators: {coordinated:?}\n{}",
            coordinated.len(),
            self.history(task)
        );
        assert_eq!(
            coordinated[0].1,
            *outcome,
            "{task:?}\n{}",
            self.history(task)
        );
        for (i, o, _) in &learned {
            assert_eq!(o, outcome, "node {i} learned another outcome of {task:?}");
        }
    }

    /// The agent id of node `i`.
    pub(crate) fn id_of(&self, i: usize) -> AgentId {
        self.inner.ids.lock().unwrap()[&i]
    }

    /// Every event about `task`, one line each with the node index.
    pub(crate) fn history(&self, task: TaskId) -> String {
        self.agent_events(|_, e| task_of(e) == Some(task))
            .iter()
            .map(|(i, e)| format!("{i}: {}\n", event_kind(e)))
            .collect()
    }

    /// What happened to each unfinished task (printed when a wait fails).
    fn progress_report(&self, tasks: &[TaskId]) -> String {
        let finished = self.finishes();
        let mut out = String::new();
        for t in tasks.iter().filter(|t| !finished.contains_key(t)) {
            let kinds: Vec<String> = self
                .agent_events(|_, e| task_of(e) == Some(*t))
                .iter()
                .map(|(i, e)| format!("{i}:{}", event_kind(e)))
                .collect();
            out.push_str(&format!("{t:?}: {}\n", kinds.join(" ")));
        }
        out
    }
}

/// One running (or crashed) node.
pub(crate) struct Node {
    /// Talks to it.
    pub(crate) handle: Handle,
    /// What it was started with (to restart it).
    pub(crate) config: NodeConfig,
    join: Option<JoinHandle<()>>,
    follower: JoinHandle<()>,
}

impl Node {
    /// Its agent id.
    pub(crate) fn id(&self) -> AgentId {
        self.handle.id()
    }

    /// Its first listen address.
    pub(crate) fn addr(&self) -> Multiaddr {
        self.handle.listen_addrs()[0].clone()
    }

    /// Whether it is running.
    pub(crate) fn alive(&self) -> bool {
        self.join.as_ref().is_some_and(|j| !j.is_finished())
    }
}

/// One test at a time: each starts tens of nodes that want both cores, and a node
/// starved of CPU looks, to its peers, like a node that failed.
/// Also installs the log subscriber (`RUST_LOG=starling_protocol=debug` replays a
/// failing run with the nodes' logs).
pub(crate) async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    TURN.lock().await
}

/// Nodes started by a test, all logging into one [`EventLog`].
#[derive(Default)]
pub(crate) struct Net {
    /// The nodes, by index.
    pub(crate) nodes: Vec<Node>,
    /// Their events.
    pub(crate) log: EventLog,
}

impl Net {
    /// Starts a node; returns its index.
    pub(crate) async fn start(
        &mut self,
        config: NodeConfig,
        handler: Arc<dyn TaskHandler>,
    ) -> usize {
        let index = self.nodes.len();
        let node = self.spawn(index, config, handler).await;
        self.nodes.push(node);
        index
    }

    async fn spawn(&self, index: usize, config: NodeConfig, handler: Arc<dyn TaskHandler>) -> Node {
        let (handle, join) = spawn(config.clone(), handler).await.unwrap();
        let follower = self.log.follow(index, &handle);
        Node {
            handle,
            config,
            join: Some(join),
            follower,
        }
    }

    /// The node at `i`.
    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Agent id of node `i`.
    pub(crate) fn id(&self, i: usize) -> AgentId {
        self.nodes[i].id()
    }

    /// Index of the node with agent id `id`.
    pub(crate) fn index_of(&self, id: AgentId) -> usize {
        self.nodes.iter().position(|n| n.id() == id).unwrap()
    }

    /// Crashes node `i`: its actor is aborted (no leave, nothing said); its swarm,
    /// listener and connections are dropped, so peers see the connections close.
    pub(crate) async fn kill(&mut self, i: usize) {
        if let Some(join) = self.nodes[i].join.take() {
            join.abort();
            let _ = join.await;
        }
    }

    /// Starts node `i` again with its config (same key, same data directory) on a new
    /// address, bootstrapping through `bootstrap`.
    pub(crate) async fn restart(
        &mut self,
        i: usize,
        bootstrap: &[Multiaddr],
        handler: Arc<dyn TaskHandler>,
    ) {
        let mut config = self.nodes[i].config.clone();
        config.listen = vec![memory_addr()];
        config.bootstrap = bootstrap.to_vec();
        self.nodes[i].follower.abort();
        self.nodes[i] = self.spawn(i, config, handler).await;
    }

    /// Waits until every running node has at least `min` peers. Peers change only
    /// with connection events, so the check runs again on each new event.
    pub(crate) async fn wait_connected(&self, min: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.alive()) {
            loop {
                let notified = self.log.inner.notify.notified();
                let peers = n.handle.peers().await.unwrap().len();
                if peers >= min {
                    break;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    panic!("node {i} has {peers} peers, wanted {min}");
                }
            }
        }
    }

    /// Waits until every running node holds the current cards of at least `min`
    /// other agents: its directory is full enough to staff tasks by invitation.
    /// Cards arrive over gossip, so this polls.
    pub(crate) async fn wait_cards(&self, min: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.alive()) {
            loop {
                let cards = n.handle.status().await.unwrap().cards;
                if cards >= min {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {i} holds {cards} cards, wanted {min}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(j) = n.join.take() {
                j.abort();
            }
            n.follower.abort();
        }
    }
}

/// The value of a metric line `name{labels} value` in Prometheus text, or 0.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Refusals with `reason` counted by a node.
pub(crate) fn refused(handle: &Handle, reason: &str) -> f64 {
    metric(
        &handle.metrics_text(),
        &format!(r#"starling_refused_total{{reason="{reason}"}}"#),
    )
}

/// Prints a report if the test panics while it is armed.
struct PanicReport(Option<Box<dyn Fn() -> String + Send>>);

impl PanicReport {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for PanicReport {
    fn drop(&mut self) {
        if let Some(report) = &self.0
            && std::thread::panicking()
        {
            eprintln!("unfinished tasks:\n{}", report());
        }
    }
}

/// The task an event concerns.
pub(crate) fn task_of(e: &Event) -> Option<TaskId> {
    match e {
        Event::TaskAnnounced { task_id, .. }
        | Event::TaskWaiting { task_id, .. }
        | Event::GroupFormed { task_id, .. }
        | Event::TaskProgress { task_id, .. }
        | Event::MemberFailed { task_id, .. }
        | Event::ReplacementStarted { task_id, .. }
        | Event::CoordinatorChanged { task_id, .. }
        | Event::TaskFinished { task_id, .. }
        | Event::AssignmentEnded { task_id, .. }
        | Event::GroupClosed { task_id, .. }
        | Event::DataReceived { task_id, .. } => Some(*task_id),
        Event::TaskAssigned(a) => Some(a.task_id),
        _ => None,
    }
}

/// A short name of an event, for reports.
fn event_kind(e: &Event) -> String {
    match e {
        Event::TaskAnnounced { round, .. } => format!("announced#{round}"),
        Event::TaskWaiting { .. } => "waiting".into(),
        Event::GroupFormed { .. } => "formed".into(),
        Event::TaskAssigned(_) => "assigned".into(),
        Event::TaskProgress { .. } => "progress".into(),
        Event::MemberFailed { reason, .. } => format!("failed({reason})"),
        Event::ReplacementStarted { .. } => "replacement".into(),
        Event::CoordinatorChanged { .. } => "takeover".into(),
        Event::TaskFinished { outcome, .. } => format!("finished({outcome:?})"),
        Event::AssignmentEnded { .. } => "ended".into(),
        Event::GroupClosed { .. } => "closed".into(),
        other => format!("{other:?}"),
    }
}
