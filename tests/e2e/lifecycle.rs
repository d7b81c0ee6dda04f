//! Groups form, work, finish and dissolve; capacity comes back and is used again.

use std::collections::{BTreeMap, BTreeSet};

use starling::{
    crdt::TaskStatus,
    protocol::{AgentConfig, AgentId, Event, Level, Outcome, TaskId},
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_skill_task_forms_completes_and_dissolves() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    // The offer window closes as soon as both offers per skill are in; its bound
    // only keeps a loaded machine from closing it before the better offer arrives.
    let mut hub_agent = agent_config(&[]);
    hub_agent.offer_window_ms = 5_000;
    let hub = net
        .start(node_config(key(1, 0), hub_agent, &[]), work(300, 0))
        .await;
    let boot = [net.node(hub).addr()];
    // Two agents per skill.
    let workers = [
        ("parse", Level::Expert),
        ("parse", Level::Novice),
        ("index", Level::Advanced),
        ("index", Level::Intermediate),
        ("rank", Level::Intermediate),
        ("rank", Level::Expert),
    ];
    let mut ids = Vec::new();
    for (i, (skill, level)) in workers.iter().enumerate() {
        let cfg = node_config(key(1, i + 1), agent_config(&[(skill, *level)]), &boot);
        ids.push(net.start(cfg, work(300, i as u64)).await);
    }
    net.wait_connected(1, 30).await;
    net.log
        .wait(30, "the hub to connect to every worker", |log| {
            let peers: BTreeSet<_> = log
                .iter()
                .filter(|(i, _)| *i == hub)
                .filter_map(|(_, e)| match e {
                    starling::node::NodeEvent::PeerConnected(p) => Some(*p),
                    _ => None,
                })
                .collect();
            (peers.len() >= workers.len()).then_some(())
        })
        .await;

    // A first task: every skill gets covered by one of its agents. (Right after
    // connecting, the hub may not yet know every worker's subscription, and gossip
    // does not resend an announcement to a late subscriber: the first group is formed
    // from the offers that arrived.)
    let (first, first_done) = net
        .node(hub)
        .handle
        .announce(spec(&["parse", "index", "rank"]))
        .await
        .unwrap();
    let warm = tokio::time::timeout(std::time::Duration::from_secs(60), first_done)
        .await
        .expect("the first task finished in time")
        .expect("the hub reported it");
    assert_eq!(warm.outcome, Outcome::Completed);
    for r in &warm.results {
        let i = net.index_of(r.member);
        assert_eq!(workers[i - 1].0, r.skill, "a member without the skill");
    }
    net.log
        .assert_finished_once(first, &Outcome::Completed)
        .await;
    // Its members are released before the next task is announced.
    let chosen: BTreeSet<usize> = warm
        .results
        .iter()
        .map(|r| net.index_of(r.member))
        .collect();
    net.log
        .wait(30, "the first group to dissolve", |log| {
            let ended: BTreeSet<usize> = log
                .iter()
                .filter_map(|(i, e)| match e {
                    starling::node::NodeEvent::Agent(Event::AssignmentEnded {
                        task_id, ..
                    }) if *task_id == first => Some(*i),
                    _ => None,
                })
                .collect();
            chosen.is_subset(&ended).then_some(())
        })
        .await;
    // The second task, on the capacity the first released.
    let (task, done) = net
        .node(hub)
        .handle
        .announce(spec(&["parse", "index", "rank"]))
        .await
        .unwrap();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(60), done)
        .await
        .expect("the task finished in time")
        .expect("the hub reported it");
    assert_eq!(finished.outcome, Outcome::Completed);
    let mut members: Vec<(String, AgentId)> = finished
        .results
        .iter()
        .map(|r| (r.skill.clone(), r.member))
        .collect();
    members.sort();
    let skills: Vec<&str> = members.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        skills,
        vec!["index", "parse", "rank"],
        "one result per part"
    );
    for (skill, m) in &members {
        assert_eq!(
            workers[net.index_of(*m) - 1].0,
            skill,
            "a member without the skill"
        );
    }
    // Capacity comes back: with one slot each, the first task's members could take
    // no part of the second had the first group not released them.
    let again = warm
        .results
        .iter()
        .filter(|r| members.iter().any(|(_, m)| *m == r.member))
        .count();
    assert!(
        again >= 1,
        "no member of the first task worked on the second"
    );
    assert!(finished.results.iter().all(|r| r.success));
    assert!(
        finished
            .results
            .iter()
            .all(|r| r.output == format!("{}:done", r.skill).into_bytes())
    );
    let formed = net
        .log
        .agent_events(|_, e| matches!(e, Event::GroupFormed { task_id, .. } if *task_id == task));
    assert_eq!(formed.len(), 1, "the group formed once");

    // The group dissolves: every chosen member is told the outcome and frees its slot.
    let chosen: BTreeSet<usize> = members.iter().map(|(_, m)| net.index_of(*m)).collect();
    net.log
        .wait(30, "every member to see the group end", |log| {
            let ended: BTreeSet<usize> = log
                .iter()
                .filter_map(|(i, e)| match e {
                    starling::node::NodeEvent::Agent(Event::AssignmentEnded {
                        task_id,
                        outcome: Outcome::Completed,
                    }) if *task_id == task => Some(*i),
                    _ => None,
                })
                .collect();
            chosen.is_subset(&ended).then_some(())
        })
        .await;
    for &i in &ids {
        let tasks = net.node(i).handle.tasks().await.unwrap();
        assert!(
            tasks.iter().all(|t| !t.member),
            "node {i} still holds a slot: {tasks:?}"
        );
    }
    let group = net
        .node(hub)
        .handle
        .groups()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.task_id == task)
        .expect("the hub keeps the document for stragglers");
    assert_eq!(group.status, TaskStatus::Dissolved);
    net.log
        .assert_finished_once(task, &Outcome::Completed)
        .await;
}

/// The skill of agent `i` among `n` skills.
fn skill(i: usize) -> String {
    format!("s{}", i % 5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_complete_twenty_concurrent_tasks_and_reuse_their_capacity() {
    const AGENTS: usize = 50;
    let _turn = exclusive().await;
    // Nobody fails here: a long suspicion timeout keeps a node that the shared
    // machine starves of CPU for a few seconds from being taken for dead.
    let agent = |skills: &[(&str, Level)]| AgentConfig {
        suspicion_timeout_ms: 15_000,
        ..agent_config(skills)
    };
    let mut net = Net::default();
    let first = net
        .start(
            node_config(key(2, 0), agent(&[(&skill(0), Level::Advanced)]), &[]),
            work(400, 0),
        )
        .await;
    let boot = [net.node(first).addr()];
    for i in 1..AGENTS {
        let level = [Level::Novice, Level::Intermediate, Level::Advanced][i % 3];
        let cfg = node_config(key(2, i), agent(&[(&skill(i), level)]), &boot);
        net.start(cfg, work(400, i as u64)).await;
    }
    // Let the joining settle (every node holds every other's card) before work.
    net.wait_cards(AGENTS - 1, 120).await;

    // Round one: 20 tasks at once, two skills each: 40 of the 50 agents' single slots.
    let round_one = announce_round(&net, 20, 0).await;
    net.log.wait_all_finished(120, &round_one).await;
    let workers_one = check_round(&net, &round_one).await;
    // Every member is told the group ended and frees its slot.
    let parts: Vec<(TaskId, usize)> = workers_one
        .iter()
        .flat_map(|(t, ms)| ms.iter().map(|m| (*t, *m)))
        .collect();
    net.log
        .wait(60, "every member of round one to leave its group", |log| {
            let ended: BTreeSet<(TaskId, usize)> = log
                .iter()
                .filter_map(|(i, e)| match e {
                    starling::node::NodeEvent::Agent(Event::AssignmentEnded {
                        task_id, ..
                    }) => Some((*task_id, *i)),
                    _ => None,
                })
                .collect();
            parts.iter().all(|p| ended.contains(p)).then_some(())
        })
        .await;
    for (i, n) in net.nodes.iter().enumerate() {
        let tasks = n.handle.tasks().await.unwrap();
        assert!(tasks.iter().all(|t| !t.member), "node {i} holds a slot");
    }

    // Round two: 20 more tasks, announced by the other agents.
    let round_two = announce_round(&net, 20, 25).await;
    net.log.wait_all_finished(180, &round_two).await;
    let workers_two = check_round(&net, &round_two).await;
    let used_one: BTreeSet<usize> = workers_one.values().flatten().copied().collect();
    let used_two: BTreeSet<usize> = workers_two.values().flatten().copied().collect();
    // Had the slots of round one not been freed, its forty agents could not take a
    // single part of round two (one slot each). Under a loaded machine the ten idle
    // agents take some parts, several one after another.
    let again = used_one.intersection(&used_two).count();
    assert!(
        again >= 10,
        "only {again} agents of round one worked in round two: capacity not released?"
    );
    assert_eq!(net.log.lagged(), 0);
}

/// Announces `n` two-skill tasks, each from a different agent (task k from agent
/// `offset + k`).
async fn announce_round(net: &Net, n: usize, offset: usize) -> Vec<TaskId> {
    let mut tasks = Vec::new();
    for k in 0..n {
        let (a, b) = (skill(k), skill(k + 1));
        let from = &net.node((offset + k) % net.nodes.len()).handle;
        let (task, _) = from.announce(spec(&[&a, &b])).await.unwrap();
        tasks.push(task);
    }
    tasks
}

/// Checks every task finished once, completed, with one qualified member per skill;
/// returns the workers (node indices) of each task.
async fn check_round(net: &Net, tasks: &[TaskId]) -> BTreeMap<TaskId, Vec<usize>> {
    let mut workers = BTreeMap::new();
    for t in tasks {
        net.log.assert_finished_once(*t, &Outcome::Completed).await;
    }
    for (_, e) in net.log.agent_events(
        |_, e| matches!(e, Event::TaskFinished { task_id, .. } if tasks.contains(task_id)),
    ) {
        let Event::TaskFinished {
            task_id, results, ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(results.len(), 2, "{task_id:?}: {results:?}");
        let mut members = Vec::new();
        for r in &results {
            let i = net.index_of(r.member);
            assert_eq!(skill(i), r.skill, "{task_id:?}: a member without the skill");
            assert!(r.success);
            members.push(i);
        }
        workers.insert(task_id, members);
    }
    workers
}
