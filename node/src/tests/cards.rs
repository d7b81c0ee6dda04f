//! Agent cards over gossip: a fresh mesh's directories fill before the first task,
//! which is then staffed by invitation with no announcement, and an agent that joins
//! later gets the cards its first peer holds.

use std::time::Duration;

use starling_protocol::{Level, Outcome};

use super::support::*;
use crate::Handle;

/// Waits (generously) until `node` holds at least `n` current cards.
async fn wait_cards(node: &Handle, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = node.status().await.unwrap();
        if status.cards >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cards never arrived: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(text: &str, metric: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(metric))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_staff_a_fresh_meshs_first_task_and_reach_a_late_joiner() {
    let hub = start(40, &[], &[]).await;
    let boot = vec![hub.listen_addrs()[0].clone()];
    let workers = [
        start(41, &[("x", Level::Expert)], &boot).await,
        start(42, &[("x", Level::Advanced)], &boot).await,
        start(43, &[("x", Level::Novice)], &boot).await,
    ];
    wait_cards(&hub, workers.len()).await;

    let (_, done) = hub.announce(one_part("first task", "x")).await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the task finished in time")
        .expect("the node reported it");
    assert_eq!(finished.outcome, Outcome::Completed);
    let hub_text = hub.metrics_text();
    assert_eq!(
        count(
            &hub_text,
            r#"starling_messages_out_total{kind="task_announce"}"#
        ),
        0,
        "staffed from the cards, not announced: {hub_text}"
    );
    let invited: u64 = workers
        .iter()
        .map(|w| {
            count(
                &w.metrics_text(),
                r#"starling_messages_in_total{kind="group_invite"}"#,
            )
        })
        .sum();
    assert_eq!(invited, 1, "one invitation for the one place");

    // A late joiner, through one worker: that worker's cards come in its answer.
    let late = start(44, &[], &[workers[0].listen_addrs()[0].clone()]).await;
    wait_cards(&late, workers.len()).await;
    let late_text = late.metrics_text();
    assert!(
        count(&late_text, r#"starling_messages_in_total{kind="cards"}"#) == 1,
        "one answer to its one request: {late_text}"
    );
}
