//! Input from peers that lie or send garbage: each is refused with a typed error,
//! nothing is applied, and the document is unchanged.

use automerge::{Automerge, ObjType, ROOT, ReadDoc, transaction::Transactable};

use super::support::*;
use crate::{
    AgentKey, CrdtError, GroupDoc, Limits, MemberStatus, SignedChange, TaskStatus, doc::Containers,
    reduce,
};

/// A forged edit made directly on a raw automerge transaction.
type ForgedEdit = Box<dyn FnOnce(&mut automerge::transaction::Transaction<'_>, &Containers)>;

/// Copies `doc`'s automerge state, lets `actor` edit it freely (bypassing every local
/// check) and returns the copy and the resulting raw change.
fn forge(
    doc: &GroupDoc,
    actor: AgentKey,
    edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &Containers),
) -> (Automerge, automerge::Change) {
    let mut raw = Automerge::load(&doc.automerge().save()).unwrap();
    raw.set_actor(actor.to_actor());
    let containers = Containers::of(&raw).unwrap();
    let mut tx = raw.transaction();
    edit(&mut tx, &containers);
    let (hash, _) = tx.commit();
    let change = raw.get_change_by_hash(&hash.unwrap()).unwrap();
    (raw, change)
}

/// A group with member 2 invited and accepted for "rust"; 9 is an outsider.
fn accepted_group() -> (GroupDoc, GroupDoc) {
    let (mut init, mut reps, _) = group(1, &[("rust", 1)], 2, &[2]);
    init.invite(agent(2), "rust", 0.8, T0).unwrap();
    let mut alice = reps.remove(0);
    alice.apply(init.all_changes());
    let acc = alice.accept("rust", T0 + 1).unwrap();
    init.apply([acc]);
    (init, alice)
}

/// Asserts `change` is refused by `doc` with an error matching `expected`, and that the
/// document did not move.
fn assert_refused(doc: &mut GroupDoc, change: SignedChange, expected: impl Fn(&CrdtError) -> bool) {
    let heads = doc.heads();
    let view = doc.view().unwrap();
    let report = doc.apply([change]);
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert!(
        expected(&report.rejected[0]),
        "unexpected error {:?}",
        report.rejected[0]
    );
    assert!(report.applied.is_empty());
    assert_eq!(doc.heads(), heads);
    assert_eq!(doc.view().unwrap(), view);
}

#[test]
fn garbage_bytes_are_not_a_change() {
    let (mut init, _) = accepted_group();
    for garbage in [
        vec![],
        vec![0u8; 7],
        vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1, 200, 1],
        (0..=255u8).collect(),
    ] {
        let c = SignedChange {
            signer: agent(9),
            bytes: garbage,
            signature: [7; 64],
        };
        assert_refused(&mut init, c, |e| matches!(e, CrdtError::NotAChange(_)));
    }
}

#[test]
fn oversized_change_is_refused_before_parsing() {
    let (mut init, _) = accepted_group();
    let size = Limits::default().max_change_bytes + 1;
    let c = SignedChange {
        signer: agent(9),
        bytes: vec![0x85; size],
        signature: [0; 64],
    };
    assert_refused(&mut init, c, |e| matches!(e, CrdtError::TooLarge { .. }));
}

#[test]
fn compressed_chunks_are_refused_without_decompressing() {
    let (mut init, mut alice) = accepted_group();
    let signed = alice
        .report_progress(0.1, Some(&[0u8; 8000]), T0 + 2)
        .unwrap();
    let mut change = automerge::Change::from_bytes(signed.bytes.clone()).unwrap();
    let compressed = change.bytes().into_owned();
    assert!(
        compressed.len() < signed.bytes.len(),
        "the test needs a compressible change"
    );
    let c = SignedChange {
        bytes: compressed,
        ..signed.clone()
    };
    assert_refused(
        &mut init,
        c,
        |e| matches!(e, CrdtError::NotAChange(m) if m.contains("chunk type 2")),
    );
    // The uncompressed original is fine.
    assert!(init.apply([signed]).is_clean());
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let (mut init, mut alice) = accepted_group();
    let honest = alice.report_progress(0.2, None, T0 + 2).unwrap();
    let change = automerge::Change::from_bytes(honest.bytes.clone()).unwrap();
    let resigned = SignedChange {
        signer: agent(2),
        ..SignedChange::sign(&key(9), b"task-1", &change)
    };
    assert_refused(
        &mut init,
        resigned,
        |e| matches!(e, CrdtError::BadSignature(a) if *a == agent(2)),
    );
    let mut flipped = honest.clone();
    flipped.signature[10] ^= 1;
    assert_refused(&mut init, flipped, |e| {
        matches!(e, CrdtError::BadSignature(_))
    });
    // A signature binds the group: the same change signed for another group is refused.
    let other_group = SignedChange::sign(&key(2), b"task-2", &change);
    assert_refused(&mut init, other_group, |e| {
        matches!(e, CrdtError::BadSignature(_))
    });
    assert!(init.apply([honest]).is_clean());
}

#[test]
fn an_exact_copy_of_an_applied_change_is_a_duplicate_and_nothing_else_is() {
    let (mut init, mut alice) = accepted_group();
    let honest = alice.report_progress(0.2, None, T0 + 2).unwrap();
    assert!(init.apply([honest.clone()]).is_clean());
    // The same bytes again, even under a broken signature: there is nothing to add,
    // so nothing is parsed or checked.
    let mut copy = honest.clone();
    copy.signature[3] ^= 1;
    let heads = init.heads();
    let report = init.apply([honest.clone(), copy]);
    assert_eq!(report.duplicates, 2, "{report:?}");
    assert!(report.rejected.is_empty() && report.applied.is_empty());
    assert_eq!(init.heads(), heads);
    // Bytes with the same header checksum but another body are not a copy: they
    // are parsed and refused.
    let mut altered = honest.clone();
    let last = altered.bytes.len() - 1;
    altered.bytes[last] ^= 1;
    assert_eq!(altered.bytes[4..8], honest.bytes[4..8]);
    assert_refused(&mut init, altered, |e| {
        matches!(e, CrdtError::NotAChange(_) | CrdtError::BadSignature(_))
    });
}

#[test]
fn a_change_whose_actor_is_not_its_signer_is_refused() {
    let (mut init, alice) = accepted_group();
    // Mallory (9) writes as Alice (2) and signs with her own key.
    let (_, change) = forge(&alice, agent(2), |tx, c| {
        let slot = tx
            .put_object(&c.members, agent(2).to_hex(), ObjType::Map)
            .unwrap();
        tx.put(&slot, "status", "left").unwrap();
    });
    let spoofed = SignedChange::sign(&key(9), b"task-1", &change);
    assert_refused(
        &mut init,
        spoofed,
        |e| matches!(e, CrdtError::ActorMismatch { signer, .. } if *signer == agent(9)),
    );
}

#[test]
fn writes_outside_the_authors_own_slots_are_refused() {
    let (mut init, alice) = accepted_group();
    let mallory = agent(9);
    let attempts: Vec<(&str, ForgedEdit)> = vec![
        (
            "another member's entry",
            Box::new(|tx, c| {
                let slot = tx
                    .put_object(&c.members, agent(2).to_hex(), ObjType::Map)
                    .unwrap();
                tx.put(&slot, "status", "left").unwrap();
            }),
        ),
        (
            "the initiator's invitations",
            Box::new(|tx, c| {
                let slot = tx
                    .put_object(&c.invites, agent(1).to_hex(), ObjType::Map)
                    .unwrap();
                tx.put(&slot, "x", 1u64).unwrap();
            }),
        ),
        (
            "the root",
            Box::new(|tx, _| {
                tx.put(ROOT, "v", 2u64).unwrap();
            }),
        ),
        (
            "the frozen task spec",
            Box::new(|tx, _| {
                let (_, task) = tx.get(ROOT, "task").unwrap().unwrap();
                tx.put(&task, "max_group_size", 100u64).unwrap();
            }),
        ),
    ];
    for (what, edit) in attempts {
        let (_, change) = forge(&alice, mallory, edit);
        let signed = SignedChange::sign(&key(9), b"task-1", &change);
        let heads = init.heads();
        let report = init.apply([signed]);
        assert!(
            matches!(report.rejected.as_slice(), [CrdtError::ForbiddenWrite { actor, .. }] if *actor == mallory),
            "{what}: {report:?}"
        );
        assert_eq!(init.heads(), heads, "{what}");
    }
    // Writing into an object Alice created (her entry) is refused too.
    let alice_slot = {
        let c = Containers::of(init.automerge()).unwrap();
        init.automerge()
            .get(&c.members, agent(2).to_hex())
            .unwrap()
            .unwrap()
            .1
    };
    let (_, change) = forge(&alice, mallory, |tx, _| {
        tx.put(&alice_slot, "status", "left").unwrap();
    });
    let signed = SignedChange::sign(&key(9), b"task-1", &change);
    assert_refused(&mut init, signed, |e| {
        matches!(e, CrdtError::ForbiddenWrite { .. })
    });
    assert_eq!(
        init.view().unwrap().member(agent(2)).unwrap().status,
        MemberStatus::Accepted
    );
}

#[test]
fn the_reducer_ignores_forged_writes_that_reach_the_document() {
    // Alice is invited; a raw document receives, concurrently with her acceptance,
    // forged writes (as if loaded from a tampered file, bypassing the apply checks).
    let (mut init, mut reps, _) = group(1, &[("rust", 1)], 2, &[2]);
    init.invite(agent(2), "rust", 0.8, T0).unwrap();
    let alice = &mut reps[0];
    alice.apply(init.all_changes());
    let (mut raw, _) = forge(alice, agent(9), |tx, c| {
        // Mallory writes an entry under Alice's key, invites herself into the
        // initiator's slot, accepts, and marks the task dissolved in her coord slot.
        let fake = tx
            .put_object(&c.members, agent(2).to_hex(), ObjType::Map)
            .unwrap();
        tx.put(&fake, "status", "left").unwrap();
        tx.put(&fake, "skill", "rust").unwrap();
        let (_, init_invites) = tx.get(&c.invites, agent(1).to_hex()).unwrap().unwrap();
        let inv = tx
            .put_object(&init_invites, agent(9).to_hex(), ObjType::Map)
            .unwrap();
        tx.put(&inv, "skill", "rust").unwrap();
        tx.put(&inv, "score", 99.0).unwrap();
        let own = tx
            .put_object(&c.members, agent(9).to_hex(), ObjType::Map)
            .unwrap();
        tx.put(&own, "skill", "rust").unwrap();
        tx.put(&own, "status", "accepted").unwrap();
        let coord = tx
            .put_object(&c.coord, agent(9).to_hex(), ObjType::Map)
            .unwrap();
        tx.put(&coord, "status", "dissolved").unwrap();
    });
    let accept = alice.accept("rust", T0 + 1).unwrap();
    raw.apply_changes([automerge::Change::from_bytes(accept.bytes.clone()).unwrap()])
        .unwrap();
    init.apply([accept]);

    let view = reduce(&raw, agent(1)).unwrap();
    assert!(
        view.member(agent(9)).is_none(),
        "a self-invitation must not count"
    );
    assert_eq!(view.status, TaskStatus::Forming);
    assert_eq!(
        view.member(agent(2)).unwrap().status,
        MemberStatus::Accepted
    );
    assert_eq!(view.skills[0].selected, vec![agent(2)]);
    assert_eq!(
        view,
        init.view().unwrap(),
        "the forgery changes nothing the reducer reports"
    );
}

#[test]
fn equivocation_is_refused_and_reported() {
    let (mut init, alice) = accepted_group();
    // Alice's replica forks (e.g. a restored backup) and both forks write seq 3.
    let mut fork_a = GroupDoc::load(key(2), &alice.save(), Limits::default()).unwrap();
    let mut fork_b = GroupDoc::load(key(2), &alice.save(), Limits::default()).unwrap();
    let a = fork_a.report_progress(0.4, None, T0 + 5).unwrap();
    let b = fork_b.report_progress(0.9, None, T0 + 5).unwrap();
    assert!(init.apply([a]).is_clean());
    assert_refused(
        &mut init,
        b,
        |e| matches!(e, CrdtError::Equivocation { actor, seq: 2 } if *actor == agent(2)),
    );
    assert!(init.equivocators().contains(&agent(2)));
}

#[test]
fn only_the_initiator_may_write_the_genesis() {
    let (_, genesis) =
        GroupDoc::create(key(1), &spec(1, &[("rust", 1)], 1), Limits::default()).unwrap();
    let mut replica =
        GroupDoc::replica(key(3), b"task-1".to_vec(), agent(1), Limits::default()).unwrap();
    // Mallory's own "genesis" for the same group id.
    let (_, fake) =
        GroupDoc::create(key(9), &spec(9, &[("rust", 1)], 1), Limits::default()).unwrap();
    let report = replica.apply([fake]);
    assert!(
        matches!(report.rejected.as_slice(), [CrdtError::InvalidGenesis(_)]),
        "{report:?}"
    );
    assert!(!replica.is_initialized());
    // The initiator's genesis of another group, signed as if for this one.
    let mut other = spec(1, &[("rust", 1)], 1);
    other.group_id = b"task-2".to_vec();
    let (other_doc, _) = GroupDoc::create(key(1), &other, Limits::default()).unwrap();
    let change = other_doc.automerge().get_changes(&[]).remove(0);
    let wrong_group = SignedChange::sign(&key(1), b"task-1", &change);
    let report = replica.apply([wrong_group]);
    assert!(
        matches!(report.rejected.as_slice(), [CrdtError::WrongGroup]),
        "{report:?}"
    );
    assert!(!replica.is_initialized());
    assert!(matches!(replica.view(), Err(CrdtError::NotInitialized)));
    assert!(replica.apply([genesis]).is_clean());
    assert!(replica.is_initialized());
}

#[test]
fn out_of_order_changes_wait_and_the_wait_is_bounded() {
    let (mut init, mut alice) = accepted_group();
    let limits = Limits {
        max_pending: 2,
        ..Limits::default()
    };
    let mut late = GroupDoc::replica(key(5), b"task-1".to_vec(), agent(1), limits).unwrap();
    let p1 = alice.report_progress(0.1, None, T0 + 2).unwrap();
    let p2 = alice.report_progress(0.2, None, T0 + 3).unwrap();
    let p3 = alice.report_progress(0.3, None, T0 + 4).unwrap();
    // Everything after the genesis, newest first, and no genesis yet.
    let mut history = init.all_changes();
    history.extend([p1.clone(), p2.clone(), p3.clone()]);
    let report = late.apply([p3.clone(), p2.clone()]);
    assert!(report.is_clean() && report.applied.is_empty());
    assert_eq!(report.pending, 2);
    let report = late.apply([p1.clone()]);
    assert!(matches!(
        report.rejected.as_slice(),
        [CrdtError::PendingFull(2)]
    ));
    // Once the missing history arrives everything applies, in causal order.
    let report = late.apply(history);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(late.pending_count(), 0);
    init.apply([p1, p2, p3]);
    assert_eq!(late.heads(), init.heads());
    assert_eq!(late.view().unwrap(), init.view().unwrap());
}

#[test]
fn a_full_document_refuses_more_changes() {
    let limits = Limits {
        max_doc_changes: 4,
        ..Limits::default()
    };
    let (mut init, _) = GroupDoc::create(key(1), &spec(1, &[("rust", 1)], 1), limits).unwrap();
    for i in 0..3 {
        init.invite(agent(10 + i), "rust", 0.5, T0).unwrap();
    }
    assert!(matches!(
        init.invite(agent(20), "rust", 0.5, T0),
        Err(CrdtError::DocumentFull(4))
    ));
}
