//! Failures: rejections, silent members, a dead initiator.

use super::mesh::*;
use crate::{Command, Event, Level, Message, Outcome};

#[test]
fn a_rejecting_member_is_replaced_by_a_standby() {
    let mut mesh = Mesh::new();
    let i1 = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let i2 = mesh.add(2, &[], 1, Exec::Manual, |_| {});
    // The best agent has one slot; both initiators want it.
    let best = mesh.add(
        10,
        &[("etl", Level::Expert)],
        1,
        Exec::Auto {
            duration_ms: 500,
            success: true,
        },
        |_| {},
    );
    let standby = mesh.add(
        11,
        &[("etl", Level::Novice)],
        1,
        Exec::Auto {
            duration_ms: 500,
            success: true,
        },
        |_| {},
    );
    let t1 = mesh.announce(i1, spec(&[("etl", Level::Novice, 1)]));
    let t2 = mesh.announce(i2, spec(&[("etl", Level::Novice, 1)]));
    assert!(mesh.run_until(30_000, |m| m.finished(t1).is_some()
        && m.finished(t2).is_some()));
    let rejects = mesh.sent_by(best, "group_reject");
    assert_eq!(
        rejects.len(),
        1,
        "the busy agent declines exactly one invitation"
    );
    let (rejected_initiator, _) = &rejects[0];
    let (rejected_task, kept_task) = if *rejected_initiator == i1 {
        (t1, t2)
    } else {
        (t2, t1)
    };
    assert!(matches!(
        &rejects[0].1,
        Message::GroupReject {
            reason: crate::RejectReason::NoCapacity,
            ..
        }
    ));
    // The refusal is recorded in the rejected task's group document.
    let doc = mesh.document(*rejected_initiator, rejected_task).unwrap();
    let status = doc.view().unwrap().member(best.key()).unwrap().status;
    assert_eq!(status, starling_crdt::MemberStatus::Left);
    let (_, outcome, results) = mesh.finished(rejected_task).unwrap();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(results[0].member, standby);
    assert_eq!(mesh.finished(kept_task).unwrap().2[0].member, best);
}

#[test]
fn a_silent_member_is_replaced_and_the_replacement_resumes_from_its_checkpoint() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let first = mesh.add(10, &[("render", Level::Expert)], 1, Exec::Manual, |_| {});
    let second = mesh.add(
        11,
        &[("render", Level::Intermediate)],
        1,
        Exec::Auto {
            duration_ms: 500,
            success: true,
        },
        |_| {},
    );
    let task = mesh.announce(init, spec(&[("render", Level::Novice, 1)]));
    assert!(mesh.run_until(10_000, |m| {
        !m.events_where(|a, e| *a == first && matches!(e, Event::TaskAssigned(_)))
            .is_empty()
    }));
    mesh.command(
        first,
        Command::Progress {
            task_id: task,
            progress: 0.4,
            checkpoint: Some(b"frame-40".to_vec()),
        },
    );
    // A checkpoint goes into the document once the interval since the start has
    // passed — here by the member's tick, with no further report.
    let interval = mesh.agent(first).config().checkpoint_interval_ms;
    mesh.run_for(interval + 100);
    let failed_at = mesh.now;
    mesh.kill(first);
    assert!(mesh.run_until(60_000, |m| m.finished(task).is_some()));
    let (_, outcome, results) = mesh.finished(task).unwrap();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(results.len(), 1, "exactly one result is committed");
    assert_eq!(results[0].member, second);
    let assigned = mesh.events_where(|a, e| *a == second && matches!(e, Event::TaskAssigned(_)));
    let Event::TaskAssigned(a) = &assigned[0].2 else {
        unreachable!()
    };
    assert_eq!(
        a.resume_from.as_deref(),
        Some(&b"frame-40"[..]),
        "the replacement resumes from the checkpoint"
    );
    let failed = mesh
        .events_where(|_, e| matches!(e, Event::MemberFailed { member, .. } if *member == first));
    assert_eq!(failed.len(), 1);
    let detection = failed[0].0 - failed_at;
    let timeout = mesh.agent(init).config().suspicion_timeout_ms;
    assert!(
        detection <= timeout + mesh.agent(init).config().heartbeat_interval_ms,
        "detected after {detection} ms"
    );
    assert!(mesh.events_where(|_, e| matches!(e, Event::ReplacementStarted { member, resumed: true, .. } if *member == second)).len() == 1);
}

#[test]
fn the_group_outlives_its_initiator_and_records_the_result() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let a = mesh.add(
        10,
        &[("a", Level::Expert)],
        1,
        Exec::Auto {
            duration_ms: 3_000,
            success: true,
        },
        |_| {},
    );
    let b = mesh.add(
        11,
        &[("b", Level::Expert)],
        1,
        Exec::Auto {
            duration_ms: 3_000,
            success: true,
        },
        |_| {},
    );
    let task = mesh.announce(
        init,
        spec(&[("a", Level::Novice, 1), ("b", Level::Novice, 1)]),
    );
    assert!(mesh.run_until(10_000, |m| {
        !m.events_where(|_, e| matches!(e, Event::GroupFormed { .. }))
            .is_empty()
    }));
    mesh.kill(init);
    // The initiator died with its TaskStart messages in flight: the members must notice,
    // agree, hand the coordination to one of them, and start the work themselves.
    assert!(
        mesh.run_until(60_000, |m| m.finished(task).is_some()),
        "nobody finished the task"
    );
    mesh.run_for(1_000);
    let (by, outcome, results) = mesh.finished(task).unwrap();
    assert!(by == a || by == b, "a member finished the task");
    assert_eq!(by, a.min(b), "the lowest-id member took over");
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(results.len(), 2);
    assert_eq!(mesh.finish_count(task), 1);
    for m in [a, b] {
        // Both members hold (or held, and snapshotted) a document with the outcome.
        let view = match mesh.agent(m).group(&task) {
            Some(doc) => doc.view().unwrap(),
            None => {
                let snap = mesh.events.iter().rev().find_map(|(_, who, e)| match e {
                    Event::GroupClosed { task_id, snapshot } if *task_id == task && *who == m => {
                        Some(snapshot.clone())
                    }
                    _ => None,
                });
                let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
                starling_crdt::GroupDoc::load(key, &snap.unwrap(), Default::default())
                    .unwrap()
                    .view()
                    .unwrap()
            }
        };
        assert_eq!(view.outcome, Some(starling_crdt::TaskOutcome::Completed));
        assert_eq!(view.coordinators.len(), 2);
        assert!(
            view.selected()
                .all(|(_, k)| view.member(k).unwrap().result.is_some())
        );
    }
}

#[test]
fn a_coordinator_replaced_while_paused_steps_down_instead_of_finishing_again() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let auto = Exec::Auto {
        duration_ms: 3_000,
        success: true,
    };
    let a = mesh.add(10, &[("a", Level::Expert)], 1, auto, |_| {});
    let b = mesh.add(11, &[("b", Level::Expert)], 1, auto, |_| {});
    let task = mesh.announce(
        init,
        spec(&[("a", Level::Novice, 1), ("b", Level::Novice, 1)]),
    );
    assert!(mesh.run_until(10_000, |m| {
        !m.events_where(|_, e| matches!(e, Event::GroupFormed { .. }))
            .is_empty()
    }));
    // The initiator stalls (a long pause, or cut off): the members depose it and one
    // of them finishes the task.
    mesh.kill(init);
    assert!(mesh.run_until(60_000, |m| m.finished(task).is_some()));
    let (by, _, _) = mesh.finished(task).unwrap();
    assert_ne!(by, init);
    // It comes back while the new coordinator still answers stragglers, learns that
    // it was replaced, and must not finish the task a second time.
    mesh.dead.remove(&init);
    mesh.run_for(20_000);
    // The initiator reports the group's outcome, as recorded by its successor: the
    // same outcome, decided once. (Its results may lack a part: failure verdicts it
    // wrote while cut off, before it learned it was replaced, still count in the
    // document.)
    let (_, outcome, _) = mesh.finished(task).unwrap();
    let finishes = mesh
        .events_where(|_, e| matches!(e, Event::TaskFinished { task_id, .. } if *task_id == task));
    assert_eq!(finishes.len(), 2, "{finishes:?}");
    assert_eq!(finishes[1].1, init);
    match &finishes[1].2 {
        Event::TaskFinished { outcome: o, .. } => assert_eq!(o, &outcome),
        _ => unreachable!(),
    }
    assert_eq!(
        mesh.events_where(|who, e| *who == init
            && matches!(e, Event::CoordinatorChanged { task_id, coordinator } if *task_id == task && *coordinator == by))
            .len(),
        1,
        "the old coordinator stepped down in favour of the new one"
    );
    assert!(mesh.agent(init).coordinating().next().is_none());
    let _ = (a, b);
}

#[test]
fn a_busy_agent_that_declined_is_invited_again_once_it_has_a_free_slot() {
    let mut mesh = Mesh::new();
    let i1 = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let i2 = mesh.add(2, &[], 1, Exec::Manual, |_| {});
    // The only agent with the skill has one slot; both tasks want it at once.
    let only = mesh.add(
        10,
        &[("etl", Level::Expert)],
        1,
        Exec::Auto {
            duration_ms: 2_000,
            success: true,
        },
        |_| {},
    );
    let t1 = mesh.announce(i1, spec(&[("etl", Level::Novice, 1)]));
    let t2 = mesh.announce(i2, spec(&[("etl", Level::Novice, 1)]));
    assert!(mesh.run_until(60_000, |m| m.finished(t1).is_some()
        && m.finished(t2).is_some()));
    let rejects = mesh.sent_by(only, "group_reject");
    assert!(
        rejects.iter().all(|(_, m)| matches!(
            m,
            Message::GroupReject {
                reason: crate::RejectReason::NoCapacity,
                ..
            }
        )),
        "{rejects:?}"
    );
    assert!(
        !rejects.is_empty(),
        "the busy agent declined one invitation"
    );
    for t in [t1, t2] {
        let (_, outcome, results) = mesh.finished(t).unwrap();
        assert_eq!(outcome, Outcome::Completed, "task {t}");
        assert_eq!(results[0].member, only);
    }
    // The declined task's document shows the refusal and then the second acceptance.
    let (declined_by, declined_task) = if rejects[0].0 == i1 {
        (i1, t1)
    } else {
        (i2, t2)
    };
    let view = mesh
        .document(declined_by, declined_task)
        .unwrap()
        .view()
        .unwrap();
    let member = view.member(only.key()).unwrap();
    assert!(member.result.is_some(), "{member:?}");
}

#[test]
fn a_failed_part_waits_for_a_holder_outside_the_group_instead_of_failing() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    // `both` holds both skills but takes only one part: a group document has one
    // member entry, one part, per agent.
    let both = mesh.add(
        10,
        &[("a", Level::Expert), ("b", Level::Novice)],
        2,
        Exec::Auto {
            duration_ms: 500,
            success: true,
        },
        |_| {},
    );
    let doomed = mesh.add(11, &[("b", Level::Expert)], 1, Exec::Manual, |_| {});
    let task = mesh.announce(
        init,
        spec(&[("a", Level::Novice, 1), ("b", Level::Novice, 1)]),
    );
    assert!(mesh.run_until(10_000, |m| {
        !m.events_where(|a, e| *a == doomed && matches!(e, Event::TaskAssigned(_)))
            .is_empty()
    }));
    mesh.kill(doomed);
    // The only other holder of "b" is in the group already; a new one appears only
    // after longer than the announcement rounds that staffing a group may take.
    let rounds = mesh.agent(init).config().max_announce_rounds as u64;
    let interval = mesh.agent(init).config().reannounce_interval_ms;
    mesh.run_for(rounds * interval * 3 / 2);
    assert!(mesh.finished(task).is_none(), "{:?}", mesh.finished(task));
    let late = mesh.worker(12, "b", Level::Advanced);
    assert!(mesh.run_until(60_000, |m| m.finished(task).is_some()));
    let (_, outcome, results) = mesh.finished(task).unwrap();
    assert_eq!(outcome, Outcome::Completed);
    let by_skill = |s: &str| results.iter().find(|r| r.skill == s).unwrap().member;
    assert_eq!(by_skill("a"), both);
    assert_eq!(by_skill("b"), late);
    assert!(
        mesh.sent_by(both, "group_accept").len() == 1,
        "one part per agent"
    );
}

#[test]
fn each_part_has_its_own_retries() {
    // Two parts, each first given to two experts whose work fails and then to a
    // novice whose work succeeds: four failed results in all, two per part — within
    // each part's retries (two), though more than two for the task.
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let failing = Exec::Auto {
        duration_ms: 200,
        success: false,
    };
    let working = Exec::Auto {
        duration_ms: 200,
        success: true,
    };
    let mut good = Vec::new();
    for (i, skill) in ["a", "b"].into_iter().enumerate() {
        let base = 10 + 10 * i as u8;
        mesh.add(base, &[(skill, Level::Expert)], 1, failing, |_| {});
        mesh.add(base + 1, &[(skill, Level::Expert)], 1, failing, |_| {});
        good.push(mesh.add(base + 2, &[(skill, Level::Novice)], 1, working, |_| {}));
    }
    assert_eq!(mesh.agent(init).config().max_part_retries, 2);
    let task = mesh.announce(
        init,
        spec(&[("a", Level::Novice, 1), ("b", Level::Novice, 1)]),
    );
    assert!(mesh.run_until(60_000, |m| m.finished(task).is_some()));
    let (_, outcome, results) = mesh.finished(task).unwrap();
    assert_eq!(outcome, Outcome::Completed, "{results:?}");
    let mut members: Vec<_> = results.iter().map(|r| r.member).collect();
    members.sort();
    good.sort();
    assert_eq!(members, good, "the novices did both parts");
    let failed = mesh
        .events_where(|a, e| *a == init && matches!(e, Event::MemberFailed { .. }))
        .len();
    assert_eq!(failed, 4, "two failed results per part");
}

#[test]
fn progress_reaches_the_coordinator_at_once_but_the_document_gets_one_checkpoint_per_interval() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let worker = mesh.add(10, &[("render", Level::Expert)], 1, Exec::Manual, |_| {});
    let task = mesh.announce(init, spec(&[("render", Level::Novice, 1)]));
    assert!(mesh.run_until(10_000, |m| {
        !m.events_where(|a, e| *a == worker && matches!(e, Event::TaskAssigned(_)))
            .is_empty()
    }));
    let interval = mesh.agent(worker).config().checkpoint_interval_ms;
    mesh.run_for(interval / 20);
    let before_start = mesh.document(init, task).unwrap().change_count();
    // Ten reports within the first interval, each with a checkpoint. The member's
    // start (its activation) rides on the first: one change, and no checkpoint.
    let mut changes_at_start = before_start;
    for i in 1..=10u8 {
        mesh.command(
            worker,
            Command::Progress {
                task_id: task,
                progress: f64::from(i) / 20.0,
                checkpoint: Some(vec![i]),
            },
        );
        mesh.run_for(interval / 20);
        if i == 1 {
            let doc = mesh.document(init, task).unwrap();
            assert_eq!(doc.change_count(), before_start + 1, "the activation came");
            let view = doc.view().unwrap();
            let member = view.member(worker.key()).unwrap();
            assert_eq!(member.status, starling_crdt::MemberStatus::Active);
            assert_eq!(member.checkpoint, None, "and no checkpoint with it");
            changes_at_start = doc.change_count();
        }
    }
    let heard = mesh.events_where(|a, e| {
        *a == init && matches!(e, Event::TaskProgress { member, .. } if *member == worker)
    });
    assert_eq!(heard.len(), 10, "every report reaches the coordinator");
    let doc = mesh.document(init, task).unwrap();
    assert_eq!(
        doc.change_count(),
        changes_at_start,
        "no checkpoint is written before the interval has passed"
    );
    assert_eq!(
        mesh.sent_by(worker, "task_update").len(),
        10,
        "one plain update per report"
    );
    // Once the interval has passed, the newest checkpoint is written, once.
    mesh.run_for(interval);
    let doc = mesh.document(init, task).unwrap();
    assert_eq!(doc.change_count(), changes_at_start + 1);
    let view = doc.view().unwrap();
    let member = view.member(worker.key()).unwrap();
    assert_eq!(member.checkpoint.as_deref(), Some(&[10u8][..]));
    assert_eq!(member.progress, 0.5);
    let checkpointed = mesh.events_where(|a, e| {
        *a == init && matches!(e, Event::TaskProgress { member, checkpointed: true, progress, .. } if *member == worker && *progress == 0.5)
    });
    assert_eq!(
        checkpointed.len(),
        1,
        "the coordinator hears of the checkpoint"
    );
    mesh.run_for(3 * interval);
    assert_eq!(
        mesh.document(init, task).unwrap().change_count(),
        changes_at_start + 1,
        "a written checkpoint is not written again"
    );
}
