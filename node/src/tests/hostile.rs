//! Bad input on the direct path: each kind refused and counted, the sender scored
//! down and banned, the node unharmed.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use starling_protocol::{Audience, Event, Keypair, Message, SignedEnvelope};

use super::support::*;
use crate::NodeEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_direct_input_is_refused_counted_and_the_sender_banned() {
    let node = start(100, &[], &[]).await;
    let mut events = node.events();
    let raw_key = Keypair::from_secret_bytes([101; 32]);
    let mut cfg = config(101, &[], &[]);
    cfg.keypair = raw_key.clone();
    let mut raw = crate::swarm::build(&cfg, &mut Default::default()).unwrap();
    raw.dial(node.listen_addrs()[0].clone()).unwrap();
    let target = crate::swarm::peer_id_of(&node.id()).unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let alert = |text: &str| Message::Alert {
        task_id: None,
        text: text.into(),
    };
    let to_node = Audience::Agent(node.id());

    let honest = SignedEnvelope::seal(&raw_key, 1, now(), to_node.clone(), &alert("hi"))
        .unwrap()
        .into_bytes();
    let mut v9 = SignedEnvelope::seal(&raw_key, 2, now(), to_node.clone(), &alert("v9"))
        .unwrap()
        .into_bytes();
    v9[0] = 9;
    let elsewhere = SignedEnvelope::seal(
        &raw_key,
        3,
        now(),
        Audience::Agent(raw_key.id()),
        &alert("x"),
    )
    .unwrap()
    .into_bytes();
    let someone_else = Keypair::from_secret_bytes([102; 32]);
    let relayed = SignedEnvelope::seal(&someone_else, 4, now(), to_node, &alert("relayed"))
        .unwrap()
        .into_bytes();
    let mut batch = vec![honest.clone(), honest, v9, elsewhere, relayed];
    // 3 refusals above + 8 garbage frames = 11 points: one past the ban threshold, so
    // the ban holds although penalties decay a little while the frames arrive. The
    // replay costs nothing.
    batch.extend((0..8).map(|i| vec![1, 2, 3, i]));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut sent = false;
    let mut closed = false;
    while !closed && tokio::time::Instant::now() < deadline {
        tokio::select! {
            e = raw.select_next_some() => match e {
                SwarmEvent::ConnectionEstablished { .. } if !sent => {
                    for bytes in batch.drain(..) {
                        raw.behaviour_mut().direct.send_request(&target, crate::codec::DirectFrame::Envelope(bytes));
                    }
                    sent = true;
                }
                SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == target && sent => closed = true,
                _ => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    assert!(closed, "the misbehaving peer was not disconnected");
    let seen = collect(&mut events, 2, Duration::from_millis(200), |_| false).await;
    let alerts = seen
        .iter()
        .filter(|e| matches!(e, NodeEvent::Agent(Event::AlertReceived { .. })))
        .count();
    assert_eq!(alerts, 1, "the honest message is taken exactly once");
    let text = node.metrics_text();
    for (reason, n) in [
        ("replay", 1),
        ("unknown_version", 1),
        ("wrong_audience", 1),
        ("wrong_sender", 1),
        ("undecodable", 8),
    ] {
        let line = format!(r#"starling_refused_total{{reason="{reason}"}} {n}"#);
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(text.contains("starling_peers_banned_total 1"), "{text}");
    // The node still works: it answers queries.
    assert!(node.peers().await.is_ok());
}
