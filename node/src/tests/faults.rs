//! Link faults: a partition cuts two nodes apart and healing joins them again; a
//! delayed link delivers late but delivers.

use std::time::{Duration, Instant};

use starling_protocol::{Event, Message};

use super::support::*;
use crate::{LinkFaults, NodeEvent};

fn alert(text: &str) -> Message {
    Message::Alert {
        task_id: None,
        text: text.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_the_link_until_it_heals() {
    let faults = LinkFaults::new();
    let mut ca = config(31, &[], &[]);
    ca.link_faults = Some(faults.clone());
    let a = start_with(ca).await;
    let mut a_events = a.events();
    let mut cb = config(32, &[], &[a.listen_addrs()[0].clone()]);
    cb.link_faults = Some(faults.clone());
    let b = start_with(cb).await;
    let mut b_events = b.events();
    let connected = |id| move |e: &NodeEvent| matches!(e, NodeEvent::PeerConnected(p) if *p == id);
    wait_for(&mut a_events, 20, connected(b.id()))
        .await
        .expect("connected");

    faults.partition(&[vec![a.id()]]);
    wait_for(
        &mut a_events,
        20,
        |e| matches!(e, NodeEvent::PeerDisconnected(p) if *p == b.id()),
    )
    .await
    .expect("the partition closes the connection");
    wait_for(
        &mut b_events,
        20,
        |e| matches!(e, NodeEvent::PeerDisconnected(p) if *p == a.id()),
    )
    .await
    .expect("both sides see the cut");
    a.send(b.id(), alert("across the cut")).await.unwrap();
    // Dialing across the cut is denied, or the connection is closed at once.
    let _ = b.dial(a.listen_addrs()[0].clone()).await;
    let leaked = collect(&mut b_events, 2, Duration::ZERO, |e| {
        matches!(
            e,
            NodeEvent::Agent(Event::AlertReceived { .. }) | NodeEvent::PeerConnected(_)
        )
    })
    .await;
    assert!(
        !leaked.iter().any(|e| matches!(
            e,
            NodeEvent::Agent(Event::AlertReceived { .. }) | NodeEvent::PeerConnected(_)
        )),
        "nothing crosses a partition: {leaked:?}"
    );

    faults.heal();
    wait_for(&mut a_events, 20, connected(b.id()))
        .await
        .expect("healing reconnects");
    a.send(b.id(), alert("healed")).await.unwrap();
    let got = wait_for(
        &mut b_events,
        20,
        |e| matches!(e, NodeEvent::Agent(Event::AlertReceived { text, .. }) if text == "healed"),
    )
    .await;
    assert!(got.is_some(), "messages flow again after healing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_delivers_late() {
    let faults = LinkFaults::new();
    let mut ca = config(33, &[], &[]);
    ca.link_faults = Some(faults.clone());
    let a = start_with(ca).await;
    let mut a_events = a.events();
    let mut cb = config(34, &[], &[a.listen_addrs()[0].clone()]);
    cb.link_faults = Some(faults.clone());
    let b = start_with(cb).await;
    let mut b_events = b.events();
    wait_for(
        &mut a_events,
        20,
        |e| matches!(e, NodeEvent::PeerConnected(p) if *p == b.id()),
    )
    .await
    .expect("connected");
    faults.set_delay(Duration::from_millis(400), Duration::ZERO, 0.0);
    let sent = Instant::now();
    a.send(b.id(), alert("slow")).await.unwrap();
    wait_for(&mut b_events, 20, |e| {
        matches!(e, NodeEvent::Agent(Event::AlertReceived { .. }))
    })
    .await
    .expect("delivered");
    assert!(
        sent.elapsed() >= Duration::from_millis(400),
        "held for the link's latency"
    );
}
