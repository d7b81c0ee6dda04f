//! Crashes: members and initiators die mid-task (their actor aborted, no goodbye);
//! the group carries on, and no task is finished twice.

use std::collections::BTreeSet;

use starling::{
    node::NodeEvent,
    protocol::{AgentId, Event, Level, Outcome, TaskId},
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_member_is_replaced_and_its_successor_resumes_from_the_checkpoint() {
    let _turn = exclusive().await;
    let mut net = Net::default();
    let mut hub_agent = agent_config(&[]);
    hub_agent.offer_window_ms = 5_000;
    let hub = net
        .start(node_config(key(10, 0), hub_agent, &[]), work(300, 0))
        .await;
    let boot = [net.node(hub).addr()];
    // Four steps of about a second each, a checkpoint after every step.
    let best = net
        .start(
            node_config(key(10, 1), agent_config(&[("long", Level::Expert)]), &boot),
            work(4_000, 1),
        )
        .await;
    let standby = net
        .start(
            node_config(key(10, 2), agent_config(&[("long", Level::Novice)]), &boot),
            work(4_000, 2),
        )
        .await;
    let other = net
        .start(
            node_config(key(10, 3), agent_config(&[("short", Level::Expert)]), &boot),
            work(300, 3),
        )
        .await;
    net.wait_connected(1, 30).await;
    let (best_id, standby_id) = (net.id(best), net.id(standby));

    let (task, done) = net
        .node(hub)
        .handle
        .announce(spec(&["long", "short"]))
        .await
        .unwrap();
    // Crash the best member once the hub holds a checkpoint of its part.
    let checkpointed_by_best = |i: usize, e: &Event| {
        i == hub
            && matches!(e, Event::TaskProgress { member, checkpointed: true, .. } if *member == best_id)
    };
    net.log
        .wait_event(
            60,
            "a checkpoint from the best member",
            checkpointed_by_best,
        )
        .await;
    net.kill(best).await;
    // The step of the last checkpoint the hub recorded (progress is steps / 4).
    let checkpoints_before_crash = net
        .log
        .agent_events(checkpointed_by_best)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::TaskProgress { progress, .. } => Some((progress * 4.0).round() as usize),
            _ => None,
        })
        .max()
        .unwrap_or(0);

    let finished = tokio::time::timeout(std::time::Duration::from_secs(90), done)
        .await
        .expect("the task finished in time")
        .expect("the hub reported it");
    assert_eq!(finished.outcome, Outcome::Completed);
    let mut parts: Vec<(String, AgentId)> = finished
        .results
        .iter()
        .map(|r| (r.skill.clone(), r.member))
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        vec![
            ("long".to_string(), standby_id),
            ("short".to_string(), net.id(other))
        ],
        "one result per part; the crashed member's part was done by the standby"
    );
    net.log
        .assert_finished_once(task, &Outcome::Completed)
        .await;

    let failed = net.log.agent_events(|i, e| {
        i == hub && matches!(e, Event::MemberFailed { member, .. } if *member == best_id)
    });
    assert_eq!(
        failed.len(),
        1,
        "the crashed member was declared failed once"
    );
    let replaced = net.log.agent_events(|i, e| {
        i == hub
            && matches!(e, Event::ReplacementStarted { member, resumed: true, .. } if *member == standby_id)
    });
    assert_eq!(replaced.len(), 1, "the standby took over with a checkpoint");
    // It resumed from the last checkpoint the crashed member recorded: its executor
    // was handed "step-k", and reported only the steps after k.
    let assigned = net
        .log
        .agent_events(|i, e| i == standby && matches!(e, Event::TaskAssigned(_)));
    assert_eq!(assigned.len(), 1);
    let Event::TaskAssigned(assignment) = &assigned[0].1 else {
        unreachable!()
    };
    let resumed_at = assignment
        .resume_from
        .as_deref()
        .and_then(|cp| std::str::from_utf8(cp).ok())
        .and_then(|s| s.strip_prefix("step-"))
        .and_then(|s| s.parse::<usize>().ok())
        .expect("the replacement got a checkpoint");
    assert_eq!(
        resumed_at, checkpoints_before_crash,
        "resumed from the last checkpoint recorded before the crash"
    );
    let steps: Vec<f64> = net
        .log
        .agent_events(|i, e| {
            i == hub && matches!(e, Event::TaskProgress { member, .. } if *member == standby_id)
        })
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::TaskProgress { progress, .. } => Some(progress),
            _ => None,
        })
        .collect();
    // A held checkpoint is written later with the progress it came with: the same
    // value twice in a row is one step.
    let mut steps = steps;
    steps.dedup();
    assert_eq!(
        steps.len(),
        4 - resumed_at,
        "progress after resuming: {steps:?}"
    );
    assert!(
        steps.iter().all(|p| *p > resumed_at as f64 / 4.0),
        "{steps:?}"
    );
}

fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_records_the_result_of_a_crashed_initiator_which_recovers_it_on_restart() {
    let _turn = exclusive().await;
    let dir = data_dir("initiator");
    let mut net = Net::default();
    let mut hub_cfg = node_config(key(11, 0), agent_config(&[]), &[]);
    hub_cfg.data_dir = Some(dir.clone());
    let hub = net.start(hub_cfg, work(300, 0)).await;
    let boot = [net.node(hub).addr()];
    let a = net
        .start(
            node_config(key(11, 1), agent_config(&[("a", Level::Expert)]), &boot),
            work(3_000, 1),
        )
        .await;
    let b = net
        .start(
            node_config(key(11, 2), agent_config(&[("b", Level::Expert)]), &boot),
            work(3_000, 2),
        )
        .await;
    net.wait_connected(1, 30).await;
    let (task, _) = net
        .node(hub)
        .handle
        .announce(spec(&["a", "b"]))
        .await
        .unwrap();
    // After formation, once both members work: crash the initiator.
    net.log
        .wait(60, "both members to start", |log| {
            let started: BTreeSet<usize> = log
                .iter()
                .filter_map(|(i, e)| match e {
                    NodeEvent::Agent(Event::TaskAssigned(x)) if x.task_id == task => Some(*i),
                    _ => None,
                })
                .collect();
            (started.len() == 2).then_some(())
        })
        .await;
    net.kill(hub).await;

    // The members notice, one takes over, and the group finishes and records it.
    let (by, finish) = net
        .log
        .wait_event(
            90,
            "the group to finish the task",
            |_, e| matches!(e, Event::TaskFinished { task_id, .. } if *task_id == task),
        )
        .await;
    assert!(
        by == a || by == b,
        "finished by a member, not the dead initiator"
    );
    let Event::TaskFinished {
        outcome, results, ..
    } = finish
    else {
        unreachable!()
    };
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(results.len(), 2);
    assert!(
        net.log
            .agent_events(|i, e| i == by && matches!(e, Event::CoordinatorChanged { .. }))
            .len()
            == 1
    );

    // The initiator restarts from its data directory and learns the outcome from the
    // group.
    let seen = net.log.snapshot().len();
    let peers = [net.node(a).addr(), net.node(b).addr()];
    net.restart(hub, &peers, work(300, 0)).await;
    net.log
        .wait(60, "the restarted initiator to recover the outcome", |log| {
            log[seen..]
                .iter()
                .any(|(i, e)| {
                    *i == hub
                        && matches!(e, NodeEvent::Agent(Event::TaskFinished { task_id, .. }) if *task_id == task)
                })
                .then_some(())
        })
        .await;
    let kept = net
        .node(hub)
        .handle
        .task(task)
        .await
        .unwrap()
        .expect("the restarted initiator has the outcome");
    assert_eq!(kept.outcome, Outcome::Completed);
    let members = |rs: &[starling::protocol::PartResult]| {
        rs.iter()
            .map(|r| (r.skill.clone(), r.member, r.output.clone()))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        members(&kept.results),
        members(&results),
        "the same results"
    );
    net.log
        .assert_finished_once(task, &Outcome::Completed)
        .await;
    // Each part ran once: nobody redid work after the initiator died.
    let assigned = net
        .log
        .agent_events(|_, e| matches!(e, Event::TaskAssigned(x) if x.task_id == task));
    assert_eq!(assigned.len(), 2, "{assigned:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// splitmix64: the test's own seeded randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_of_thirty_agents_crash_during_fifty_tasks_and_every_task_completes_once() {
    const AGENTS: usize = 30;
    const TASKS: usize = 50;
    const IN_FLIGHT: usize = 10;
    const SEED: u64 = 0x5747_4b11;
    let _turn = exclusive().await;
    let mut rng = Rng(SEED);
    let skill = |i: usize| format!("k{}", i % 3);
    let mut net = Net::default();
    for i in 0..AGENTS {
        let boot = if i == 0 {
            vec![]
        } else {
            vec![net.node(0).addr()]
        };
        let level = [Level::Novice, Level::Advanced, Level::Expert][rng.below(3)];
        let cfg = node_config(key(12, i), agent_config(&[(&skill(i), level)]), &boot);
        net.start(cfg, work(800, i as u64)).await;
    }
    net.wait_cards(AGENTS - 1, 120).await;
    // Five announcers (never killed). Six crashes at random points of the run, each
    // of an agent that works on a part at that moment if any does (so the crashes
    // cost the groups work in progress), of a random idle one if none has for ten
    // more finished tasks.
    let mut pool: Vec<usize> = (1..AGENTS).collect();
    let pick = |rng: &mut Rng, pool: &mut Vec<usize>| pool.remove(rng.below(pool.len()));
    let announcers: Vec<usize> = (0..5).map(|_| pick(&mut rng, &mut pool)).collect();
    let mut crashes: Vec<usize> = (0..AGENTS / 5).map(|_| 3 + rng.below(TASKS - 20)).collect();
    crashes.sort_unstable();
    eprintln!("seed {SEED:#x}: announcers {announcers:?}, crashes after n tasks {crashes:?}");

    let mut tasks: Vec<TaskId> = Vec::new();
    let mut killed: BTreeSet<usize> = BTreeSet::new();
    let mut killed_at_work = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let finished: BTreeSet<TaskId> = net.log.finishes().into_keys().collect();
        let done = tasks.iter().filter(|t| finished.contains(t)).count();
        if done == TASKS {
            break;
        }
        while tasks.len() < TASKS && tasks.len() - done < IN_FLIGHT {
            let k = tasks.len();
            let from = announcers[k % announcers.len()];
            let skills: Vec<String> = if rng.below(2) == 0 {
                vec![skill(k)]
            } else {
                vec![skill(k), skill(k + 1)]
            };
            let skills: Vec<&str> = skills.iter().map(String::as_str).collect();
            let (t, _) = net.node(from).handle.announce(spec(&skills)).await.unwrap();
            tasks.push(t);
        }
        if let Some(&after) = crashes.first()
            && done >= after
        {
            let working: Vec<usize> = pool
                .iter()
                .copied()
                .filter(|&v| busy(&net.log, v))
                .collect();
            let victim = if !working.is_empty() {
                killed_at_work += 1;
                Some(working[rng.below(working.len())])
            } else if done >= after + 10 {
                Some(pool[rng.below(pool.len())])
            } else {
                None
            };
            if let Some(v) = victim {
                net.kill(v).await;
                killed.insert(v);
                pool.retain(|&p| p != v);
                crashes.remove(0);
            }
        }
        let seen = net.log.snapshot().len();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "tasks did not finish: {done} of {TASKS}");
        net.log
            .wait(left.as_secs() + 1, "any event", |log| {
                (log.len() > seen).then_some(())
            })
            .await;
    }
    assert_eq!(killed.len(), AGENTS / 5, "every victim was crashed");
    eprintln!("crashed {killed:?}, {killed_at_work} of them at work");
    for t in &tasks {
        net.log.assert_finished_once(*t, &Outcome::Completed).await;
    }
    let failed = net.log.agent_events(|_, e| {
        matches!(e, Event::MemberFailed { member, .. } if killed.contains(&net.index_of(*member)))
    });
    assert!(
        !failed.is_empty(),
        "no crash hit a member at work: the test tested nothing"
    );
    assert_eq!(net.log.lagged(), 0);
}

/// Whether node `i` works on a part now: assigned, and neither finished (its skill
/// metrics learned) nor ended since. Agents here hold one slot, so one part at most.
fn busy(log: &EventLog, i: usize) -> bool {
    log.agent_events(|j, e| {
        j == i
            && matches!(
                e,
                Event::TaskAssigned(_) | Event::SkillLearned { .. } | Event::AssignmentEnded { .. }
            )
    })
    .last()
    .is_some_and(|(_, e)| matches!(e, Event::TaskAssigned(_)))
}
