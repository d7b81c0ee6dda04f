//! Agent cards in the directory: how an agent learns, before its first task, whom
//! it could invite.
//!
//! The runtime hands over the cards it hears on [`CARDS_TOPIC`](crate::card::CARDS_TOPIC)
//! ([`Agent::learn_card`]) and sets this agent's own ([`Agent::set_own_card`]). An
//! agent asks a peer for the cards it lacks ([`Message::CardsRequest`], naming the
//! ones it holds): a joining agent its first peer, and every agent now and then
//! another, so that a card gossip did not bring still arrives. The peer answers
//! with the current cards it holds (its own among them) that the asker lacks or
//! holds older, newest first, within [`CARDS_BUDGET`] bytes — nothing if there are
//! none — and answers the same asker at most once per [`ANSWER_EVERY_MS`], so a
//! request cannot be turned into a flood of answers. Every
//! card is checked with its own agent's signature, whoever relayed it; a card no
//! newer than the one held costs no signature check.

use std::collections::{BTreeMap, HashMap};

use super::{Agent, Output, Timestamp};
use crate::{AgentId, Message, Result, SignedCard, card::CardStamp, replay::DEFAULT_SKEW_MS};

/// Bytes of cards in one answer: well within a message's limit.
pub(crate) const CARDS_BUDGET: usize = 768 * 1024;
/// An asker gets an answer at most this often (ms).
pub(crate) const ANSWER_EVERY_MS: u64 = 60_000;
/// Askers remembered for the rate limit, at most.
const ANSWERED_MEMORY: usize = 1024;

/// What a card brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardNews {
    /// A newer card than any held for its agent (verified and taken).
    Fresh,
    /// The card held already (verified when it first came): nothing new, but an
    /// honest copy, worth passing on.
    Known,
    /// An older card than the one held, one no longer current, or this agent's
    /// own: not taken, not worth passing on.
    Stale,
}

/// This agent's side of the card exchange.
#[derive(Debug, Default)]
pub(crate) struct CardExchange {
    /// This agent's own card, as last published.
    own: Option<SignedCard>,
    /// When each asker was last answered.
    answered: BTreeMap<AgentId, Timestamp>,
    /// Peers asked for their cards, and when: only their answers are taken.
    asked: BTreeMap<AgentId, Timestamp>,
}

impl Agent {
    /// A card heard from the mesh (gossip or a relay). A card is taken if it is
    /// current (see [`AgentCard::is_current`](crate::AgentCard::is_current)), newer
    /// than the one held for its agent, and its signature verifies; one equal to
    /// the one held is [`CardNews::Known`] with no check. An error means the card is
    /// forged or malformed: whoever sent it is lying or broken.
    pub fn learn_card(&mut self, now: Timestamp, signed: SignedCard) -> Result<CardNews> {
        self.now = self.now.max(now);
        let card = signed.peek()?;
        if card.id == self.id || !card.is_current(now, DEFAULT_SKEW_MS) {
            return Ok(CardNews::Stale);
        }
        match self.directory.card_of(&card.id) {
            Some((v, held)) if *v == card.version && *held == signed => {
                return Ok(CardNews::Known);
            }
            Some((v, _)) if *v >= card.version => return Ok(CardNews::Stale),
            _ => {}
        }
        let card = SignedCard::verify(signed.as_bytes(), None)?;
        let capacity = self.config.directory_capacity;
        self.directory.learn_card(&card, signed, now, capacity);
        Ok(CardNews::Fresh)
    }

    /// This agent's own card, as the runtime last signed and published it: it goes
    /// into every answer to a [`Message::CardsRequest`].
    pub fn set_own_card(&mut self, signed: SignedCard) {
        self.cards.own = Some(signed);
    }

    /// Asks `peer` for the cards it holds that this agent lacks (when joining, so
    /// that the directory is full before the first task, and now and then after).
    /// Its answer is taken within [`ANSWER_EVERY_MS`]; an answer nobody asked for
    /// is ignored.
    pub fn ask_for_cards(&mut self, now: Timestamp, peer: AgentId) -> Vec<Output> {
        self.now = self.now.max(now);
        let asked = &mut self.cards.asked;
        asked.retain(|_, at| now.saturating_sub(*at) < ANSWER_EVERY_MS);
        if peer == self.id || asked.len() >= ANSWERED_MEMORY {
            return Vec::new();
        }
        asked.insert(peer, now);
        let held = self.directory.stamps(now);
        self.send_message(now, peer, Message::CardsRequest { held })
    }

    /// The addresses `agent`'s card gives (as it wrote them), for reaching an agent
    /// known only from its card.
    pub fn card_addrs(&self, agent: &AgentId) -> Vec<String> {
        self.directory
            .card_of(agent)
            .and_then(|(_, c)| c.peek().ok())
            .map(|c| c.addrs)
            .unwrap_or_default()
    }

    /// Other agents whose current card lists `skill`, reachable at
    /// [`Agent::card_addrs`]: a skill topic's mesh is found among them without a
    /// lookup in the DHT.
    pub fn skill_holders(&self, skill: &str) -> Vec<AgentId> {
        let me = self.id();
        self.directory
            .holders(skill, self.now)
            .filter(|a| **a != me)
            .copied()
            .collect()
    }

    /// How many agents the directory holds a current card of.
    pub fn cards_known(&self) -> usize {
        self.directory.current_cards(self.now)
    }

    pub(super) fn on_cards_request(&mut self, from: AgentId, held: &[CardStamp]) {
        let now = self.now;
        let answered = &mut self.cards.answered;
        if answered
            .get(&from)
            .is_some_and(|at| now.saturating_sub(*at) < ANSWER_EVERY_MS)
        {
            return self.stray(from, "cards asked for again too soon");
        }
        answered.retain(|_, at| now.saturating_sub(*at) < ANSWER_EVERY_MS);
        if answered.len() >= ANSWERED_MEMORY {
            return self.stray(from, "too many agents asking for cards");
        }
        answered.insert(from, now);
        let held: HashMap<u64, u64> = held.iter().map(|s| (s.agent, s.version)).collect();
        let lacks = |id: &AgentId, version: u64| {
            *id != from
                && held
                    .get(&CardStamp::prefix(id))
                    .is_none_or(|v| *v < version)
        };
        let own = self
            .cards
            .own
            .clone()
            .filter(|c| c.peek().is_ok_and(|card| lacks(&card.id, card.version)));
        let budget = CARDS_BUDGET - own.as_ref().map_or(0, |c| c.as_bytes().len());
        let cards: Vec<SignedCard> = own
            .into_iter()
            .chain(self.directory.cards(now, budget, lacks))
            .collect();
        if !cards.is_empty() {
            self.send(from, Message::Cards { cards });
        }
    }

    pub(super) fn on_cards(&mut self, from: AgentId, cards: Vec<SignedCard>) {
        let now = self.now;
        if self
            .cards
            .asked
            .remove(&from)
            .is_none_or(|at| now.saturating_sub(at) >= ANSWER_EVERY_MS)
        {
            return self.stray(from, "cards nobody asked for");
        }
        let mut forged = 0;
        for card in cards {
            if self.learn_card(now, card).is_err() {
                forged += 1;
            }
        }
        if forged > 0 {
            self.misbehaved(from, format!("relayed {forged} forged or malformed cards"));
        }
    }
}
