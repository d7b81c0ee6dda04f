//! Consensus on a value among a task's validators (for tasks that ask for it).
//!
//! The coordinator proposes a value to `n` validators; each answers with a vote signed
//! over a domain-separated encoding of (task, proposal id, approve, value). The value
//! is approved once `floor(2n/3) + 1` validators approve it (2f+1 of n = 3f+1), and
//! rejected once that can no longer happen. Votes from non-validators, second votes,
//! votes after the deadline and votes with bad signatures are refused. The collected
//! votes form a [`Certificate`] anyone can verify without trusting the coordinator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AgentId, Keypair, ProtocolError, Result, TaskId, codec::*, message::*};

/// Domain separator of vote signatures.
pub const VOTE_DOMAIN: &[u8] = b"starling/consensus-vote/v1";

/// A value put to the validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The task.
    pub task_id: TaskId,
    /// Unique per task.
    pub proposal_id: u64,
    /// The value voted on (e.g. the task's combined result).
    #[serde(
        deserialize_with = "bounded_bytes::<_, MAX_RESULT>",
        serialize_with = "serde_bytes::serialize"
    )]
    pub value: Vec<u8>,
    /// Who may vote.
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_LIST>")]
    pub validators: Vec<AgentId>,
    /// Votes after this (ms) are refused.
    pub deadline_ms: u64,
}

/// A validator's signed vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The task.
    pub task_id: TaskId,
    /// The proposal.
    pub proposal_id: u64,
    /// The voter.
    pub voter: AgentId,
    /// For or against.
    pub approve: bool,
    /// Signature over [`vote_bytes`].
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

/// The bytes a vote signature covers.
pub fn vote_bytes(proposal: &Proposal, approve: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(VOTE_DOMAIN.len() + 60 + proposal.value.len());
    out.extend_from_slice(VOTE_DOMAIN);
    out.extend_from_slice(&proposal.task_id.group_id());
    out.extend_from_slice(&proposal.proposal_id.to_be_bytes());
    out.push(u8::from(approve));
    out.extend_from_slice(&(proposal.value.len() as u32).to_be_bytes());
    out.extend_from_slice(&proposal.value);
    out
}

impl Vote {
    /// Signs a vote on `proposal`.
    pub fn sign(keypair: &Keypair, proposal: &Proposal, approve: bool) -> Vote {
        Vote {
            task_id: proposal.task_id,
            proposal_id: proposal.proposal_id,
            voter: keypair.id(),
            approve,
            signature: keypair.sign(&vote_bytes(proposal, approve)),
        }
    }

    fn verify(&self, proposal: &Proposal) -> bool {
        self.task_id == proposal.task_id
            && self.proposal_id == proposal.proposal_id
            && self
                .voter
                .verify_strict(&vote_bytes(proposal, self.approve), &self.signature)
    }
}

/// Votes needed out of `n` validators: more than two thirds.
pub fn threshold(n: usize) -> usize {
    2 * n / 3 + 1
}

/// The decision, once there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approved, with the certificate.
    Approved(Certificate),
    /// Enough validators voted against that approval is impossible.
    Rejected,
}

/// A proposal and enough approving votes to prove the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The proposal.
    pub proposal: Proposal,
    /// The approving votes.
    pub votes: Vec<Vote>,
}

impl Certificate {
    /// Checks that more than two thirds of distinct validators signed an approval.
    pub fn verify(&self) -> Result<()> {
        let mut approvers = std::collections::BTreeSet::new();
        for v in &self.votes {
            if !self.proposal.validators.contains(&v.voter)
                || !v.approve
                || !v.verify(&self.proposal)
            {
                return Err(ProtocolError::Invalid(format!(
                    "certificate vote by {}",
                    v.voter
                )));
            }
            approvers.insert(v.voter);
        }
        if approvers.len() < threshold(self.proposal.validators.len()) {
            return Err(ProtocolError::Invalid(
                "certificate lacks a two-thirds majority".into(),
            ));
        }
        Ok(())
    }
}

/// Collects votes on one proposal.
#[derive(Debug, Clone)]
pub struct Tally {
    proposal: Proposal,
    votes: BTreeMap<AgentId, Vote>,
}

impl Tally {
    /// Starts a tally; the validators must be distinct and at least one.
    pub fn new(proposal: Proposal) -> Result<Tally> {
        let mut v = proposal.validators.clone();
        v.sort();
        v.dedup();
        if v.is_empty() || v.len() != proposal.validators.len() {
            return Err(ProtocolError::Invalid(
                "validators must be distinct and non-empty".into(),
            ));
        }
        Ok(Tally {
            proposal,
            votes: BTreeMap::new(),
        })
    }

    /// The proposal.
    pub fn proposal(&self) -> &Proposal {
        &self.proposal
    }

    /// Adds a vote received at `now_ms`. Refuses late votes, non-validators, second
    /// votes and bad signatures.
    pub fn add(&mut self, vote: Vote, now_ms: u64) -> Result<()> {
        if now_ms > self.proposal.deadline_ms {
            return Err(ProtocolError::Refused(format!(
                "late vote from {}",
                vote.voter
            )));
        }
        if !self.proposal.validators.contains(&vote.voter) {
            return Err(ProtocolError::Refused(format!(
                "{} is not a validator",
                vote.voter
            )));
        }
        if self.votes.contains_key(&vote.voter) {
            return Err(ProtocolError::Refused(format!(
                "second vote from {}",
                vote.voter
            )));
        }
        if !vote.verify(&self.proposal) {
            return Err(ProtocolError::BadSignature(vote.voter.to_string()));
        }
        self.votes.insert(vote.voter, vote);
        Ok(())
    }

    /// The decision, if the votes so far settle it.
    pub fn decision(&self) -> Option<Decision> {
        let n = self.proposal.validators.len();
        let need = threshold(n);
        let approvals: Vec<Vote> = self.votes.values().filter(|v| v.approve).cloned().collect();
        let against = self.votes.len() - approvals.len();
        if approvals.len() >= need {
            Some(Decision::Approved(Certificate {
                proposal: self.proposal.clone(),
                votes: approvals,
            }))
        } else if n - against < need {
            Some(Decision::Rejected)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> Vec<Keypair> {
        (1..=n)
            .map(|i| Keypair::from_secret_bytes([i; 32]))
            .collect()
    }

    fn proposal(validators: &[Keypair]) -> Proposal {
        Proposal {
            task_id: TaskId {
                initiator: validators[0].id(),
                seq: 1,
            },
            proposal_id: 7,
            value: b"result".to_vec(),
            validators: validators.iter().map(Keypair::id).collect(),
            deadline_ms: 1000,
        }
    }

    #[test]
    fn two_thirds_approve_and_the_certificate_verifies() {
        let v = keys(4); // n = 4 = 3f + 1, f = 1: 3 approvals needed
        let p = proposal(&v);
        let mut t = Tally::new(p.clone()).unwrap();
        t.add(Vote::sign(&v[0], &p, true), 10).unwrap();
        t.add(Vote::sign(&v[1], &p, true), 10).unwrap();
        assert_eq!(t.decision(), None);
        t.add(Vote::sign(&v[2], &p, true), 10).unwrap();
        let Some(Decision::Approved(cert)) = t.decision() else {
            panic!("not approved")
        };
        cert.verify().unwrap();
        // A certificate with a vote removed, or with a forged vote, does not verify.
        let mut short = cert.clone();
        short.votes.pop();
        assert!(short.verify().is_err());
        let mut forged = cert.clone();
        forged.votes[0].signature[0] ^= 1;
        assert!(forged.verify().is_err());
        let mut dup = cert.clone();
        dup.votes[2] = dup.votes[0].clone();
        assert!(
            dup.verify().is_err(),
            "a duplicated vote must not count twice"
        );
    }

    #[test]
    fn non_validators_duplicates_late_and_forged_votes_are_refused() {
        let v = keys(4);
        let p = proposal(&v);
        let mut t = Tally::new(p.clone()).unwrap();
        let outsider = Keypair::from_secret_bytes([99; 32]);
        assert!(t.add(Vote::sign(&outsider, &p, true), 10).is_err());
        t.add(Vote::sign(&v[0], &p, true), 10).unwrap();
        assert!(t.add(Vote::sign(&v[0], &p, true), 11).is_err());
        assert!(t.add(Vote::sign(&v[1], &p, true), 1001).is_err());
        let mut other = p.clone();
        other.value = b"another".to_vec();
        assert!(matches!(
            t.add(Vote::sign(&v[2], &other, true), 10),
            Err(ProtocolError::BadSignature(_))
        ));
        // Two against out of four: three approvals are no longer possible.
        t.add(Vote::sign(&v[2], &p, false), 10).unwrap();
        assert_eq!(t.decision(), None);
        t.add(Vote::sign(&v[3], &p, false), 10).unwrap();
        assert_eq!(t.decision(), Some(Decision::Rejected));
        assert_eq!(threshold(1), 1);
        assert_eq!(threshold(7), 5);
    }
}
