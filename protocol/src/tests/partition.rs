//! Partitions: a member cut off mid-part, replaced, and reconnected.

use super::mesh::*;
use crate::{Event, Level, Outcome};

#[test]
fn a_member_cut_off_and_replaced_converges_with_the_coordinator_after_the_link_heals() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let auto = |ms| Exec::Auto {
        duration_ms: ms,
        success: true,
    };
    let victim = mesh.add(10, &[("x", Level::Expert)], 1, auto(3_000), |_| {});
    let other = mesh.add(11, &[("y", Level::Expert)], 1, auto(3_000), |_| {});
    let standby = mesh.add(12, &[("x", Level::Novice)], 1, auto(500), |_| {});
    let task = mesh.announce(
        init,
        spec(&[("x", Level::Novice, 1), ("y", Level::Novice, 1)]),
    );
    assert!(mesh.run_until(10_000, |m| {
        !m.events_where(|a, e| *a == victim && matches!(e, Event::TaskAssigned(_)))
            .is_empty()
    }));
    let others = mesh.others(victim);
    mesh.cut(&[victim], &others);
    // Cut off, the victim finishes its part and records its result, but nobody hears.
    assert!(mesh.run_until(60_000, |m| m.finished(task).is_some()));
    let (_, outcome, results) = mesh.finished(task).unwrap();
    assert_eq!(outcome, Outcome::Completed);
    let x = results.iter().find(|r| r.skill == "x").unwrap();
    assert_eq!(x.member, standby, "the replacement's result counts");
    assert!(results.iter().any(|r| r.member == other));
    // The partition lasts well past the time the coordinator lingers after the end.
    mesh.run_for(6 * mesh.agent(init).config().suspicion_timeout_ms);
    let victim_doc = mesh.agent(victim).group(&task).expect("still a member");
    let victim_heads = victim_doc.heads();
    assert!(
        victim_doc
            .view()
            .unwrap()
            .member(victim.key())
            .unwrap()
            .result
            .is_some()
    );
    mesh.heal();
    let closed = |m: &Mesh| {
        m.events.iter().rev().find_map(|(_, who, e)| match e {
            Event::GroupClosed { task_id, snapshot } if *task_id == task && *who == victim => {
                Some(snapshot.clone())
            }
            _ => None,
        })
    };
    assert!(
        mesh.run_until(30_000, |m| closed(m).is_some()),
        "the returning member never learnt that the group ended"
    );
    mesh.run_for(2_000);
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let snapshot =
        starling_crdt::GroupDoc::load(key, &closed(&mesh).unwrap(), Default::default()).unwrap();
    let coordinator_doc = mesh
        .document(init, task)
        .expect("the coordinator still answers for the group");
    assert_eq!(
        snapshot.heads(),
        coordinator_doc.heads(),
        "both replicas hold the same changes"
    );
    for h in &victim_heads {
        assert!(
            coordinator_doc.has_change(h),
            "the coordinator lacks the victim's writes"
        );
    }
    let view = snapshot.view().unwrap();
    assert_eq!(view.outcome, Some(starling_crdt::TaskOutcome::Completed));
    assert_eq!(
        view.member(victim.key()).unwrap().status,
        starling_crdt::MemberStatus::Failed,
        "the verdict is sticky: its late result does not count"
    );
    assert_eq!(mesh.finish_count(task), 1);
}
