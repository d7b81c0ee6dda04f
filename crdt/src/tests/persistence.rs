//! Save and load: a replica survives a restart with its signatures, and a corrupt file
//! is refused.

use super::support::*;
use crate::{CrdtError, GroupDoc, Limits, TaskOutcome, TaskStatus, encode_batch};

fn dissolved_group() -> (GroupDoc, Vec<GroupDoc>) {
    let (mut init, mut reps, _) = group(1, &[("rust", 1), ("sql", 1)], 2, &[2, 3]);
    init.invite(agent(2), "rust", 0.6, T0).unwrap();
    init.invite(agent(3), "sql", 0.6, T0).unwrap();
    for (r, skill) in reps.iter_mut().zip(["rust", "sql"]) {
        r.apply(init.all_changes());
        r.accept(skill, T0 + 1).unwrap();
        r.activate(T0 + 2).unwrap();
        for step in 1..=10u8 {
            r.report_progress(
                f64::from(step) / 10.0,
                Some(&[step; 64]),
                T0 + 2 + u64::from(step),
            )
            .unwrap();
        }
        r.record_result(true, b"done", T0 + 20).unwrap();
        init.apply(r.all_changes());
    }
    init.set_status(TaskStatus::Running, T0 + 3).unwrap();
    init.set_outcome(&TaskOutcome::Completed, T0 + 21).unwrap();
    init.set_status(TaskStatus::Dissolved, T0 + 22).unwrap();
    (init, reps)
}

#[test]
fn save_and_load_round_trip_and_the_loaded_replica_keeps_writing() {
    let (init, mut reps) = dissolved_group();
    let mut loaded = GroupDoc::load(key(1), &init.save(), Limits::default()).unwrap();
    assert_eq!(loaded.heads(), init.heads());
    assert_eq!(loaded.change_count(), init.change_count());
    assert_eq!(loaded.view().unwrap(), init.view().unwrap());
    assert_eq!(loaded.all_changes(), init.all_changes());
    // The loaded replica continues its own sequence: its next change is accepted.
    let next = loaded
        .declare_failed(agent(3), "post-mortem", T0 + 30)
        .unwrap();
    reps[0].apply(init.all_changes());
    assert!(reps[0].apply([next]).is_clean());
}

#[test]
fn a_dissolved_group_saves_compactly() {
    let (init, _) = dissolved_group();
    let saved = init.save().len();
    let raw = encode_batch(&init.all_changes()).len();
    assert!(
        saved * 2 < raw,
        "saved {saved} bytes vs {raw} bytes of raw signed changes"
    );
}

#[test]
fn a_corrupt_save_is_refused() {
    let (init, _) = dissolved_group();
    let saved = init.save();
    let last_sig_byte = saved.len() - 1;
    let mut bad_sig = saved.clone();
    bad_sig[last_sig_byte] ^= 1;
    assert!(matches!(
        GroupDoc::load(key(1), &bad_sig, Limits::default()),
        Err(CrdtError::BadSignature(_))
    ));
    for cut in [0, 5, 30, saved.len() / 2, saved.len() - 1] {
        assert!(
            GroupDoc::load(key(1), &saved[..cut], Limits::default()).is_err(),
            "cut {cut}"
        );
    }
    let mut garbage = saved.clone();
    garbage[40] ^= 0xff;
    assert!(GroupDoc::load(key(1), &garbage, Limits::default()).is_err());
    let tiny = Limits {
        max_batch_bytes: 64 * 1024,
        ..Limits::default()
    };
    let mut big = saved.clone();
    big.resize(70 * 1024, 0);
    assert!(matches!(
        GroupDoc::load(key(1), &big, tiny),
        Err(CrdtError::TooLarge { .. })
    ));
}
