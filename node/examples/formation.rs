//! Announce→formed and announce→completed latency across ten in-process nodes on the
//! memory transport (real libp2p: noise, yamux, gossipsub, request-response).
//!
//! Run with `cargo run --release -p starling-node --example formation [TASKS]`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use starling_node::{Handle, NodeConfig, NodeEvent, SyntheticHandler, spawn};
use starling_protocol::{
    AgentConfig, Event, Keypair, Level, Outcome, Priority, Skill, SkillRequirement, TaskSpec,
};

const SKILLS: [&str; 4] = ["parse", "index", "render", "check"];

async fn node(seed: u8, skills: &[&str], boot: &[libp2p::Multiaddr]) -> Handle {
    let agent = AgentConfig {
        skills: skills
            .iter()
            .map(|s| Skill::new(*s, Level::Advanced))
            .collect(),
        max_concurrent_tasks: 4,
        ..AgentConfig::default()
    };
    let mut c = NodeConfig::new(Keypair::from_secret_bytes([seed; 32]), agent);
    c.listen = vec![
        format!("/memory/{}", 90_000 + u64::from(seed))
            .parse()
            .unwrap(),
    ];
    c.bootstrap = boot.to_vec();
    c.rng_seed = u64::from(seed);
    spawn(
        c,
        SyntheticHandler::new(Duration::from_millis(50), 0.0, u64::from(seed)),
    )
    .await
    .unwrap()
    .0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let hub = node(1, &[], &[]).await;
    let boot = vec![hub.listen_addrs()[0].clone()];
    let mut nodes = vec![];
    for i in 0..9u8 {
        let skills = [SKILLS[i as usize % 4], SKILLS[(i as usize + 1) % 4]];
        nodes.push(node(10 + i, &skills, &boot).await);
    }
    // Let the mesh settle: every worker connected and subscribed.
    while hub.peers().await.unwrap().len() < nodes.len() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Events are timestamped as they arrive, by a task of their own.
    let mut events = hub.events();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut finished = 0;
        while finished < tasks {
            match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                Ok(Ok(NodeEvent::Agent(e @ Event::GroupFormed { .. }))) => {
                    seen.push((Instant::now(), e))
                }
                Ok(Ok(NodeEvent::Agent(e @ Event::TaskFinished { .. }))) => {
                    finished += 1;
                    seen.push((Instant::now(), e));
                }
                Ok(Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    println!("lagged by {n} events")
                }
                _ => break,
            }
        }
        seen
    });
    let mut announced = BTreeMap::new();
    let start = Instant::now();
    for i in 0..tasks {
        let required: Vec<SkillRequirement> = (0..1 + i % 2)
            .map(|k| SkillRequirement {
                name: SKILLS[(i + k) % 4].into(),
                min_level: Level::Novice,
                count: 1,
            })
            .collect();
        let spec = TaskSpec {
            description: format!("task {i}"),
            required,
            priority: Priority::Normal,
            deadline_ms: Some(60_000),
            max_group_size: None,
            depends_on: vec![],
            payload: vec![],
            consensus: false,
        };
        let at = Instant::now();
        let (id, _done) = hub.announce(spec).await.unwrap();
        announced.insert(id, at);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = collector.await.unwrap();
    let mut formed = Vec::new();
    let mut completed = Vec::new();
    for (t, e) in seen {
        match e {
            Event::GroupFormed { task_id, .. } => {
                formed.push((t - announced[&task_id]).as_secs_f64() * 1000.0)
            }
            Event::TaskFinished {
                task_id,
                outcome: Outcome::Completed,
                ..
            } => completed.push((t - announced[&task_id]).as_secs_f64() * 1000.0),
            _ => {}
        }
    }
    formed.sort_by(f64::total_cmp);
    completed.sort_by(f64::total_cmp);
    println!(
        "{tasks} tasks (1-2 skills each, one every 100 ms) from one initiator to 9 workers, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!("completed {} / {tasks}", completed.len());
    for (name, v) in [
        ("announce->formed", &formed),
        ("announce->completed", &completed),
    ] {
        if v.is_empty() {
            continue;
        }
        println!(
            "{name:>20}: p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            pct(v, 0.5),
            pct(v, 0.95),
            pct(v, 0.99),
            v[v.len() - 1]
        );
    }
    println!("\nhub metrics:");
    for line in hub
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("starling_"))
    {
        println!("  {line}");
    }
}
