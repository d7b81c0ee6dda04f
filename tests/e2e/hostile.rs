//! Forged, tampered, replayed, misattributed, oversized and garbage envelopes from
//! raw peers, on gossip and on the direct path: each refused and counted, never
//! forwarded, while an honest task runs through the same node.

use std::time::Duration;

use starling::{
    node::NodeEvent,
    protocol::{Audience, Event, Level, Message, Outcome, skill_topic},
};

use crate::{
    raw::{RawPeer, Step, now_ms, send_oversize_frame},
    support::*,
};

fn alert(text: &str) -> Message {
    Message::Alert {
        task_id: None,
        text: text.into(),
    }
}

/// Body bytes start after the header: version, sender, seq, sent_at, audience
/// kind and length, audience, body length.
fn body_offset(topic_or_agent_len: usize) -> usize {
    1 + 32 + 8 + 8 + 1 + 2 + topic_or_agent_len + 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_are_refused_counted_and_not_forwarded() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    // victim — neighbour: everything a raw peer sends the victim reaches the
    // neighbour only if the victim forwards it. A hub announces an honest task.
    let victim = net
        .start(
            node_config(key(20, 0), agent_config(&[("x", Level::Expert)]), &[]),
            work(300, 0),
        )
        .await;
    let boot = [net.node(victim).addr()];
    let neighbour = net
        .start(
            node_config(key(20, 1), agent_config(&[("x", Level::Novice)]), &boot),
            work(300, 1),
        )
        .await;
    let hub = net
        .start(
            node_config(key(20, 2), agent_config(&[]), &boot),
            work(300, 2),
        )
        .await;
    net.wait_connected(1, 30).await;
    let victim_id = net.id(victim);
    let topic = Audience::Topic(skill_topic("x"));
    let to_victim = Audience::Agent(victim_id);

    // --- gossip -----------------------------------------------------------------
    // Each rejected envelope comes from its own raw peer: gossipsub graylists a peer
    // after its first rejected message and would drop the rest before the node saw
    // them.
    let now = now_ms();
    let mut background = Vec::new();
    let forger = |n: usize| RawPeer::new(key(20, 10 + n), &["x"]);
    let mut bad = Vec::new();
    let p = forger(0);
    let mut forged_sig = p.seal(2, now, topic.clone(), &alert("forged"));
    let last = forged_sig.len() - 1;
    forged_sig[last] ^= 1;
    bad.push((p, forged_sig));
    let p = forger(1);
    let mut tampered = p.seal(3, now, topic.clone(), &alert("tampered"));
    tampered[body_offset(skill_topic("x").len()) + 2] ^= 0x20;
    bad.push((p, tampered));
    // Signed by one key, claiming to come from the neighbour.
    let p = forger(2);
    let mut claimed = p.seal(4, now, topic.clone(), &alert("claimed"));
    claimed[1..33].copy_from_slice(&net.id(neighbour).0);
    bad.push((p, claimed));
    // A text over its 1 KiB cap: refused while decoding, before any allocation.
    let p = forger(3);
    let oversize_field = p.seal(5, now, topic.clone(), &alert(&"o".repeat(4096)));
    bad.push((p, oversize_field));
    bad.push((forger(4), vec![1u8; 40]));
    for (mut p, bytes) in bad {
        p.dial(net.node(victim).addr());
        p.drive(30, "the victim's subscription to reach a forger", |p, _| {
            p.knows_subscriber(victim_id, "x").then_some(())
        })
        .await;
        p.publish("x", bytes);
        background.push(p.run_in_background());
    }
    // An honest peer's alert, then (from the same peer: ignored, not rejected, so it
    // keeps its score) a replay of an envelope captured more than 60 s ago — after
    // gossipsub's duplicate cache forgot it. As the receiver sees it, that is an
    // envelope signed more than 60 s ago. And one dated a minute ahead.
    let mut gossiper = RawPeer::new(key(20, 20), &["x"]);
    gossiper.dial(net.node(victim).addr());
    gossiper
        .drive(
            30,
            "the victim's subscription to reach the raw peer",
            |p, _| p.knows_subscriber(victim_id, "x").then_some(()),
        )
        .await;
    let honest = gossiper.seal(1, now, topic.clone(), &alert("honest"));
    let captured_earlier = gossiper.seal(6, now - 61_000, topic.clone(), &alert("replayed late"));
    let from_the_future = gossiper.seal(7, now + 61_000, topic.clone(), &alert("early"));
    for bytes in [honest.clone(), captured_earlier, from_the_future] {
        gossiper.publish("x", bytes);
    }
    net.log
        .wait_event(30, "the honest alert at the victim", |i, e| {
            i == victim && matches!(e, Event::AlertReceived { text, .. } if text == "honest")
        })
        .await;
    // Replayed inside the window by another peer (not subscribed, so it has not
    // seen it): gossipsub drops the duplicate.
    let mut replayer = RawPeer::new(key(20, 21), &[]);
    replayer.dial(net.node(victim).addr());
    replayer
        .drive(
            30,
            "the victim's subscription to reach the replayer",
            |p, _| p.knows_subscriber(victim_id, "x").then_some(()),
        )
        .await;
    replayer.publish("x", honest);
    background.push(replayer.run_in_background());
    background.push(gossiper.run_in_background());

    // --- direct -----------------------------------------------------------------
    let mut sender = RawPeer::new(key(20, 22), &[]);
    sender.dial(net.node(victim).addr());
    sender
        .drive(30, "a connection to the victim", |_, step| match step {
            Step::Swarm(e) => {
                matches!(*e, libp2p::swarm::SwarmEvent::ConnectionEstablished { .. }).then_some(())
            }
            _ => None,
        })
        .await;
    let now = now_ms();
    let direct_honest = sender.seal(1, now, to_victim.clone(), &alert("direct"));
    let mut direct_forged = sender.seal(2, now, to_victim.clone(), &alert("x"));
    let last = direct_forged.len() - 1;
    direct_forged[last] ^= 1;
    let mut direct_tampered = sender.seal(3, now, to_victim.clone(), &alert("tampered"));
    direct_tampered[body_offset(32) + 2] ^= 0x20;
    // Validly signed by someone else and delivered by the sender.
    let other = key(20, 23);
    let relayed =
        starling::protocol::SignedEnvelope::seal(&other, 1, now, to_victim.clone(), &alert("r"))
            .unwrap()
            .into_bytes();
    let direct_stale = sender.seal(4, now - 61_000, to_victim.clone(), &alert("late"));
    for bytes in [
        direct_honest.clone(),
        direct_honest,
        direct_forged,
        direct_tampered,
        relayed,
        direct_stale,
        vec![1u8; 16],
    ] {
        sender.send(victim_id, bytes);
    }
    background.push(sender.run_in_background());
    // A frame claiming more than the limit, from a fourth peer.
    send_oversize_frame(&key(20, 24), net.node(victim).addr(), victim_id).await;

    // --- the honest task runs through the same victim -------------------------------
    let (task, done) = net.node(hub).handle.announce(spec(&["x"])).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.outcome, Outcome::Completed);
    net.log
        .assert_finished_once(task, &Outcome::Completed)
        .await;

    let expected = [
        ("bad_signature", 5.0), // forged and tampered (both paths), claimed id
        ("undecodable", 3.0),   // oversize field, garbage (both paths)
        ("stale", 3.0),         // replayed late, from the future, direct late
        ("replay", 1.0),        // the direct envelope sent twice
        ("wrong_sender", 1.0),  // another agent's envelope delivered by the sender
        ("bad_frame", 1.0),     // the oversize frame
    ];
    let handle = &net.node(victim).handle;
    net.log
        .wait_quietly(30, |_| {
            expected
                .iter()
                .all(|(r, n)| refused(handle, r) >= *n)
                .then_some(())
        })
        .await;
    let text = handle.metrics_text();
    for (reason, n) in expected {
        assert_eq!(refused(handle, reason), n, "{reason} in\n{text}");
    }
    // Delivered: the honest gossip alert once (its replay dropped), the direct one
    // once; nothing forged, tampered or late.
    let alerts: Vec<String> = net
        .log
        .agent_events(|i, e| i == victim && matches!(e, Event::AlertReceived { .. }))
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::AlertReceived { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(alerts, vec!["honest".to_string(), "direct".to_string()]);
    // The neighbour got the honest alert through the victim and nothing else: the
    // victim forwarded no refused envelope.
    let at_neighbour: Vec<NodeEvent> = net
        .log
        .snapshot()
        .into_iter()
        .filter(|(i, _)| *i == neighbour)
        .map(|(_, e)| e)
        .collect();
    assert!(
        at_neighbour.iter().any(
            |e| matches!(e, NodeEvent::Agent(Event::AlertReceived { text, .. }) if text == "honest")
        ),
        "the honest alert was forwarded"
    );
    for e in &at_neighbour {
        assert!(
            !matches!(e, NodeEvent::Refused { .. }),
            "the neighbour had to refuse {e:?}: the victim forwarded it"
        );
        if let NodeEvent::Agent(Event::AlertReceived { text, .. }) = e {
            assert_eq!(text, "honest");
        }
    }
    for t in background {
        t.abort();
    }
}

/// A peer that takes direct messages and never answers them: the node queues at
/// most 32 unanswered ones for it (dropping and counting the rest), and closes the
/// connection once one goes unanswered for the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_gets_a_bounded_queue_and_is_disconnected() {
    use futures::StreamExt;
    use libp2p::{request_response, swarm::SwarmEvent};
    use starling::node::{behaviour::StarlingEvent, codec::DirectFrame};

    const SENT: usize = 48;
    let _turn = exclusive().await;
    let mut net = Net::default();
    let mut cfg = node_config(key(21, 0), agent_config(&[("x", Level::Expert)]), &[]);
    cfg.request_timeout = Duration::from_secs(3);
    cfg.send_retries = 0;
    let node = net.start(cfg, work(300, 0)).await;
    let mut silent = RawPeer::new(key(21, 1), &[]);
    silent.dial(net.node(node).addr());
    silent
        .drive(30, "the silent peer connects", |_, step| {
            matches!(step, Step::Swarm(e) if matches!(*e, SwarmEvent::ConnectionEstablished { .. }))
                .then_some(())
        })
        .await;
    for i in 0..SENT {
        net.node(node)
            .handle
            .send(silent.id(), alert(&format!("unanswered {i}")))
            .await
            .unwrap();
    }
    // Take every request, answer none, until the node closes the connection.
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, silent.swarm.select_next_some())
            .await
            .expect("the node never closed the connection of a peer that does not answer");
        match event {
            SwarmEvent::Behaviour(StarlingEvent::Direct(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request: DirectFrame::Envelope(_),
                        channel,
                        ..
                    },
                ..
            })) => held.push(channel),
            SwarmEvent::ConnectionClosed { .. } => break,
            _ => {}
        }
    }
    assert!(!held.is_empty(), "the node sent nothing");
    assert!(
        held.len() <= 32,
        "{} requests queued for a peer that answers none",
        held.len()
    );
    let dropped: f64 = net
        .node(node)
        .handle
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix("starling_direct_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a starling_direct_dropped_total sample");
    assert!(
        dropped >= (SENT - held.len()) as f64,
        "{dropped} dropped of {SENT}, {} received",
        held.len()
    );
}
