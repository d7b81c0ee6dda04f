//! A node that shuts down mid-task leaves its group: its part is reassigned at once,
//! without waiting for the suspicion timeout.

use std::time::Duration;

use starling_protocol::{Event, Level, Outcome, Priority, SkillRequirement, TaskSpec};

use super::support::*;
use crate::{NodeEvent, SyntheticHandler, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_shuts_down_leaves_and_is_replaced() {
    let hub = start(30, &[], &[]).await;
    let boot = vec![hub.listen_addrs()[0].clone()];
    let slow = |seed| SyntheticHandler::new(Duration::from_secs(3), 0.0, seed);
    let (best, _) = spawn(config(31, &[("slow", Level::Expert)], &boot), slow(31))
        .await
        .unwrap();
    let (standby, _) = spawn(config(32, &[("slow", Level::Novice)], &boot), slow(32))
        .await
        .unwrap();
    // Both candidates must be heard when the task goes out, or the standby may
    // be the only offer in the window.
    wait_meshed(&[&best, &standby], 1).await;
    let mut hub_events = hub.events();
    let mut best_events = best.events();
    let spec = TaskSpec {
        description: "slow work".into(),
        required: vec![SkillRequirement {
            name: "slow".into(),
            min_level: Level::Novice,
            count: 1,
        }],
        priority: Priority::Normal,
        deadline_ms: Some(60_000),
        max_group_size: None,
        depends_on: Vec::new(),
        payload: Vec::new(),
        consensus: false,
    };
    let (_, done) = hub.announce(spec).await.unwrap();
    wait_for(&mut best_events, 30, |e| {
        matches!(e, NodeEvent::Agent(Event::TaskAssigned(_)))
    })
    .await
    .expect("the best agent got the part");
    best.shutdown().await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.outcome, Outcome::Completed);
    assert_eq!(finished.results[0].member, standby.id());
    // Replaced because it left, not because it fell silent: no failure verdict.
    let seen = collect(&mut hub_events, 1, Duration::from_millis(10), |_| false).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, NodeEvent::Agent(Event::MemberFailed { .. }))),
        "{seen:?}"
    );
}
