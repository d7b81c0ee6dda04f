//! State in the data directory survives a restart.

use std::{path::PathBuf, time::Duration};

use starling_protocol::{Event, Level, Outcome, TaskSpec};

use super::support::*;
use crate::{NodeEvent, SyntheticHandler, spawn};

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn spec(skill: &str) -> TaskSpec {
    one_part("persisted", skill)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_still_has_its_completed_tasks_result() {
    let dir = data_dir("restart");
    let mut cfg = config(70, &[], &[]);
    cfg.data_dir = Some(dir.clone());
    let (hub, join) = spawn(
        cfg.clone(),
        SyntheticHandler::new(Duration::from_millis(100), 0.0, 70),
    )
    .await
    .unwrap();
    let worker = start(
        71,
        &[("keep", Level::Expert)],
        &[hub.listen_addrs()[0].clone()],
    )
    .await;
    let (task_id, done) = hub.announce(spec("keep")).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.outcome, Outcome::Completed);
    hub.shutdown().await.unwrap();
    join.await.unwrap();

    cfg.listen = vec![memory_addr()];
    let (again, again_join) = spawn(
        cfg,
        SyntheticHandler::new(Duration::from_millis(100), 0.0, 70),
    )
    .await
    .unwrap();
    let kept = again
        .task(task_id)
        .await
        .unwrap()
        .expect("the result survived the restart");
    assert_eq!(kept.outcome, Outcome::Completed);
    assert_eq!(kept.results, finished.results);
    assert_eq!(kept.results[0].member, worker.id());
    again.shutdown().await.unwrap();
    again_join.await.unwrap();
    // The data directory belongs to this agent: another key is refused.
    let mut other = config(72, &[], &[]);
    other.data_dir = Some(dir.clone());
    let refused = spawn(
        other,
        SyntheticHandler::new(Duration::from_millis(100), 0.0, 72),
    )
    .await;
    match refused {
        Err(crate::NodeError::Store(m)) => assert!(m.contains("another agent"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a data directory of another agent was accepted"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiator_that_crashes_mid_task_resumes_it_from_its_data_dir() {
    let dir = data_dir("crash");
    let mut cfg = config(80, &[], &[]);
    cfg.data_dir = Some(dir.clone());
    let (hub, join) = spawn(
        cfg.clone(),
        SyntheticHandler::new(Duration::from_millis(100), 0.0, 80),
    )
    .await
    .unwrap();
    let mut hub_events = hub.events();
    let boot = vec![hub.listen_addrs()[0].clone()];
    let slow = |seed| SyntheticHandler::new(Duration::from_secs(2), 0.0, seed);
    let (a, _) = spawn(config(81, &[("long", Level::Expert)], &boot), slow(81))
        .await
        .unwrap();
    let (task_id, _) = hub.announce(spec("long")).await.unwrap();
    wait_for(&mut hub_events, 30, |e| {
        matches!(e, NodeEvent::Agent(Event::GroupFormed { .. }))
    })
    .await
    .expect("the group formed");
    // Crash: the actor is killed, nothing is said to anyone.
    join.abort();
    let _ = join.await;

    cfg.listen = vec![memory_addr()];
    cfg.bootstrap = a.listen_addrs().to_vec();
    let (again, _) = spawn(
        cfg,
        SyntheticHandler::new(Duration::from_millis(100), 0.0, 80),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        if let Some(done) = again.task(task_id).await.unwrap() {
            break done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed task never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done.outcome, Outcome::Completed);
    assert_eq!(done.results.len(), 1);
    assert_eq!(done.results[0].member, a.id());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_crashes_right_after_its_accept_still_holds_it_after_a_restart() {
    let dir = data_dir("accept");
    let hub = start(90, &[], &[]).await;
    let mut hub_events = hub.events();
    let mut cfg = config(
        91,
        &[("hold", Level::Expert)],
        &[hub.listen_addrs()[0].clone()],
    );
    cfg.data_dir = Some(dir.clone());
    let slow = |seed| SyntheticHandler::new(Duration::from_secs(30), 0.0, seed);
    let (member, join) = spawn(cfg.clone(), slow(91)).await.unwrap();
    let me = member.id();
    let (task_id, _) = hub.announce(spec("hold")).await.unwrap();
    // The coordinator has the acceptance: the member crashes at once.
    wait_for(
        &mut hub_events,
        30,
        |e| matches!(e, NodeEvent::Agent(Event::GroupFormed { task_id: t, .. }) if *t == task_id),
    )
    .await
    .expect("the group formed");
    join.abort();
    let _ = join.await;

    cfg.listen = vec![memory_addr()];
    // The start waits for the crashed node's store writer to let go of the database.
    let (again, _) = spawn(cfg.clone(), slow(91)).await.unwrap();
    let groups = again.groups().await.unwrap();
    let group = groups
        .iter()
        .find(|g| g.task_id == task_id)
        .expect("the restarted member holds the group it accepted");
    let (_, _, status) = group
        .members
        .iter()
        .find(|(_, a, _)| *a == me)
        .expect("its own member entry");
    assert!(
        matches!(
            status,
            starling_crdt::MemberStatus::Accepted | starling_crdt::MemberStatus::Active
        ),
        "its acceptance survived: {status:?}"
    );
    again.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
