//! Consensus on results, for tasks that ask for it.
//!
//! When every selected member has recorded a successful result, the coordinator
//! proposes the SHA-256 of the canonical results (see [`results_value`]) to the
//! selected members. Each validator computes the same value from its own replica of
//! the signed group document and votes for it only if they match — a coordinator
//! cannot claim a result the members did not record. Two thirds of approvals make a
//! certificate that anyone can verify; it travels with `Event::TaskFinished`.

use sha2::{Digest, Sha256};
use starling_crdt::WorkingGroup;
use tracing::debug;

use super::{Agent, Timestamp};
use crate::{
    AgentId, Message, Outcome, ProtocolError, TaskId,
    consensus::{Decision, Proposal, Tally, Vote},
};

/// Domain separator of the results value.
const RESULTS_DOMAIN: &[u8] = b"starling/results/v1";

/// SHA-256 over the selected members' results in the view's order (skills by name,
/// members by rank): skill, member key, success and output, each length-prefixed.
/// `None` while some selected member has no result yet.
pub(crate) fn results_value(view: &WorkingGroup) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(RESULTS_DOMAIN);
    for (skill, member) in view.selected() {
        let r = view.member(member)?.result.as_ref()?;
        h.update((skill.len() as u32).to_be_bytes());
        h.update(skill.as_bytes());
        h.update(member.0);
        h.update([u8::from(r.success)]);
        h.update((r.output.len() as u32).to_be_bytes());
        h.update(&r.output);
    }
    Some(h.finalize().into())
}

/// A coordinator's vote in progress.
#[derive(Debug)]
pub(crate) struct Ballot {
    pub(crate) tally: Tally,
}

impl Ballot {
    pub(crate) fn deadline(&self) -> Timestamp {
        self.tally.proposal().deadline_ms
    }
}

impl Agent {
    /// Puts the recorded results to the selected members.
    pub(super) fn coord_start_vote(&mut self, task_id: TaskId, view: &WorkingGroup) {
        let Some(value) = results_value(view) else {
            return;
        };
        let mut validators: Vec<AgentId> = view.selected().map(|(_, k)| AgentId::from(k)).collect();
        validators.sort();
        validators.dedup();
        let deadline_ms = self.now + 2 * self.config.invite_timeout_ms;
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return;
        };
        c.proposals += 1;
        let proposal = Proposal {
            task_id,
            proposal_id: c.proposals,
            value: value.to_vec(),
            validators: validators.clone(),
            deadline_ms,
        };
        match Tally::new(proposal.clone()) {
            Ok(tally) => c.ballot = Some(Ballot { tally }),
            Err(e) => return debug!(error = %e, "cannot start a vote"),
        }
        debug!(task = ?task_id, validators = validators.len(), "proposing the results");
        for v in validators {
            self.send(v, Message::ConsensusProposal(proposal.clone()));
        }
    }

    pub(super) fn coord_on_vote(&mut self, from: AgentId, vote: Vote) {
        let now = self.now;
        let task_id = vote.task_id;
        let Some(ballot) = self
            .coordinating
            .get_mut(&task_id)
            .and_then(|c| c.ballot.as_mut())
        else {
            return self.stray(from, "vote without a ballot");
        };
        if vote.voter != from {
            return self.misbehaved(from, "vote signed for another agent".into());
        }
        if vote.proposal_id != ballot.tally.proposal().proposal_id {
            return self.stray(from, "vote on an old proposal");
        }
        match ballot.tally.add(vote, now) {
            Ok(()) => {}
            Err(ProtocolError::Refused(reason)) => return self.stray(from, &reason),
            Err(e) => return self.misbehaved(from, e.to_string()),
        }
        match ballot.tally.decision() {
            Some(Decision::Approved(cert)) => {
                self.finish_with(task_id, Outcome::Completed, Some(cert))
            }
            Some(Decision::Rejected) => self.finish(
                task_id,
                Outcome::Failed("the validators rejected the proposed result".into()),
            ),
            None => {}
        }
    }

    /// Fails a vote that ran out of time.
    pub(super) fn coord_vote_expired(&mut self, task_id: TaskId) {
        self.finish(
            task_id,
            Outcome::Failed("the validators reached no two-thirds decision in time".into()),
        );
    }

    pub(super) fn member_on_proposal(&mut self, from: AgentId, proposal: Proposal) {
        let task_id = proposal.task_id;
        if !self.memberships.contains_key(&task_id) {
            return self.stray(from, "proposal for a group this agent is not in");
        }
        let Some(view) = self.docs.get(&task_id).and_then(|d| d.view().ok()) else {
            return;
        };
        if !view.is_authority(from.key()) {
            return self.misbehaved(
                from,
                "proposal from an agent that does not coordinate".into(),
            );
        }
        if !proposal.validators.contains(&self.id) {
            return self.stray(from, "proposal naming other validators");
        }
        if let Some(m) = self.memberships.get_mut(&task_id) {
            m.pending_proposal = Some((from, proposal));
        }
        self.member_try_vote(task_id);
    }

    /// Votes on a pending proposal once this replica holds every result; until then
    /// asks the coordinator for what it lacks.
    pub(super) fn member_try_vote(&mut self, task_id: TaskId) {
        let Some((from, proposal)) = self
            .memberships
            .get(&task_id)
            .and_then(|m| m.pending_proposal.clone())
        else {
            return;
        };
        let Some(doc) = self.docs.get(&task_id) else {
            return;
        };
        let Ok(view) = doc.view() else { return };
        let Some(mine) = results_value(&view) else {
            let sync = doc.sync_message(None).encode();
            return self.send(from, Message::CrdtChanges { task_id, sync });
        };
        let approve = proposal.value == mine;
        if !approve {
            self.misbehaved(
                from,
                "proposed results differ from the group document".into(),
            );
        }
        if let Some(m) = self.memberships.get_mut(&task_id) {
            m.pending_proposal = None;
        }
        let vote = Vote::sign(&self.keypair, &proposal, approve);
        debug!(task = ?task_id, approve, "voting");
        self.send(from, Message::ConsensusVote(vote));
    }
}
