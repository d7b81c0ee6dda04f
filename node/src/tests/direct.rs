//! Two nodes exchange a signed direct message.

use starling_protocol::{Event, Message};

use super::support::*;
use crate::NodeEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_a_signed_direct_message() {
    let a = start(1, &[], &[]).await;
    // Subscribe before b exists, so a's "connected" event cannot be missed.
    let mut a_events = a.events();
    let b = start(2, &[], &[a.listen_addrs()[0].clone()]).await;
    let mut events = b.events();
    // Wait until connected, then send.
    wait_for(
        &mut a_events,
        20,
        |e| matches!(e, NodeEvent::PeerConnected(p) if *p == b.id()),
    )
    .await
    .expect("connected");
    a.send(
        b.id(),
        Message::Alert {
            task_id: None,
            text: "hello from a".into(),
        },
    )
    .await
    .unwrap();
    let got = wait_for(&mut events, 20, |e| {
        matches!(e, NodeEvent::Agent(Event::AlertReceived { .. }))
    })
    .await;
    match got {
        Some(NodeEvent::Agent(Event::AlertReceived { from, text, .. })) => {
            assert_eq!(from, a.id(), "the sender is the signer");
            assert_eq!(text, "hello from a");
        }
        other => panic!("no alert: {other:?}"),
    }
    let peers = a.peers().await.unwrap();
    assert!(peers.iter().any(|p| p.id == b.id()));
}
