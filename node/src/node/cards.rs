//! Agent cards over gossip, so that every agent's skill directory is full before
//! its first task and tasks are staffed by invitation, not by asking the mesh.
//!
//! Every agent subscribes to [`CARDS_TOPIC`]. It publishes its signed card there
//! when it first meets a peer, again when its skills change materially (at most
//! once per [`CARD_MIN_INTERVAL`]) and at half the card's lifetime; and it asks
//! that first peer for the cards it holds (see `protocol/src/agent/cards.rs`).
//! The topic's thin gossip mesh carries a card to agents that joined long before;
//! what it misses (a mesh still forming, a graft refused) comes by anti-entropy:
//! every so often ([`SYNC_FIRST`], doubling up to [`SYNC_MAX`]) the agent asks
//! another connected peer for the cards it lacks, naming those it holds — an
//! answer is empty, and not sent, when directories agree.
//! A card costs each agent one signature check per new version: gossipsub drops
//! duplicate copies by message id, and a copy equal to the card held is passed on
//! without a check. A card's author is held to the broadcast budget, like an
//! announcement's.

use libp2p::{PeerId, gossipsub};
use starling_protocol::{
    AgentCard, CardNews, SignedCard,
    card::{CARD_TTL_MS, CARDS_TOPIC},
};
use tokio::time::Instant;
use tracing::debug;

use super::{NodeActor, discovery::CardDigest, now_ms};
use crate::swarm::agent_of;

/// A card whose skills changed is gossiped again at most this often.
const CARD_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// An unchanged card is gossiped again after half its lifetime.
const CARD_RENEW: std::time::Duration = std::time::Duration::from_millis(CARD_TTL_MS / 2);

/// The first anti-entropy exchange comes this long after the first contact.
const SYNC_FIRST: std::time::Duration = std::time::Duration::from_secs(10);
/// Anti-entropy exchanges double their spacing up to this.
const SYNC_MAX: std::time::Duration = std::time::Duration::from_secs(120);

/// What this node last gossiped of its card, and whether it has asked for cards.
#[derive(Debug, Default)]
pub(super) struct CardGossip {
    /// The skills part of the card last gossiped, and when.
    published: Option<(CardDigest, Instant)>,
    /// Whether a peer has been asked for its cards.
    asked: bool,
    /// The next anti-entropy exchange, and the spacing after it.
    sync: Option<(Instant, std::time::Duration)>,
    /// The peer asked last, so the next exchange is with another.
    last_asked: Option<PeerId>,
}

impl NodeActor {
    /// The node's signed card as it stands now.
    pub(super) fn sign_card(&self) -> Option<SignedCard> {
        let card = AgentCard {
            id: self.me,
            skills: self.agent.skills().cloned().collect(),
            addrs: super::links::advertised_addrs(&self.listen_addrs)
                .iter()
                .map(ToString::to_string)
                .collect(),
            load: self.agent.slots_used(),
            max_slots: self.agent.config().max_concurrent_tasks,
            version: now_ms(),
        };
        SignedCard::sign(&self.config.keypair, &card)
            .map_err(|e| debug!(error = %e, "cannot sign the card"))
            .ok()
    }

    /// The first peer is here: gossip the card and ask the peer for the cards it
    /// holds.
    pub(super) fn on_first_contact(&mut self, peer: PeerId) {
        self.gossip_card();
        if self.card_gossip.asked {
            return;
        }
        if let Some(a) = agent_of(&peer) {
            self.card_gossip.asked = true;
            self.card_gossip.last_asked = Some(peer);
            self.card_gossip.sync = Some((Instant::now() + SYNC_FIRST, SYNC_FIRST));
            let outputs = self.agent.ask_for_cards(now_ms(), a);
            self.carry(outputs);
        }
    }

    /// Asks another connected peer for the cards this agent lacks, if an
    /// exchange is due (see the module docs).
    pub(super) fn sync_cards(&mut self) {
        let now = Instant::now();
        let Some((at, wait)) = self.card_gossip.sync else {
            return;
        };
        if now < at {
            return;
        }
        let mut peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        if peers.is_empty() {
            return;
        }
        peers.sort();
        // The next peer after the one asked last, in id order, round the ring.
        let last = self.card_gossip.last_asked;
        let peer = peers.iter().find(|p| Some(**p) > last).unwrap_or(&peers[0]);
        let next = (wait * 2).min(SYNC_MAX);
        self.card_gossip.sync = Some((now + next, next));
        self.card_gossip.last_asked = Some(*peer);
        if let Some(a) = agent_of(peer) {
            let outputs = self.agent.ask_for_cards(now_ms(), a);
            self.carry(outputs);
        }
    }

    /// Gossips the card again if its skills changed (and the last one is at least
    /// [`CARD_MIN_INTERVAL`] old) or half its lifetime has passed; a change of load
    /// alone does not warrant one (load travels on protocol messages).
    pub(super) fn renew_card(&mut self) {
        let Some((digest, at)) = &self.card_gossip.published else {
            return;
        };
        let age = at.elapsed();
        let changed = !digest.same_skills(&CardDigest::of(&self.agent));
        if age >= CARD_RENEW || (changed && age >= CARD_MIN_INTERVAL) {
            self.gossip_card();
        }
    }

    fn gossip_card(&mut self) {
        let Some(signed) = self.sign_card() else {
            return;
        };
        self.card_gossip.published = Some((CardDigest::of(&self.agent), Instant::now()));
        self.agent.set_own_card(signed.clone());
        self.metrics.message_out("card");
        self.publish_bytes(CARDS_TOPIC.to_string(), signed.as_bytes().to_vec());
    }

    /// A card heard on the cards topic: passed on if it is new or the one held,
    /// ignored if older, rejected (costing the forwarder score) if forged.
    pub(super) fn on_card_gossip(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        data: Vec<u8>,
    ) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let now = now_ms();
        let verdict = SignedCard::from_bytes(data).and_then(|signed| {
            let author = signed.peek()?.id;
            if !self.broadcasts.allow(author, Instant::now()) {
                return Ok(None);
            }
            self.agent.learn_card(now, signed).map(Some)
        });
        let acceptance = match verdict {
            Ok(Some(news)) => {
                self.metrics.message_in("card");
                if news == CardNews::Fresh {
                    self.metrics.verifications.inc();
                }
                if news == CardNews::Stale {
                    Ignore
                } else {
                    Accept
                }
            }
            Ok(None) => {
                let reason = "a card's author exceeds its broadcast budget".to_string();
                self.refuse(agent_of(&source), "flood", reason);
                Reject
            }
            Err(e) => {
                self.metrics.verifications.inc();
                self.refuse(
                    agent_of(&source),
                    "invalid_card",
                    format!("invalid card: {e}"),
                );
                Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
    }
}
