//! The whole lifecycle of a task over the mesh.

use super::mesh::*;
use crate::{Event, Level, Outcome};

#[test]
fn a_three_skill_task_forms_with_the_best_offers_and_completes() {
    let mut mesh = Mesh::new();
    let initiator = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let rust_expert = mesh.worker(10, "rust", Level::Expert);
    let rust_novice = mesh.worker(11, "rust", Level::Novice);
    let sql = mesh.worker(12, "sql", Level::Advanced);
    let sql_low = mesh.worker(13, "sql", Level::Novice); // below the minimum
    let ml = mesh.worker(14, "ml", Level::Advanced);
    let ml2 = mesh.worker(15, "ml", Level::Intermediate);

    let task = mesh.announce(
        initiator,
        spec(&[
            ("rust", Level::Novice, 1),
            ("sql", Level::Intermediate, 1),
            ("ml", Level::Intermediate, 1),
        ]),
    );
    assert!(
        mesh.run_until(30_000, |m| m.finished(task).is_some()),
        "task did not finish"
    );
    let (by, outcome, mut results) = mesh.finished(task).unwrap();
    assert_eq!(by, initiator);
    assert_eq!(outcome, Outcome::Completed);
    results.sort_by(|a, b| a.skill.cmp(&b.skill));
    let members: Vec<_> = results
        .iter()
        .map(|r| (r.skill.as_str(), r.member))
        .collect();
    assert_eq!(
        members,
        vec![("ml", ml), ("rust", rust_expert), ("sql", sql)]
    );
    assert!(
        results
            .iter()
            .all(|r| r.success && r.output.starts_with(r.skill.as_bytes()))
    );

    mesh.run_for(1_000); // let the dissolve messages arrive

    // The agent below the minimum level never offered; the weaker ones were not invited.
    assert!(mesh.sent_by(sql_low, "skill_offer").is_empty());
    assert!(
        mesh.sent_by(initiator, "group_invite")
            .iter()
            .all(|(to, _)| ![rust_novice, ml2, sql_low].contains(to))
    );
    assert_eq!(
        mesh.events_where(|a, e| *a == initiator && matches!(e, Event::GroupFormed { .. }))
            .len(),
        1
    );

    // Every replica of the group document agrees on the outcome and the results.
    let init_view = mesh.document(initiator, task).unwrap().view().unwrap();
    for m in [rust_expert, sql, ml] {
        assert_eq!(mesh.agent(m).slots_used(), 0, "slot released");
        let ended = mesh.events_where(|a, e| *a == m && matches!(e, Event::AssignmentEnded { task_id, outcome: Outcome::Completed } if *task_id == task));
        assert_eq!(ended.len(), 1);
        let learned = mesh.agent(m).skills().next().unwrap().completed;
        assert_eq!(learned, 1, "skill metrics learn from the task");
    }
    assert_eq!(
        init_view.outcome,
        Some(starling_crdt::TaskOutcome::Completed)
    );
    assert_eq!(init_view.skills_covered().len(), 3);
    // The initiator closes the document at the end and hands out a snapshot; it keeps
    // a tombstone while a member may still hold the group (until the deadline plus
    // twice the suspicion timeout), then forgets the group.
    assert!(
        mesh.agent(initiator).group(&task).is_none(),
        "closed at the end"
    );
    let timeout = mesh.agent(initiator).config().suspicion_timeout_ms;
    let announced =
        mesh.events_where(|a, e| *a == initiator && matches!(e, Event::TaskAnnounced { .. }))[0].0;
    let linger_end = announced + 120_000 + 2 * timeout;
    mesh.run_for(linger_end - 1 - mesh.now);
    assert_eq!(mesh.agent(initiator).tombstones(), 1);
    assert_eq!(mesh.agent(initiator).coordinating().count(), 0, "finished");
    mesh.run_for(2);
    assert_eq!(mesh.agent(initiator).tombstones(), 0);
    assert!(mesh.agent(initiator).finished_group(&task).is_none());
    let snapshot = mesh.events.iter().find_map(|(_, a, e)| match e {
        Event::GroupClosed { task_id, snapshot } if *task_id == task && *a == initiator => {
            Some(snapshot.clone())
        }
        _ => None,
    });
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let restored =
        starling_crdt::GroupDoc::load(key, &snapshot.expect("a snapshot"), Default::default())
            .unwrap();
    let view = restored.view().unwrap();
    assert_eq!(view.outcome, init_view.outcome);
    assert_eq!(view.skills, init_view.skills);
}

#[test]
fn a_completion_that_overtakes_the_last_progress_update_still_finishes_the_task() {
    // Direct messages travel on separate streams and may arrive out of order: here
    // every progress update arrives after its sender's completion. The completion's
    // change then waits for the update's change; when the update lands, the
    // coordinator must notice that the result is now in and finish.
    let mut mesh = Mesh::new();
    mesh.slow_kind = Some(("task_update", 300));
    let initiator = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    mesh.add(
        20,
        &[("rust", Level::Expert)],
        1,
        Exec::Auto {
            duration_ms: 400,
            success: true,
        },
        |_| {},
    );
    let task = mesh.announce(initiator, spec(&[("rust", Level::Novice, 1)]));
    assert!(
        mesh.run_until(3_000, |m| m.finished(task).is_some()),
        "the task never finished after a reordered update"
    );
    assert_eq!(mesh.finished(task).unwrap().1, Outcome::Completed);
}

#[test]
fn a_member_is_sent_each_change_once() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    for seed in 10..14 {
        mesh.worker(seed, "x", Level::Expert);
    }
    let task = mesh.announce(init, spec(&[("x", Level::Novice, 2)]));
    assert!(mesh.run_until(10_000, |m| m.finished(task).is_some()));
    mesh.run_for(100);
    // Everything the coordinator sent each peer, change by change: the invitation
    // carries the history so far, and what follows only what came after it.
    let mut shipped: std::collections::BTreeMap<crate::AgentId, Vec<Vec<u8>>> = Default::default();
    let limits = starling_crdt::Limits::default();
    let mut messages = 0;
    for (_, from, to, m) in &mesh.delivered {
        let changes = match m {
            crate::Message::GroupInvite { changes, .. }
            | crate::Message::GroupFormed { changes, .. }
            | crate::Message::TaskStart { changes, .. }
            | crate::Message::GroupDissolve { changes, .. } => changes,
            _ => continue,
        };
        if *from != init {
            continue;
        }
        messages += 1;
        let batch = starling_crdt::decode_batch(changes, &limits).unwrap();
        shipped
            .entry(*to)
            .or_default()
            .extend(batch.into_iter().map(|c| c.bytes));
    }
    assert!(
        messages >= 2 * 4,
        "invitation, formation, start, end per member: {messages}"
    );
    for (to, changes) in &shipped {
        let distinct: std::collections::BTreeSet<&Vec<u8>> = changes.iter().collect();
        assert_eq!(distinct.len(), changes.len(), "{to} got a change twice");
    }
    // The end carries only the last changes, yet members see that the coordinator
    // has all of theirs: none is handed over again.
    let ended = mesh
        .delivered
        .iter()
        .find(|(_, _, _, m)| m.kind() == "group_dissolve")
        .map(|(t, _, _, _)| *t)
        .unwrap();
    let after: Vec<_> = mesh
        .delivered
        .iter()
        .filter(|(t, _, to, m)| *t > ended && *to == init && m.kind() == "crdt_changes")
        .collect();
    assert!(after.is_empty(), "{after:?}");
}
