//! Persistence off the actor, with nothing acknowledged that is not durable.
//!
//! The protocol's outputs are carried out in order; before they are, whatever the
//! step changed — new group changes (ours and others'), an initiated task — is
//! handed to the store writer as one batch with a ticket, and the outputs wait
//! behind that ticket. The writer is a task of its own that commits every batch
//! queued at once in one durable redb transaction (on tokio's blocking pool, never
//! on the actor), then publishes the highest ticket committed; the actor then
//! carries out the outputs that waited for it. So an acceptance, a result or any
//! message carrying a change of ours leaves only once that change is on disk (a
//! restarted agent neither forgets what it acknowledged nor reuses a sequence
//! number), while the actor never waits for a disk and a busy node commits once
//! per burst rather than once per message. Records nothing waits on (outcomes,
//! skill metrics, reputation) ride along in the next batch.
//!
//! If a commit fails (disk full, I/O error) the failure is logged and counted, and
//! the outputs go out anyway: the node keeps working, without the durability.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use std::{collections::HashSet, time::Duration};

use starling_protocol::{Agent, AgentId, Output, TaskId};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, error, info, warn};

use super::{NodeActor, now_ms};
use crate::{
    NodeConfig, NodeError, Result,
    store::{Store, StoreOp},
};

type Queue = Arc<Mutex<Vec<(u64, Vec<StoreOp>)>>>;

/// The actor's side of the store writer.
pub(super) struct Persister {
    store: Arc<Store>,
    queue: Queue,
    wake: mpsc::Sender<()>,
    committed: watch::Receiver<u64>,
    submitted: u64,
    /// The writer task.
    writer: tokio::task::JoinHandle<()>,
    /// Outputs waiting for their ticket to commit, in order.
    held: VecDeque<(u64, Vec<Output>)>,
    /// Records to add to the next batch.
    pending: Vec<StoreOp>,
    /// Heads of each group document as last handed to the writer.
    saved_heads: BTreeMap<TaskId, Vec<starling_crdt::ChangeHash>>,
}

impl Persister {
    /// Starts the writer for `store` on the current runtime. It stops once this side
    /// is dropped and what was queued is committed.
    pub(super) fn start(store: Store) -> Persister {
        let store = Arc::new(store);
        let queue: Queue = Arc::default();
        let (wake, rx) = mpsc::channel(1);
        let (done, committed) = watch::channel(0);
        let writer = tokio::spawn(writer(store.clone(), queue.clone(), rx, done));
        Persister {
            writer,
            store,
            queue,
            wake,
            committed,
            submitted: 0,
            held: VecDeque::new(),
            pending: Vec::new(),
            saved_heads: BTreeMap::new(),
        }
    }

    /// The store, for reads.
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Queues a record for the next batch (nothing waits for it).
    pub(super) fn record(&mut self, op: StoreOp) {
        self.pending.push(op);
    }

    /// Remembers the heads a document was restored at (nothing to write for them).
    pub(super) fn restored(&mut self, task_id: TaskId, heads: Vec<starling_crdt::ChangeHash>) {
        self.saved_heads.insert(task_id, heads);
    }

    /// Forgets a closed document's heads.
    pub(super) fn closed(&mut self, task_id: &TaskId) {
        self.saved_heads.remove(task_id);
    }

    /// Hands `ops` plus the pending records to the writer; returns whether anything
    /// was submitted.
    fn submit(&mut self, mut ops: Vec<StoreOp>) -> bool {
        ops.append(&mut self.pending);
        if ops.is_empty() {
            return false;
        }
        self.submitted += 1;
        if let Ok(mut q) = self.queue.lock() {
            q.push((self.submitted, ops));
        }
        let _ = self.wake.try_send(());
        true
    }

    /// Whether some submitted batch is not committed yet.
    fn waiting(&self) -> bool {
        *self.committed.borrow() < self.submitted
    }

    /// Resolves when the writer commits another batch.
    pub(super) async fn committed(persist: &mut Option<Persister>) {
        match persist {
            Some(p) => {
                if p.committed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Outputs whose batches are now committed, in order.
    fn released(&mut self) -> Vec<Vec<Output>> {
        let done = *self.committed.borrow();
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(t, _)| *t <= done) {
            if let Some((_, outputs)) = self.held.pop_front() {
                out.push(outputs);
            }
        }
        out
    }

    /// Stops the writer once it has committed what was queued, and waits for it:
    /// then the database is closed and the data directory can be opened again.
    pub(super) async fn close(self) {
        let Persister {
            writer,
            store,
            wake,
            ..
        } = self;
        drop(wake);
        drop(store);
        let _ = writer.await;
    }

    /// Whether outputs are waiting for a commit.
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }
}

/// Commits whatever is queued, a batch at a time, until the actor's side is gone.
async fn writer(
    store: Arc<Store>,
    queue: Queue,
    mut wake: mpsc::Receiver<()>,
    done: watch::Sender<u64>,
) {
    loop {
        let taken = queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        let Some(last) = taken.last().map(|(t, _)| *t) else {
            if wake.recv().await.is_none() {
                return;
            }
            continue;
        };
        let ops: Vec<StoreOp> = taken.into_iter().flat_map(|(_, ops)| ops).collect();
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.commit(&ops)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "cannot commit to the store; carrying on without it"),
            Err(e) => error!(error = %e, "the store writer failed"),
        }
        done.send_replace(last);
    }
}

/// Opens the store, waiting up to two seconds for a node that is still stopping
/// (its writer finishing its last commit) to let go of it.
pub(super) async fn open_store(dir: &std::path::Path, me: AgentId) -> Result<Store> {
    let give_up = Instant::now() + Duration::from_secs(2);
    loop {
        match Store::open(dir, me) {
            Err(NodeError::StoreInUse(_)) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Loads what the data directory holds into a new agent and picks up unfinished
/// initiated tasks; returns the outputs to carry out once the node runs. Groups this
/// agent was a member of are restored as replicas (it still holds what it accepted
/// and wrote, and answers its peers' anti-entropy), for as long as the protocol keeps
/// a replica without a role. `restored` gets each loaded document's heads.
pub(super) fn restore(
    store: &Store,
    agent: &mut Agent,
    config: &NodeConfig,
    restored: &mut Vec<(TaskId, Vec<starling_crdt::ChangeHash>)>,
) -> Result<Vec<Output>> {
    for skill in store.skills()? {
        agent.restore_skill(skill);
    }
    agent.restore_reputation(store.reputation()?);
    let limits = config.agent.crdt_limits.clone();
    let mut outputs = Vec::new();
    let mut initiated = HashSet::new();
    for announce in store.initiated()? {
        let task_id = announce.task_id;
        initiated.insert(task_id);
        let doc = store.group_doc(task_id, &config.keypair, limits.clone())?;
        if let Some(d) = &doc {
            restored.push((task_id, d.heads()));
        }
        info!(task = %task_id, "resuming an initiated task");
        outputs.extend(agent.resume_initiated(now_ms(), announce, doc));
    }
    for task_id in store.group_tasks()? {
        if initiated.contains(&task_id) || store.finished(task_id)?.is_some() {
            continue;
        }
        let Some(doc) = store.group_doc(task_id, &config.keypair, limits.clone())? else {
            continue;
        };
        let open = doc.view().is_ok_and(|v| v.outcome.is_none());
        if open {
            debug!(task = %task_id, "restoring a group replica");
            restored.push((task_id, doc.heads()));
            agent.restore_replica(now_ms(), task_id, doc);
        }
    }
    Ok(outputs)
}

impl NodeActor {
    /// Carries out `outputs` once what the step changed is durable (at once without
    /// a data directory).
    pub(super) fn carry(&mut self, outputs: Vec<Output>) {
        let ops = self.group_changes();
        let Some(p) = &mut self.persist else {
            return self.carry_now(outputs);
        };
        p.submit(ops);
        if p.waiting() || p.holding() {
            if !outputs.is_empty() {
                p.held.push_back((p.submitted, outputs));
            }
            return;
        }
        self.carry_now(outputs);
    }

    /// A batch committed: carry out what waited for it.
    pub(super) fn on_committed(&mut self) {
        loop {
            let Some(p) = &mut self.persist else { return };
            let ready = p.released();
            if ready.is_empty() {
                return;
            }
            for outputs in ready {
                self.carry_now(outputs);
            }
            // Records those outputs produced (outcomes, skills) go in the next batch.
            if let Some(p) = &mut self.persist {
                p.submit(Vec::new());
            }
        }
    }

    /// The changes of every group document since it was last handed to the writer.
    fn group_changes(&mut self) -> Vec<StoreOp> {
        let Some(p) = &mut self.persist else {
            return Vec::new();
        };
        let mut ops = Vec::new();
        for task_id in self.agent.groups() {
            let Some(doc) = self.agent.group(task_id) else {
                continue;
            };
            let heads = doc.heads();
            let saved = p.saved_heads.get(task_id);
            if saved == Some(&heads) {
                continue;
            }
            let changes = doc.changes_since(saved.map(Vec::as_slice).unwrap_or(&[]));
            if !changes.is_empty() {
                ops.push(StoreOp::GroupChanges {
                    task_id: *task_id,
                    changes,
                });
            }
            p.saved_heads.insert(*task_id, heads);
        }
        ops
    }

    /// Queues a record for the store, if there is one.
    pub(super) fn record(&mut self, op: StoreOp) {
        if let Some(p) = &mut self.persist {
            p.record(op);
        }
    }

    /// Saves what must outlive the node now, and waits for it (at shutdown).
    pub(super) async fn persist_all(&mut self) {
        let ops = self.group_changes();
        let Some(p) = &mut self.persist else { return };
        p.submit(ops);
        while p.waiting() {
            if p.committed.changed().await.is_err() {
                warn!("the store writer stopped before everything was saved");
                return;
            }
        }
    }
}
