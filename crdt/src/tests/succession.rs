//! The group outlives its initiator: a majority of members replaces the coordinator.

use super::support::*;
use crate::{AgentKey, CrdtError, GroupDoc, MemberStatus, TaskOutcome, TaskStatus};

/// Initiator 1; members 2, 3, 4 invited and accepted for "rust" (3 needed); 5 invited
/// as a standby.
fn formed() -> (GroupDoc, Vec<GroupDoc>) {
    let (mut init, mut reps, _) = group(1, &[("rust", 3)], 4, &[2, 3, 4, 5]);
    for n in 2..=5u8 {
        init.invite(agent(n), "rust", 0.5, T0).unwrap();
    }
    for r in reps.iter_mut().take(3) {
        r.apply(init.all_changes());
        let c = r.accept("rust", T0 + 1).unwrap();
        init.apply([c]);
    }
    for r in reps.iter_mut() {
        r.apply(init.all_changes());
    }
    (init, reps)
}

fn share(docs: &mut [&mut GroupDoc]) {
    let all: Vec<_> = docs.iter().flat_map(|r| r.all_changes()).collect();
    for r in docs.iter_mut() {
        assert!(r.apply(all.clone()).is_clean());
    }
}

fn share_reps(reps: &mut [GroupDoc]) {
    share(&mut reps.iter_mut().collect::<Vec<_>>());
}

/// Index in `reps` (agents 2..=5) of an agent.
fn idx(a: AgentKey) -> usize {
    (2..=5u8).position(|n| agent(n) == a).unwrap()
}

#[test]
fn a_minority_of_suspicions_does_not_depose_the_initiator() {
    let (_, mut reps) = formed();
    reps[0].suspect(agent(1), T0 + 10).unwrap();
    share_reps(&mut reps);
    let view = reps[1].view().unwrap();
    assert_eq!(view.coordinator(), agent(1));
    assert_eq!(view.votes_against_coordinator, 1);
    assert!(!view.coordinator_deposed());
    for r in reps.iter_mut().take(3) {
        assert!(matches!(
            r.take_over(T0 + 11),
            Err(CrdtError::NotAuthorised(_))
        ));
    }
    assert!(matches!(
        reps[0].declare_failed(agent(3), "x", T0),
        Err(CrdtError::NotAuthorised(_))
    ));
}

#[test]
fn a_majority_replaces_the_initiator_and_the_successor_finishes_the_task() {
    let (mut init, mut reps) = formed();
    reps[0].suspect(agent(1), T0 + 10).unwrap();
    reps[1].suspect(agent(1), T0 + 10).unwrap();
    share_reps(&mut reps);
    assert!(reps[2].view().unwrap().coordinator_deposed());
    // The standby (5) is not in the group and may not take over.
    assert!(reps[3].take_over(T0 + 11).is_err());
    // Two members claim concurrently: the lower id wins.
    let mut in_group: Vec<AgentKey> = (2..=4).map(agent).collect();
    in_group.sort();
    let (low, high) = (in_group[0], in_group[1]);
    reps[idx(high)].take_over(T0 + 12).unwrap();
    reps[idx(low)].take_over(T0 + 12).unwrap();
    share_reps(&mut reps);
    let view = reps[2].view().unwrap();
    assert_eq!(view.coordinators, vec![agent(1), low]);
    assert!(
        view.is_complete(),
        "the initiator's invitations still count"
    );

    // The successor declares the third member failed and brings in the standby.
    let third = in_group[2];
    let s = idx(low);
    reps[s].declare_failed(third, "silent", T0 + 20).unwrap();
    share_reps(&mut reps);
    reps[3].accept("rust", T0 + 22).unwrap();
    // A later member joining and suspecting the old initiator changes nothing.
    reps[3].suspect(agent(1), T0 + 23).unwrap();
    share_reps(&mut reps);
    assert_eq!(reps[0].view().unwrap().coordinators, vec![agent(1), low]);

    // The deposed initiator comes back and tries to fail its successor: ignored.
    init.apply(
        reps.iter()
            .flat_map(|r| r.all_changes())
            .collect::<Vec<_>>(),
    );
    init.declare_failed(low, "revenge", T0 + 24).unwrap();
    reps[s]
        .set_outcome(&TaskOutcome::Completed, T0 + 30)
        .unwrap();
    reps[s].set_status(TaskStatus::Dissolved, T0 + 31).unwrap();
    let mut all: Vec<&mut GroupDoc> = reps.iter_mut().collect();
    all.push(&mut init);
    share(&mut all);
    for r in reps.iter().chain([&init]) {
        let v = r.view().unwrap();
        assert_eq!(v.coordinator(), low);
        assert_eq!(v.member(low).unwrap().status, MemberStatus::Accepted);
        assert_eq!(v.member(third).unwrap().status, MemberStatus::Failed);
        assert!(v.is_selected(agent(5)));
        assert!(v.is_complete());
        assert_eq!(v.outcome, Some(TaskOutcome::Completed));
        assert_eq!(v.status, TaskStatus::Dissolved);
    }
    // A member that is not a coordinator still cannot write verdicts.
    assert!(reps[idx(high)].declare_failed(agent(5), "x", T0).is_err());
}
