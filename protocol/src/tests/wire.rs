//! Envelopes and the codec under hostile input.

use proptest::prelude::*;

use crate::{
    AgentId, Audience, Keypair, Level, Message, Outcome, ProtocolError, RejectReason, ReplayGuard,
    SignedEnvelope, Skill, SkillRequirement, TaskAnnounce, TaskId, codec, message::Priority,
};

fn task_id() -> impl Strategy<Value = TaskId> {
    (any::<[u8; 32]>(), any::<u64>()).prop_map(|(k, seq)| TaskId {
        initiator: AgentId(k),
        seq,
    })
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::Novice),
        Just(Level::Intermediate),
        Just(Level::Advanced),
        Just(Level::Expert)
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            task_id(),
            ".{0,40}",
            prop::collection::vec(("[a-z]{1,10}", level(), 1..5u32), 1..4),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(task_id(), 0..3)
        )
            .prop_map(|(task_id, description, req, t, payload, depends_on)| {
                Message::TaskAnnounce(TaskAnnounce {
                    task_id,
                    description,
                    required: req
                        .into_iter()
                        .map(|(name, min_level, count)| SkillRequirement {
                            name,
                            min_level,
                            count,
                        })
                        .collect(),
                    priority: Priority::High,
                    created_at_ms: t,
                    deadline_ms: t / 2,
                    max_group_size: 20,
                    depends_on,
                    payload,
                    round: 3,
                    consensus: t % 2 == 0,
                })
            }),
        (
            task_id(),
            "[a-z]{1,10}",
            level(),
            0.0..=1.0f64,
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(task_id, name, lvl, rate, free_slots, max_slots)| {
                Message::SkillOffer {
                    task_id,
                    skill: Skill {
                        success_rate: rate,
                        ..Skill::new(name, lvl)
                    },
                    free_slots,
                    max_slots,
                }
            }),
        (
            task_id(),
            prop::collection::vec(any::<u8>(), 0..300),
            0.0..=1.0f64
        )
            .prop_map(|(task_id, changes, progress)| Message::TaskUpdate {
                task_id,
                progress,
                changes
            }),
        (task_id(), prop::collection::vec(any::<[u8; 32]>(), 0..10))
            .prop_map(|(task_id, heads)| Message::Heartbeat { task_id, heads }),
        (prop::option::of(task_id()), ".{0,100}")
            .prop_map(|(task_id, text)| Message::Alert { task_id, text }),
        (
            task_id(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
            prop::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(task_id, resume_from, changes)| Message::TaskStart {
                task_id,
                resume_from,
                changes
            }),
        (task_id(), ".{0,30}").prop_map(|(task_id, r)| Message::GroupReject {
            task_id,
            free_slots: 1,
            reason: RejectReason::Other(r),
            changes: vec![7; 3],
        }),
        (task_id(), ".{0,30}").prop_map(|(task_id, r)| Message::GroupDissolve {
            task_id,
            outcome: Outcome::Failed(r),
            changes: vec![1, 2]
        }),
    ]
}

fn sample() -> (Keypair, SignedEnvelope) {
    let key = Keypair::from_secret_bytes([7; 32]);
    let msg = Message::Alert {
        task_id: Some(TaskId {
            initiator: key.id(),
            seq: 9,
        }),
        text: "disk full".into(),
    };
    let env = SignedEnvelope::seal(
        &key,
        42,
        1_000,
        Audience::Topic("starling/v1/skill/x".into()),
        &msg,
    )
    .unwrap();
    (key, env)
}

proptest! {
    #[test]
    fn envelopes_round_trip(msg in message(), seq in any::<u64>(), at in any::<u64>(), to in any::<[u8; 32]>()) {
        let key = Keypair::from_secret_bytes([1; 32]);
        let env = SignedEnvelope::seal(&key, seq, at, Audience::Agent(AgentId(to)), &msg).unwrap();
        let opened = SignedEnvelope::open(env.as_bytes()).unwrap();
        prop_assert_eq!(opened.message, msg);
        prop_assert_eq!(opened.sender, key.id());
        prop_assert_eq!((opened.seq, opened.sent_at_ms), (seq, at));
        prop_assert_eq!(opened.audience, Audience::Agent(AgentId(to)));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = SignedEnvelope::open(&bytes);
        let _ = codec::decode::<Message>(&bytes);
    }
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let (_, env) = sample();
    let bytes = env.as_bytes();
    for i in 0..bytes.len() * 8 {
        let mut flipped = bytes.to_vec();
        flipped[i / 8] ^= 1 << (i % 8);
        assert!(
            SignedEnvelope::open(&flipped).is_err(),
            "bit {i} flipped was accepted"
        );
    }
}

#[test]
fn truncated_and_extended_envelopes_are_rejected() {
    let (_, env) = sample();
    let bytes = env.as_bytes();
    for cut in 0..bytes.len() {
        assert!(
            SignedEnvelope::open(&bytes[..cut]).is_err(),
            "prefix of {cut} bytes accepted"
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(SignedEnvelope::open(&longer).is_err());
    assert!(matches!(
        SignedEnvelope::open(&vec![0u8; codec::MAX_MESSAGE_BYTES + 1]),
        Err(ProtocolError::TooLarge { .. })
    ));
}

#[test]
fn a_signature_by_another_key_and_an_unknown_version_are_rejected() {
    let (_, env) = sample();
    let mut bytes = env.as_bytes().to_vec();
    let n = bytes.len();
    // Same header (claiming key 7), signed by key 8.
    let other = Keypair::from_secret_bytes([8; 32]);
    let sig = other.sign(&[crate::envelope::ENVELOPE_DOMAIN, &bytes[..n - 64]].concat());
    bytes[n - 64..].copy_from_slice(&sig);
    assert!(matches!(
        SignedEnvelope::open(&bytes),
        Err(ProtocolError::BadSignature(_))
    ));
    let mut v2 = env.as_bytes().to_vec();
    v2[0] = 2;
    assert!(matches!(
        SignedEnvelope::open(&v2),
        Err(ProtocolError::UnknownVersion(2))
    ));
}

#[test]
fn the_audience_is_signed_so_a_direct_message_cannot_be_redirected() {
    let key = Keypair::from_secret_bytes([7; 32]);
    let alice = Keypair::from_secret_bytes([1; 32]).id();
    let bob = Keypair::from_secret_bytes([2; 32]).id();
    let msg = Message::Alert {
        task_id: None,
        text: "hi".into(),
    };
    let env = SignedEnvelope::seal(&key, 1, 1, Audience::Agent(alice), &msg).unwrap();
    let opened = SignedEnvelope::open(env.as_bytes()).unwrap();
    assert!(opened.check_audience(&Audience::Agent(alice)).is_ok());
    assert!(matches!(
        opened.check_audience(&Audience::Agent(bob)),
        Err(ProtocolError::WrongAudience(_))
    ));
    assert!(
        opened
            .check_audience(&Audience::Topic("starling/v1/skill/x".into()))
            .is_err()
    );
    // Rewriting the recipient breaks the signature.
    let mut bytes = env.into_bytes();
    bytes[52..84].copy_from_slice(&bob.0);
    assert!(matches!(
        SignedEnvelope::open(&bytes),
        Err(ProtocolError::BadSignature(_))
    ));
}

#[test]
fn replays_are_rejected_inside_and_after_the_gossip_duplicate_window() {
    let a = Keypair::from_secret_bytes([1; 32]).id();
    let b = Keypair::from_secret_bytes([2; 32]).id();
    let now = 1_700_000_000_000u64;
    let mut g = ReplayGuard::default();
    g.check(a, 100, now, now).unwrap();
    assert!(matches!(
        g.check(a, 100, now, now + 10),
        Err(ProtocolError::Replay { .. })
    ));
    // Reordering within the window is fine; another sender is independent.
    g.check(a, 99, now, now + 10).unwrap();
    g.check(b, 100, now, now + 10).unwrap();
    // After gossipsub's 60 s duplicate cache: stale, whatever the seq.
    assert!(matches!(
        g.check(a, 100, now, now + 61_000),
        Err(ProtocolError::Stale { .. })
    ));
    assert!(matches!(
        g.check(a, 5_000, now, now + 61_000),
        Err(ProtocolError::Stale { .. })
    ));
    // From the future beyond the skew.
    assert!(matches!(
        g.check(a, 7, now + 31_000, now),
        Err(ProtocolError::Stale { .. })
    ));
    // A small window (64 numbers): a number that fell out of it is refused, one
    // still inside it is not.
    let mut small = ReplayGuard::new(30_000, 4, 10);
    for s in 10..14 {
        small.check(a, s, now, now).unwrap();
    }
    small.check(a, 80, now, now).unwrap();
    assert!(small.check(a, 16, now, now).is_err());
    small.check(a, 17, now, now).unwrap();
    assert!(small.check(a, 17, now, now).is_err());
    // Senders are forgotten once their envelopes are stale anyway; memory stays bounded.
    for i in 100..150u8 {
        let k = Keypair::from_secret_bytes([i; 32]).id();
        small.check(k, 1, now, now).unwrap();
    }
    assert!(small.senders() <= 10);
}

#[test]
fn a_twelve_byte_input_claiming_gigabytes_fails_without_allocating() {
    // Alert { task_id: None, text: <length 16 GiB> }: variant 13, None, u64 length.
    let mut bytes = vec![13u8, 0, 253];
    bytes.extend_from_slice(&(16u64 << 30).to_be_bytes());
    bytes.push(b'x');
    assert_eq!(bytes.len(), 12);
    let before = super::alloc::allocated_here();
    let r = codec::decode::<Message>(&bytes);
    let used = super::alloc::allocated_here() - before;
    assert!(r.is_err());
    assert!(used < 64 * 1024, "allocated {used} bytes");
    // The same for a vector: Heartbeat heads claiming 2^60 entries.
    let mut hb = vec![10u8];
    hb.extend_from_slice(&[0u8; 32]);
    hb.push(0);
    hb.push(253);
    hb.extend_from_slice(&(1u64 << 60).to_be_bytes());
    let before = super::alloc::allocated_here();
    assert!(codec::decode::<Message>(&hb).is_err());
    assert!(super::alloc::allocated_here() - before < 64 * 1024);
}
