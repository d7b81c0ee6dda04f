//! What survives a restart, in an embedded database (redb) in the data directory:
//! whose data it is, skill metrics, reputation, tasks this agent initiated, how they
//! ended with every member's result, and group documents (saved before any change of
//! ours leaves the node, so a restarted agent never reuses a sequence number).
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
const GROUPS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("groups");

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
        let db = Database::create(dir.join(DB_FILE)).map_err(db_err)?;
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
        }
        tx.commit().map_err(db_err)?;
        Ok(store)
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        f(&tx)?;
        tx.commit().map_err(db_err)
    }

    /// Saves a skill's learned metrics.
    pub fn save_skill(&self, skill: &Skill) -> Result<()> {
        let bytes = codec::encode(skill)?;
        self.write(|tx| {
            tx.open_table(SKILLS)
                .map_err(db_err)?
                .insert(skill.name.as_str(), bytes.as_slice())
                .map_err(db_err)?;
            Ok(())
        })
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
        self.write(|tx| {
            let mut table = tx.open_table(REPUTATION).map_err(db_err)?;
            for (id, rep) in entries {
                let mut v = rep.score.to_be_bytes().to_vec();
                v.extend_from_slice(&rep.observations.to_be_bytes());
                table
                    .insert(id.0.as_slice(), v.as_slice())
                    .map_err(db_err)?;
            }
            Ok(())
        })
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
        let bytes = codec::encode(announce)?;
        let key = announce.task_id.group_id();
        self.write(|tx| {
            tx.open_table(INITIATED)
                .map_err(db_err)?
                .insert(key.as_slice(), bytes.as_slice())
                .map_err(db_err)?;
            Ok(())
        })
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
        let key = done.task_id.group_id();
        let outcome = codec::encode(&StoredOutcome {
            outcome: done.outcome.clone(),
            certificate: done.certificate.clone(),
        })?;
        let parts: Vec<(Vec<u8>, Vec<u8>)> = done
            .results
            .iter()
            .map(|r| {
                let mut k = key.clone();
                k.extend_from_slice(&r.member.0);
                let v = codec::encode(&StoredPart {
                    skill: r.skill.clone(),
                    success: r.success,
                    output: r.output.clone(),
                })?;
                Ok((k, v))
            })
            .collect::<Result<_>>()?;
        self.write(|tx| {
            tx.open_table(OUTCOMES)
                .map_err(db_err)?
                .insert(key.as_slice(), outcome.as_slice())
                .map_err(db_err)?;
            let mut results = tx.open_table(RESULTS).map_err(db_err)?;
            for (k, v) in &parts {
                results.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
            tx.open_table(INITIATED)
                .map_err(db_err)?
                .remove(key.as_slice())
                .map_err(db_err)?;
            Ok(())
        })
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

    /// Saves a group document snapshot (`GroupDoc::save`).
    pub fn save_group(&self, task_id: TaskId, snapshot: &[u8]) -> Result<()> {
        let key = task_id.group_id();
        self.write(|tx| {
            tx.open_table(GROUPS)
                .map_err(db_err)?
                .insert(key.as_slice(), snapshot)
                .map_err(db_err)?;
            Ok(())
        })
    }

    /// A group document snapshot.
    pub fn group(&self, task_id: TaskId) -> Result<Option<Vec<u8>>> {
        let key = task_id.group_id();
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(GROUPS).map_err(db_err)?;
        Ok(table
            .get(key.as_slice())
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }
}
