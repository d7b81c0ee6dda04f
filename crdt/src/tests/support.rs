//! Keys, specs and small helpers shared by the tests.

use ed25519_dalek::SigningKey;

use crate::{AgentKey, GroupDoc, GroupSpec, Limits, SignedChange, SkillNeed};

pub(crate) const T0: u64 = 1_700_000_000_000;

/// A deterministic signing key; `n` names the agent.
pub(crate) fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub(crate) fn agent(n: u8) -> AgentKey {
    AgentKey::of(&key(n))
}

/// A spec for a group initiated by agent `initiator` needing `skills`.
pub(crate) fn spec(initiator: u8, skills: &[(&str, u32)], max: u32) -> GroupSpec {
    GroupSpec {
        group_id: b"task-1".to_vec(),
        initiator: agent(initiator),
        skills: skills
            .iter()
            .map(|(n, c)| SkillNeed {
                name: n.to_string(),
                count: *c,
            })
            .collect(),
        max_group_size: max,
        created_at_ms: T0,
    }
}

/// The initiator's document plus replicas for `members`, all holding the genesis.
pub(crate) fn group(
    initiator: u8,
    skills: &[(&str, u32)],
    max: u32,
    members: &[u8],
) -> (GroupDoc, Vec<GroupDoc>, SignedChange) {
    let (init, genesis) = GroupDoc::create(
        key(initiator),
        &spec(initiator, skills, max),
        Limits::default(),
    )
    .unwrap();
    let replicas = members
        .iter()
        .map(|&m| {
            let mut r = GroupDoc::replica(
                key(m),
                b"task-1".to_vec(),
                agent(initiator),
                Limits::default(),
            )
            .unwrap();
            assert!(r.apply([genesis.clone()]).is_clean());
            r
        })
        .collect();
    (init, replicas, genesis)
}

/// Applies `change` to every doc and asserts nothing was refused.
pub(crate) fn deliver(change: &SignedChange, docs: &mut [&mut GroupDoc]) {
    for d in docs.iter_mut() {
        let report = d.apply([change.clone()]);
        assert!(report.is_clean(), "{:?}", report.rejected);
    }
}

/// Brings `a` and `b` level with sync messages; returns the number of messages sent.
pub(crate) fn sync_pair(a: &mut GroupDoc, b: &mut GroupDoc) -> usize {
    let mut msg = Some(a.sync_message(None));
    let mut sent = 0;
    let mut a_turn = false;
    while let Some(m) = msg.take() {
        sent += 1;
        assert!(sent < 1000, "sync does not terminate");
        let receiver = if a_turn { &mut *a } else { &mut *b };
        let (_, reply) = receiver.receive_sync(m);
        msg = reply;
        a_turn = !a_turn;
    }
    sent
}
