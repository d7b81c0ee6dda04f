//! Tasks that ask for consensus on their result.

use super::mesh::*;
use crate::{
    Command, Event, Input, Level, Message, Outcome, Output,
    consensus::{Proposal, threshold},
};

#[test]
fn a_consensus_task_finishes_with_a_certificate_from_its_members() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let members = [
        mesh.worker(10, "a", Level::Expert),
        mesh.worker(11, "b", Level::Expert),
        mesh.worker(12, "c", Level::Expert),
    ];
    let mut s = spec(&[
        ("a", Level::Novice, 1),
        ("b", Level::Novice, 1),
        ("c", Level::Novice, 1),
    ]);
    s.consensus = true;
    let task = mesh.announce(init, s);
    assert!(mesh.run_until(30_000, |m| m.finished(task).is_some()));
    let cert = mesh
        .events
        .iter()
        .find_map(|(_, _, e)| match e {
            Event::TaskFinished {
                task_id,
                outcome: Outcome::Completed,
                certificate,
                ..
            } if *task_id == task => certificate.clone(),
            _ => None,
        })
        .expect("a completed task with a certificate");
    cert.verify().unwrap();
    let mut validators = members.to_vec();
    validators.sort();
    assert_eq!(cert.proposal.validators, validators);
    assert!(cert.votes.len() >= threshold(3));
    assert_eq!(mesh.sent_by(members[0], "consensus_vote").len(), 1);
}

#[test]
fn a_validator_votes_against_results_its_document_does_not_hold() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let member = mesh.add(10, &[("a", Level::Expert)], 1, Exec::Manual, |_| {});
    let mut s = spec(&[("a", Level::Novice, 1)]);
    s.consensus = true;
    let task = mesh.announce(init, s);
    assert!(mesh.run_until(5_000, |m| {
        !m.events_where(|a, e| *a == member && matches!(e, Event::TaskAssigned(_)))
            .is_empty()
    }));
    mesh.command(
        member,
        Command::Complete {
            task_id: task,
            success: true,
            result: b"42".to_vec(),
        },
    );
    // Before the honest proposal arrives, the coordinator's key proposes other results.
    let forged = Proposal {
        task_id: task,
        proposal_id: 99,
        value: vec![0; 32],
        validators: vec![member],
        deadline_ms: mesh.now + 10_000,
    };
    let outs = mesh.feed(
        member,
        Input::Received {
            from: init,
            message: Message::ConsensusProposal(forged),
        },
    );
    let vote = outs.iter().find_map(|o| match o {
        Output::Send { envelope, .. } => match crate::SignedEnvelope::open(envelope.as_bytes())
            .unwrap()
            .message
        {
            Message::ConsensusVote(v) => Some(v),
            _ => None,
        },
        _ => None,
    });
    assert!(
        !vote.expect("a vote").approve,
        "a validator approved results it does not hold"
    );
    // The honest proposal is approved and the task completes.
    assert!(mesh.run_until(10_000, |m| m.finished(task).is_some()));
    assert_eq!(mesh.finished(task).unwrap().1, Outcome::Completed);
    let _ = mesh.key(init);
}
