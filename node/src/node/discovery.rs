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
/// How often the node refreshes its whole routing table (Kademlia's bootstrap).
const BOOTSTRAP_EVERY: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// What of a card matters to those who read it: skills and levels, success rates
/// to a tenth, and whether the agent has a free slot. Other changes (a few more
/// completions, a slot taken and freed) do not warrant a republication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CardDigest {
    skills: Vec<(String, starling_protocol::Level, u32)>,
    full: bool,
}

impl CardDigest {
    pub(super) fn of(agent: &starling_protocol::Agent) -> CardDigest {
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

    /// Whether the skills part is the same (load aside).
    pub(super) fn same_skills(&self, other: &CardDigest) -> bool {
        self.skills == other.skills
    }
}

/// Discovery's memory between runs.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    /// The join walk (a lookup of our own id) while it runs.
    join: Option<kad::QueryId>,
    /// Whether the join walk is over: records go out only then, to the peers that
    /// are closest to their keys in the table it filled.
    joined: bool,
    /// The node's own routing-table refresh, while it runs, and when it last began.
    bootstrap: Option<kad::QueryId>,
    /// When the last refresh began (the join walk counts as one).
    bootstrapped_at: Option<Instant>,
    /// The card last published, and when.
    card: Option<(CardDigest, Instant)>,
    /// Routing-table entries when the records were last published.
    routed_at_publish: Option<usize>,
    /// Per skill with a thin topic: when the next lookup may run, and the wait after it.
    pub(super) backoff: std::collections::HashMap<String, (Instant, std::time::Duration)>,
    /// Provider publications sent again because contacts failed, per key.
    retried: std::collections::HashMap<kad::RecordKey, u32>,
    /// Provider publications under way.
    providing: HashSet<kad::QueryId>,
    /// Whether the join's own provider publications (retries included) are over.
    published: bool,
}

/// How often a provider publication whose contacts failed is sent again.
const PROVIDE_RETRIES: u32 = 3;

impl Lookups {
    /// Whether the join is over: the join walk, and the provider publications
    /// that follow it (retries included). Stays true once it is.
    pub(super) fn joined(&self) -> bool {
        self.joined && self.published
    }

    /// A provider publication ended.
    fn provided(&mut self, id: kad::QueryId) {
        self.providing.remove(&id);
        if self.joined && self.providing.is_empty() {
            self.published = true;
        }
    }
}

impl NodeActor {
    pub(super) fn on_kad(&mut self, event: kad::Event) {
        self.cut_automatic_bootstraps();
        match event {
            kad::Event::InboundRequest { request } => self.on_inbound_record(request),
            kad::Event::RoutingUpdated {
                is_new_peer: true, ..
            } => self.publish_if_grown(),
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::PutRecord(_) | kad::QueryResult::GetClosestPeers(_),
                step,
                ..
            } if step.last && self.lookups.join == Some(id) => self.on_joined(),
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::StartProviding(result),
                stats,
                step,
                ..
            } if step.last => {
                self.on_provided(result, &stats);
                self.lookups.provided(id);
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::Bootstrap(_),
                step,
                ..
            } if step.last && self.lookups.bootstrap == Some(id) => self.lookups.bootstrap = None,
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

    /// The periodic round of discovery; it does only what is due, so an idle mesh
    /// stays quiet. The first round (as soon as the routing table has an entry)
    /// starts the join walk, a lookup of our own id: it fills the buckets near us
    /// and makes us known there. When it ends, the card and provider records go
    /// out and thin skill topics are filled (see [`NodeActor::on_joined`]).
    /// After that a round republishes the card when it changed materially
    /// (see [`CardDigest`]) — Kademlia republishes records at half their lifetime
    /// otherwise — and, while too few connected agents subscribe to a skill's
    /// topic, dials holders named by their cards, or failing those looks the
    /// skill's providers up (see `meshes`).
    pub(super) fn discover(&mut self) {
        if !self.discovered_with_peers {
            return;
        }
        self.discovery_runs += 1;
        if self.discovery_runs == 1 {
            // Publishing the card is the join walk: it fills the table and makes
            // us known along the way; the provider records go out once it has
            // (they start from a table that knows more than the way in). If it
            // cannot even start, the walk is a lookup of our own id.
            self.lookups.join = self.publish_card().or_else(|| {
                let me = *self.swarm.local_peer_id();
                Some(self.swarm.behaviour_mut().kad.get_closest_peers(me))
            });
        }
        if !self.lookups.joined {
            return;
        }
        let now = Instant::now();
        // The first refresh comes a period after the join walk, which did its work.
        let due = self
            .lookups
            .bootstrapped_at
            .is_some_and(|at| now.duration_since(at) >= BOOTSTRAP_EVERY);
        if due && self.lookups.bootstrap.is_none() {
            self.lookups.bootstrapped_at = Some(now);
            self.lookups.bootstrap = self.swarm.behaviour_mut().kad.bootstrap().ok();
        }
        let digest = CardDigest::of(&self.agent);
        let changed =
            self.lookups.card.as_ref().is_some_and(|(d, at)| {
                *d != digest && now.duration_since(*at) >= CARD_MIN_INTERVAL
            });
        if changed {
            self.publish_card();
        }
        self.renew_card();
        self.seek_thin_meshes(false);
        self.save_reputation();
    }

    /// Kademlia starts a bootstrap of its own whenever a peer enters a table of
    /// fewer than 20 entries (and cannot be told not to): at a join that is a walk
    /// of our own id and of a random key in every farther bucket, again and again
    /// while the table fills — most of a join's lookups, and each contact a fresh
    /// connection. The join walk has done that work, and the node refreshes its
    /// table itself every [`BOOTSTRAP_EVERY`]: any other bootstrap is cut short
    /// as soon as it is seen.
    fn cut_automatic_bootstraps(&mut self) {
        let ours = self.lookups.bootstrap;
        for mut q in self.swarm.behaviour_mut().kad.iter_queries_mut() {
            if matches!(q.info(), kad::QueryInfo::Bootstrap { .. }) && Some(q.id()) != ours {
                q.finish();
            }
        }
    }

    /// The join walk is over: publish, and fill the skill topics nobody
    /// connected subscribes to.
    fn on_joined(&mut self) {
        self.lookups.join = None;
        self.lookups.joined = true;
        self.lookups.bootstrapped_at = Some(Instant::now());
        self.provide_skills();
        self.seek_thin_meshes(true);
    }

    /// Publishes again whenever the routing table has doubled since the last
    /// publication: the peers closest to a key change as the mesh grows around an
    /// early member, and records it stored with its first neighbours would not be
    /// found where later lookups go. A table grows with the logarithm of the mesh,
    /// so the first members of a mesh of N publish about log₂ of their table's
    /// final size times, later ones once or twice — and a settled mesh, whose
    /// tables stop growing, publishes nothing.
    fn publish_if_grown(&mut self) {
        let Some(at) = self.lookups.routed_at_publish else {
            return;
        };
        if self.routed() >= 2 * at.max(1) {
            self.publish_records();
        }
    }

    /// Routing-table entries.
    fn routed(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }

    /// The card, and a provider record per skill.
    fn publish_records(&mut self) {
        self.publish_card();
        self.provide_skills();
    }

    /// A provider publication is over. The record went to the closest peers of
    /// those that answered the walk; if fewer than the replication factor
    /// answered (or, in a smaller mesh, fewer than the routing table knows) —
    /// contacts failed on the way: a peer that closed an idle connection just as
    /// a request went out counts as failed — it may sit on too few peers, or on
    /// peers later lookups do not reach: it goes out again, a few times at most.
    /// A walk with a failure or two among plenty of answers stored it where
    /// lookups go (and each holder names its providers in turn, see `records`),
    /// so it is not repeated: repeating it cost a join about as much again. (A
    /// table that grows much later publishes anew: see `publish_if_grown`.)
    fn on_provided(&mut self, result: kad::AddProviderResult, stats: &kad::QueryStats) {
        // A mesh smaller than the replication factor cannot give that many
        // answers: there, every peer the table knows answering is enough.
        let enough = crate::behaviour::REPLICATION.min(self.routed());
        let (key, failed) = match result {
            Ok(kad::AddProviderOk { key }) => (key, (stats.num_successes() as usize) < enough),
            Err(kad::AddProviderError::Timeout { key }) => (key, true),
        };
        if !failed {
            self.lookups.retried.remove(&key);
            return;
        }
        let tries = self.lookups.retried.entry(key.clone()).or_default();
        if *tries >= PROVIDE_RETRIES {
            self.lookups.retried.remove(&key);
            return;
        }
        *tries += 1;
        debug!(
            failures = stats.num_failures(),
            "publishing a provider record again"
        );
        self.start_providing(key);
    }

    fn start_providing(&mut self, key: kad::RecordKey) {
        match self.swarm.behaviour_mut().kad.start_providing(key) {
            Ok(id) => {
                self.lookups.providing.insert(id);
            }
            Err(e) => debug!(error = %e, "cannot provide"),
        }
    }

    /// A provider record per skill.
    fn provide_skills(&mut self) {
        self.lookups.routed_at_publish = Some(self.routed());
        let skills: Vec<String> = self.agent.skills().map(|s| s.name.clone()).collect();
        for skill in skills {
            self.start_providing(skill_key(&skill));
        }
        // An agent with no skills publishes nothing: its join is the walk.
        self.lookups.published |= self.lookups.joined && self.lookups.providing.is_empty();
    }

    fn publish_card(&mut self) -> Option<kad::QueryId> {
        self.lookups.card = Some((CardDigest::of(&self.agent), Instant::now()));
        let signed = self.sign_card()?;
        let key = kad::RecordKey::new(&SignedCard::dht_key(&self.me));
        let record = kad::Record::new(key, signed.as_bytes().to_vec());
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One)
        {
            Ok(id) => Some(id),
            Err(e) => {
                debug!(error = %e, "cannot publish the card");
                None
            }
        }
    }
}
