//! Duplicated, late and stray messages change nothing.

use super::mesh::*;
use crate::{
    Audience, Event, Input, Keypair, Level, Message, Outcome, Output, RejectReason, TaskId,
};
use starling_crdt::{GroupDoc, GroupSpec, SkillNeed, encode_batch};

#[test]
fn every_message_delivered_twice_changes_nothing() {
    let mut mesh = Mesh::new();
    mesh.duplicate = true;
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let a = mesh.worker(10, "a", Level::Expert);
    let b = mesh.worker(11, "b", Level::Expert);
    mesh.worker(12, "a", Level::Novice);
    let task = mesh.announce(
        init,
        spec(&[("a", Level::Novice, 1), ("b", Level::Novice, 1)]),
    );
    assert!(mesh.run_until(30_000, |m| m.finished(task).is_some()));
    mesh.run_for(10_000);
    assert_eq!(mesh.finish_count(task), 1);
    assert_eq!(
        mesh.events_where(|_, e| matches!(e, Event::GroupFormed { .. }))
            .len(),
        1
    );
    for m in [a, b] {
        assert_eq!(
            mesh.events_where(|who, e| *who == m && matches!(e, Event::TaskAssigned(_)))
                .len(),
            1
        );
    }
    let (_, outcome, results) = mesh.finished(task).unwrap();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(results.len(), 2);
    assert!(
        mesh.events_where(|_, e| matches!(
            e,
            Event::Misbehaviour { .. } | Event::CommandFailed { .. }
        ))
        .is_empty()
    );
}

fn no_traffic(outs: &[Output]) -> bool {
    outs.iter()
        .all(|o| matches!(o, Output::Emit(Event::Misbehaviour { .. })))
}

#[test]
fn stray_and_forged_messages_are_ignored_without_a_state_change() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let worker = mesh.add(10, &[("a", Level::Expert)], 1, Exec::Manual, |_| {});
    let mallory = Keypair::from_secret_bytes([66; 32]);
    let m = mallory.id();
    let task = mesh.announce(init, spec(&[("a", Level::Novice, 1)]));
    assert!(mesh.run_until(5_000, |mm| {
        !mm.events_where(|a, e| *a == worker && matches!(e, Event::TaskAssigned(_)))
            .is_empty()
    }));
    let slots = mesh.agent(worker).slots_used();
    let heads = mesh.agent(init).group(&task).unwrap().heads();
    let unknown = TaskId {
        initiator: m,
        seq: 5,
    };

    // To the initiator: an accept without an invitation, a completion and a heartbeat
    // from a non-member, an offer for an unknown task, a reject nobody asked for.
    for msg in [
        Message::GroupAccept {
            task_id: task,
            free_slots: 1,
            changes: vec![],
        },
        Message::TaskComplete {
            task_id: task,
            free_slots: 1,
            success: true,
            changes: vec![],
        },
        Message::Heartbeat {
            task_id: task,
            heads: vec![[0; 32]],
        },
        Message::SkillOffer {
            task_id: unknown,
            skill: crate::Skill::new("a", Level::Expert),
            free_slots: 1,
            max_slots: 1,
        },
        Message::GroupReject {
            task_id: task,
            free_slots: 1,
            reason: RejectReason::NoCapacity,
            changes: vec![],
        },
    ] {
        let outs = mesh.feed(
            init,
            Input::Received {
                from: m,
                message: msg.clone(),
            },
        );
        assert!(no_traffic(&outs), "{} produced {outs:?}", msg.kind());
    }
    // To the member: a start and a dissolve from someone who does not coordinate.
    for msg in [
        Message::TaskStart {
            task_id: task,
            resume_from: None,
            changes: vec![],
        },
        Message::GroupDissolve {
            task_id: task,
            outcome: Outcome::Completed,
            changes: vec![],
        },
        Message::CrdtChanges {
            task_id: task,
            sync: vec![1, 2, 3],
        },
    ] {
        let outs = mesh.feed(
            worker,
            Input::Received {
                from: m,
                message: msg.clone(),
            },
        );
        assert!(no_traffic(&outs), "{} produced {outs:?}", msg.kind());
    }
    // An invitation to the initiator's task, forged by Mallory with a document she made.
    let spec_m = GroupSpec {
        group_id: task.group_id(),
        initiator: m.key(),
        skills: vec![SkillNeed {
            name: "a".into(),
            count: 1,
        }],
        max_group_size: 1,
        created_at_ms: mesh.now,
    };
    let (mut doc, _) =
        GroupDoc::create(mallory.signing_key().clone(), &spec_m, Default::default()).unwrap();
    let spare = mesh.add(11, &[("a", Level::Expert)], 1, Exec::Manual, |_| {});
    doc.invite(spare.key(), "a", 1.0, mesh.now).unwrap();
    let announce = match &mesh.sent_by(init, "task_announce")[0].1 {
        Message::TaskAnnounce(a) => a.clone(),
        _ => unreachable!(),
    };
    let forged = Message::GroupInvite {
        task: announce,
        skill: "a".into(),
        changes: encode_batch(&doc.all_changes()),
    };
    let outs = mesh.feed(
        spare,
        Input::Received {
            from: m,
            message: forged,
        },
    );
    assert!(no_traffic(&outs), "a forged invitation got {outs:?}");
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Emit(Event::Misbehaviour { peer, .. }) if *peer == m))
    );
    assert_eq!(mesh.agent(spare).slots_used(), 0);

    // Nothing moved.
    assert_eq!(mesh.agent(worker).slots_used(), slots);
    assert_eq!(mesh.agent(init).group(&task).unwrap().heads(), heads);
    // And the honest task still completes with the honest member.
    mesh.command(
        worker,
        crate::Command::Complete {
            task_id: task,
            success: true,
            result: b"r".to_vec(),
        },
    );
    assert!(mesh.run_until(5_000, |mm| mm.finished(task).is_some()));
    assert_eq!(mesh.finished(task).unwrap().2[0].member, worker);
    // A late duplicate of a completed task's messages changes nothing either.
    let before = mesh.events.len();
    mesh.inject(
        &mallory,
        init,
        Audience::Agent(init),
        &Message::GroupAccept {
            task_id: task,
            free_slots: 1,
            changes: vec![],
        },
    );
    mesh.run_for(100);
    assert!(
        mesh.events[before..]
            .iter()
            .all(|(_, _, e)| !matches!(e, Event::TaskFinished { .. }))
    );
}
