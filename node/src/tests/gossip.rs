//! A forged gossip message is rejected by the first node and never reaches a third.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{gossipsub, swarm::SwarmEvent};
use starling_protocol::{Audience, Event, Keypair, Level, Message, SignedEnvelope, skill_topic};

use super::support::*;
use crate::{NodeEvent, swarm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_gossip_message_is_rejected_and_not_forwarded() {
    // Topology: raw — b — c. Everything raw publishes reaches c only through b.
    let b = start(21, &[("x", Level::Expert)], &[]).await;
    let c = start(22, &[("x", Level::Expert)], &[b.listen_addrs()[0].clone()]).await;
    let mut b_events = b.events();
    let mut c_events = c.events();

    // A raw swarm with the same behaviour, driven by the test.
    let raw_key = Keypair::from_secret_bytes([23; 32]);
    let mut raw_cfg = config(23, &[("x", Level::Expert)], &[]);
    raw_cfg.keypair = raw_key.clone();
    let mut raw = swarm::build(&raw_cfg, &mut Default::default()).unwrap();
    let topic = gossipsub::IdentTopic::new(skill_topic("x"));
    raw.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    raw.dial(b.listen_addrs()[0].clone()).unwrap();

    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let aud = Audience::Topic(skill_topic("x"));
    // Forged: signed by raw's key, but the header claims another sender.
    let mut forged = SignedEnvelope::seal(
        &raw_key,
        1,
        now(),
        aud.clone(),
        &Message::Alert {
            task_id: None,
            text: "forged".into(),
        },
    )
    .unwrap()
    .into_bytes();
    let other = Keypair::from_secret_bytes([99; 32]).id();
    forged[1..33].copy_from_slice(&other.0);
    let honest = SignedEnvelope::seal(
        &raw_key,
        2,
        now(),
        aud,
        &Message::Alert {
            task_id: None,
            text: "honest".into(),
        },
    )
    .unwrap()
    .into_bytes();

    // Drive the raw swarm until the mesh has formed, then publish both.
    let mut published = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !published && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = raw.select_next_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if raw.behaviour().gossipsub.mesh_peers(&topic.hash()).count() > 0 {
                    raw.behaviour_mut().gossipsub.publish(topic.clone(), forged.clone()).unwrap();
                    raw.behaviour_mut().gossipsub.publish(topic.clone(), honest.clone()).unwrap();
                    published = true;
                }
            }
        }
    }
    assert!(published, "the raw swarm never joined b's mesh");
    let keep_raw = tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = raw.select_next_some().await {}
        }
    });

    let refused = wait_for(
        &mut b_events,
        20,
        |e| matches!(e, NodeEvent::Refused { reason, .. } if reason.contains("bad signature")),
    )
    .await;
    assert!(refused.is_some(), "b did not refuse the forged message");
    // c gets the honest message through b, and never the forged one: b did not
    // forward it, so c neither received nor had to refuse it.
    let seen = collect(
        &mut c_events,
        20,
        Duration::from_secs(1),
        |e| matches!(e, NodeEvent::Agent(Event::AlertReceived { text, .. }) if text == "honest"),
    )
    .await;
    assert!(
        seen.iter().any(
            |e| matches!(e, NodeEvent::Agent(Event::AlertReceived { text, .. }) if text == "honest")
        ),
        "the honest message did not reach c"
    );
    for e in &seen {
        assert!(
            !matches!(e, NodeEvent::Agent(Event::AlertReceived { text, .. }) if text == "forged")
        );
        assert!(!matches!(e, NodeEvent::Refused { .. }), "c saw {e:?}");
    }
    let text = b.metrics_text();
    assert!(
        text.contains(r#"starling_refused_total{reason="bad_signature"} 1"#),
        "{text}"
    );
    keep_raw.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_on_one_host_keep_their_mesh_over_loopback_tcp() {
    // Many peers behind 127.0.0.1 is past gossipsub's IP colocation threshold
    // (ten) — counting peers met and disconnected, whose scores gossipsub
    // retains: penalised, every peer scores below zero, is pruned at the next
    // heartbeat and never grafted again.
    let mut nodes: Vec<crate::Handle> = Vec::new();
    for i in 0..20u8 {
        let boot: Vec<_> = nodes
            .first()
            .map(|h| h.listen_addrs()[0].clone())
            .into_iter()
            .collect();
        let mut c = config(60 + i, &[("x", Level::Expert)], &boot);
        c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        // Connections nobody needs close soon, so peers are met and left.
        c.idle_connection_timeout = Duration::from_secs(1);
        c.lookup_connection_timeout = Duration::from_secs(1);
        nodes.push(start_with(c).await);
    }
    let want = config(0, &[], &[]).mesh_n_low();
    let meshed = |h: &crate::Handle| {
        let h = h.clone();
        async move {
            let t = h.status().await.unwrap().topics.remove(0);
            (t.mesh_peers, t.subscribers)
        }
    };
    // Every node meshes, and a few seconds later (idle connections closed, many
    // heartbeats, scores applied) still has its mesh.
    for round in 0..2 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for (i, node) in nodes.iter().enumerate() {
            loop {
                let (mesh, subscribers) = meshed(node).await;
                if mesh >= want {
                    break;
                }
                assert!(
                    round == 0 && tokio::time::Instant::now() < deadline,
                    "node {i} has {mesh} mesh peers of {subscribers} subscribers (want {want})"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
}
