//! A partition splits twenty agents in two halves while every group spans both; the
//! coordinators give up on the members they cannot reach; the partition heals and
//! every task completes once, with every replica of its document agreeing.

use std::collections::{BTreeMap, BTreeSet};

use starling::{
    crdt::{GroupDoc, Limits, TaskOutcome},
    node::{LinkFaults, NodeEvent},
    protocol::{AgentId, Event, Keypair, Level, Outcome, TaskId},
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_spanning_a_partition_complete_once_after_it_heals() {
    const HALF: usize = 10;
    const TASKS: usize = 4;
    let _turn = exclusive().await;
    let faults = LinkFaults::new();
    let mut net = Net::default();
    // Side A holds every "p" agent, side B every "q" agent: a task needing both
    // spans the partition whatever agents it gets.
    for i in 0..2 * HALF {
        let skill = if i < HALF { "p" } else { "q" };
        let boot = if i == 0 {
            vec![]
        } else {
            vec![net.node(0).addr()]
        };
        let mut cfg = node_config(key(60, i), agent_config(&[(skill, Level::Expert)]), &boot);
        cfg.link_faults = Some(faults.clone());
        net.start(cfg, work(4_000, i as u64)).await;
    }
    net.wait_cards(2 * HALF - 1, 120).await;
    let side_a: Vec<AgentId> = (0..HALF).map(|i| net.id(i)).collect();
    let side_b: BTreeSet<AgentId> = (HALF..2 * HALF).map(|i| net.id(i)).collect();

    let mut tasks: Vec<TaskId> = Vec::new();
    for k in 0..TASKS {
        let (t, _) = net
            .node(k)
            .handle
            .announce(spec(&["p", "q"]))
            .await
            .unwrap();
        tasks.push(t);
    }
    // Cut once every part is being worked on.
    net.log
        .wait(90, "every part to start", |log| {
            let started: BTreeSet<(TaskId, usize)> = log
                .iter()
                .filter_map(|(i, e)| match e {
                    NodeEvent::Agent(Event::TaskAssigned(a)) => Some((a.task_id, *i)),
                    _ => None,
                })
                .collect();
            tasks
                .iter()
                .all(|t| started.iter().filter(|(s, _)| s == t).count() >= 2)
                .then_some(())
        })
        .await;
    faults.partition(std::slice::from_ref(&side_a));
    // Each coordinator (on side A) loses its side-B member and declares it failed.
    net.log
        .wait(
            60,
            "every coordinator to fail its unreachable member",
            |log| {
                let failed: BTreeSet<TaskId> = log
                    .iter()
                    .filter_map(|(_, e)| match e {
                        NodeEvent::Agent(Event::MemberFailed {
                            task_id, member, ..
                        }) if side_b.contains(member) => Some(*task_id),
                        _ => None,
                    })
                    .collect();
                tasks.iter().all(|t| failed.contains(t)).then_some(())
            },
        )
        .await;
    let during: usize = net.log.finishes().len();
    assert_eq!(
        during, 0,
        "no task can complete while its q part is cut off"
    );
    faults.heal();

    net.log.wait_all_finished(120, &tasks).await;
    for t in &tasks {
        net.log.assert_finished_once(*t, &Outcome::Completed).await;
    }
    // One result per part, each by an agent of the side that has the skill.
    for (_, e) in net.log.agent_events(
        |_, e| matches!(e, Event::TaskFinished { task_id, .. } if tasks.contains(task_id)),
    ) {
        let Event::TaskFinished { results, .. } = e else {
            unreachable!()
        };
        let parts: BTreeMap<String, AgentId> = results
            .iter()
            .map(|r| (r.skill.clone(), r.member))
            .collect();
        assert_eq!(parts.len(), 2, "{results:?}");
        assert!(side_a.contains(&parts["p"]));
        assert!(side_b.contains(&parts["q"]));
    }
    // Every replica agrees on the outcome and the results: the members close theirs
    // when the group dissolves. (An agent told it is not needed closes its replica
    // then, before the task ends: a spare invited but never selected, or a
    // replacement started for the cut-off member and released when that member's
    // result arrived after the heal. Neither is a member's replica at the end, and
    // its view stops where it left. The coordinator and every agent that worked on
    // a part to the end — the one cut off by the partition among them — are.)
    let member = |log: &[(usize, NodeEvent)], i: usize, t: &TaskId| {
        let ended = |e: &NodeEvent| {
            matches!(e, NodeEvent::Agent(Event::AssignmentEnded {
                task_id,
                outcome: Outcome::Failed(why),
            }) if task_id == t && why == "not needed")
        };
        tasks.iter().position(|x| x == t) == Some(i)
            || log.iter().any(|(j, e)| {
                *j == i && matches!(e, NodeEvent::Agent(Event::TaskAssigned(a)) if a.task_id == *t)
            }) && !log.iter().any(|(j, e)| *j == i && ended(e))
    };
    net.log
        .wait(60, "two members' replicas of every group to close", |log| {
            let closed = |t: &TaskId| {
                log.iter()
                    .filter(|(i, e)| {
                        matches!(e, NodeEvent::Agent(Event::GroupClosed { task_id, .. }) if task_id == t)
                            && member(log, *i, t)
                    })
                    .count()
            };
            tasks.iter().all(|t| closed(t) >= 2).then_some(())
        })
        .await;
    let reader = Keypair::from_secret_bytes([7; 32]);
    let snapshots = net.log.agent_events(
        |_, e| matches!(e, Event::GroupClosed { task_id, .. } if tasks.contains(task_id)),
    );
    let log = net.log.snapshot();
    let mut views: BTreeMap<TaskId, Vec<(usize, String)>> = BTreeMap::new();
    for (i, e) in snapshots {
        let Event::GroupClosed { task_id, snapshot } = e else {
            unreachable!()
        };
        if !member(&log, i, &task_id) {
            continue;
        }
        let doc =
            GroupDoc::load(reader.signing_key().clone(), &snapshot, Limits::default()).unwrap();
        let view = doc.view().unwrap();
        if view.outcome != Some(TaskOutcome::Completed) {
            // What this replica went through, to tell why it closed as it did.
            let history: Vec<Event> = net
                .log
                .agent_events(|j, e| j == i && task_of(e) == Some(task_id))
                .into_iter()
                .map(|(_, e)| e)
                .collect();
            panic!(
                "node {i} closed {task_id:?} with outcome {:?}; its events: {history:#?}",
                view.outcome
            );
        }
        let results: Vec<String> = view
            .selected()
            .map(|(s, k)| {
                let r = view.member(k).and_then(|m| m.result.clone());
                format!("{s}:{}:{:?}", AgentId::from(k), r.map(|r| r.output))
            })
            .collect();
        views
            .entry(task_id)
            .or_default()
            .push((i, results.join(",")));
    }
    for (t, vs) in &views {
        assert!(
            vs.windows(2).all(|w| w[0].1 == w[1].1),
            "replicas of {t:?} disagree: {vs:?}"
        );
    }
}
