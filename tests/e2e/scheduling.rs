//! Dependencies and priority ageing, as the protocol defines them, over the network.

use std::{collections::BTreeSet, time::Duration};

use starling::{
    node::NodeEvent,
    protocol::{AgentConfig, Event, Level, Outcome, Priority, TaskId},
};

use crate::support::*;

/// Index in the log of the first event at node `i` matching `f`.
fn position(log: &EventLog, i: usize, mut f: impl FnMut(&Event) -> bool) -> Option<usize> {
    log.snapshot()
        .iter()
        .position(|(j, e)| *j == i && matches!(e, NodeEvent::Agent(a) if f(a)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waits_for_its_dependency_and_a_failed_dependency_fails_its_dependents() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    let hub = net
        .start(
            node_config(key(40, 0), agent_config(&[]), &[]),
            work(300, 0),
        )
        .await;
    let boot = [net.node(hub).addr()];
    for (i, skill) in ["x", "y"].iter().enumerate() {
        let cfg = node_config(
            key(40, i + 1),
            agent_config(&[(skill, Level::Expert)]),
            &boot,
        );
        net.start(cfg, work(500, i as u64)).await;
    }
    net.wait_connected(1, 30).await;
    let handle = net.node(hub).handle.clone();

    let (a, _) = handle.announce(spec(&["x"])).await.unwrap();
    let mut b_spec = spec(&["y"]);
    b_spec.depends_on = vec![a];
    let (b, _) = handle.announce(b_spec).await.unwrap();
    net.log.wait_all_finished(60, &[a, b]).await;
    net.log.assert_finished_once(a, &Outcome::Completed).await;
    net.log.assert_finished_once(b, &Outcome::Completed).await;
    let waiting = position(
        &net.log,
        hub,
        |e| matches!(e, Event::TaskWaiting { task_id, waiting_for } if *task_id == b && waiting_for == &vec![a]),
    );
    let a_done = position(
        &net.log,
        hub,
        |e| matches!(e, Event::TaskFinished { task_id, .. } if *task_id == a),
    );
    let b_announced = position(
        &net.log,
        hub,
        |e| matches!(e, Event::TaskAnnounced { task_id, .. } if *task_id == b),
    );
    assert!(waiting.is_some(), "b waited for a");
    assert!(
        b_announced > a_done,
        "b was announced (at {b_announced:?}) only after a finished (at {a_done:?})"
    );

    // Nobody has skill z: c fails at its deadline, and d, which depends on it, fails
    // without ever being announced.
    let mut c_spec = spec(&["z"]);
    c_spec.deadline_ms = Some(3_000);
    let (c, _) = handle.announce(c_spec).await.unwrap();
    let mut d_spec = spec(&["x"]);
    d_spec.depends_on = vec![c];
    let (d, _) = handle.announce(d_spec).await.unwrap();
    net.log.wait_all_finished(60, &[c, d]).await;
    net.log
        .assert_finished_once(c, &Outcome::Failed("deadline passed".into()))
        .await;
    let finishes = net.log.finishes();
    assert!(
        matches!(&finishes[&d][0].1, Outcome::Failed(r) if r.contains("dependency")),
        "{:?}",
        finishes[&d]
    );
    assert!(
        position(
            &net.log,
            hub,
            |e| matches!(e, Event::TaskAnnounced { task_id, .. } if *task_id == d)
        )
        .is_none(),
        "d was never announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_priority_task_is_served_despite_a_stream_of_critical_work() {
    let _turn = exclusive().await;
    // Age counts fast: one priority level per second.
    let tune = |skills: &[(&str, Level)]| AgentConfig {
        aging_interval_ms: 1_000,
        max_announce_rounds: 1_000,
        offers_per_free_slot: 1,
        ..agent_config(skills)
    };
    let mut net = Net::default();
    let worker = net
        .start(
            node_config(key(41, 0), tune(&[("x", Level::Expert)]), &[]),
            work(400, 0),
        )
        .await;
    let boot = [net.node(worker).addr()];
    let busy = net
        .start(node_config(key(41, 1), tune(&[]), &boot), work(400, 1))
        .await;
    let patient = net
        .start(node_config(key(41, 2), tune(&[]), &boot), work(400, 2))
        .await;
    net.wait_connected(1, 30).await;
    let mut critical = spec(&["x"]);
    critical.priority = Priority::Critical;
    let mut low = spec(&["x"]);
    low.priority = Priority::Low;

    let mut criticals: Vec<TaskId> = Vec::new();
    for _ in 0..2 {
        criticals.push(
            net.node(busy)
                .handle
                .announce(critical.clone())
                .await
                .unwrap()
                .0,
        );
    }
    // The worker is busy with critical work before the low task is announced (a
    // critical announcement that went out before the announcer saw the worker's
    // subscription is only repeated later).
    net.log
        .wait(30, "the worker to take a critical task", |log| {
            log.iter()
                .any(|(i, e)| {
                    *i == worker
                        && matches!(e, NodeEvent::Agent(Event::TaskAssigned(a)) if criticals.contains(&a.task_id))
                })
                .then_some(())
        })
        .await;
    let (low_task, _) = net.node(patient).handle.announce(low).await.unwrap();
    let low_announced = criticals.len();
    // Two new critical tasks for each one finished: more than the worker can do, so
    // without ageing the low task would wait for ever.
    let mut seen_finished: BTreeSet<TaskId> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let finished: BTreeSet<TaskId> = net.log.finishes().into_keys().collect();
        if finished.contains(&low_task) {
            break;
        }
        for t in criticals.clone() {
            if finished.contains(&t) && seen_finished.insert(t) {
                for _ in 0..2 {
                    criticals.push(
                        net.node(busy)
                            .handle
                            .announce(critical.clone())
                            .await
                            .unwrap()
                            .0,
                    );
                }
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "the low-priority task starved");
        let n = seen_finished.len();
        net.log
            .wait(left.as_secs() + 1, "another task to finish", |log| {
                let done: BTreeSet<TaskId> = log
                    .iter()
                    .filter_map(|(_, e)| match e {
                        NodeEvent::Agent(Event::TaskFinished { task_id, .. }) => Some(*task_id),
                        _ => None,
                    })
                    .collect();
                (done.contains(&low_task)
                    || criticals.iter().filter(|t| done.contains(t)).count() > n)
                    .then_some(())
            })
            .await;
    }
    net.log
        .assert_finished_once(low_task, &Outcome::Completed)
        .await;
    // It was not simply first in line: critical tasks announced after it were
    // served before it.
    let log = net.log.snapshot();
    let finished_at = |t: TaskId| {
        log.iter().position(
            |(_, e)| matches!(e, NodeEvent::Agent(Event::TaskFinished { task_id, .. }) if *task_id == t),
        )
    };
    let low_at = finished_at(low_task).unwrap();
    let later_but_first = criticals[low_announced..]
        .iter()
        .filter(|t| finished_at(**t).is_some_and(|at| at < low_at))
        .count();
    assert!(
        later_but_first >= 3,
        "only {later_but_first} critical tasks announced after the low one went first"
    );
}
