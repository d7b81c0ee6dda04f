//! The skill directory: what this agent has learnt of other agents' skills and free
//! slots, so that its tasks can be staffed by invitation, without asking the mesh.
//!
//! Entries come from signed messages only. An agent's card (see [`crate::card`]:
//! gossiped when it joins, relayed to agents that join later) gives all its skills
//! and its load when it signed it, so a directory is full before its agent's first
//! task; a skill offer gives the offerer's metrics for that skill and its free
//! slots; acceptances, refusals and completions carry the sender's free slots, so
//! what the directory believes of an agent's load is as fresh as the last exchange
//! with it. A refusal for a lasting reason drops the skill; an invitation left
//! unanswered drops the agent. An entry lasts while its card is current, or
//! ([`AgentConfig::directory_ttl_ms`](crate::AgentConfig)) after the agent was last
//! heard from, and the directory is bounded (`directory_capacity`): when full, the
//! entry heard from longest ago goes.
//!
//! Staffing from it ([`Directory::sample`]) ranks the agents with a free slot by the
//! offer score plus a little random jitter ([`JITTER`]): agents whose scores are that
//! close come in varying order, so concurrent coordinators with the same directory
//! spread their invitations instead of all inviting the agent that ranks first, while
//! a clearly better agent always comes before a clearly worse one (Sparrow's batch
//! sampling with late binding: invite a few, keep the next as standbys).

use std::collections::{BTreeMap, BTreeSet};

use super::{Timestamp, coordinator::Candidate};
use crate::{
    AgentCard, AgentId, Level, SignedCard, Skill,
    card::{CARD_TTL_MS, CardStamp},
    scoring,
};

/// The most random jitter added to a candidate's score when ranking: offer scores
/// run from 0 to 1, so agents within 0.05 of each other are told apart by chance.
pub(crate) const JITTER: f64 = 0.05;

/// What the directory knows of one agent.
#[derive(Debug, Clone)]
struct Entry {
    /// Its skills, as its last offer for each described them.
    skills: BTreeMap<String, Skill>,
    /// Free slots, as it last said, less invitations sent to it since.
    free: u32,
    /// Its slots in all.
    max: u32,
    /// When it was last heard from.
    seen: Timestamp,
    /// Its newest card: the version and the signed bytes, relayed to agents that ask.
    card: Option<(u64, SignedCard)>,
}

impl Entry {
    fn lasts(&self, now: Timestamp, ttl: u64) -> bool {
        now.saturating_sub(self.seen) < ttl
            || self
                .card
                .as_ref()
                .is_some_and(|(v, _)| v.saturating_add(CARD_TTL_MS) > now)
    }
}

/// Known agents, their skills and load (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Directory {
    entries: BTreeMap<AgentId, Entry>,
}

impl Directory {
    /// How many agents it knows.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// An offer from `agent`: its metrics for `skill` and its load.
    pub(crate) fn learn_skill(
        &mut self,
        agent: AgentId,
        skill: &Skill,
        (free, max): (u32, u32),
        now: Timestamp,
        capacity: usize,
    ) {
        if !self.entries.contains_key(&agent) {
            self.make_room(capacity);
            if capacity == 0 {
                return;
            }
        }
        let e = self.entries.entry(agent).or_insert_with(|| Entry {
            skills: BTreeMap::new(),
            free,
            max,
            seen: now,
            card: None,
        });
        e.skills.insert(skill.name.clone(), skill.clone());
        e.free = free.min(max);
        e.max = max;
        e.seen = now;
    }

    /// The version and bytes of the card held for `agent`.
    pub(crate) fn card_of(&self, agent: &AgentId) -> Option<&(u64, SignedCard)> {
        self.entries.get(agent).and_then(|e| e.card.as_ref())
    }

    /// A verified card, newer than the one held: its skills replace what the
    /// directory knew of them, and its load stands unless the agent has said
    /// something since it signed the card.
    pub(crate) fn learn_card(
        &mut self,
        card: &AgentCard,
        signed: SignedCard,
        now: Timestamp,
        capacity: usize,
    ) {
        if !self.entries.contains_key(&card.id) {
            self.make_room(capacity);
            if capacity == 0 {
                return;
            }
        }
        let max = card.max_slots;
        let free = max.saturating_sub(card.load);
        let e = self.entries.entry(card.id).or_insert_with(|| Entry {
            skills: BTreeMap::new(),
            free,
            max,
            seen: card.version.min(now),
            card: None,
        });
        e.skills = card
            .skills
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        e.max = max;
        if e.seen <= card.version {
            e.free = free;
            e.seen = card.version.min(now);
        }
        e.free = e.free.min(max);
        e.card = Some((card.version, signed));
        if e.skills.is_empty() {
            self.entries.remove(&card.id);
        }
    }

    /// How many current cards it holds.
    pub(crate) fn current_cards(&self, now: Timestamp) -> usize {
        self.entries
            .values()
            .filter(|e| {
                e.card
                    .as_ref()
                    .is_some_and(|(v, _)| v.saturating_add(CARD_TTL_MS) > now)
            })
            .count()
    }

    /// The current cards held, as stamps.
    pub(crate) fn stamps(&self, now: Timestamp) -> Vec<CardStamp> {
        self.entries
            .iter()
            .filter_map(|(id, e)| Some((id, e.card.as_ref()?.0)))
            .filter(|(_, v)| v.saturating_add(CARD_TTL_MS) > now)
            .map(|(id, version)| CardStamp {
                agent: CardStamp::prefix(id),
                version,
            })
            .collect()
    }

    /// The current cards held that `lacks` says are wanted, newest first, as
    /// many as fit in `budget` bytes.
    pub(crate) fn cards(
        &self,
        now: Timestamp,
        budget: usize,
        lacks: impl Fn(&AgentId, u64) -> bool,
    ) -> Vec<SignedCard> {
        let mut held: Vec<&(u64, SignedCard)> = self
            .entries
            .iter()
            .filter_map(|(id, e)| e.card.as_ref().filter(|(v, _)| lacks(id, *v)))
            .filter(|(v, _)| v.saturating_add(CARD_TTL_MS) > now)
            .collect();
        held.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut used = 0;
        held.into_iter()
            .map(|(_, c)| c)
            .take_while(|c| {
                used += c.as_bytes().len() + 4;
                used <= budget
            })
            .cloned()
            .collect()
    }

    /// `agent` said it has `free` slots (an acceptance, refusal or completion).
    pub(crate) fn learn_load(&mut self, agent: AgentId, free: u32, now: Timestamp) {
        if let Some(e) = self.entries.get_mut(&agent) {
            e.free = free.min(e.max);
            e.seen = now;
        }
    }

    /// An invitation went to `agent`: one slot fewer until it answers.
    pub(crate) fn reserve(&mut self, agent: AgentId) {
        if let Some(e) = self.entries.get_mut(&agent) {
            e.free = e.free.saturating_sub(1);
        }
    }

    /// `agent` cannot do `skill` (it said so, for a reason that lasts).
    pub(crate) fn forget_skill(&mut self, agent: AgentId, skill: &str) {
        if let Some(e) = self.entries.get_mut(&agent) {
            e.skills.remove(skill);
            if e.skills.is_empty() {
                self.entries.remove(&agent);
            }
        }
    }

    /// `agent` did not answer: it may be gone.
    pub(crate) fn forget(&mut self, agent: AgentId) {
        self.entries.remove(&agent);
    }

    /// Drops entries whose card is no longer current and that were not heard from
    /// within `ttl` of `now`.
    pub(crate) fn expire(&mut self, now: Timestamp, ttl: u64) {
        self.entries.retain(|_, e| e.lasts(now, ttl));
    }

    fn make_room(&mut self, capacity: usize) {
        while !self.entries.is_empty() && self.entries.len() >= capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(a, e)| (e.seen, **a))
                .map(|(a, _)| *a);
            match oldest {
                Some(a) => self.entries.remove(&a),
                None => break,
            };
        }
    }

    /// Agents with a free slot that can do `skill` at `min_level` or better, except
    /// `skip`, with their scores.
    fn eligible(
        &self,
        skill: &str,
        min_level: Level,
        skip: &BTreeSet<AgentId>,
        reputation: &dyn Fn(&AgentId) -> scoring::Reputation,
    ) -> Vec<Candidate> {
        self.entries
            .iter()
            .filter(|(a, e)| e.free > 0 && !skip.contains(a))
            .filter_map(|(a, e)| {
                let s = e.skills.get(skill).filter(|s| s.level >= min_level)?;
                Some(Candidate {
                    agent: *a,
                    score: scoring::offer_score(s, min_level, e.free, e.max, reputation(a)),
                })
            })
            .collect()
    }

    /// Agents whose current card lists `skill` (at any level): whom a skill
    /// topic's gossip mesh can be formed with, reached at their cards' addresses.
    pub(crate) fn holders<'a>(
        &'a self,
        skill: &'a str,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a AgentId> + 'a {
        self.entries
            .iter()
            .filter(move |(_, e)| {
                e.skills.contains_key(skill)
                    && e.card
                        .as_ref()
                        .is_some_and(|(v, _)| v.saturating_add(CARD_TTL_MS) > now)
            })
            .map(|(a, _)| a)
    }

    /// Up to `want` candidates for `skill`, in the order to invite them: by score
    /// plus a jitter of up to [`JITTER`] (`random` gives the draws). Fewer if the
    /// directory knows fewer.
    pub(crate) fn sample(
        &self,
        skill: &str,
        min_level: Level,
        want: usize,
        skip: &BTreeSet<AgentId>,
        reputation: &dyn Fn(&AgentId) -> scoring::Reputation,
        random: &mut dyn FnMut() -> u64,
    ) -> Vec<Candidate> {
        let mut ranked: Vec<(f64, Candidate)> = self
            .eligible(skill, min_level, skip, reputation)
            .into_iter()
            .map(|c| {
                let unit = (random() >> 11) as f64 / (1u64 << 53) as f64;
                (c.score + JITTER * unit, c)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.agent.cmp(&b.1.agent)));
        ranked.into_iter().take(want).map(|(_, c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn agent(n: u8) -> AgentId {
        Keypair::from_secret_bytes([n; 32]).id()
    }

    fn skill(name: &str, level: Level, success: f64) -> Skill {
        Skill {
            name: name.into(),
            level,
            success_rate: success,
            ..Skill::new(name, level)
        }
    }

    fn neutral(_: &AgentId) -> scoring::Reputation {
        scoring::Reputation::default()
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut x = 0u64;
        move || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn only_agents_with_the_skill_level_and_a_free_slot_are_drawn() {
        let mut d = Directory::default();
        d.learn_skill(agent(1), &skill("a", Level::Expert, 0.9), (1, 2), 0, 16);
        d.learn_skill(agent(2), &skill("a", Level::Novice, 0.9), (2, 2), 0, 16);
        d.learn_skill(agent(3), &skill("b", Level::Expert, 0.9), (2, 2), 0, 16);
        d.learn_skill(agent(4), &skill("a", Level::Expert, 0.9), (0, 2), 0, 16);
        let got = d.sample(
            "a",
            Level::Intermediate,
            5,
            &BTreeSet::new(),
            &neutral,
            &mut counter(),
        );
        assert_eq!(
            got.iter().map(|c| c.agent).collect::<Vec<_>>(),
            vec![agent(1)]
        );
        // Its one slot is reserved by an invitation: nobody is left.
        d.reserve(agent(1));
        let skip = BTreeSet::new();
        assert!(
            d.sample("a", Level::Intermediate, 5, &skip, &neutral, &mut counter())
                .is_empty()
        );
        // It says it has a slot again.
        d.learn_load(agent(1), 1, 5);
        assert_eq!(
            d.sample("a", Level::Intermediate, 5, &skip, &neutral, &mut counter())
                .len(),
            1
        );
    }

    #[test]
    fn equals_come_first_in_turn_and_a_clearly_worse_agent_never_first() {
        let mut d = Directory::default();
        for n in 1..=20u8 {
            // Ten equally good agents, ten clearly worse ones.
            let success = if n <= 10 { 0.95 } else { 0.4 };
            d.learn_skill(agent(n), &skill("a", Level::Expert, success), (1, 1), 0, 64);
        }
        let good: BTreeSet<AgentId> = (1..=10u8).map(agent).collect();
        let mut first = BTreeMap::<AgentId, u32>::new();
        let mut random = counter();
        for _ in 0..400 {
            let got = d.sample(
                "a",
                Level::Novice,
                3,
                &BTreeSet::new(),
                &neutral,
                &mut random,
            );
            assert_eq!(got.len(), 3);
            assert!(got.iter().all(|c| good.contains(&c.agent)), "{got:?}");
            *first.entry(got[0].agent).or_default() += 1;
        }
        assert!(
            first.len() >= 8,
            "the first pick spreads over the equals: {first:?}"
        );
    }

    #[test]
    fn a_full_directory_drops_the_entry_heard_from_longest_ago_and_entries_expire() {
        let mut d = Directory::default();
        let s = skill("a", Level::Expert, 0.9);
        d.learn_skill(agent(1), &s, (1, 1), 10, 2);
        d.learn_skill(agent(2), &s, (1, 1), 20, 2);
        d.learn_load(agent(1), 1, 30);
        d.learn_skill(agent(3), &s, (1, 1), 40, 2);
        assert_eq!(d.len(), 2);
        let skip = BTreeSet::new();
        let got: BTreeSet<AgentId> = d
            .sample("a", Level::Novice, 5, &skip, &neutral, &mut counter())
            .into_iter()
            .map(|c| c.agent)
            .collect();
        assert_eq!(got, [agent(1), agent(3)].into_iter().collect());
        d.expire(45, 10);
        assert_eq!(d.len(), 1, "agent 1, last heard at 30, expired");
        d.forget_skill(agent(3), "a");
        assert_eq!(d.len(), 0, "an agent with no skill left is dropped");
    }
}
