//! Hostile agents that are not Starling nodes at all: raw libp2p swarms with the same
//! behaviour, subscribed to every skill topic, that publish forged announcements
//! (a signature that does not verify), tampered ones (a body changed after signing),
//! replays of honest announcements sent straight to peers, and a flood of announcements
//! of their own. Honest nodes must refuse all but the last, never forward them, score
//! the sender down, and keep serving honest tasks.
//!
//! (The other hostile kind, agents claiming skills they lack, are ordinary nodes whose
//! work always fails: see [`crate::mesh`].)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::{gossipsub, swarm::SwarmEvent};
use starling_node::{NodeConfig, swarm};
use starling_protocol::{
    AgentConfig, Audience, Keypair, Level, Message, Priority, SignedEnvelope, SkillRequirement,
    TaskAnnounce, TaskId, skill_topic,
};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::{
    SimError, SimOptions,
    mesh::Mesh,
    workload::{Hostility, Rng, Workload},
};

/// Announcements a forger sends per second, across all its tricks.
const FORGER_RATE: u64 = 40;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts one raw swarm per forger of `workload`, joined through a live agent.
pub fn spawn_forgers(
    workload: &Workload,
    opts: &SimOptions,
    mesh: &Mesh,
) -> Result<Vec<JoinHandle<()>>, SimError> {
    let live = mesh.live();
    let mut jobs = Vec::new();
    for (i, plan) in workload.agents.iter().enumerate() {
        if plan.hostile != Some(Hostility::Forger) {
            continue;
        }
        let key = Keypair::from_secret_bytes(plan.key_seed);
        let mut config = NodeConfig::new(key.clone(), AgentConfig::default());
        config.listen = Vec::new();
        let mut swarm = swarm::build(&config, &mut Default::default())
            .map_err(|e| SimError::Mesh(format!("forger {i}: {e}")))?;
        for s in &workload.skills {
            let topic = gossipsub::IdentTopic::new(skill_topic(s));
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic)
                .map_err(|e| SimError::Mesh(format!("forger {i}: {e}")))?;
        }
        // Join through a few agents, as a pushy peer would.
        for k in 0..3.min(live.len()) {
            let (_, h) = &live[(i * 7 + k * 13) % live.len()];
            if let Some(addr) = h.listen_addrs().first() {
                let _ = swarm.dial(addr.clone());
            }
        }
        let skills = workload.skills.clone();
        let seed = opts.seed ^ i as u64;
        jobs.push(tokio::spawn(forge(swarm, key, skills, seed)));
    }
    Ok(jobs)
}

fn announcement(key: &Keypair, seq: u64, skill: &str) -> TaskAnnounce {
    TaskAnnounce {
        task_id: TaskId {
            initiator: key.id(),
            seq,
        },
        description: "nothing to see".into(),
        required: vec![SkillRequirement {
            name: skill.into(),
            min_level: Level::Novice,
            count: 1,
        }],
        priority: Priority::Critical,
        created_at_ms: now_ms(),
        deadline_ms: now_ms() + 60_000,
        max_group_size: 1,
        depends_on: Vec::new(),
        payload: Vec::new(),
        round: 0,
        consensus: false,
    }
}

async fn forge(
    mut swarm: libp2p::Swarm<starling_node::behaviour::StarlingBehaviour>,
    key: Keypair,
    skills: Vec<String>,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / FORGER_RATE));
    let mut seq = now_ms() * 1000;
    let mut captured: Vec<Vec<u8>> = Vec::new();
    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(starling_node::behaviour::StarlingEvent::Gossipsub(
                    gossipsub::Event::Message { message, message_id, propagation_source },
                )) = event
                {
                    // Never vouch for anything (it would be forwarded under our name).
                    swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
                    if captured.len() < 64 {
                        captured.push(message.data);
                    }
                }
            }
            _ = tick.tick() => {
                seq += 1;
                let skill = &skills[rng.below(skills.len())];
                let topic = skill_topic(skill);
                let message = Message::TaskAnnounce(announcement(&key, seq, skill));
                let Ok(env) = SignedEnvelope::seal(&key, seq, now_ms(), Audience::Topic(topic.clone()), &message) else {
                    continue;
                };
                let mut bytes = env.into_bytes();
                match rng.below(4) {
                    // A signature that does not verify.
                    0 => { let n = bytes.len(); bytes[n - 1] ^= 0x55; }
                    // A body changed after signing.
                    1 => { let n = bytes.len(); bytes[n / 2] ^= 0x01; }
                    // An honest announcement replayed straight to a peer.
                    2 => {
                        if !captured.is_empty() {
                            let old = captured[rng.below(captured.len())].clone();
                            let peers: Vec<_> = swarm.connected_peers().copied().collect();
                            if !peers.is_empty() {
                                let p = peers[rng.below(peers.len())];
                                swarm.behaviour_mut().direct.send_request(&p, starling_node::codec::DirectFrame::Envelope(old));
                            }
                        }
                        continue;
                    }
                    // Spam: validly signed, never staffed.
                    _ => {}
                }
                let t = gossipsub::IdentTopic::new(topic);
                if let Err(e) = swarm.behaviour_mut().gossipsub.publish(t, bytes) {
                    debug!(error = %e, "forger publish failed");
                }
            }
        }
    }
}
