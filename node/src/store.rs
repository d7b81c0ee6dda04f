//! What survives a restart, in an embedded database (redb) in the data directory:
//! whose data it is, skill metrics, reputation, tasks this agent initiated, how they
//! ended with every member's result, and group documents. A document is kept as the
//! signed changes of its history, appended as they arrive (never a whole document
//! per change); the node commits them before any message that follows them leaves
//! (see `node::persist`), so a restarted agent never reuses a sequence number and
//! never forgets what it acknowledged.
//!
//! Writes go through [`Store::commit`]: any number of [`StoreOp`]s in one durable
//! transaction.
//!
//! redb: a pure-Rust, crash-safe, single-file store with ACID transactions; no C
//! toolchain or server, and a stable file format.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use starling_protocol::{
    AgentId, Outcome, PartResult, Skill, TaskAnnounce, TaskId, codec, consensus::Certificate,
    scoring::Reputation,
};

use crate::{NodeError, Result, node::FinishedTask};

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const SKILLS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("skills");
const REPUTATION: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("reputation");
const INITIATED: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("initiated");
const OUTCOMES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("outcomes");
const RESULTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("results");
/// Whole-document snapshots, as earlier versions kept them (read, never written).
const GROUPS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("groups");
/// Group histories: (group id, SHA-256 of the change) → signer, signature, change.
const GROUP_CHANGES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("group_changes");

/// The page cache of each database. Small: the node reads its store only at start
/// and for the occasional lookup, and writes append.
const CACHE_BYTES: usize = 1 << 20;

/// One write to the store; [`Store::commit`] applies a batch of them at once.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// A skill's learned metrics.
    Skill(Skill),
    /// Reputation entries (each replaces the stored one).
    Reputation(Vec<(AgentId, Reputation)>),
    /// A task this agent initiated (until it finishes).
    Initiated(TaskAnnounce),
    /// How a task ended, with every result; forgets it as unfinished.
    Finished(FinishedTask),
    /// Signed changes appended to a group's history (duplicates are harmless).
    GroupChanges {
        /// The group's task.
        task_id: TaskId,
        /// The changes, in any order.
        changes: Vec<starling_crdt::SignedChange>,
    },
}

/// The file inside the data directory.
pub const DB_FILE: &str = "starling.redb";

#[derive(Serialize, Deserialize)]
struct StoredOutcome {
    outcome: Outcome,
    certificate: Option<Certificate>,
}

#[derive(Serialize, Deserialize)]
struct StoredPart {
    skill: String,
    success: bool,
    #[serde(with = "serde_bytes")]
    output: Vec<u8>,
}

/// The node's database.
pub struct Store {
    db: Database,
}

fn db_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Store(e.to_string())
}

impl Store {
    /// Opens (or creates) the store in `dir` for agent `me`; refuses a directory that
    /// belongs to another agent.
    pub fn open(dir: &Path, me: AgentId) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::Store(format!("{}: {e}", dir.display())))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(DB_FILE))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    NodeError::StoreInUse(dir.display().to_string())
                }
                e => db_err(e),
            })?;
        let store = Store { db };
        let tx = store.db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let owner = meta
                .get("agent")
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            match owner {
                Some(id) if id != me.0 => {
                    return Err(NodeError::Store(format!(
                        "{} belongs to another agent; use that agent's key or another data directory",
                        dir.display()
                    )));
                }
                Some(_) => {}
                None => {
                    meta.insert("agent", me.0.as_slice()).map_err(db_err)?;
                }
            }
            // Create every table so readers never meet a missing one.
            tx.open_table(SKILLS).map_err(db_err)?;
            tx.open_table(REPUTATION).map_err(db_err)?;
            tx.open_table(INITIATED).map_err(db_err)?;
            tx.open_table(OUTCOMES).map_err(db_err)?;
            tx.open_table(RESULTS).map_err(db_err)?;
            tx.open_table(GROUPS).map_err(db_err)?;
            tx.open_table(GROUP_CHANGES).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(store)
    }

    /// Applies `ops` in one durable transaction: all of them or none.
    pub fn commit(&self, ops: &[StoreOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        for op in ops {
            apply_op(&tx, op)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Saves a skill's learned metrics.
    pub fn save_skill(&self, skill: &Skill) -> Result<()> {
        self.commit(&[StoreOp::Skill(skill.clone())])
    }

    /// Learned skill metrics.
    pub fn skills(&self) -> Result<Vec<Skill>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(SKILLS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(codec::decode(v.value())?);
        }
        Ok(out)
    }

    /// Saves every reputation entry.
    pub fn save_reputation(&self, entries: &[(AgentId, Reputation)]) -> Result<()> {
        self.commit(&[StoreOp::Reputation(entries.to_vec())])
    }

    /// Reputation entries.
    pub fn reputation(&self) -> Result<Vec<(AgentId, Reputation)>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(REPUTATION).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (Ok(id), [s0, s1, s2, s3, s4, s5, s6, s7, o0, o1, o2, o3]) =
                (<[u8; 32]>::try_from(k.value()), v.value())
            else {
                return Err(NodeError::Store("corrupt reputation entry".into()));
            };
            let score = f64::from_be_bytes([*s0, *s1, *s2, *s3, *s4, *s5, *s6, *s7]);
            let observations = u32::from_be_bytes([*o0, *o1, *o2, *o3]);
            out.push((
                AgentId(id),
                Reputation {
                    score,
                    observations,
                },
            ));
        }
        Ok(out)
    }

    /// Records a task this agent initiated (until it finishes).
    pub fn save_initiated(&self, announce: &TaskAnnounce) -> Result<()> {
        self.commit(&[StoreOp::Initiated(announce.clone())])
    }

    /// Tasks initiated and not finished.
    pub fn initiated(&self) -> Result<Vec<TaskAnnounce>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(INITIATED).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(codec::decode(v.value())?);
        }
        Ok(out)
    }

    /// Records how a task ended, with every result, and forgets it as unfinished.
    pub fn save_finished(&self, done: &FinishedTask) -> Result<()> {
        self.commit(&[StoreOp::Finished(done.clone())])
    }

    /// How a task ended, if this agent recorded it.
    pub fn finished(&self, task_id: TaskId) -> Result<Option<FinishedTask>> {
        let key = task_id.group_id();
        let tx = self.db.begin_read().map_err(db_err)?;
        let Some(stored) = tx
            .open_table(OUTCOMES)
            .map_err(db_err)?
            .get(key.as_slice())
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let StoredOutcome {
            outcome,
            certificate,
        } = codec::decode(stored.value())?;
        let mut end = key.clone();
        end.extend_from_slice(&[0xff; 32]);
        let table = tx.open_table(RESULTS).map_err(db_err)?;
        let mut results = Vec::new();
        for row in table
            .range(key.as_slice()..=end.as_slice())
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let member: [u8; 32] = k.value()[40..]
                .try_into()
                .map_err(|_| NodeError::Store("corrupt result key".into()))?;
            let part: StoredPart = codec::decode(v.value())?;
            results.push(PartResult {
                skill: part.skill,
                member: AgentId(member),
                success: part.success,
                output: part.output,
            });
        }
        Ok(Some(FinishedTask {
            task_id,
            outcome,
            results,
            certificate,
        }))
    }

    /// The signed changes stored for a task's group (in no particular order).
    pub fn group_changes(&self, task_id: TaskId) -> Result<Vec<starling_crdt::SignedChange>> {
        let key = task_id.group_id();
        let mut end = key.clone();
        end.extend_from_slice(&[0xff; 32]);
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(GROUP_CHANGES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table
            .range(key.as_slice()..=end.as_slice())
            .map_err(db_err)?
        {
            let (_, v) = row.map_err(db_err)?;
            out.push(decode_change(v.value())?);
        }
        Ok(out)
    }

    /// Tasks whose group history the store holds.
    pub fn group_tasks(&self) -> Result<Vec<TaskId>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(GROUP_CHANGES).map_err(db_err)?;
        let mut out: Vec<TaskId> = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let task_id = task_of_group_id(&k.value()[..k.value().len().min(40)])?;
            if out.last() != Some(&task_id) {
                out.push(task_id);
            }
        }
        Ok(out)
    }

    /// A task's group document as stored: rebuilt from its history (every change
    /// verified again, as if a peer had sent it), or from a snapshot an earlier
    /// version saved. `None` if the store holds neither.
    pub fn group_doc(
        &self,
        task_id: TaskId,
        keypair: &starling_protocol::Keypair,
        limits: starling_crdt::Limits,
    ) -> Result<Option<starling_crdt::GroupDoc>> {
        let signer = keypair.signing_key().clone();
        let changes = self.group_changes(task_id)?;
        let bad = |e: starling_crdt::CrdtError| {
            NodeError::Store(format!("group document of {task_id}: {e}"))
        };
        if changes.is_empty() {
            return match self.group(task_id)? {
                Some(bytes) => starling_crdt::GroupDoc::load(signer, &bytes, limits)
                    .map(Some)
                    .map_err(bad),
                None => Ok(None),
            };
        }
        let count = changes.len();
        let mut doc = starling_crdt::GroupDoc::replica(
            signer,
            task_id.group_id(),
            starling_crdt::AgentKey(task_id.initiator.0),
            limits,
        )
        .map_err(bad)?;
        let report = doc.apply(changes);
        if let Some(e) = report.rejected.into_iter().next() {
            return Err(bad(e));
        }
        if doc.pending_count() != 0 || doc.change_count() != count {
            return Err(NodeError::Store(format!(
                "group document of {task_id}: stored history is incomplete"
            )));
        }
        Ok(Some(doc))
    }

    /// A group document snapshot saved by an earlier version.
    fn group(&self, task_id: TaskId) -> Result<Option<Vec<u8>>> {
        let key = task_id.group_id();
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(GROUPS).map_err(db_err)?;
        Ok(table
            .get(key.as_slice())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }
}

/// Carries out one write inside a transaction.
fn apply_op(tx: &redb::WriteTransaction, op: &StoreOp) -> Result<()> {
    match op {
        StoreOp::Skill(skill) => {
            let bytes = codec::encode(skill)?;
            tx.open_table(SKILLS)
                .map_err(db_err)?
                .insert(skill.name.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        StoreOp::Reputation(entries) => {
            let mut table = tx.open_table(REPUTATION).map_err(db_err)?;
            for (id, rep) in entries {
                let mut v = rep.score.to_be_bytes().to_vec();
                v.extend_from_slice(&rep.observations.to_be_bytes());
                table
                    .insert(id.0.as_slice(), v.as_slice())
                    .map_err(db_err)?;
            }
        }
        StoreOp::Initiated(announce) => {
            let bytes = codec::encode(announce)?;
            let key = announce.task_id.group_id();
            tx.open_table(INITIATED)
                .map_err(db_err)?
                .insert(key.as_slice(), bytes.as_slice())
                .map_err(db_err)?;
        }
        StoreOp::Finished(done) => {
            let key = done.task_id.group_id();
            let outcome = codec::encode(&StoredOutcome {
                outcome: done.outcome.clone(),
                certificate: done.certificate.clone(),
            })?;
            tx.open_table(OUTCOMES)
                .map_err(db_err)?
                .insert(key.as_slice(), outcome.as_slice())
                .map_err(db_err)?;
            let mut results = tx.open_table(RESULTS).map_err(db_err)?;
            for r in &done.results {
                let mut k = key.clone();
                k.extend_from_slice(&r.member.0);
                let v = codec::encode(&StoredPart {
                    skill: r.skill.clone(),
                    success: r.success,
                    output: r.output.clone(),
                })?;
                results.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
            tx.open_table(INITIATED)
                .map_err(db_err)?
                .remove(key.as_slice())
                .map_err(db_err)?;
        }
        StoreOp::GroupChanges { task_id, changes } => {
            use sha2::{Digest, Sha256};
            let prefix = task_id.group_id();
            let mut table = tx.open_table(GROUP_CHANGES).map_err(db_err)?;
            for change in changes {
                let mut key = prefix.clone();
                key.extend_from_slice(&Sha256::digest(&change.bytes));
                table
                    .insert(key.as_slice(), encode_change(change).as_slice())
                    .map_err(db_err)?;
            }
        }
    }
    Ok(())
}

/// A stored change: signer (32 bytes), signature (64), the change's bytes.
fn encode_change(change: &starling_crdt::SignedChange) -> Vec<u8> {
    let mut v = Vec::with_capacity(96 + change.bytes.len());
    v.extend_from_slice(&change.signer.0);
    v.extend_from_slice(&change.signature);
    v.extend_from_slice(&change.bytes);
    v
}

fn decode_change(v: &[u8]) -> Result<starling_crdt::SignedChange> {
    let corrupt = || NodeError::Store("corrupt stored group change".into());
    let signer: [u8; 32] = v
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(corrupt)?;
    let signature: [u8; 64] = v
        .get(32..96)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok(starling_crdt::SignedChange {
        signer: starling_crdt::AgentKey(signer),
        bytes: v[96..].to_vec(),
        signature,
    })
}

/// The task a group id (initiator, then seq big-endian) names.
fn task_of_group_id(id: &[u8]) -> Result<TaskId> {
    let corrupt = || NodeError::Store("corrupt group key".into());
    let initiator: [u8; 32] = id
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(corrupt)?;
    let seq: [u8; 8] = id
        .get(32..40)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok(TaskId {
        initiator: AgentId(initiator),
        seq: u64::from_be_bytes(seq),
    })
}
