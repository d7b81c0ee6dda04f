//! Starting nodes on unique memory addresses and waiting on their events.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use libp2p::Multiaddr;
use starling_protocol::{AgentConfig, Keypair, Level, Priority, Skill, SkillRequirement, TaskSpec};
use tokio::sync::broadcast;

use crate::{Handle, NodeConfig, NodeEvent, SyntheticHandler, spawn};

static NEXT_PORT: AtomicU64 = AtomicU64::new(0);

/// A memory address no other test uses.
pub(crate) fn memory_addr() -> Multiaddr {
    let base = u64::from(std::process::id()) << 20;
    let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed) + 1;
    format!("/memory/{}", base + n).parse().unwrap()
}

/// A config for a test node: memory transport, fast gossip heartbeat.
pub(crate) fn config(seed: u8, skills: &[(&str, Level)], bootstrap: &[Multiaddr]) -> NodeConfig {
    let agent = AgentConfig {
        skills: skills.iter().map(|(n, l)| Skill::new(*n, *l)).collect(),
        ..AgentConfig::default()
    };
    let mut c = NodeConfig::new(Keypair::from_secret_bytes([seed; 32]), agent);
    c.listen = vec![memory_addr()];
    c.bootstrap = bootstrap.to_vec();
    c.gossip_heartbeat = Duration::from_millis(200);
    c.discovery_interval = Duration::from_secs(2);
    c.rng_seed = u64::from(seed);
    c
}

/// A task of one part, `skill` at any level, with a two-minute deadline.
pub(crate) fn one_part(description: &str, skill: &str) -> TaskSpec {
    TaskSpec {
        description: description.into(),
        required: vec![SkillRequirement {
            name: skill.into(),
            min_level: Level::Novice,
            count: 1,
        }],
        priority: Priority::Normal,
        deadline_ms: Some(120_000),
        max_group_size: None,
        depends_on: Vec::new(),
        payload: Vec::new(),
        consensus: false,
    }
}

pub(crate) async fn start(seed: u8, skills: &[(&str, Level)], bootstrap: &[Multiaddr]) -> Handle {
    let handler = SyntheticHandler::new(Duration::from_millis(200), 0.0, u64::from(seed));
    let (handle, _join) = spawn(config(seed, skills, bootstrap), handler)
        .await
        .unwrap();
    handle
}

pub(crate) async fn start_with(config: NodeConfig) -> Handle {
    let handler = SyntheticHandler::new(Duration::from_millis(200), 0.0, config.rng_seed);
    spawn(config, handler).await.unwrap().0
}

/// Waits (generously) until every node has joined and has at least `subscribers`
/// connected subscribers in each of its skill topics.
pub(crate) async fn wait_meshed(nodes: &[&Handle], subscribers: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for node in nodes {
        loop {
            let status = node.status().await.unwrap();
            if status.joined && status.topics.iter().all(|t| t.subscribers >= subscribers) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a node never meshed: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits (generously) for an event matching `pred`.
pub(crate) async fn wait_for(
    rx: &mut broadcast::Receiver<NodeEvent>,
    secs: u64,
    mut pred: impl FnMut(&NodeEvent) -> bool,
) -> Option<NodeEvent> {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return Some(e),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Collects every event until `pred` matches one (or time runs out), then for
/// `settle` more; returns them all.
pub(crate) async fn collect(
    rx: &mut broadcast::Receiver<NodeEvent>,
    secs: u64,
    settle: Duration,
    mut pred: impl FnMut(&NodeEvent) -> bool,
) -> Vec<NodeEvent> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let hit = pred(&e);
                    seen.push(e);
                    if hit {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(settle, async {
        while let Ok(e) = rx.recv().await {
            seen.push(e);
        }
    })
    .await;
    seen
}
