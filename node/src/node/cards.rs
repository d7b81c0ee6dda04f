//! Agent cards over gossip, so that every agent's skill directory is full before
//! its first task and tasks are staffed by invitation, not by asking the mesh.
//!
//! Every agent subscribes to [`CARDS_TOPIC`]. It publishes its signed card there
//! when it first meets a peer, again when its skills change materially (at most
//! once per [`CARD_MIN_INTERVAL`]) and at half the card's lifetime; and it asks
//! that first peer for the cards it holds (see `protocol/src/agent/cards.rs`).
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

/// What this node last gossiped of its card, and whether it has asked for cards.
#[derive(Debug, Default)]
pub(super) struct CardGossip {
    /// The skills part of the card last gossiped, and when.
    published: Option<(CardDigest, Instant)>,
    /// Whether a peer has been asked for its cards.
    asked: bool,
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
