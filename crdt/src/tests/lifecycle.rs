//! A group's normal life: invite, accept, select, progress, results, dissolve.

use super::support::*;
use crate::{MemberStatus, TaskOutcome, TaskStatus};

#[test]
fn a_three_skill_group_forms_runs_and_dissolves_identically_on_every_replica() {
    let (mut init, mut reps, _) = group(1, &[("rust", 1), ("sql", 1), ("ml", 1)], 3, &[2, 3, 4]);
    for (i, skill) in ["rust", "sql", "ml"].iter().enumerate() {
        let inv = init.invite(agent(i as u8 + 2), skill, 0.5, T0 + 1).unwrap();
        let mut all: Vec<_> = reps.iter_mut().collect();
        deliver(&inv, &mut all);
    }
    let view = init.view().unwrap();
    assert!(!view.is_complete());
    assert!(view.skills_covered().is_empty());
    assert_eq!(view.member(agent(2)).unwrap().status, MemberStatus::Invited);

    for (i, skill) in ["rust", "sql", "ml"].iter().enumerate() {
        let acc = reps[i].accept(skill, T0 + 2).unwrap();
        deliver(&acc, &mut [&mut init]);
        assert_eq!(init.view().unwrap().skills_covered().len(), i + 1);
    }
    let formed = init.view().unwrap();
    assert!(formed.is_complete());
    assert_eq!(formed.skills_covered(), vec!["ml", "rust", "sql"]);
    assert!(formed.is_selected(agent(3)));

    let mut changes = vec![init.set_status(TaskStatus::Running, T0 + 3).unwrap()];
    for (i, r) in reps.iter_mut().enumerate() {
        r.apply(init.all_changes());
        changes.push(r.activate(T0 + 4).unwrap());
        changes.push(r.report_progress(0.5, Some(&[i as u8; 8]), T0 + 5).unwrap());
        changes.push(
            r.record_result(true, format!("out-{i}").as_bytes(), T0 + 6)
                .unwrap(),
        );
    }
    init.apply(changes.clone());
    changes.clear();
    changes.push(init.set_outcome(&TaskOutcome::Completed, T0 + 7).unwrap());
    changes.push(init.set_status(TaskStatus::Dissolved, T0 + 8).unwrap());
    for r in reps.iter_mut() {
        r.apply(init.all_changes());
    }

    let final_view = init.view().unwrap();
    assert_eq!(final_view.status, TaskStatus::Dissolved);
    assert_eq!(final_view.outcome, Some(TaskOutcome::Completed));
    let m3 = final_view.member(agent(3)).unwrap();
    assert_eq!(m3.status, MemberStatus::Active);
    assert_eq!(m3.checkpoint.as_deref(), Some(&[1u8; 8][..]));
    assert_eq!(m3.result.as_ref().unwrap().output, b"out-1");
    assert_eq!(m3.progress, 1.0);
    for r in &reps {
        assert_eq!(r.heads(), init.heads());
        assert_eq!(r.view().unwrap(), final_view);
    }
}

#[test]
fn selection_ranks_by_score_then_id_and_respects_counts_and_the_size_cap() {
    let (mut init, mut reps, _) = group(1, &[("rust", 2), ("sql", 1)], 3, &[2, 3, 4, 5, 6]);
    // Scores: 2 → 0.9, 3 → 0.5, 4 → 0.5, 5 → 0.7 for rust; 6 for sql.
    for (n, s) in [(2u8, 0.9), (3, 0.5), (4, 0.5), (5, 0.7)] {
        init.invite(agent(n), "rust", s, T0).unwrap();
    }
    init.invite(agent(6), "sql", 0.1, T0).unwrap();
    for r in reps.iter_mut() {
        r.apply(init.all_changes());
    }
    // 2 does not accept; 3, 4 and 5 accept rust; 6 accepts sql.
    for r in &mut reps[1..4] {
        let c = r.accept("rust", T0 + 1).unwrap();
        init.apply([c]);
    }
    let c = reps[4].accept("sql", T0 + 1).unwrap();
    init.apply([c]);
    let view = init.view().unwrap();
    let rust = &view
        .skills
        .iter()
        .find(|s| s.name == "rust")
        .unwrap()
        .selected;
    // 5 (0.7) first, then the lower id of the 0.5 tie.
    let (a3, a4) = (agent(3), agent(4));
    let tie_winner = if a3 < a4 { a3 } else { a4 };
    assert_eq!(rust, &vec![agent(5), tie_winner]);
    assert!(view.is_complete());
    assert_eq!(view.selected().count(), 3);
}

#[test]
fn a_failed_member_drops_out_and_a_standby_takes_its_place() {
    let (mut init, mut reps, _) = group(1, &[("rust", 1)], 1, &[2, 3]);
    init.invite(agent(2), "rust", 0.9, T0).unwrap();
    init.invite(agent(3), "rust", 0.4, T0).unwrap();
    for r in reps.iter_mut() {
        r.apply(init.all_changes());
        let c = r.accept("rust", T0 + 1).unwrap();
        init.apply([c]);
    }
    assert_eq!(init.view().unwrap().skills[0].selected, vec![agent(2)]);
    reps[0]
        .report_progress(0.3, Some(b"step-3"), T0 + 2)
        .unwrap();
    init.apply(reps[0].all_changes());
    init.declare_failed(agent(2), "silent past suspicion timeout", T0 + 3)
        .unwrap();
    let view = init.view().unwrap();
    assert_eq!(view.skills[0].selected, vec![agent(3)]);
    let failed = view.member(agent(2)).unwrap();
    assert_eq!(failed.status, MemberStatus::Failed);
    assert_eq!(failed.checkpoint.as_deref(), Some(&b"step-3"[..]));
    // A failed member cannot come back by writing about itself.
    reps[0].apply(init.all_changes());
    assert!(reps[0].activate(T0 + 4).is_err());
}

#[test]
fn only_a_coordinator_may_invite_and_a_second_result_is_refused() {
    let (mut init, mut reps, _) = group(1, &[("rust", 1)], 1, &[2]);
    assert!(matches!(
        reps[0].invite(agent(2), "rust", 1.0, T0),
        Err(crate::CrdtError::NotAuthorised(_))
    ));
    assert!(reps[0].accept("rust", T0).is_err(), "not invited yet");
    assert!(
        init.invite(agent(2), "go", 1.0, T0).is_err(),
        "skill not required"
    );
    init.invite(agent(2), "rust", 1.0, T0).unwrap();
    reps[0].apply(init.all_changes());
    reps[0].accept("rust", T0 + 1).unwrap();
    reps[0].record_result(true, b"one", T0 + 2).unwrap();
    assert!(reps[0].record_result(true, b"two", T0 + 3).is_err());
    assert!(reps[0].report_progress(1.5, None, T0).is_err());
}

#[test]
fn a_declined_invitation_is_recorded_and_frees_the_slot() {
    let (mut init, mut reps, _) = group(1, &[("rust", 1)], 1, &[2, 3]);
    init.invite(agent(2), "rust", 0.9, T0).unwrap();
    reps[0].apply(init.all_changes());
    assert!(
        reps[0].decline("sql", T0 + 1).is_err(),
        "not invited for that skill"
    );
    let no = reps[0].decline("rust", T0 + 1).unwrap();
    init.apply([no]);
    let view = init.view().unwrap();
    assert_eq!(view.member(agent(2)).unwrap().status, MemberStatus::Left);
    assert!(reps[0].accept("rust", T0 + 2).is_err() || !init.view().unwrap().is_complete());
    // The standby fills the slot.
    init.invite(agent(3), "rust", 0.5, T0 + 3).unwrap();
    reps[1].apply(init.all_changes());
    init.apply([reps[1].accept("rust", T0 + 4).unwrap()]);
    assert_eq!(init.view().unwrap().skills[0].selected, vec![agent(3)]);
}

#[test]
fn an_agent_that_declined_can_be_invited_again_and_accept() {
    let (mut init, mut reps, _) = group(1, &[("rust", 1)], 1, &[2]);
    init.invite(agent(2), "rust", 0.9, T0 + 10).unwrap();
    reps[0].apply(init.all_changes());
    init.apply([reps[0].decline("rust", T0 + 11).unwrap()]);
    let view = init.view().unwrap();
    let m = view.member(agent(2)).unwrap();
    assert_eq!(m.status, MemberStatus::Left);
    assert_eq!(m.declined_invite, Some(T0 + 10));
    assert!(
        reps[0].accept("rust", T0 + 12).is_err(),
        "a refusal stands until a new invitation"
    );
    // Invited again, by a coordinator whose clock lags: the new invitation is still
    // later than the refused one, so it is open.
    init.invite(agent(2), "rust", 0.8, T0 + 5).unwrap();
    reps[0].apply(init.all_changes());
    let m = reps[0].view().unwrap().member(agent(2)).unwrap().clone();
    assert_eq!(m.status, MemberStatus::Invited);
    assert!(m.invited_at > T0 + 10);
    assert_eq!(m.declined_invite, None);
    init.apply([reps[0].accept("rust", T0 + 13).unwrap()]);
    assert_eq!(init.view().unwrap().skills[0].selected, vec![agent(2)]);
    // Leaving after that is leaving, not an open invitation.
    init.apply([reps[0].leave(T0 + 14).unwrap()]);
    let view = init.view().unwrap();
    assert_eq!(view.member(agent(2)).unwrap().status, MemberStatus::Left);
    assert_eq!(view.member(agent(2)).unwrap().declined_invite, None);
    assert_eq!(view, reps[0].view().unwrap());
}
