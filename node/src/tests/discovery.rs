//! Ten nodes joined through one bootstrap node find each other's skills and cards in
//! the DHT.

use std::{collections::BTreeSet, time::Duration};

use starling_protocol::{AgentId, Level};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_discover_each_others_skills_from_one_bootstrap_node() {
    let skill = |i: usize| format!("s{}", i % 5);
    let first = start(40, &[(&skill(0), Level::Advanced)], &[]).await;
    let boot = vec![first.listen_addrs()[0].clone()];
    let mut nodes = vec![first];
    for i in 1..10 {
        nodes.push(start(40 + i as u8, &[(&skill(i), Level::Advanced)], &boot).await);
    }
    let holders = |s: &str| -> BTreeSet<AgentId> {
        (0..10)
            .filter(|i| skill(*i) == s)
            .map(|i| nodes[i].id())
            .collect()
    };
    // Every node finds every provider of every skill (retrying while the DHT fills).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (i, node) in nodes.iter().enumerate() {
        for s in 0..5 {
            let s = format!("s{s}");
            let want = holders(&s);
            loop {
                let found: BTreeSet<AgentId> =
                    node.find_providers(&s).await.unwrap().into_iter().collect();
                if want.is_subset(&found) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {i} found {found:?} for {s}, wanted {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    // Cards are in the DHT, signed, and describe their agents.
    let card = loop {
        if let Some(card) = nodes[9].card(nodes[3].id()).await.unwrap() {
            break card;
        }
        assert!(tokio::time::Instant::now() < deadline, "no card for node 3");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(card.id, nodes[3].id());
    assert_eq!(
        card.skills
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        vec!["s3"]
    );
    assert!(card.addrs.iter().any(|a| a.starts_with("/memory/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_dht_records_are_refused_before_storage() {
    use futures::StreamExt;
    use libp2p::kad;
    use starling_protocol::{AgentCard, Keypair, SignedCard, Skill};

    let a = start(60, &[("real", Level::Expert)], &[]).await;
    let mut a_events = a.events();
    // A raw peer signs its own card but stores it under a's key, and announces itself
    // as provider of a key outside the skill namespace.
    let raw_key = Keypair::from_secret_bytes([61; 32]);
    let mut cfg = config(61, &[], &[]);
    cfg.keypair = raw_key.clone();
    let mut raw = crate::swarm::build(&cfg, &mut Default::default()).unwrap();
    let a_peer = crate::swarm::peer_id_of(&a.id()).unwrap();
    raw.behaviour_mut()
        .kad
        .add_address(&a_peer, a.listen_addrs()[0].clone());
    let card = AgentCard {
        id: raw_key.id(),
        skills: vec![Skill::new("real", Level::Expert)],
        addrs: vec![],
        load: 0,
        max_slots: 9,
        version: 1,
    };
    let forged = SignedCard::sign(&raw_key, &card).unwrap();
    let key = kad::RecordKey::new(&SignedCard::dht_key(&a.id()));
    raw.behaviour_mut()
        .kad
        .put_record(
            kad::Record::new(key, forged.as_bytes().to_vec()),
            kad::Quorum::One,
        )
        .unwrap();
    raw.behaviour_mut()
        .kad
        .start_providing(kad::RecordKey::new(&"/other/thing"))
        .unwrap();
    let driver = tokio::spawn(async move {
        loop {
            raw.select_next_some().await;
        }
    });
    let refusals = collect(&mut a_events, 20, Duration::from_millis(500), |e| {
        matches!(e, crate::NodeEvent::Refused { reason, .. } if reason.contains("provider record"))
    })
    .await;
    driver.abort();
    let reasons: Vec<String> = refusals
        .iter()
        .filter_map(|e| match e {
            crate::NodeEvent::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("invalid card")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("provider record outside")),
        "{reasons:?}"
    );
    let text = a.metrics_text();
    assert!(
        text.contains(r#"starling_refused_total{reason="invalid_record"} 2"#),
        "{text}"
    );
    // a's own card, looked up through its DHT, is still its own.
    if let Some(card) = a.card(a.id()).await.unwrap() {
        assert_eq!(card.id, a.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_gossip_cannot_reach_are_found_in_the_dht_and_contacted_directly() {
    use futures::StreamExt;
    use libp2p::{kad, request_response, swarm::SwarmEvent};
    use starling_protocol::{
        Audience, Keypair, Message, Priority, SignedEnvelope, SkillRequirement, TaskSpec,
    };

    use crate::behaviour::StarlingEvent;

    let hub = start(90, &[], &[]).await;
    // A provider of "niche" that is not on the gossip topic: only the DHT knows it.
    let raw_key = Keypair::from_secret_bytes([91; 32]);
    let mut cfg = config(91, &[], &[]);
    cfg.keypair = raw_key.clone();
    let mut raw = crate::swarm::build(&cfg, &mut Default::default()).unwrap();
    raw.dial(hub.listen_addrs()[0].clone()).unwrap();
    let hub_peer = crate::swarm::peer_id_of(&hub.id()).unwrap();
    raw.behaviour_mut()
        .kad
        .add_address(&hub_peer, hub.listen_addrs()[0].clone());
    let mut provided = false;
    let spec = TaskSpec {
        description: "rare work".into(),
        required: vec![SkillRequirement {
            name: "niche".into(),
            min_level: Level::Novice,
            count: 1,
        }],
        priority: Priority::Normal,
        deadline_ms: Some(30_000),
        max_group_size: None,
        depends_on: Vec::new(),
        payload: Vec::new(),
        consensus: false,
    };
    let mut task = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let received = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub never contacted the provider directly"
        );
        let event = tokio::select! {
            e = raw.select_next_some() => e,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if provided && task.is_none() {
                    task = Some(hub.announce(spec.clone()).await.unwrap().0);
                }
                continue;
            }
        };
        match event {
            SwarmEvent::ConnectionEstablished { .. } if !provided => {
                raw.behaviour_mut()
                    .kad
                    .start_providing(kad::RecordKey::new(&"/starling/skill/niche"))
                    .unwrap();
                provided = true;
            }
            SwarmEvent::Behaviour(StarlingEvent::Direct(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let _ = raw.behaviour_mut().direct.send_response(channel, 1);
                let crate::codec::DirectFrame::Envelope(request) = request else {
                    panic!("the hub sent a refused frame");
                };
                let env = SignedEnvelope::open(&request).unwrap();
                if let Message::TaskAnnounce(a) = env.message {
                    assert_eq!(env.sender, hub.id());
                    assert_eq!(env.audience, Audience::Agent(raw_key.id()));
                    break a;
                }
            }
            _ => {}
        }
    };
    assert_eq!(Some(received.task_id), task);
    assert!(received.round >= 1, "sent after gossip found nobody");
}

/// A Kademlia query figure from a node's metrics: `count` (queries finished) or
/// `sum` (requests they sent) for one query type.
fn kad_queries(metrics: &str, figure: &str, kind: &str) -> u64 {
    let prefix = format!("libp2p_kad_query_result_num_requests_{figure}{{type=\"{kind}\"}} ");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_is_one_walk_and_a_few_publications_not_repeated_bootstraps() {
    // Twenty nodes, each through one earlier node. A join is the card's walk and
    // a provider publication per skill; records go out again only when the
    // routing table has doubled, so at most 1 + log₂(19) = 5 times each here,
    // however the joins overlap. Kademlia's automatic bootstraps (a walk per
    // bucket, again while the table is short of twenty) are cut as soon as they
    // are seen: measured, about 80 requests per join when they run and under 7
    // when cut (a query sends its first few before the cut).
    const NODES: usize = 20;
    const PUBLICATIONS: u64 = 5;
    const BOOTSTRAP_REQUESTS_PER_JOIN: u64 = 30;
    let skills = ["a", "b", "c"];
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let boot: Vec<_> = nodes
            .get(i.saturating_sub(1) / 2)
            .map(|h: &crate::Handle| h.listen_addrs()[0].clone())
            .into_iter()
            .collect();
        nodes.push(start(150 + i as u8, &[(skills[i % 3], Level::Advanced)], &boot).await);
    }
    wait_meshed(&nodes.iter().collect::<Vec<_>>(), 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Let anything still due run (a bootstrap fires 500 ms after a table change).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut bootstrap_requests = 0;
    for (i, node) in nodes.iter().enumerate() {
        let metrics = node.metrics_text();
        let cards = kad_queries(&metrics, "count", "PutRecord");
        let providers = kad_queries(&metrics, "count", "StartProviding");
        assert!(
            (1..=PUBLICATIONS).contains(&cards) && providers <= PUBLICATIONS,
            "node {i} published its card {cards} times and its skill {providers} times \
             (at most {PUBLICATIONS})"
        );
        bootstrap_requests += kad_queries(&metrics, "sum", "Bootstrap");
    }
    assert!(
        bootstrap_requests <= BOOTSTRAP_REQUESTS_PER_JOIN * NODES as u64,
        "bootstrap queries sent {bootstrap_requests} requests for {NODES} joins (bound {})",
        BOOTSTRAP_REQUESTS_PER_JOIN * NODES as u64
    );
    // Every node still finds every holder of a skill: the walk was enough.
    let want: BTreeSet<AgentId> = (0..NODES)
        .filter(|i| i % 3 == 1)
        .map(|i| nodes[i].id())
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        loop {
            let found: BTreeSet<AgentId> = node
                .find_providers("b")
                .await
                .unwrap()
                .into_iter()
                .collect();
            if want.is_subset(&found) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline + Duration::from_secs(30),
                "node {i} found {} of {} holders of b",
                found.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
