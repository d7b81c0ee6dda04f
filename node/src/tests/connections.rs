//! The connection economy: a mesh settles on few connections per node, and what a
//! group opened closes once the group is over.

use std::time::Duration;

use starling_protocol::Level;

use super::support::*;
use crate::Handle;

/// Connections a node of the 20-node mesh below may keep once it settles: mesh
/// peers of its one topic (at most mesh_n_high = 8, typically mesh_n = 4), two
/// spares and the routing peers (4).
const SETTLED_BOUND: usize = 12;

async fn peer_count(h: &Handle) -> usize {
    h.peers().await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_node_mesh_settles_with_every_node_within_the_bound() {
    let skills = ["a", "b", "c"];
    let mut nodes: Vec<Handle> = Vec::new();
    for i in 0..20usize {
        // Each joins through one earlier node, as on separate hosts.
        let boot: Vec<_> = nodes
            .get(i.saturating_sub(1) / 2)
            .map(|h| h.listen_addrs()[0].clone())
            .into_iter()
            .collect();
        let mut c = config(100 + i as u8, &[(skills[i % 3], Level::Advanced)], &boot);
        c.idle_connection_timeout = Duration::from_secs(2);
        c.lookup_connection_timeout = Duration::from_secs(1);
        nodes.push(start_with(c).await);
    }
    // Lookups and bootstrap dial widely at first; then the sweeps close the rest.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut peak = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut counts = Vec::new();
        for h in &nodes {
            counts.push(peer_count(h).await);
        }
        peak = peak.max(counts.iter().copied().max().unwrap_or(0));
        let worst = counts.iter().copied().max().unwrap_or(0);
        let lonely = counts.iter().filter(|c| **c == 0).count();
        assert_eq!(lonely, 0, "a node lost every connection: {counts:?}");
        if worst <= SETTLED_BOUND
            && tokio::time::Instant::now() > deadline - Duration::from_secs(75)
        {
            // Stays within the bound for a few more sweeps, too.
            tokio::time::sleep(Duration::from_secs(5)).await;
            for (i, h) in nodes.iter().enumerate() {
                let n = peer_count(h).await;
                assert!(n <= SETTLED_BOUND, "node {i} keeps {n} connections");
                assert!(n > 0, "node {i} has no connection left");
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mesh never settled within {SETTLED_BOUND} connections per node: {counts:?} (peak {peak})"
        );
    }
    // Gossip still works on the settled mesh: a task finds its agent.
    let spec = one_part("after settling", "b");
    let (_, done) = nodes[0].announce(spec).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the task finished")
        .unwrap();
    assert_eq!(finished.outcome, starling_protocol::Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_a_group_opened_closes_after_the_group_ends() {
    // a — b — c: a and c meet only through the task (c is found in the DHT).
    let b = start(130, &[], &[]).await;
    let boot = vec![b.listen_addrs()[0].clone()];
    let mut ca = config(131, &[], &boot);
    ca.idle_connection_timeout = Duration::from_secs(2);
    ca.lookup_connection_timeout = Duration::from_secs(1);
    // No routing peers and no cards mesh: a keeps nothing it does not need, so
    // the test sees the group's connection go.
    ca.routing_peers = 0;
    ca.cards_mesh_n = 0;
    let a = start_with(ca).await;
    let mut cc = config(132, &[("far", Level::Expert)], &boot);
    cc.idle_connection_timeout = Duration::from_secs(2);
    cc.lookup_connection_timeout = Duration::from_secs(1);
    cc.routing_peers = 0;
    cc.cards_mesh_n = 0;
    let c = start_with(cc).await;
    let connected =
        |h: Handle, to| async move { h.peers().await.unwrap().iter().any(|p| p.id == to) };
    // Wait until a and c are not connected (their bootstrap lookups may have met).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while connected(a.clone(), c.id()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a and c never parted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let spec = one_part("far away", "far");
    let (_, done) = a.announce(spec).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the task finished")
        .unwrap();
    assert_eq!(finished.outcome, starling_protocol::Outcome::Completed);
    assert_eq!(finished.results[0].member, c.id());
    // The group is over: its connection closes within the idle timeout and a sweep
    // (generously bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while connected(a.clone(), c.id()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group's connection stayed open after the group ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_peer_stays_connected_past_the_idle_timeout_and_others_do_not() {
    // Two pairs, each a node and the node it joined through, idle timeout 1 s,
    // no cards mesh (which would keep the only peer of each). In one pair both
    // sides keep a routing peer: the connection is pinned and outlives the
    // timeout many times. In the other neither does: it closes.
    let pair = |seed: u8, routing: usize| async move {
        let mut cb = config(seed, &[], &[]);
        cb.idle_connection_timeout = Duration::from_secs(1);
        cb.lookup_connection_timeout = Duration::from_secs(1);
        cb.routing_peers = routing;
        cb.cards_mesh_n = 0;
        let b = start_with(cb).await;
        let mut ca = config(seed + 1, &[], &[b.listen_addrs()[0].clone()]);
        ca.idle_connection_timeout = Duration::from_secs(1);
        ca.lookup_connection_timeout = Duration::from_secs(1);
        ca.routing_peers = routing;
        ca.cards_mesh_n = 0;
        let a = start_with(ca).await;
        (a, b)
    };
    let (kept_a, kept_b) = pair(140, 1).await;
    let (free_a, free_b) = pair(142, 0).await;
    let connected = |h: &Handle, to| {
        let h = h.clone();
        async move { h.peers().await.unwrap().iter().any(|p| p.id == to) }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !connected(&kept_a, kept_b.id()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pinned pair never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The unpinned pair parts once the join is over and a second has passed.
    while connected(&free_a, free_b.id()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an unpinned connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // By now the pinned pair has been idle far longer than its timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        connected(&kept_a, kept_b.id()).await,
        "a pinned routing peer's connection closed"
    );
}

#[test]
fn connection_lifetimes_and_the_cards_mesh_degree_are_checked_and_every_allowed_degree_builds() {
    let mut c = config(150, &[("x", Level::Expert)], &[]);
    assert!(c.validate().is_ok(), "the defaults are valid");
    c.lookup_connection_timeout = c.idle_connection_timeout + Duration::from_secs(1);
    assert!(c.validate().is_err(), "lookups may not outlive talk");
    c.lookup_connection_timeout = Duration::from_millis(100);
    assert!(c.validate().is_err(), "a lookup needs time to finish");
    c.lookup_connection_timeout = Duration::from_secs(1);
    c.cards_mesh_n = 33;
    assert!(c.validate().is_err(), "the cards mesh degree is bounded");
    // gossipsub refuses inconsistent mesh bounds: every allowed degree must make
    // a consistent set (low, high and outbound minimum are derived from it).
    let key = crate::swarm::libp2p_keypair(&c).unwrap();
    for n in [0, 1, 2, 3, 5, 32] {
        c.cards_mesh_n = n;
        assert!(c.validate().is_ok());
        assert!(
            crate::behaviour::StarlingBehaviour::new(&key, &c).is_ok(),
            "cards_mesh_n = {n} builds"
        );
    }
}
