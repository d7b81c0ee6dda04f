//! Capacity, deadlines, priority ageing and dependencies.

use super::mesh::*;
use crate::{Event, Level, Outcome, message::Priority};

#[test]
fn an_agent_without_capacity_does_not_offer_until_a_slot_frees() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let worker = mesh.add(10, &[("x", Level::Expert)], 1, Exec::Manual, |_| {});
    let first = mesh.announce(init, spec(&[("x", Level::Novice, 1)]));
    assert!(mesh.run_until(5_000, |m| m.agent(worker).slots_used() == 1));
    let second = mesh.announce(init, spec(&[("x", Level::Novice, 1)]));
    mesh.run_for(2_000);
    let offers_for = |m: &Mesh, t| {
        m.sent_by(worker, "skill_offer")
            .iter()
            .filter(|(_, msg)| msg.task_id() == Some(t))
            .count()
    };
    assert_eq!(offers_for(&mesh, first), 1);
    assert_eq!(offers_for(&mesh, second), 0, "no capacity, no offer");
    // Finishing the first task frees the slot; the backlog then gets the offer.
    mesh.command(
        worker,
        crate::Command::Complete {
            task_id: first,
            success: true,
            result: b"ok".to_vec(),
        },
    );
    assert!(mesh.run_until(5_000, |m| offers_for(m, second) > 0));
}

#[test]
fn a_passed_deadline_fails_the_task_cleanly() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let worker = mesh.add(
        10,
        &[("slow", Level::Expert)],
        1,
        Exec::Auto {
            duration_ms: 20_000,
            success: true,
        },
        |_| {},
    );
    let mut s = spec(&[("slow", Level::Novice, 1)]);
    s.deadline_ms = Some(3_000);
    let task = mesh.announce(init, s);
    assert!(mesh.run_until(30_000, |m| m.finished(task).is_some()));
    let (_, outcome, _) = mesh.finished(task).unwrap();
    assert_eq!(outcome, Outcome::Failed("deadline passed".into()));
    assert!(
        mesh.run_until(5_000, |m| m.agent(worker).slots_used() == 0),
        "the worker's slot is released"
    );
    let ended = mesh.events_where(|a, e| {
        *a == worker
            && matches!(
                e,
                Event::AssignmentEnded {
                    outcome: Outcome::Failed(_),
                    ..
                }
            )
    });
    assert_eq!(ended.len(), 1);
    // The executor's late progress report (at 10 s) and completion (at 20 s) come after
    // the end: both are refused, nothing is recorded.
    mesh.run_for(25_000);
    assert_eq!(
        mesh.events_where(|a, e| *a == worker && matches!(e, Event::CommandFailed { .. }))
            .len(),
        2
    );
}

#[test]
fn a_low_priority_task_is_eventually_served_despite_a_stream_of_high_priority_work() {
    let mut mesh = Mesh::new();
    let tune = |c: &mut crate::AgentConfig| {
        c.aging_interval_ms = 1_000;
        c.max_announce_rounds = 1_000;
        c.offers_per_free_slot = 1;
    };
    let busy = mesh.add(1, &[], 1, Exec::Manual, tune);
    let patient = mesh.add(2, &[], 1, Exec::Manual, tune);
    let worker = mesh.add(
        10,
        &[("x", Level::Expert)],
        1,
        Exec::Auto {
            duration_ms: 300,
            success: true,
        },
        tune,
    );
    let mut low = spec(&[("x", Level::Novice, 1)]);
    low.priority = Priority::Low;
    let mut high = spec(&[("x", Level::Novice, 1)]);
    high.priority = Priority::Critical;
    let mut high_tasks = vec![
        mesh.announce(busy, high.clone()),
        mesh.announce(busy, high.clone()),
    ];
    mesh.run_for(50);
    let low_task = mesh.announce(patient, low);
    // A new critical task every 100 ms: three times what the worker can do.
    let mut served = false;
    for _ in 0..600 {
        high_tasks.push(mesh.announce(busy, high.clone()));
        if mesh.run_until(100, |m| m.finished(low_task).is_some()) {
            served = true;
            break;
        }
    }
    assert!(served, "the low-priority task starved");
    assert_eq!(mesh.finished(low_task).unwrap().1, Outcome::Completed);
    // It was not simply first: critical tasks announced after it were served before it.
    let low_done = mesh.events_where(
        |_, e| matches!(e, Event::TaskFinished { task_id, .. } if *task_id == low_task),
    )[0]
    .0;
    let highs_before = high_tasks
        .iter()
        .filter(|t| mesh.events_where(|_, e| matches!(e, Event::TaskFinished { task_id, outcome: Outcome::Completed, .. } if task_id == *t)).first().is_some_and(|(at, _, _)| *at < low_done))
        .count();
    assert!(
        highs_before >= 3,
        "only {highs_before} high-priority tasks went first"
    );
    let _ = worker;
}

#[test]
fn dependencies_order_execution_and_a_failed_dependency_fails_its_dependents() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    mesh.worker(10, "x", Level::Expert);
    mesh.worker(11, "y", Level::Expert);
    let a = mesh.announce(init, spec(&[("x", Level::Novice, 1)]));
    let mut b_spec = spec(&[("y", Level::Novice, 1)]);
    b_spec.depends_on = vec![a];
    let b = mesh.announce(init, b_spec);
    assert!(mesh.events_where(|_, e| matches!(e, Event::TaskWaiting { task_id, waiting_for } if *task_id == b && waiting_for == &vec![a])).len() == 1);
    assert!(mesh.run_until(30_000, |m| m.finished(b).is_some()));
    let a_done = mesh
        .events_where(|_, e| matches!(e, Event::TaskFinished { task_id, .. } if *task_id == a))[0]
        .0;
    let b_announced = mesh
        .events_where(|_, e| matches!(e, Event::TaskAnnounced { task_id, .. } if *task_id == b))[0]
        .0;
    assert!(b_announced >= a_done, "b was announced before a finished");
    assert_eq!(mesh.finished(b).unwrap().1, Outcome::Completed);

    // A dependency that fails (nobody has skill z) fails its dependent without running it.
    let mut c_spec = spec(&[("z", Level::Novice, 1)]);
    c_spec.deadline_ms = Some(2_000);
    let c = mesh.announce(init, c_spec);
    let mut d_spec = spec(&[("x", Level::Novice, 1)]);
    d_spec.depends_on = vec![c];
    let d = mesh.announce(init, d_spec);
    assert!(mesh.run_until(30_000, |m| m.finished(d).is_some()));
    assert!(matches!(mesh.finished(d).unwrap().1, Outcome::Failed(r) if r.contains("dependency")));
    assert!(
        mesh.events_where(
            |_, e| matches!(e, Event::TaskAnnounced { task_id, .. } if *task_id == d)
        )
        .is_empty()
    );
}

#[test]
fn a_freed_slot_goes_to_the_waiting_task_of_highest_priority_not_the_next_announced() {
    let mut mesh = Mesh::new();
    // Invitations are slow: the one for `expiring` arrives after its deadline, is
    // declined, and so frees the worker's one outstanding offer with nobody invited.
    mesh.slow_kind = Some(("group_invite", 500));
    let ix = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    // The low task's initiator asks again often, the critical one's rarely: in
    // arrival order the low task would win the freed slot.
    let il = mesh.add(2, &[], 1, Exec::Manual, |c| c.reannounce_interval_ms = 300);
    let ic = mesh.add(3, &[], 1, Exec::Manual, |c| {
        c.reannounce_interval_ms = 5_000
    });
    let worker = mesh.add(10, &[("x", Level::Expert)], 1, Exec::Manual, |c| {
        c.offers_per_free_slot = 1
    });
    let mut s = spec(&[("x", Level::Novice, 1)]);
    s.deadline_ms = Some(400);
    let expiring = mesh.announce(ix, s);
    mesh.run_for(10);
    let mut low = spec(&[("x", Level::Novice, 1)]);
    low.priority = Priority::Low;
    let low = mesh.announce(il, low);
    mesh.run_for(10);
    let mut critical = spec(&[("x", Level::Novice, 1)]);
    critical.priority = Priority::Critical;
    let critical = mesh.announce(ic, critical);
    assert!(mesh.run_until(3_000, |m| m.agent(worker).slots_used() == 1));
    let offers: Vec<Option<crate::TaskId>> = mesh
        .sent_by(worker, "skill_offer")
        .iter()
        .map(|(_, m)| m.task_id())
        .collect();
    assert_eq!(offers[0], Some(expiring));
    assert_eq!(
        offers[1],
        Some(critical),
        "after the decline the critical task is offered to, not the low one ({low}): {offers:?}"
    );
}
