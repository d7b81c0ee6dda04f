//! Ranking offers, ageing priorities, and learning from outcomes.
//!
//! - Offer score = 0.4·performance + 0.3·capability + 0.2·availability +
//!   0.1·reputation, each within 0..=1; ties go to the lower agent id.
//!   Performance is 0.7·success rate + 0.3·speed (speed = 1 / (1 + avg time / 10 s)).
//!   The success rate is what the agent claims, capped by what this agent has observed
//!   of it, and its claimed capability is discounted by the same credibility
//!   (observed ÷ claimed success): a peer that lies about its record or its level is
//!   judged by its results.
//! - Effective priority = priority (0..=3) + age / aging interval.
//! - Skill metrics and reputation are exponentially weighted moving averages.

use crate::{Level, Priority, Skill};

/// What one agent has seen of another's work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reputation {
    /// EWMA of outcomes (1 success, 0 failure or silence), 0..=1.
    pub score: f64,
    /// How many outcomes it is based on.
    pub observations: u32,
}

impl Default for Reputation {
    fn default() -> Self {
        Reputation {
            score: 0.5,
            observations: 0,
        }
    }
}

impl Reputation {
    /// Folds in one outcome.
    pub fn observe(&mut self, success: bool, alpha: f64) {
        let x = if success { 1.0 } else { 0.0 };
        self.score = if self.observations == 0 {
            0.5 * (1.0 - alpha) + alpha * x
        } else {
            ewma(self.score, x, alpha)
        };
        self.observations = self.observations.saturating_add(1);
    }
}

/// `alpha·x + (1 − alpha)·prev`.
pub fn ewma(prev: f64, x: f64, alpha: f64) -> f64 {
    alpha * x + (1.0 - alpha) * prev
}

/// The score of an offer.
pub fn offer_score(
    skill: &Skill,
    min_level: Level,
    free_slots: u32,
    max_slots: u32,
    rep: Reputation,
) -> f64 {
    let claimed = skill.success_rate.clamp(0.0, 1.0);
    let success = if rep.observations > 0 {
        claimed.min(rep.score)
    } else {
        claimed
    };
    let speed = 1.0 / (1.0 + skill.avg_completion_ms.max(0.0) / 10_000.0);
    let performance = 0.7 * success + 0.3 * speed;
    let span = f64::from(Level::Expert.rank() - min_level.rank());
    let claimed_capability = if span == 0.0 {
        1.0
    } else {
        f64::from(skill.level.rank().saturating_sub(min_level.rank())) / span
    };
    let credibility = if rep.observations > 0 && claimed > 0.0 {
        (rep.score / claimed).min(1.0)
    } else {
        1.0
    };
    let capability = claimed_capability * credibility;
    let availability = if max_slots == 0 {
        0.0
    } else {
        (f64::from(free_slots) / f64::from(max_slots)).clamp(0.0, 1.0)
    };
    0.4 * performance + 0.3 * capability + 0.2 * availability + 0.1 * rep.score.clamp(0.0, 1.0)
}

/// Priority plus one level per `aging_interval_ms` of age.
pub fn effective_priority(
    priority: Priority,
    created_at_ms: u64,
    now_ms: u64,
    aging_interval_ms: u64,
) -> f64 {
    let age = now_ms.saturating_sub(created_at_ms) as f64;
    priority.value() + age / aging_interval_ms.max(1) as f64
}

/// Folds a finished task into a skill's metrics; returns true if it was promoted.
/// `streak` counts consecutive successes and is reset by a failure or a promotion.
pub fn learn(
    skill: &mut Skill,
    streak: &mut u32,
    success: bool,
    duration_ms: u64,
    alpha: f64,
    promotion_streak: u32,
) -> bool {
    skill.success_rate =
        ewma(skill.success_rate, if success { 1.0 } else { 0.0 }, alpha).clamp(0.0, 1.0);
    if success {
        skill.avg_completion_ms = ewma(skill.avg_completion_ms, duration_ms as f64, alpha);
        skill.completed = skill.completed.saturating_add(1);
        *streak += 1;
    } else {
        *streak = 0;
    }
    if *streak >= promotion_streak
        && skill.success_rate >= 0.8
        && let Some(next) = skill.level.promoted()
    {
        skill.level = next;
        *streak = 0;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_agents_score_higher_and_liars_are_capped_by_observation() {
        let good = Skill {
            success_rate: 0.95,
            ..Skill::new("x", Level::Expert)
        };
        let weak = Skill {
            success_rate: 0.6,
            ..Skill::new("x", Level::Novice)
        };
        let rep = Reputation::default();
        assert!(
            offer_score(&good, Level::Novice, 2, 2, rep)
                > offer_score(&weak, Level::Novice, 2, 2, rep)
        );
        assert!(
            offer_score(&good, Level::Novice, 2, 2, rep)
                > offer_score(&good, Level::Novice, 0, 2, rep)
        );
        let liar = Skill {
            success_rate: 1.0,
            ..Skill::new("x", Level::Expert)
        };
        let mut observed = Reputation::default();
        for _ in 0..5 {
            observed.observe(false, 0.2);
        }
        assert!(
            offer_score(&liar, Level::Novice, 2, 2, observed)
                < offer_score(&weak, Level::Novice, 2, 2, rep)
        );
    }

    #[test]
    fn age_overtakes_priority() {
        let old_low = effective_priority(Priority::Low, 0, 40_000, 10_000);
        let new_critical = effective_priority(Priority::Critical, 40_000, 40_000, 10_000);
        assert!(old_low > new_critical);
    }

    #[test]
    fn metrics_move_and_streaks_promote() {
        let mut s = Skill::new("x", Level::Novice);
        let mut streak = 0;
        let mut promoted = false;
        for _ in 0..5 {
            promoted |= learn(&mut s, &mut streak, true, 500, 0.2, 5);
        }
        assert!(promoted);
        assert_eq!(s.level, Level::Intermediate);
        assert_eq!(s.completed, 5);
        assert!(s.avg_completion_ms < 1000.0);
        let before = s.success_rate;
        learn(&mut s, &mut streak, false, 0, 0.2, 5);
        assert!(s.success_rate < before);
        assert_eq!(streak, 0);
    }
}
