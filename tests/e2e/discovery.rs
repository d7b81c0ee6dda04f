//! Joining: fifty agents through one bootstrap node find every skill's providers in
//! the DHT; the bootstrap node leaves, and newcomers join through any other agent.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use starling::protocol::{AgentId, Level, Outcome};

use crate::support::*;

const SKILLS: usize = 5;

fn skill(i: usize) -> String {
    format!("d{}", i % SKILLS)
}

/// Discovery rounds run every few seconds here: thin skill topics are looked up
/// sooner. (Records published before a node knew much of the network go out again
/// as its routing table doubles.)
fn discovering(mut c: starling::node::NodeConfig) -> starling::node::NodeConfig {
    c.discovery_interval = Duration::from_secs(5);
    c
}

/// Waits until every node in `askers` finds, for every skill, at least the
/// providers in `want`. Lookups of all askers run at once; a lookup that comes back
/// short is asked again (the DHT fills as records spread).
async fn wait_everyone_finds(
    net: &Net,
    askers: &[usize],
    want: &BTreeMap<String, BTreeSet<AgentId>>,
    secs: u64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut missing: Vec<(usize, String)> = askers
        .iter()
        .flat_map(|i| want.keys().map(move |s| (*i, s.clone())))
        .collect();
    let mut last: Vec<((usize, String), BTreeSet<AgentId>)> = Vec::new();
    while !missing.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} lookups still short: {:?}",
            missing.len(),
            last.iter()
                .map(|((i, s), found)| format!(
                    "node {i} for {s}: found {} of {}, missing nodes {:?}",
                    found.len(),
                    want[s].len(),
                    want[s]
                        .difference(found)
                        .map(|id| net.index_of(*id))
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
        let lookups = missing.iter().map(|(i, s)| {
            let handle = net.node(*i).handle.clone();
            let s = s.clone();
            async move {
                let found: BTreeSet<AgentId> = handle
                    .find_providers(&s)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                found
            }
        });
        let results = futures::future::join_all(lookups).await;
        last = missing
            .into_iter()
            .zip(results)
            .filter(|((_, s), found)| !want[s].is_subset(found))
            .collect();
        missing = last.iter().map(|(m, _)| m.clone()).collect();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_find_every_skill_and_newcomers_join_after_the_bootstrap_node_leaves() {
    const AGENTS: usize = 50;
    let _turn = exclusive().await;
    let mut net = Net::default();
    let boot = net
        .start(
            discovering(node_config(
                key(50, 0),
                agent_config(&[(&skill(0), Level::Expert)]),
                &[],
            )),
            work(300, 0),
        )
        .await;
    let via = [net.node(boot).addr()];
    for i in 1..AGENTS {
        let cfg = node_config(
            key(50, i),
            agent_config(&[(&skill(i), Level::Advanced)]),
            &via,
        );
        net.start(discovering(cfg), work(300, i as u64)).await;
    }
    let mut want: BTreeMap<String, BTreeSet<AgentId>> = BTreeMap::new();
    for i in 0..AGENTS {
        want.entry(skill(i)).or_default().insert(net.id(i));
    }
    let everyone: Vec<usize> = (0..AGENTS).collect();
    wait_everyone_finds(&net, &everyone, &want, 180).await;

    // The bootstrap node leaves.
    net.node(boot).handle.shutdown().await.unwrap();
    for holders in want.values_mut() {
        holders.remove(&net.id(boot));
    }
    // Newcomers join through other agents, one each.
    let mut newcomers = Vec::new();
    for (n, through) in [7usize, 23, 41].into_iter().enumerate() {
        let s = skill(n + 1);
        let cfg = node_config(
            key(50, AGENTS + n),
            agent_config(&[(&s, Level::Expert)]),
            &[net.node(through).addr()],
        );
        let i = net
            .start(discovering(cfg), work(300, (AGENTS + n) as u64))
            .await;
        want.entry(s).or_default().insert(net.id(i));
        newcomers.push(i);
    }
    // Newcomers find everyone; old agents find the newcomers.
    let mut askers = newcomers.clone();
    askers.extend([3, 30, 49]);
    wait_everyone_finds(&net, &askers, &want, 120).await;
    // And the mesh works: an old agent's task and a newcomer's task both complete.
    let (t1, d1) = net
        .node(30)
        .handle
        .announce(spec(&[&skill(1)]))
        .await
        .unwrap();
    let (t2, d2) = net
        .node(newcomers[1])
        .handle
        .announce(spec(&[&skill(2), &skill(3)]))
        .await
        .unwrap();
    let mut finished = Vec::new();
    for done in [d1, d2] {
        let f = tokio::time::timeout(Duration::from_secs(90), done)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.outcome, Outcome::Completed);
        finished.push(f);
    }
    net.log.assert_finished_once(t1, &Outcome::Completed).await;
    net.log.assert_finished_once(t2, &Outcome::Completed).await;
}
