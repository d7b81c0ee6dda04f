//! Directed formation: a task whose skills the directory can staff is not announced
//! to the mesh. The coordinator draws candidates per skill from its directory (see
//! [`crate::agent::directory`]), invites the first `count` of each at once and keeps
//! the rest as standbys, exactly as if they had offered; a refusal moves to the next
//! at once. Only when the candidates run out is the task announced over gossip, and
//! from then on it is staffed from offers like any other.

use std::collections::{BTreeMap, BTreeSet};

use super::Candidate;
use crate::{AgentId, Level, TaskAnnounce, TaskId, agent::Agent};

impl Agent {
    /// Candidates for every skill `announce` needs, in the order to invite them, if
    /// the directory knows enough agents with free slots: the places plus their
    /// standbys (`standbys_per_slot`) for each skill. None means: announce it.
    pub(in crate::agent) fn directed_candidates(
        &mut self,
        announce: &TaskAnnounce,
    ) -> Option<BTreeMap<String, Vec<Candidate>>> {
        if !self.config.directed_formation {
            return None;
        }
        self.directory
            .expire(self.now, self.config.directory_ttl_ms);
        let per_slot = 1 + self.config.standbys_per_slot as usize;
        let skip: BTreeSet<AgentId> = [self.id].into_iter().collect();
        let mut out = BTreeMap::new();
        for r in &announce.required {
            let want = r.count as usize * per_slot;
            let drawn = self.draw(&r.name, r.min_level, want, &skip);
            if drawn.len() < want {
                return None;
            }
            out.insert(r.name.clone(), drawn);
        }
        Some(out)
    }

    /// A directed task ran out of candidates for `skill` (refusals, timeouts): draws
    /// more from the directory, agents not asked yet, for `need` places and their
    /// standbys. False if the directory has nobody left, and the task must be
    /// announced.
    pub(in crate::agent) fn draw_more(&mut self, task_id: TaskId, skill: &str, need: u32) -> bool {
        let Some(c) = self.coordinating.get(&task_id) else {
            return false;
        };
        let Some(min_level) = c
            .announce
            .required
            .iter()
            .find(|r| r.name == skill)
            .map(|r| r.min_level)
        else {
            return false;
        };
        let mut skip = self.not_invitable(task_id);
        skip.extend(c.tried.iter().copied());
        skip.insert(self.id);
        let want = need as usize * (1 + self.config.standbys_per_slot as usize);
        let drawn = self.draw(skill, min_level, want, &skip);
        let Some(c) = self.coordinating.get_mut(&task_id) else {
            return false;
        };
        let found = !drawn.is_empty();
        c.offers.entry(skill.to_string()).or_default().extend(drawn);
        found
    }

    fn draw(
        &mut self,
        skill: &str,
        min_level: Level,
        want: usize,
        skip: &BTreeSet<AgentId>,
    ) -> Vec<Candidate> {
        let reputation = &self.reputation;
        let rng = &mut self.rng;
        self.directory.sample(
            skill,
            min_level,
            want,
            skip,
            &|a| reputation.get(a).copied().unwrap_or_default(),
            &mut || super::super::rng::splitmix(rng),
        )
    }
}
