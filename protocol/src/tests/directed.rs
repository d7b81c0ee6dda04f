//! Formation without fixed waits: tasks staffed from the skill directory, without
//! announcing them, the fall back to an announcement when the directory runs out,
//! and an offer window that closes once the places are covered.

use super::mesh::*;
use crate::{Command, Event, Level, Outcome, TaskId};

/// Deliveries of `kind` concerning `task`, with their times.
fn deliveries(mesh: &Mesh, kind: &str, task: TaskId) -> Vec<u64> {
    mesh.delivered
        .iter()
        .filter(|(_, _, _, m)| m.kind() == kind && m.task_id() == Some(task))
        .map(|(t, _, _, _)| *t)
        .collect()
}

#[test]
fn a_task_the_directory_can_staff_is_not_announced() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    for seed in 10..16 {
        mesh.worker(seed, "x", Level::Expert);
    }
    // The first task is announced: the directory is empty. Its offers fill it.
    let first = mesh.announce(init, spec(&[("x", Level::Novice, 2)]));
    assert!(mesh.run_until(10_000, |m| m.finished(first).is_some()));
    assert_eq!(deliveries(&mesh, "task_announce", first).len(), 6);
    assert_eq!(deliveries(&mesh, "skill_offer", first).len(), 6);

    let at = mesh.now;
    let second = mesh.announce(init, spec(&[("x", Level::Novice, 2)]));
    assert!(mesh.run_until(10_000, |m| m.finished(second).is_some()));
    let (_, outcome, results) = mesh.finished(second).unwrap();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(results.len(), 2);
    assert!(
        deliveries(&mesh, "task_announce", second).is_empty(),
        "staffed from the directory: nobody hears of it"
    );
    assert!(deliveries(&mesh, "skill_offer", second).is_empty());
    // Invitations leave at once, with no offer window to wait out.
    let invites = deliveries(&mesh, "group_invite", second);
    assert_eq!(invites.len(), 2, "one invitation per place");
    assert!(
        invites.iter().all(|t| *t <= at + 2),
        "invited at {invites:?}"
    );

    // With the directory switched off the same task is announced again.
    let mut off = Mesh::new();
    let init = off.add(1, &[], 1, Exec::Manual, |c| c.directed_formation = false);
    for seed in 10..16 {
        off.worker(seed, "x", Level::Expert);
    }
    let first = off.announce(init, spec(&[("x", Level::Novice, 2)]));
    assert!(off.run_until(10_000, |m| m.finished(first).is_some()));
    let second = off.announce(init, spec(&[("x", Level::Novice, 2)]));
    assert!(off.run_until(10_000, |m| m.finished(second).is_some()));
    assert_eq!(deliveries(&off, "task_announce", second).len(), 6);
}

#[test]
fn a_refusal_moves_to_the_next_candidate_at_once_and_running_out_announces() {
    let mut mesh = Mesh::new();
    let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
    let other = mesh.add(2, &[], 1, Exec::Manual, |_| {});
    let workers: Vec<_> = (10..14)
        .map(|seed| mesh.add(seed, &[("x", Level::Expert)], 1, Exec::Manual, |_| {}))
        .collect();
    // `init` learns of all four (each with a free slot) from the offers to its
    // first task, which takes one of them.
    let first = mesh.announce(init, spec(&[("x", Level::Novice, 1)]));
    assert!(mesh.run_until(5_000, |m| {
        workers
            .iter()
            .filter(|w| m.agent(**w).slots_used() == 1)
            .count()
            == 1
    }));
    let busy = *workers
        .iter()
        .find(|w| mesh.agent(**w).slots_used() == 1)
        .unwrap();
    // Another initiator takes the other three, which `init` does not know.
    for _ in 0..3 {
        mesh.announce(other, spec(&[("x", Level::Novice, 1)]));
        mesh.run_for(3_000);
    }
    assert!(workers.iter().all(|w| mesh.agent(*w).slots_used() == 1));

    // `init`'s directory still believes three have a slot: it invites them in turn,
    // each refusal at once answered by the next invitation, and then announces.
    let second = mesh.announce(init, spec(&[("x", Level::Novice, 1)]));
    mesh.run_for(500);
    let invites = deliveries(&mesh, "group_invite", second);
    let rejects = deliveries(&mesh, "group_reject", second);
    assert_eq!(invites.len(), 3, "the three believed free: {invites:?}");
    assert_eq!(rejects.len(), 3);
    for (reject, next) in rejects.iter().zip(invites.iter().skip(1)) {
        assert!(
            next - reject <= 2,
            "next invitation {next} after refusal {reject}"
        );
    }
    let announced = deliveries(&mesh, "task_announce", second);
    assert!(
        !announced.is_empty(),
        "out of candidates, the task is announced"
    );
    assert!(
        announced[0] - rejects[2] <= 2,
        "announced at {} right after the last refusal at {}",
        announced[0],
        rejects[2]
    );
    // The busy worker frees its slot; the announcement rounds find it.
    mesh.command(
        busy,
        Command::Complete {
            task_id: first,
            success: true,
            result: b"ok".to_vec(),
        },
    );
    let formed = |m: &Mesh| {
        m.events_where(|a, e| {
            *a == init && matches!(e, Event::GroupFormed { task_id, .. } if *task_id == second)
        })
        .len()
    };
    assert!(mesh.run_until(20_000, |m| formed(m) == 1));
    assert_eq!(mesh.agent(busy).slots_used(), 1, "the freed worker took it");
}

#[test]
fn once_every_place_has_an_offer_the_window_waits_only_as_long_again() {
    for latency in [1, 20] {
        let mut mesh = Mesh::new();
        mesh.latency_ms = latency;
        let init = mesh.add(1, &[], 1, Exec::Manual, |_| {});
        // One holder for one place: the standby never comes.
        mesh.worker(10, "x", Level::Expert);
        let at = mesh.now;
        let task = mesh.announce(init, spec(&[("x", Level::Novice, 1)]));
        assert!(mesh.run_until(5_000, |m| !deliveries(m, "group_invite", task).is_empty()));
        let offered = deliveries(&mesh, "skill_offer", task)[0];
        let invited = deliveries(&mesh, "group_invite", task)[0];
        // The offer came back after a round trip; the invitation leaves that long
        // again after it (at least a tenth of the window, plus its own trip), not at
        // the end of the 250 ms window.
        let took = offered - at;
        assert!(
            invited - offered <= took.max(25) + latency,
            "latency {latency}: offer at +{took}, invitation at +{}",
            invited - at
        );
        assert!(
            invited - at < 250,
            "latency {latency}: the window did not run out"
        );
    }
}
