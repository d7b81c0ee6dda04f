//! Local writes: what an agent records in a group document. Each call commits one
//! change, signs it, and returns it for shipping to the other members.
//!
//! Writes are checked locally too (authority, sizes), so an honest agent never
//! produces a change that its peers would refuse or the reducer would ignore.

use automerge::{
    ObjId, ObjType, ReadDoc, ScalarValue, Value,
    transaction::{Transactable, Transaction},
};

use crate::{
    AgentKey, CrdtError, GroupDoc, MemberStatus, Result, SignedChange, TaskOutcome, TaskStatus,
    schema::*,
};

impl GroupDoc {
    /// As a coordinator: invites `agent` to cover `skill`, ranked by `score`.
    pub fn invite(
        &mut self,
        agent: AgentKey,
        skill: &str,
        score: f64,
        now_ms: u64,
    ) -> Result<SignedChange> {
        self.require_authority()?;
        if !score.is_finite() {
            return Err(CrdtError::InvalidArgument("score must be finite".into()));
        }
        let view = self.view()?;
        if !view.skills.iter().any(|s| s.name == skill) {
            return Err(CrdtError::InvalidArgument(format!(
                "the task does not need skill {skill:?}"
            )));
        }
        // An invitation after a refusal must be later than the one refused, whatever
        // the clocks say, so that it shows as open (see `crate::view`).
        let at = match view.member(agent).and_then(|m| m.declined_invite) {
            Some(declined) => now_ms.max(declined + 1),
            None => now_ms,
        };
        let me = self.me();
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.invites, me)?;
            let entry = tx.put_object(&slot, agent.to_hex(), ObjType::Map)?;
            tx.put(&entry, K_SKILL, skill)?;
            tx.put(&entry, K_SCORE, score)?;
            tx.put(&entry, K_AT, at)?;
            Ok(())
        })
    }

    /// As a coordinator: declares `agent` failed (sticky; its part must be reassigned).
    pub fn declare_failed(
        &mut self,
        agent: AgentKey,
        reason: &str,
        now_ms: u64,
    ) -> Result<SignedChange> {
        self.require_authority()?;
        self.check_str(reason)?;
        let me = self.me();
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.verdicts, me)?;
            let entry = tx.put_object(&slot, agent.to_hex(), ObjType::Map)?;
            tx.put(&entry, K_REASON, reason)?;
            tx.put(&entry, K_AT, now_ms)?;
            Ok(())
        })
    }

    /// As a coordinator: records the task's lifecycle stage.
    pub fn set_status(&mut self, status: TaskStatus, now_ms: u64) -> Result<SignedChange> {
        self.require_authority()?;
        let me = self.me();
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.coord, me)?;
            tx.put(&slot, K_STATUS, status.as_str())?;
            Ok(())
        })
    }

    /// As a coordinator: records how the task ended (and marks it finished).
    pub fn set_outcome(&mut self, outcome: &TaskOutcome, now_ms: u64) -> Result<SignedChange> {
        self.require_authority()?;
        if let TaskOutcome::Failed(reason) = outcome {
            self.check_str(reason)?;
        }
        let me = self.me();
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.coord, me)?;
            match outcome {
                TaskOutcome::Completed => tx.put(&slot, K_OUTCOME, "completed")?,
                TaskOutcome::Failed(reason) => {
                    tx.put(&slot, K_OUTCOME, "failed")?;
                    tx.put(&slot, K_REASON, reason.as_str())?;
                }
            }
            tx.put(&slot, K_STATUS, TaskStatus::Finished.as_str())?;
            Ok(())
        })
    }

    /// As an invited agent: accepts, covering `skill` (which must match an invitation).
    pub fn accept(&mut self, skill: &str, now_ms: u64) -> Result<SignedChange> {
        let me = self.me();
        let view = self.view()?;
        let member = view
            .member(me)
            .ok_or_else(|| CrdtError::NotAuthorised("this agent was not invited".into()))?;
        if member.status == MemberStatus::Failed {
            return Err(CrdtError::NotAuthorised(
                "this agent was declared failed".into(),
            ));
        }
        if member.status == MemberStatus::Left {
            return Err(CrdtError::NotAuthorised(
                "this agent declined or left; it needs a new invitation".into(),
            ));
        }
        if member.skill != skill && member.status != MemberStatus::Invited {
            return Err(CrdtError::InvalidArgument(
                "already accepted for another skill".into(),
            ));
        }
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.members, me)?;
            tx.put(&slot, K_SKILL, skill)?;
            tx.put(&slot, K_STATUS, MemberStatus::Accepted.as_str())?;
            tx.put(&slot, K_JOINED_AT, now_ms)?;
            // An earlier refusal no longer stands: leaving later must not read as an
            // open invitation.
            if tx.get(&slot, K_DECLINED)?.is_some() {
                tx.delete(&slot, K_DECLINED)?;
            }
            Ok(())
        })
    }

    /// As an invited agent: declines the invitation for `skill`, so the document
    /// records the refusal (the member shows as `Left`). The refusal names the
    /// invitation it answers: a coordinator may invite the agent again later (say,
    /// once it has a free slot), and that newer invitation is open.
    pub fn decline(&mut self, skill: &str, now_ms: u64) -> Result<SignedChange> {
        let me = self.me();
        let view = self.view()?;
        let invited_at = match view.member(me) {
            Some(m) if m.status == MemberStatus::Invited && m.skill == skill => m.invited_at,
            _ => {
                return Err(CrdtError::NotAuthorised(
                    "no open invitation for this skill".into(),
                ));
            }
        };
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.members, me)?;
            tx.put(&slot, K_SKILL, skill)?;
            tx.put(&slot, K_STATUS, MemberStatus::Left.as_str())?;
            tx.put(&slot, K_DECLINED, invited_at)?;
            Ok(())
        })
    }

    /// As a member: marks itself as working on the task.
    pub fn activate(&mut self, now_ms: u64) -> Result<SignedChange> {
        self.write_own_status(MemberStatus::Active, now_ms)
    }

    /// As a member: leaves the group.
    pub fn leave(&mut self, now_ms: u64) -> Result<SignedChange> {
        self.write_own_status(MemberStatus::Left, now_ms)
    }

    /// As a member: reports progress (0..=1) and optionally a checkpoint to resume from.
    pub fn report_progress(
        &mut self,
        progress: f64,
        checkpoint: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<SignedChange> {
        if !(0.0..=1.0).contains(&progress) {
            return Err(CrdtError::InvalidArgument(
                "progress must be within 0..=1".into(),
            ));
        }
        if let Some(cp) = checkpoint
            && cp.len() > self.limits().max_checkpoint_bytes
        {
            return Err(CrdtError::TooLarge {
                size: cp.len(),
                limit: self.limits().max_checkpoint_bytes,
            });
        }
        let me = self.require_own_entry()?;
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.members, me)?;
            tx.put(&slot, K_PROGRESS, progress)?;
            if let Some(cp) = checkpoint {
                tx.put(&slot, K_CHECKPOINT, ScalarValue::Bytes(cp.to_vec()))?;
                tx.put(&slot, K_CHECKPOINT_AT, now_ms)?;
            }
            Ok(())
        })
    }

    /// As a member: records its result. Recording a second result is refused, so a
    /// member's result is committed exactly once.
    pub fn record_result(
        &mut self,
        success: bool,
        output: &[u8],
        now_ms: u64,
    ) -> Result<SignedChange> {
        if output.len() > self.limits().max_result_bytes {
            return Err(CrdtError::TooLarge {
                size: output.len(),
                limit: self.limits().max_result_bytes,
            });
        }
        let me = self.require_own_entry()?;
        if self.view()?.member(me).is_some_and(|m| m.result.is_some()) {
            return Err(CrdtError::InvalidArgument("result already recorded".into()));
        }
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.members, me)?;
            tx.put(
                &slot,
                K_OUTCOME,
                if success { "success" } else { "failure" },
            )?;
            tx.put(&slot, K_RESULT, ScalarValue::Bytes(output.to_vec()))?;
            tx.put(&slot, K_PROGRESS, 1.0)?;
            Ok(())
        })
    }

    /// As a member: records that it suspects `agent` (normally the coordinator) has
    /// failed. A majority of such suspicions replaces the coordinator.
    pub fn suspect(&mut self, agent: AgentKey, now_ms: u64) -> Result<SignedChange> {
        let me = self.require_own_entry()?;
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.members, me)?;
            let suspects = own_map(tx, &slot, K_SUSPECTS, me)?;
            tx.put(&suspects, agent.to_hex(), true)?;
            Ok(())
        })
    }

    /// As a member: takes over as coordinator once the current one is deposed (a
    /// majority of the required size suspects it). Refused if it is not deposed, or if
    /// this agent is not in the group or already was a coordinator.
    pub fn take_over(&mut self, now_ms: u64) -> Result<SignedChange> {
        let me = self.me();
        let view = self.view()?;
        let current = view.coordinator();
        if !view.coordinator_deposed() {
            return Err(CrdtError::NotAuthorised(
                "the coordinator is not deposed".into(),
            ));
        }
        if view.is_authority(me) || !view.member(me).is_some_and(|m| m.status.is_in_group()) {
            return Err(CrdtError::NotAuthorised(
                "only a member in the group may take over".into(),
            ));
        }
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.coord, me)?;
            let claims = own_map(tx, &slot, K_TAKEOVERS, me)?;
            tx.put(&claims, current.to_hex(), true)?;
            Ok(())
        })
    }

    fn write_own_status(&mut self, status: MemberStatus, now_ms: u64) -> Result<SignedChange> {
        let me = self.require_own_entry()?;
        self.write(now_ms, |tx, c| {
            let slot = own_slot(tx, &c.members, me)?;
            tx.put(&slot, K_STATUS, status.as_str())?;
            Ok(())
        })
    }

    fn require_authority(&self) -> Result<()> {
        if self.view()?.is_authority(self.me()) {
            Ok(())
        } else {
            Err(CrdtError::NotAuthorised(
                "only a coordinator may do this".into(),
            ))
        }
    }

    /// This agent must have accepted (its own entry exists) and not be failed.
    fn require_own_entry(&self) -> Result<AgentKey> {
        let me = self.me();
        match self.view()?.member(me).map(|m| m.status) {
            Some(s) if s.is_in_group() || s == MemberStatus::Left => Ok(me),
            Some(MemberStatus::Failed) => Err(CrdtError::NotAuthorised("declared failed".into())),
            _ => Err(CrdtError::NotAuthorised(
                "this agent has not accepted".into(),
            )),
        }
    }

    fn check_str(&self, s: &str) -> Result<()> {
        if s.len() > self.limits().max_string_bytes {
            return Err(CrdtError::TooLarge {
                size: s.len(),
                limit: self.limits().max_string_bytes,
            });
        }
        Ok(())
    }
}

/// This agent's slot in a container, created on first use.
fn own_slot(tx: &mut Transaction<'_>, container: &ObjId, me: AgentKey) -> Result<ObjId> {
    own_map(tx, container, &me.to_hex(), me)
}

/// The map under `obj[key]` that `me` created, created now if there is none.
fn own_map(tx: &mut Transaction<'_>, obj: &ObjId, key: &str, me: AgentKey) -> Result<ObjId> {
    let existing = tx.get_all(obj, key)?.into_iter().rfind(|(v, id)| {
        matches!(v, Value::Object(ObjType::Map))
            && matches!(id, ObjId::Id(_, a, _) if AgentKey::from_actor(a) == Some(me))
    });
    match existing {
        Some((_, id)) => Ok(id),
        None => Ok(tx.put_object(obj, key, ObjType::Map)?),
    }
}
