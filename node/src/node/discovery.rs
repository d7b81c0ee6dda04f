//! Discovery through Kademlia: this agent's card and skills go into the DHT, inbound
//! records are validated before they are stored, and providers of a skill are found
//! and dialled so every skill topic has a mesh.

use std::collections::HashSet;

use libp2p::{
    PeerId,
    kad::{self, store::RecordStore},
};
use starling_protocol::{AgentCard, AgentId, Message, SignedCard, TaskId};
use tokio::{sync::oneshot, time::Instant};
use tracing::debug;

use super::{NodeActor, now_ms};
use crate::swarm::agent_of;

/// The DHT key under which agents provide a skill.
pub(crate) fn skill_key(skill: &str) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/starling/skill/{skill}"))
}

type CardQuery = (AgentId, Option<oneshot::Sender<Option<AgentCard>>>);
type ProviderQuery = (HashSet<PeerId>, oneshot::Sender<Vec<AgentId>>);

/// Queries a handle is waiting on.
#[derive(Default)]
pub(super) struct Queries {
    providers: std::collections::HashMap<kad::QueryId, ProviderQuery>,
    cards: std::collections::HashMap<kad::QueryId, CardQuery>,
    /// Provider lookups for a task whose gossip found too few agents.
    candidates: std::collections::HashMap<kad::QueryId, TaskId>,
    /// Who each task was announced to directly (never twice).
    contacted: std::collections::HashMap<TaskId, HashSet<AgentId>>,
}

/// Providers contacted directly per skill and round, at most.
const DIRECT_ANNOUNCE_LIMIT: usize = 16;
/// A changed card is republished at most this often.
const CARD_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest wait between provider lookups for a skill whose topic stays thin.
const LOOKUP_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// What of a card matters to those who read it: skills and levels, success rates
/// to a tenth, and whether the agent has a free slot. Other changes (a few more
/// completions, a slot taken and freed) do not warrant a republication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CardDigest {
    skills: Vec<(String, starling_protocol::Level, u32)>,
    full: bool,
}

impl CardDigest {
    fn of(agent: &starling_protocol::Agent) -> CardDigest {
        CardDigest {
            skills: agent
                .skills()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.level,
                        (s.success_rate * 10.0).round() as u32,
                    )
                })
                .collect(),
            full: agent.slots_used() >= agent.config().max_concurrent_tasks,
        }
    }
}

/// Discovery's memory between runs.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    /// The card last published, and when.
    card: Option<(CardDigest, Instant)>,
    /// Routing-table entries when the records were last published.
    routed_at_publish: Option<usize>,
    /// Per skill with a thin topic: when the next lookup may run, and the wait after it.
    backoff: std::collections::HashMap<String, (Instant, std::time::Duration)>,
}

impl NodeActor {
    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest { request } => self.on_inbound_record(request),
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) => {
                    if let Some((found, _)) = self.queries.providers.get_mut(&id) {
                        found.extend(providers.iter().copied());
                    }
                    if let Some(task_id) = self.queries.candidates.get(&id).copied() {
                        self.announce_directly(task_id, &providers);
                    }
                    self.connect_to(providers);
                    if step.last {
                        self.finish_provider_query(id);
                    }
                }
                kad::QueryResult::GetProviders(_) => self.finish_provider_query(id),
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                    let Some((agent, reply)) = self.queries.cards.get_mut(&id) else {
                        return;
                    };
                    // Records from the DHT are untrusted: verify before answering.
                    match SignedCard::verify(&found.record.value, Some(agent)) {
                        Ok(card) => {
                            if let Some(reply) = reply.take() {
                                let _ = reply.send(Some(card));
                            }
                        }
                        Err(e) => debug!(error = %e, "discarding an invalid card from the DHT"),
                    }
                    if step.last {
                        self.finish_card_query(id);
                    }
                }
                kad::QueryResult::GetRecord(_) => self.finish_card_query(id),
                _ => {}
            },
            _ => {}
        }
    }

    /// Looks up providers of skills a task still lacks agents for; each is sent the
    /// announcement directly (see [`NodeActor::announce_directly`]).
    pub(super) fn seek_candidates(&mut self, task_id: TaskId, skills: &[String]) {
        for skill in skills {
            debug!(task = %task_id, %skill, reason = "candidates", "looking up providers");
            let id = self.find_providers(skill);
            self.queries.candidates.insert(id, task_id);
        }
    }

    /// Sends a task's announcement straight to providers found in the DHT, for when
    /// gossip does not reach them; they answer with offers as usual.
    fn announce_directly(&mut self, task_id: TaskId, providers: &HashSet<PeerId>) {
        let Some(announce) = self.agent.announcement(&task_id).cloned() else {
            return;
        };
        let me = self.me;
        let contacted = self.queries.contacted.entry(task_id).or_default();
        let fresh: Vec<AgentId> = providers
            .iter()
            .filter_map(agent_of)
            .filter(|a| *a != me && contacted.insert(*a))
            .take(DIRECT_ANNOUNCE_LIMIT)
            .collect();
        for to in fresh {
            debug!(task = %task_id, peer = %to, "announcing directly to a provider found in the DHT");
            let outputs =
                self.agent
                    .send_message(now_ms(), to, Message::TaskAnnounce(announce.clone()));
            self.carry(outputs);
        }
    }

    /// Forgets per-task discovery state once a task is over.
    pub(super) fn forget_task(&mut self, task_id: &TaskId) {
        self.queries.contacted.remove(task_id);
        self.queries.candidates.retain(|_, t| t != task_id);
    }

    fn finish_provider_query(&mut self, id: kad::QueryId) {
        self.queries.candidates.remove(&id);
        if let Some((found, reply)) = self.queries.providers.remove(&id) {
            let _ = reply.send(found.iter().filter_map(agent_of).collect());
        }
    }

    fn finish_card_query(&mut self, id: kad::QueryId) {
        if let Some((_, Some(reply))) = self.queries.cards.remove(&id) {
            let _ = reply.send(None);
        }
    }

    /// FilterBoth: records other peers ask us to store are checked here first.
    fn on_inbound_record(&mut self, request: kad::InboundRequest) {
        match request {
            kad::InboundRequest::PutRecord {
                source,
                record: Some(record),
                ..
            } => {
                let key = String::from_utf8_lossy(record.key.as_ref()).to_string();
                let owner = key
                    .strip_prefix("/starling/agent/")
                    .and_then(|s| s.parse::<AgentId>().ok());
                let Some(owner) = owner else {
                    let reason = format!("record under a foreign key {key}");
                    return self.refuse(agent_of(&source), "invalid_record", reason);
                };
                // A card is stored under its agent's id only if that agent signed it.
                match SignedCard::verify(&record.value, Some(&owner)) {
                    Ok(_) => {
                        if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
                            debug!(error = %e, "cannot store card");
                        }
                    }
                    Err(e) => self.refuse(
                        agent_of(&source),
                        "invalid_record",
                        format!("invalid card: {e}"),
                    ),
                }
            }
            kad::InboundRequest::AddProvider {
                record: Some(provider),
            } => {
                if provider.key.as_ref().starts_with(b"/starling/skill/") {
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .add_provider(provider)
                    {
                        debug!(error = %e, "cannot store provider record");
                    }
                } else {
                    let reason = "provider record outside /starling/skill/".to_string();
                    self.refuse(agent_of(&provider.provider), "invalid_record", reason);
                }
            }
            _ => {}
        }
    }

    /// Dials a few providers we are not connected to, so their skill topics have a
    /// mesh (a mesh needs `mesh_n` peers; a few more give gossip spare paths).
    fn connect_to(&mut self, providers: HashSet<PeerId>) {
        let me = *self.swarm.local_peer_id();
        let mut fresh: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| *p != me && !self.swarm.is_connected(p))
            .collect();
        fresh.sort();
        for p in fresh.into_iter().take(self.config.mesh_n * 2) {
            let _ = self.swarm.dial(p);
        }
    }

    pub(super) fn find_providers(&mut self, skill: &str) -> kad::QueryId {
        self.swarm
            .behaviour_mut()
            .kad
            .get_providers(skill_key(skill))
    }

    /// Starts a provider lookup a handle waits on.
    pub(super) fn query_providers(&mut self, skill: &str, reply: oneshot::Sender<Vec<AgentId>>) {
        let id = self.find_providers(skill);
        self.queries.providers.insert(id, (HashSet::new(), reply));
    }

    /// Starts a card lookup a handle waits on.
    pub(super) fn query_card(&mut self, agent: AgentId, reply: oneshot::Sender<Option<AgentCard>>) {
        let key = kad::RecordKey::new(&SignedCard::dht_key(&agent));
        let id = self.swarm.behaviour_mut().kad.get_record(key);
        self.queries.cards.insert(id, (agent, Some(reply)));
    }

    /// Publishes this agent's signed card, provides its skills and looks for other
    /// providers of them. Runs at start, when the routing table first fills, and every
    /// discovery interval — but does only what is due, so an idle mesh stays quiet:
    /// card and provider records go out on the 1st run and again once the routing
    /// table has grown (the DHT's closest nodes change while a mesh forms around a
    /// newcomer), and the card again whenever it changes materially (see
    /// [`CardDigest`]); Kademlia
    /// republishes them at half their lifetime otherwise. Providers of a skill are
    /// looked up only while too few connected agents subscribe to its topic, and then
    /// with a backoff that doubles while lookups find nobody new.
    pub(super) fn discover(&mut self) {
        if !self.discovered_with_peers {
            return;
        }
        self.discovery_runs += 1;
        let runs = self.discovery_runs;
        let now = Instant::now();
        let digest = CardDigest::of(&self.agent);
        let changed =
            self.lookups.card.as_ref().is_some_and(|(d, at)| {
                *d != digest && now.duration_since(*at) >= CARD_MIN_INTERVAL
            });
        // Records go out at the first run, and again once the routing table has
        // grown fourfold or filled a bucket's worth, if it was small then: the peers
        // closest to a key change as a mesh forms around a newcomer, and records
        // stored with the first few would not be found. A settled mesh adds nothing.
        let routed: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let grown = self.lookups.routed_at_publish.is_some_and(|at| {
            at < kad::K_VALUE.get() && routed >= (4 * at.max(1)).min(kad::K_VALUE.get())
        });
        // And once more at the fourth run if the table has grown at all by then: a
        // newcomer to a large mesh knows little more than its way in at the first.
        let later = runs == 4 && self.lookups.routed_at_publish.is_some_and(|at| routed > at);
        let publish = runs == 1 || grown || later;
        if publish {
            self.lookups.routed_at_publish = Some(routed);
        }
        if publish || changed {
            self.publish_card();
            self.lookups.card = Some((digest, now));
        }
        let skills: Vec<String> = self.agent.skills().map(|s| s.name.clone()).collect();
        let low = self.config.mesh_n.saturating_sub(1).max(1);
        for skill in skills {
            if publish
                && let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(skill_key(&skill))
            {
                debug!(error = %e, "cannot provide");
            }
            let topic = libp2p::gossipsub::IdentTopic::new(starling_protocol::skill_topic(&skill));
            let hash = topic.hash();
            // Connected subscribers, meshed or not: gossipsub grafts from these
            // itself, so a lookup is needed only when there are too few of them.
            let known = self
                .swarm
                .behaviour()
                .gossipsub
                .all_peers()
                .filter(|(_, ts)| ts.contains(&&hash))
                .count();
            // At the first run the peers met while joining have not all told us
            // their subscriptions yet: look up only a skill nobody connected has.
            if known >= low || (runs == 1 && known > 0) {
                self.lookups.backoff.remove(&skill);
                continue;
            }
            let (next, wait) = self
                .lookups
                .backoff
                .get(&skill)
                .copied()
                .unwrap_or((now, self.config.discovery_interval / 2));
            if now < next {
                continue;
            }
            debug!(%skill, known, reason = "thin mesh", "looking up providers");
            self.find_providers(&skill);
            let wait = (wait * 2).min(LOOKUP_BACKOFF_MAX);
            self.lookups.backoff.insert(skill, (now + wait, wait));
        }
        if runs == 1 {
            // Joining is a lookup of our own id (it fills the buckets near us and
            // makes us known there); Kademlia's full bootstrap also walks a random
            // key in every bucket, a dozen lookups more, and runs every 30 min.
            let me = *self.swarm.local_peer_id();
            self.swarm.behaviour_mut().kad.get_closest_peers(me);
        }
        self.save_reputation();
    }

    fn publish_card(&mut self) {
        let card = AgentCard {
            id: self.me,
            skills: self.agent.skills().cloned().collect(),
            addrs: self.listen_addrs.iter().map(ToString::to_string).collect(),
            load: self.agent.slots_used(),
            max_slots: self.agent.config().max_concurrent_tasks,
            version: now_ms(),
        };
        match SignedCard::sign(&self.config.keypair, &card) {
            Ok(signed) => {
                let key = kad::RecordKey::new(&SignedCard::dht_key(&self.me));
                let record = kad::Record::new(key, signed.as_bytes().to_vec());
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One)
                {
                    debug!(error = %e, "cannot publish the card");
                }
            }
            Err(e) => debug!(error = %e, "cannot sign the card"),
        }
    }
}
