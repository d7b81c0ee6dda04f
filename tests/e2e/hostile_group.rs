//! Lies told inside the protocol with valid signatures: an invitation from an
//! agent that does not coordinate the task, a member writing another member's
//! entry, a member equivocating, an agent claiming a skill it lacks, an agent
//! flooding a topic with announcements. Each is refused and counted, and honest
//! work carries on.

use std::time::Duration;

use automerge::{ObjType, ROOT, ReadDoc, transaction::Transactable};
use starling::{
    crdt::{
        GroupDoc, GroupSpec, Limits, MemberStatus, SignedChange, SkillNeed, SyncMessage,
        decode_batch, encode_batch, signed::signing_bytes,
    },
    protocol::{
        AgentId, Audience, Event, Keypair, Level, Message, Outcome, Priority, Skill, TaskAnnounce,
        TaskId, skill_topic,
    },
};

use crate::{
    raw::{RawPeer, Step, now_ms},
    support::*,
};

/// Sequence numbers for a raw peer's envelopes: increasing, fresh.
struct Seq(u64);

impl Seq {
    fn new() -> Seq {
        Seq(now_ms() * 1000)
    }

    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

fn violations(net: &Net, i: usize) -> f64 {
    refused(&net.node(i).handle, "protocol_violation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_from_an_agent_that_does_not_coordinate_the_task_is_refused() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    let hub = net
        .start(
            node_config(key(30, 0), agent_config(&[]), &[]),
            work(300, 0),
        )
        .await;
    let boot = [net.node(hub).addr()];
    let worker = net
        .start(
            node_config(key(30, 1), agent_config(&[("a", Level::Expert)]), &boot),
            work(300, 1),
        )
        .await;
    net.wait_connected(1, 30).await;
    let worker_id = net.id(worker);

    // Mallory invites the worker to a task of the hub's, with a document she made.
    let mallory = RawPeer::new(key(30, 9), &[]);
    let mut mallory = mallory;
    mallory.dial(net.node(worker).addr());
    mallory
        .drive(30, "a connection to the worker", |_, step| match step {
            Step::Swarm(e) => {
                matches!(*e, libp2p::swarm::SwarmEvent::ConnectionEstablished { .. }).then_some(())
            }
            _ => None,
        })
        .await;
    let now = now_ms();
    let task = TaskAnnounce {
        task_id: TaskId {
            initiator: net.id(hub),
            seq: 7,
        },
        description: "not mallory's".into(),
        required: vec![starling::protocol::SkillRequirement {
            name: "a".into(),
            min_level: Level::Novice,
            count: 1,
        }],
        priority: Priority::Normal,
        created_at_ms: now,
        deadline_ms: now + 60_000,
        max_group_size: 1,
        depends_on: Vec::new(),
        payload: Vec::new(),
        round: 0,
        consensus: false,
    };
    let spec = GroupSpec {
        group_id: task.task_id.group_id(),
        initiator: mallory.id().key(),
        skills: vec![SkillNeed {
            name: "a".into(),
            count: 1,
        }],
        max_group_size: 1,
        created_at_ms: now,
    };
    let (mut doc, _) =
        GroupDoc::create(mallory.key.signing_key().clone(), &spec, Limits::default()).unwrap();
    doc.invite(worker_id.key(), "a", 1.0, now).unwrap();
    let invite = Message::GroupInvite {
        task,
        skill: "a".into(),
        changes: encode_batch(&doc.all_changes()),
    };
    let bytes = mallory.seal(Seq::new().next(), now, Audience::Agent(worker_id), &invite);
    mallory.send(worker_id, bytes);
    let background = mallory.run_in_background();

    let (_, e) = net
        .log
        .wait_event(30, "the worker to refuse the invitation", |i, e| {
            i == worker && matches!(e, Event::Misbehaviour { .. })
        })
        .await;
    let Event::Misbehaviour { peer, reason } = e else {
        unreachable!()
    };
    assert_eq!(peer, AgentId::from(spec.initiator));
    assert!(reason.contains("invitation"), "{reason}");
    assert_eq!(violations(&net, worker), 1.0);
    // The worker took no slot: it serves the hub's real task at once.
    let tasks = net.node(worker).handle.tasks().await.unwrap();
    assert!(tasks.iter().all(|t| !t.member), "{tasks:?}");
    let (real, done) = net.node(hub).handle.announce(spec_of("a")).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.outcome, Outcome::Completed);
    assert_eq!(finished.results[0].member, worker_id);
    net.log
        .assert_finished_once(real, &Outcome::Completed)
        .await;
    background.abort();
}

fn spec_of(skill: &str) -> starling::protocol::TaskSpec {
    spec(&[skill])
}

/// A change by `signer` that writes `victim`'s member entry, made on a copy of
/// `doc` with automerge directly (the group API would refuse to write it).
fn forge_entry_of(doc: &GroupDoc, signer: &Keypair, victim: AgentId) -> SignedChange {
    let mut raw = automerge::Automerge::load(&doc.automerge().save()).unwrap();
    raw.set_actor(signer.id().key().to_actor());
    let mut tx = raw.transaction();
    let (_, members) = tx.get(ROOT, "members").unwrap().unwrap();
    let entry = tx
        .put_object(&members, victim.key().to_hex(), ObjType::Map)
        .unwrap();
    tx.put(&entry, "status", "left").unwrap();
    let (hash, _) = tx.commit();
    let change = raw.get_change_by_hash(&hash.unwrap()).unwrap();
    SignedChange {
        signer: signer.id().key(),
        bytes: change.raw_bytes().to_vec(),
        signature: signer.sign(&signing_bytes(doc.group_id(), &change.hash())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_writing_another_members_entry_or_equivocating_is_refused() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    let mut hub_agent = agent_config(&[]);
    hub_agent.offer_window_ms = 5_000;
    let hub = net
        .start(node_config(key(31, 0), hub_agent, &[]), work(300, 0))
        .await;
    let boot = [net.node(hub).addr()];
    let honest_b = net
        .start(
            node_config(key(31, 1), agent_config(&[("b", Level::Expert)]), &boot),
            work(300, 1),
        )
        .await;
    let standby_a = net
        .start(
            node_config(key(31, 2), agent_config(&[("a", Level::Novice)]), &boot),
            work(300, 2),
        )
        .await;
    net.wait_connected(1, 30).await;
    let (hub_id, b_id) = (net.id(hub), net.id(honest_b));

    // Mallory offers "a" as an Expert, is invited, accepts, and once the task runs,
    // sends a change writing b's entry, then two different changes with one
    // sequence number.
    let mut mallory = RawPeer::new(key(31, 9), &["a"]);
    let m_key = mallory.key.clone();
    mallory.dial(net.node(hub).addr());
    mallory
        .drive(30, "the hub's connection", |_, step| match step {
            Step::Swarm(e) => {
                matches!(*e, libp2p::swarm::SwarmEvent::ConnectionEstablished { .. }).then_some(())
            }
            _ => None,
        })
        .await;
    let (task, _) = net
        .node(hub)
        .handle
        .announce(spec(&["a", "b"]))
        .await
        .unwrap();
    let to_hub = Audience::Agent(hub_id);
    let mut seq = Seq::new();
    let mut replica: Option<GroupDoc> = None;
    let mut offered = false;
    let mut attacked = false;
    mallory
        .drive(60, "mallory's attack", |p, step| {
            let now = now_ms();
            match step {
                // The announcement reaches her through gossip, or directly once the
                // hub finds too few offers.
                Step::Gossip | Step::Idle if !offered => {
                    let offer = Message::SkillOffer {
                        task_id: task,
                        skill: Skill::new("a", Level::Expert),
                        free_slots: 1,
                        max_slots: 1,
                    };
                    let bytes = p.seal(seq.next(), now, to_hub.clone(), &offer);
                    p.send(hub_id, bytes);
                    offered = true;
                    None
                }
                Step::Direct { bytes, .. } => {
                    let env = starling::protocol::SignedEnvelope::open(&bytes).unwrap();
                    match env.message {
                        Message::GroupInvite { changes, skill, .. } => {
                            let mut doc = GroupDoc::replica(
                                m_key.signing_key().clone(),
                                task.group_id(),
                                task.initiator.key(),
                                Limits::default(),
                            )
                            .unwrap();
                            doc.apply(decode_batch(&changes, &Limits::default()).unwrap());
                            let accept = doc.accept(&skill, now).unwrap();
                            let msg = Message::GroupAccept {
                                task_id: task,
                                free_slots: 1,
                                changes: encode_batch(&[accept]),
                            };
                            let bytes = p.seal(seq.next(), now, to_hub.clone(), &msg);
                            p.send(hub_id, bytes);
                            replica = Some(doc);
                            None
                        }
                        // What the group wrote after her invitation comes with the
                        // formation (each message carries only what she lacks).
                        Message::GroupFormed { changes, .. } => {
                            let doc = replica.as_mut()?;
                            doc.apply(decode_batch(&changes, &Limits::default()).unwrap());
                            None
                        }
                        Message::TaskStart { changes, .. } if !attacked => {
                            let doc = replica.as_mut()?;
                            doc.apply(decode_batch(&changes, &Limits::default()).unwrap());
                            // 1. A change writing b's entry.
                            let forged = forge_entry_of(doc, &m_key, b_id);
                            let sync = SyncMessage {
                                heads: doc.heads(),
                                changes: vec![forged],
                            };
                            let msg = Message::CrdtChanges {
                                task_id: task,
                                sync: sync.encode(),
                            };
                            let bytes = p.seal(seq.next(), now, to_hub.clone(), &msg);
                            p.send(hub_id, bytes);
                            // 2. Two different progress reports with one sequence number.
                            let mut fork = GroupDoc::load(
                                m_key.signing_key().clone(),
                                &doc.save(),
                                Limits::default(),
                            )
                            .unwrap();
                            let one = doc.report_progress(0.25, Some(b"step-1"), now).unwrap();
                            let other = fork.report_progress(0.75, Some(b"step-3"), now).unwrap();
                            for change in [one, other] {
                                let msg = Message::TaskUpdate {
                                    task_id: task,
                                    progress: 0.5,
                                    changes: encode_batch(&[change]),
                                };
                                let bytes = p.seal(seq.next(), now, to_hub.clone(), &msg);
                                p.send(hub_id, bytes);
                            }
                            attacked = true;
                            Some(())
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        })
        .await;
    // Then she falls silent (but stays connected): the hub fails her and her
    // part goes to the standby.
    let background = mallory.run_in_background();

    net.log.wait_all_finished(90, &[task]).await;
    net.log
        .assert_finished_once(task, &Outcome::Completed)
        .await;
    let reasons: Vec<String> = net
        .log
        .agent_events(|i, e| i == hub && matches!(e, Event::Misbehaviour { .. }))
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Misbehaviour { peer, reason } if peer == m_key.id() => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("another agent's slot"), "{reasons:?}");
    assert!(reasons[1].contains("equivocat"), "{reasons:?}");
    assert_eq!(violations(&net, hub), 2.0);
    let (_, finish) = net
        .log
        .wait_event(1, "the finish", |i, e| {
            i == hub && matches!(e, Event::TaskFinished { task_id, .. } if *task_id == task)
        })
        .await;
    let Event::TaskFinished { results, .. } = finish else {
        unreachable!()
    };
    let mut parts: Vec<(String, AgentId)> = results
        .iter()
        .map(|r| (r.skill.clone(), r.member))
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        vec![
            ("a".to_string(), net.id(standby_a)),
            ("b".to_string(), b_id)
        ]
    );
    // b's entry is b's own: the forged write changed nothing.
    let group = net
        .node(hub)
        .handle
        .groups()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.task_id == task)
        .unwrap();
    let b_status = group.members.iter().find(|(_, m, _)| *m == b_id).unwrap().2;
    assert_ne!(b_status, MemberStatus::Left);
    assert_ne!(b_status, MemberStatus::Failed);
    background.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claiming_a_skill_it_lacks_loses_reputation_and_is_no_longer_chosen_first() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    let mut hub_agent = agent_config(&[]);
    hub_agent.offer_window_ms = 5_000;
    let hub = net
        .start(node_config(key(32, 0), hub_agent, &[]), work(300, 0))
        .await;
    let boot = [net.node(hub).addr()];
    // The liar claims Expert and fails every part. It barely learns from its own
    // failures (a tiny EWMA weight), so its offers keep claiming a good record: only
    // the reputation the hub observes can tell.
    let mut liar_agent = agent_config(&[("audit", Level::Expert)]);
    liar_agent.ewma_alpha = 0.001;
    let liar = net
        .start(
            node_config(key(32, 1), liar_agent, &boot),
            starling::node::SyntheticHandler::new(Duration::from_millis(200), 1.0, 1),
        )
        .await;
    let honest = net
        .start(
            node_config(key(32, 2), agent_config(&[("audit", Level::Novice)]), &boot),
            work(200, 2),
        )
        .await;
    net.wait_connected(1, 30).await;
    let (liar_id, honest_id) = (net.id(liar), net.id(honest));

    let mut first_choice = Vec::new();
    for round in 0..6 {
        let (task, done) = net
            .node(hub)
            .handle
            .announce(spec(&["audit"]))
            .await
            .unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(finished.outcome, Outcome::Completed, "round {round}");
        assert_eq!(finished.results[0].member, honest_id, "round {round}");
        net.log
            .assert_finished_once(task, &Outcome::Completed)
            .await;
        let formed = net.log.agent_events(|i, e| {
            i == hub && matches!(e, Event::GroupFormed { task_id, .. } if *task_id == task)
        });
        let Event::GroupFormed { members, .. } = &formed[0].1 else {
            unreachable!()
        };
        first_choice.push(members[0].1);
    }
    // The liar's claim (Expert, a good record) wins whenever its offer is in — the
    // first announcement may reach it too late, right after it connects. Each failure
    // costs it the hub's trust; after a couple it is not chosen first again.
    let liar_rounds: Vec<usize> = (0..first_choice.len())
        .filter(|r| first_choice[*r] == liar_id)
        .collect();
    assert!(
        !liar_rounds.is_empty(),
        "the liar never won: {first_choice:?}"
    );
    assert!(liar_rounds.len() <= 3, "{first_choice:?}");
    let last = *liar_rounds.last().unwrap();
    assert!(
        last + 2 < first_choice.len() && first_choice[last + 1..].iter().all(|m| *m == honest_id),
        "the liar was still chosen first: {first_choice:?}"
    );
    let failed = net.log.agent_events(|i, e| {
        i == hub && matches!(e, Event::MemberFailed { member, .. } if *member == liar_id)
    });
    assert_eq!(
        failed.len(),
        liar_rounds.len(),
        "one failure per task the liar was chosen for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flooding_announcements_is_scored_down_and_honest_ones_still_arrive() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    // A small broadcast budget, so the flood is recognised after a few envelopes.
    let tight = |mut c: starling::node::NodeConfig| {
        c.broadcast_burst = 10;
        c.broadcast_rate = 2.0;
        c
    };
    let victim = net
        .start(
            tight(node_config(
                key(33, 0),
                agent_config(&[("x", Level::Expert)]),
                &[],
            )),
            work(300, 0),
        )
        .await;
    let boot = [net.node(victim).addr()];
    let hub = net
        .start(
            tight(node_config(key(33, 1), agent_config(&[]), &boot)),
            work(300, 1),
        )
        .await;
    net.wait_connected(1, 30).await;
    let victim_id = net.id(victim);
    let victim_peer = starling::node::swarm::peer_id_of(&victim_id).unwrap();

    let mut spammer = RawPeer::new(key(33, 9), &["x"]);
    spammer.dial(net.node(victim).addr());
    let topic = libp2p::gossipsub::IdentTopic::new(skill_topic("x")).hash();
    spammer
        .drive(30, "the victim in the spammer's mesh", |p, _| {
            p.swarm
                .behaviour()
                .gossipsub
                .mesh_peers(&topic)
                .any(|q| *q == victim_peer)
                .then_some(())
        })
        .await;
    // 300 valid announcements, one every 50 ms: 20 a second, ten times the budget.
    // Paced, so none is lost to a full send queue: whatever the victim does not see,
    // gossipsub dropped on purpose.
    const SPAM: u64 = 300;
    let mut seq = Seq::new();
    let mut sent = 0u64;
    let mut next_at = tokio::time::Instant::now();
    let spammer_id = spammer.id();
    spammer
        .drive(120, "the flood to be sent", |p, _| {
            if tokio::time::Instant::now() < next_at {
                return None;
            }
            next_at += Duration::from_millis(50);
            let now = now_ms();
            let announce = TaskAnnounce {
                task_id: TaskId {
                    initiator: spammer_id,
                    seq: sent,
                },
                description: "spam".into(),
                required: vec![starling::protocol::SkillRequirement {
                    name: "x".into(),
                    min_level: Level::Novice,
                    count: 1,
                }],
                priority: Priority::Normal,
                created_at_ms: now,
                deadline_ms: now + 60_000,
                max_group_size: 1,
                depends_on: Vec::new(),
                payload: Vec::new(),
                round: 0,
                consensus: false,
            };
            let bytes = p.seal(
                seq.next(),
                now,
                Audience::Topic(skill_topic("x")),
                &Message::TaskAnnounce(announce),
            );
            // Once graylisted, publishing may fail for want of peers that accept it.
            let topic = libp2p::gossipsub::IdentTopic::new(skill_topic("x"));
            let _ = p.swarm.behaviour_mut().gossipsub.publish(topic, bytes);
            sent += 1;
            (sent == SPAM).then_some(())
        })
        .await;
    let background = spammer.run_in_background();
    // The budget (10 at once, 2 a second: about 40 over the 15 s) was exceeded and
    // the excess rejected. Without gossipsub's scoring every later envelope would
    // reach the node and be rejected too — some 250. Scored down, the spammer is
    // graylisted after its first rejections and most of the flood never gets in.
    let flood = refused(&net.node(victim).handle, "flood");
    assert!(flood >= 1.0, "the flood was never refused");
    assert!(
        flood <= 100.0,
        "{flood} flood envelopes reached the node: the spammer was not scored down"
    );
    // An honest announcement still reaches the victim, which does the task.
    let (task, done) = net.node(hub).handle.announce(spec(&["x"])).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(90), done)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.outcome, Outcome::Completed);
    assert_eq!(finished.results[0].member, victim_id);
    net.log
        .assert_finished_once(task, &Outcome::Completed)
        .await;
    background.abort();
}
