//! `GroupDoc`: one working group's automerge document, its signed history, and the
//! checks every remote change passes before it is applied.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{
    Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value, transaction::CommitOptions,
    transaction::Transactable,
};
use ed25519_dalek::SigningKey;

use crate::{
    AgentKey, CrdtError, Limits, Result, SignedChange,
    permissions::GenesisObjects,
    schema::*,
    signed::VerifiedChange,
    view::{self, WorkingGroup},
};

/// One working group's document, held by one agent (its replica).
///
/// Every change in it is signed, and every remote change is checked (size, shape,
/// signature, actor, write permissions, equivocation) before it is applied. Changes
/// whose dependencies have not arrived yet wait in a bounded buffer.
///
/// An agent must keep its replica (see [`GroupDoc::save`]) for as long as the group
/// lives: a replica started afresh would reuse sequence numbers, which peers treat as
/// equivocation.
pub struct GroupDoc {
    signer: SigningKey,
    me: AgentKey,
    group_id: Vec<u8>,
    initiator: AgentKey,
    limits: Limits,
    doc: Automerge,
    genesis: Option<GenesisObjects>,
    /// Every applied change with its signature, for relaying.
    changes: BTreeMap<ChangeHash, SignedChange>,
    /// (actor, seq) of every applied change.
    by_seq: BTreeMap<(AgentKey, u64), ChangeHash>,
    /// Applied changes by their chunk checksum (the first four bytes of the hash,
    /// which every change chunk carries in its header): a copy of a change already
    /// applied is recognised by its bytes before it is parsed or its signature
    /// checked (see [`GroupDoc::apply`]).
    by_checksum: BTreeMap<[u8; 4], ChangeHash>,
    /// Verified changes waiting for their dependencies.
    pending: BTreeMap<ChangeHash, VerifiedChange>,
    equivocators: BTreeSet<AgentKey>,
    /// The last view and the heads it was computed at: the view is a pure function
    /// of the document, and reducing it is the dearest read there is, so it is
    /// computed once per document state.
    view_cache: std::sync::Mutex<Option<(Vec<ChangeHash>, WorkingGroup)>>,
}

/// What happened to a batch of remote changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Hashes applied, in order (including earlier pending changes this batch released).
    pub applied: Vec<ChangeHash>,
    /// Changes already in the document or already pending.
    pub duplicates: usize,
    /// Changes now waiting for dependencies.
    pub pending: usize,
    /// Changes refused, with why. Nothing refused was applied.
    pub rejected: Vec<CrdtError>,
}

impl ApplyReport {
    /// True if nothing was refused.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty()
    }
}

impl GroupDoc {
    /// Creates a group as its initiator and returns the genesis change to ship with the
    /// invitations.
    pub fn create(
        signer: SigningKey,
        spec: &GroupSpec,
        limits: Limits,
    ) -> Result<(GroupDoc, SignedChange)> {
        limits.validate()?;
        let me = AgentKey::of(&signer);
        if spec.initiator != me {
            return Err(CrdtError::InvalidArgument(
                "the initiator must create the group".into(),
            ));
        }
        validate_spec(spec, &limits)?;
        let mut doc = GroupDoc::replica(signer, spec.group_id.clone(), me, limits)?;
        let mut tx = doc.doc.transaction();
        let built = (|| -> std::result::Result<(), automerge::AutomergeError> {
            tx.put(ROOT, K_VERSION, SCHEMA_VERSION)?;
            let task = tx.put_object(ROOT, K_TASK, ObjType::Map)?;
            tx.put(&task, K_ID, spec.group_id.clone())?;
            tx.put(&task, K_INITIATOR, me.to_hex())?;
            tx.put(&task, K_MAX_GROUP, u64::from(spec.max_group_size))?;
            tx.put(&task, K_CREATED_AT, spec.created_at_ms)?;
            let skills = tx.put_object(&task, K_SKILLS, ObjType::Map)?;
            for need in &spec.skills {
                tx.put(&skills, need.name.as_str(), u64::from(need.count))?;
            }
            for c in CONTAINERS {
                tx.put_object(ROOT, c, ObjType::Map)?;
            }
            Ok(())
        })();
        if let Err(e) = built {
            tx.rollback();
            return Err(e.into());
        }
        let (hash, _) =
            tx.commit_with(CommitOptions::default().with_time(spec.created_at_ms as i64));
        let hash = hash.ok_or_else(|| CrdtError::Automerge("empty genesis".into()))?;
        let change = doc
            .doc
            .get_change_by_hash(&hash)
            .ok_or_else(|| CrdtError::Automerge("genesis change not found".into()))?;
        let signed = SignedChange::sign(&doc.signer, &doc.group_id, &change);
        doc.genesis = Some(genesis_objects(&doc.doc, me, change.max_op())?);
        doc.record(me, change.seq(), hash, signed.clone());
        Ok((doc, signed))
    }

    /// An empty replica of the group `group_id` announced by `initiator`; it fills up
    /// as changes arrive, starting with the genesis.
    pub fn replica(
        signer: SigningKey,
        group_id: Vec<u8>,
        initiator: AgentKey,
        limits: Limits,
    ) -> Result<GroupDoc> {
        limits.validate()?;
        if group_id.is_empty() || group_id.len() > limits.max_string_bytes {
            return Err(CrdtError::InvalidArgument("group id length".into()));
        }
        let me = AgentKey::of(&signer);
        let mut doc = Automerge::new();
        doc.set_actor(me.to_actor());
        Ok(GroupDoc {
            signer,
            me,
            group_id,
            initiator,
            limits,
            doc,
            genesis: None,
            changes: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            by_checksum: BTreeMap::new(),
            pending: BTreeMap::new(),
            equivocators: BTreeSet::new(),
            view_cache: std::sync::Mutex::new(None),
        })
    }

    /// This replica's own key.
    pub fn me(&self) -> AgentKey {
        self.me
    }

    /// The group id every signature binds.
    pub fn group_id(&self) -> &[u8] {
        &self.group_id
    }

    /// The initiator named when the replica was made.
    pub fn initiator(&self) -> AgentKey {
        self.initiator
    }

    /// The bounds this replica enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the genesis change has been applied.
    pub fn is_initialized(&self) -> bool {
        self.genesis.is_some()
    }

    /// The underlying automerge document (read-only).
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// Current heads (sorted).
    pub fn heads(&self) -> Vec<ChangeHash> {
        let mut heads = self.doc.get_heads();
        heads.sort();
        heads
    }

    /// Number of applied changes.
    pub fn change_count(&self) -> usize {
        self.changes.len()
    }

    /// Number of changes waiting for dependencies.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether a change is in the document.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.changes.contains_key(hash)
    }

    /// Agents caught signing two different changes with the same sequence number.
    pub fn equivocators(&self) -> &BTreeSet<AgentKey> {
        &self.equivocators
    }

    /// All applied changes in causal order, signatures included.
    pub fn all_changes(&self) -> Vec<SignedChange> {
        self.changes_since(&[])
    }

    /// The applied changes that are not ancestors of `heads` (unknown hashes in `heads`
    /// are ignored), in causal order.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<SignedChange> {
        let known: Vec<ChangeHash> = heads
            .iter()
            .filter(|h| self.changes.contains_key(h))
            .copied()
            .collect();
        self.doc
            .get_changes(&known)
            .iter()
            .filter_map(|c| self.changes.get(&c.hash()).cloned())
            .collect()
    }

    /// The group as the document says it is. A pure function of the applied changes.
    pub fn view(&self) -> Result<WorkingGroup> {
        if self.genesis.is_none() {
            return Err(CrdtError::NotInitialized);
        }
        let heads = self.heads();
        let mut cache = self.view_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, view)) = cache.as_ref()
            && *at == heads
        {
            return Ok(view.clone());
        }
        let view = view::reduce(&self.doc, self.initiator)?;
        *cache = Some((heads, view.clone()));
        Ok(view)
    }

    /// Applies remote changes. Each is verified and checked; refused ones are reported
    /// and skipped, the rest applied in causal order as their dependencies arrive.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = SignedChange>) -> ApplyReport {
        let mut report = ApplyReport::default();
        for signed in changes {
            if let Err(e) = self.take_one(signed, &mut report) {
                tracing::debug!(error = %e, "change refused");
                report.rejected.push(e);
            }
        }
        self.release_pending(&mut report);
        report.pending = self.pending.len();
        report
    }

    /// The hash of `signed` if this document has applied exactly that change.
    pub fn hash_of(&self, signed: &SignedChange) -> Option<ChangeHash> {
        checksum(&signed.bytes)
            .and_then(|c| self.by_checksum.get(&c))
            .filter(|h| {
                self.changes
                    .get(h)
                    .is_some_and(|known| known.bytes == signed.bytes)
            })
            .copied()
    }

    /// Whether `signed` carries exactly the bytes of a change already applied. Such
    /// a copy needs no parsing and no signature check: those bytes were verified
    /// once, and whatever signature this copy has, the change it would add is there.
    fn is_applied_copy(&self, signed: &SignedChange) -> bool {
        self.hash_of(signed).is_some()
    }

    fn take_one(&mut self, signed: SignedChange, report: &mut ApplyReport) -> Result<()> {
        if self.is_applied_copy(&signed) {
            report.duplicates += 1;
            return Ok(());
        }
        let v = signed.verify(&self.group_id, &self.limits)?;
        if self.changes.contains_key(&v.hash) || self.pending.contains_key(&v.hash) {
            report.duplicates += 1;
            return Ok(());
        }
        let key = (v.actor(), v.seq());
        let clash = self.by_seq.get(&key).copied().or_else(|| {
            self.pending
                .values()
                .find(|p| (p.actor(), p.seq()) == key)
                .map(|p| p.hash)
        });
        if clash.is_some_and(|h| h != v.hash) {
            self.equivocators.insert(v.actor());
            tracing::warn!(actor = %v.actor(), seq = v.seq(), "equivocation");
            return Err(CrdtError::Equivocation {
                actor: v.actor(),
                seq: v.seq(),
            });
        }
        if self.changes.len() + self.pending.len() >= self.limits.max_doc_changes {
            return Err(CrdtError::DocumentFull(self.changes.len()));
        }
        if v.change.deps().is_empty() && !(v.actor() == self.initiator && v.seq() == 1) {
            return Err(CrdtError::InvalidGenesis(format!(
                "change by {} seq {} has no dependencies but is not the initiator's genesis",
                v.actor(),
                v.seq()
            )));
        }
        if self.is_ready(&v) {
            let hash = v.hash;
            self.integrate(v)?;
            report.applied.push(hash);
        } else {
            if self.pending.len() >= self.limits.max_pending {
                return Err(CrdtError::PendingFull(self.pending.len()));
            }
            self.pending.insert(v.hash, v);
        }
        Ok(())
    }

    fn is_ready(&self, v: &VerifiedChange) -> bool {
        let seq_ok = v.seq() == 1 || self.by_seq.contains_key(&(v.actor(), v.seq() - 1));
        let genesis_ok = self.genesis.is_some() || v.change.deps().is_empty();
        seq_ok && genesis_ok && v.change.deps().iter().all(|d| self.changes.contains_key(d))
    }

    fn release_pending(&mut self, report: &mut ApplyReport) {
        loop {
            let ready: Vec<ChangeHash> = self
                .pending
                .values()
                .filter(|p| self.is_ready(p))
                .map(|p| p.hash)
                .collect();
            if ready.is_empty() {
                return;
            }
            for hash in ready {
                let Some(v) = self.pending.remove(&hash) else {
                    continue;
                };
                match self.integrate(v) {
                    Ok(()) => report.applied.push(hash),
                    Err(e) => report.rejected.push(e),
                }
            }
        }
    }

    /// Applies one ready, verified change after the genesis or permission checks.
    fn integrate(&mut self, v: VerifiedChange) -> Result<()> {
        match &self.genesis {
            None => {
                if v.actor() != self.initiator || v.seq() != 1 {
                    return Err(CrdtError::InvalidGenesis(
                        "not the initiator's first change".into(),
                    ));
                }
                // Apply to a scratch document first: a bad genesis leaves nothing behind.
                let mut scratch = Automerge::new();
                scratch.apply_changes([v.change.clone()])?;
                check_genesis(&scratch, &self.group_id, self.initiator, &self.limits)?;
                self.genesis = Some(genesis_objects(
                    &scratch,
                    self.initiator,
                    v.change.max_op(),
                )?);
                scratch.set_actor(self.me.to_actor());
                self.doc = scratch;
            }
            Some(g) => {
                g.check(&v)?;
                self.doc.apply_changes([v.change.clone()])?;
            }
        }
        self.record(v.actor(), v.seq(), v.hash, v.signed);
        Ok(())
    }

    fn record(&mut self, actor: AgentKey, seq: u64, hash: ChangeHash, signed: SignedChange) {
        self.by_seq.insert((actor, seq), hash);
        if let Some(c) = checksum(&signed.bytes) {
            self.by_checksum.entry(c).or_insert(hash);
        }
        self.changes.insert(hash, signed);
    }

    /// Commits one local edit as a signed change.
    pub(crate) fn write(
        &mut self,
        now_ms: u64,
        edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &Containers) -> Result<()>,
    ) -> Result<SignedChange> {
        if self.genesis.is_none() {
            return Err(CrdtError::NotInitialized);
        }
        if self.changes.len() + self.pending.len() >= self.limits.max_doc_changes {
            return Err(CrdtError::DocumentFull(self.changes.len()));
        }
        let containers = Containers::of(&self.doc)?;
        let mut tx = self.doc.transaction();
        if let Err(e) = edit(&mut tx, &containers) {
            tx.rollback();
            return Err(e);
        }
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms as i64));
        let hash =
            hash.ok_or_else(|| CrdtError::InvalidArgument("the edit changed nothing".into()))?;
        let change = self
            .doc
            .get_change_by_hash(&hash)
            .ok_or_else(|| CrdtError::Automerge("committed change not found".into()))?;
        let signed = SignedChange::sign(&self.signer, &self.group_id, &change);
        self.record(self.me, change.seq(), hash, signed.clone());
        Ok(signed)
    }

    /// Serialises the replica: the compact automerge document plus every change's
    /// signature, so a loaded replica can still prove and relay each change. Changes
    /// still waiting for dependencies are not saved (peers offer them again).
    pub fn save(&self) -> Vec<u8> {
        let doc_bytes = self.doc.save();
        let mut out = Vec::with_capacity(doc_bytes.len() + self.changes.len() * 96 + 128);
        out.extend_from_slice(SAVE_MAGIC);
        out.extend_from_slice(&(self.group_id.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.group_id);
        out.extend_from_slice(&self.initiator.0);
        out.extend_from_slice(&(doc_bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&doc_bytes);
        out.extend_from_slice(&(self.changes.len() as u32).to_be_bytes());
        for (hash, signed) in &self.changes {
            out.extend_from_slice(&hash.0);
            out.extend_from_slice(&signed.signature);
        }
        out
    }

    /// Loads a saved replica for `signer`, re-verifying every change as if it came from
    /// a peer.
    pub fn load(signer: SigningKey, bytes: &[u8], limits: Limits) -> Result<GroupDoc> {
        crate::wire::check_size(bytes, &limits)?;
        let mut r = crate::wire::Reader::new(bytes);
        if r.take(SAVE_MAGIC.len())? != SAVE_MAGIC {
            return Err(CrdtError::Malformed("not a saved group document".into()));
        }
        let id_len = r.u16()? as usize;
        let group_id = r.take(id_len)?.to_vec();
        let initiator = AgentKey(r.array::<32>()?);
        let doc_len = r.u32()? as usize;
        let doc_bytes = r.take(doc_len)?;
        let count = r.u32()? as usize;
        if count > limits.max_doc_changes || count.saturating_mul(96) > r.remaining() {
            return Err(CrdtError::TooMany {
                what: "saved changes",
                count: count as u64,
                limit: limits.max_doc_changes as u64,
            });
        }
        let mut signatures = BTreeMap::new();
        for _ in 0..count {
            let hash = ChangeHash(r.array::<32>()?);
            signatures.insert(hash, r.array::<64>()?);
        }
        r.finish()?;
        let stored = Automerge::load(doc_bytes).map_err(|e| CrdtError::Malformed(e.to_string()))?;
        let mut replica = GroupDoc::replica(signer, group_id, initiator, limits)?;
        let mut signed = Vec::with_capacity(count);
        for change in stored.get_changes(&[]) {
            let signer = AgentKey::from_actor(change.actor_id())
                .ok_or_else(|| CrdtError::Malformed("actor is not an agent key".into()))?;
            let signature = *signatures
                .get(&change.hash())
                .ok_or_else(|| CrdtError::Malformed("a change has no signature".into()))?;
            signed.push(SignedChange {
                signer,
                bytes: change.raw_bytes().to_vec(),
                signature,
            });
        }
        let report = replica.apply(signed);
        if let Some(e) = report.rejected.into_iter().next() {
            return Err(e);
        }
        if replica.pending_count() != 0 || replica.change_count() != count {
            return Err(CrdtError::Malformed("saved history is incomplete".into()));
        }
        Ok(replica)
    }
}

const SAVE_MAGIC: &[u8] = b"starling/group/v1";

/// Object ids of the four containers in the current document.
pub(crate) struct Containers {
    pub(crate) members: ObjId,
    pub(crate) invites: ObjId,
    pub(crate) verdicts: ObjId,
    pub(crate) coord: ObjId,
}

impl Containers {
    pub(crate) fn of(doc: &Automerge) -> Result<Containers> {
        let get = |k: &str| match doc.get(ROOT, k)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(CrdtError::InvalidGenesis(format!("missing container {k}"))),
        };
        Ok(Containers {
            members: get(K_MEMBERS)?,
            invites: get(K_INVITES)?,
            verdicts: get(K_VERDICTS)?,
            coord: get(K_COORD)?,
        })
    }
}

fn genesis_objects(doc: &Automerge, initiator: AgentKey, max_op: u64) -> Result<GenesisObjects> {
    let c = Containers::of(doc)?;
    let counter = |id: &ObjId| match id {
        ObjId::Id(ctr, _, _) => Ok(*ctr),
        ObjId::Root => Err(CrdtError::InvalidGenesis("container is the root".into())),
    };
    Ok(GenesisObjects {
        initiator,
        max_op,
        containers: [
            counter(&c.members)?,
            counter(&c.invites)?,
            counter(&c.verdicts)?,
            counter(&c.coord)?,
        ],
    })
}

/// A genesis must carry the schema version, this group's id and initiator, a sane spec
/// and the four containers.
fn check_genesis(
    doc: &Automerge,
    group_id: &[u8],
    initiator: AgentKey,
    limits: &Limits,
) -> Result<()> {
    let bad = |m: &str| CrdtError::InvalidGenesis(m.to_string());
    match doc.get(ROOT, K_VERSION)? {
        Some((Value::Scalar(s), _)) if s.as_u64() == Some(SCHEMA_VERSION) => {}
        _ => return Err(bad("unknown schema version")),
    }
    let spec =
        view::read_spec(doc, initiator).ok_or_else(|| bad("missing or malformed task spec"))?;
    if spec.group_id != group_id {
        return Err(CrdtError::WrongGroup);
    }
    validate_spec(&spec, limits)?;
    Containers::of(doc)?;
    Ok(())
}

pub(crate) fn validate_spec(spec: &GroupSpec, limits: &Limits) -> Result<()> {
    let bad = |m: String| Err(CrdtError::InvalidArgument(m));
    if spec.group_id.is_empty() || spec.group_id.len() > limits.max_string_bytes {
        return bad("group id must be 1..=max_string_bytes bytes".into());
    }
    if spec.skills.is_empty() || spec.skills.len() > limits.max_skills {
        return bad(format!("a task needs 1..={} skills", limits.max_skills));
    }
    let mut names = BTreeSet::new();
    for s in &spec.skills {
        if s.name.is_empty() || s.name.len() > limits.max_string_bytes || s.count == 0 {
            return bad(format!("bad skill need {:?}", s.name));
        }
        if !names.insert(&s.name) {
            return bad(format!("skill {:?} listed twice", s.name));
        }
    }
    let total: u64 = spec.skills.iter().map(|s| u64::from(s.count)).sum();
    if spec.max_group_size == 0 || u64::from(spec.max_group_size) < total {
        return bad(format!(
            "max_group_size {} cannot hold the {total} agents the skills need",
            spec.max_group_size
        ));
    }
    Ok(())
}

/// The checksum in a change chunk's header (bytes 4..8, after the magic bytes).
fn checksum(bytes: &[u8]) -> Option<[u8; 4]> {
    bytes.get(4..8).and_then(|c| c.try_into().ok())
}
