//! Seeded workloads: the agents (skills, levels, metrics), the tasks (skills, group
//! sizes, arrival times, initiators) and the fault schedule. The same seed and options
//! give the same workload.

use std::time::Duration;

use starling_protocol::{Level, Priority, Skill, SkillRequirement};

use crate::SimOptions;

/// Skill names the simulation draws from (the first `--skills` of them are used).
pub const SKILL_NAMES: [&str; 24] = [
    "parse",
    "index",
    "render",
    "translate",
    "summarise",
    "classify",
    "transcode",
    "verify",
    "plan",
    "search",
    "extract",
    "schedule",
    "forecast",
    "label",
    "audit",
    "compile",
    "route",
    "price",
    "match",
    "cluster",
    "detect",
    "encode",
    "archive",
    "notify",
];

/// A small, seeded, portable generator (splitmix64): the workload must not change
/// when a dependency's generator does.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..1`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// `k` distinct indices of `0..n`, in random order.
    pub fn pick(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

/// What kind of lie a hostile agent tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostility {
    /// Claims Expert skills it lacks: every part it takes fails.
    FalseClaims,
    /// Floods skill topics with forged, replayed and spammed announcements.
    Forger,
}

/// One simulated agent.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    /// Seed of its key.
    pub key_seed: [u8; 32],
    /// Skills it offers (as it claims them).
    pub skills: Vec<Skill>,
    /// Whether (and how) it is hostile.
    pub hostile: Option<Hostility>,
}

/// One task of the workload.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    /// When it is announced, from the start of the workload.
    pub at: Duration,
    /// The agent that announces it (an honest one).
    pub initiator: usize,
    /// Skills and how many agents of each.
    pub required: Vec<SkillRequirement>,
    /// Priority.
    pub priority: Priority,
}

/// A whole run's plan.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Skill names in use.
    pub skills: Vec<String>,
    /// The agents.
    pub agents: Vec<AgentPlan>,
    /// The tasks, in announcement order.
    pub tasks: Vec<TaskPlan>,
    /// Agents crashed at `--kill-at` (indices into `agents`).
    pub killed: Vec<usize>,
    /// The side of each agent when the mesh is partitioned (`true`: the cut-off part).
    pub cut_off: Vec<usize>,
}

const LEVELS: [Level; 4] = [
    Level::Novice,
    Level::Intermediate,
    Level::Advanced,
    Level::Expert,
];

/// Draws the workload of `opts`.
pub fn generate(opts: &SimOptions) -> Workload {
    let mut rng = Rng::new(opts.seed);
    let skills: Vec<String> = SKILL_NAMES[..opts.skills]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let hostile_from = opts.agents - opts.byzantine;
    let mut agents = Vec::with_capacity(opts.agents);
    for i in 0..opts.agents {
        let mut key_seed = [0u8; 32];
        key_seed[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        key_seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        let hostile = (i >= hostile_from).then(|| {
            if (i - hostile_from).is_multiple_of(2) {
                Hostility::FalseClaims
            } else {
                Hostility::Forger
            }
        });
        let count = rng.between(1, 4.min(skills.len()));
        let agent_skills = rng
            .pick(skills.len(), count)
            .into_iter()
            .map(|s| {
                let level = match hostile {
                    Some(_) => Level::Expert,
                    None => LEVELS[rng.below(4)],
                };
                let mut skill = Skill::new(skills[s].clone(), level);
                skill.success_rate = match hostile {
                    Some(_) => 1.0,
                    None => 0.9 + 0.1 * rng.unit(),
                };
                skill.avg_completion_ms = opts.work_ms as f64 * (0.5 + rng.unit());
                skill.completed = rng.below(50) as u64;
                skill
            })
            .collect();
        agents.push(AgentPlan {
            key_seed,
            skills: agent_skills,
            hostile,
        });
    }
    // Providers per skill (honest or not: initiators cannot tell before they try).
    let providers: Vec<usize> = skills
        .iter()
        .map(|s| {
            agents
                .iter()
                .filter(|a| a.hostile != Some(Hostility::Forger))
                .filter(|a| a.skills.iter().any(|k| &k.name == s))
                .count()
        })
        .collect();
    let honest: Vec<usize> = (0..hostile_from).collect();
    let interval = Duration::from_secs_f64(60.0 / opts.rate);
    let mut tasks = Vec::with_capacity(opts.tasks);
    for t in 0..opts.tasks {
        let size = rng.between(1, opts.group_size);
        let kinds = rng.between(1, 3.min(size));
        // Only skills enough agents have, so every task can be staffed.
        let usable: Vec<usize> = (0..skills.len())
            .filter(|s| providers[*s] >= 2 + size / kinds)
            .collect();
        let chosen = if usable.len() >= kinds {
            rng.pick(usable.len(), kinds)
                .into_iter()
                .map(|i| usable[i])
                .collect()
        } else {
            vec![(0..skills.len()).max_by_key(|s| providers[*s]).unwrap_or(0)]
        };
        let mut counts = vec![1u32; chosen.len()];
        for _ in chosen.len()..size {
            let i = rng.below(counts.len());
            counts[i] += 1;
        }
        let required = chosen
            .iter()
            .zip(&counts)
            .map(|(s, c)| SkillRequirement {
                name: skills[*s].clone(),
                min_level: if rng.unit() < 0.2 {
                    Level::Intermediate
                } else {
                    Level::Novice
                },
                count: (*c).min(providers[*s].saturating_sub(1).max(1) as u32),
            })
            .collect();
        let priority = match rng.below(10) {
            0 => Priority::Low,
            1..=6 => Priority::Normal,
            7 | 8 => Priority::High,
            _ => Priority::Critical,
        };
        tasks.push(TaskPlan {
            at: interval * t as u32,
            initiator: honest[rng.below(honest.len())],
            required,
            priority,
        });
    }
    let kill_count = (opts.agents as f64 * opts.kill_pct / 100.0).round() as usize;
    let killed = rng.pick(opts.agents, kill_count);
    let cut_count = (opts.agents as f64 * opts.partition).round() as usize;
    let cut_off = rng.pick(opts.agents, cut_count);
    Workload {
        skills,
        agents,
        tasks,
        killed,
        cut_off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_workload_and_another_seed_another() {
        let opts = SimOptions {
            agents: 30,
            tasks: 50,
            kill_pct: 20.0,
            ..SimOptions::default()
        };
        let a = generate(&opts);
        let b = generate(&opts);
        let describe = |w: &Workload| {
            format!(
                "{:?}{:?}{:?}",
                w.agents
                    .iter()
                    .map(|a| (a.key_seed, a.skills.clone()))
                    .collect::<Vec<_>>(),
                w.tasks
                    .iter()
                    .map(|t| (t.at, t.initiator, t.required.clone()))
                    .collect::<Vec<_>>(),
                w.killed
            )
        };
        assert_eq!(describe(&a), describe(&b));
        let c = generate(&SimOptions { seed: 8, ..opts });
        assert_ne!(describe(&a), describe(&c));
    }

    #[test]
    fn tasks_fit_the_options_and_can_be_staffed() {
        let opts = SimOptions {
            agents: 40,
            tasks: 200,
            group_size: 5,
            byzantine: 4,
            ..SimOptions::default()
        };
        let w = generate(&opts);
        assert_eq!(w.tasks.len(), 200);
        assert_eq!(w.agents.iter().filter(|a| a.hostile.is_some()).count(), 4);
        for t in &w.tasks {
            let size: u32 = t.required.iter().map(|r| r.count).sum();
            assert!((1..=5).contains(&size), "group size {size}");
            assert!((1..=3).contains(&t.required.len()));
            assert!(w.agents[t.initiator].hostile.is_none(), "honest initiators");
            for r in &t.required {
                let have = w
                    .agents
                    .iter()
                    .filter(|a| a.skills.iter().any(|s| s.name == r.name))
                    .count();
                assert!(have as u32 > r.count, "{} has {have} providers", r.name);
            }
        }
        for a in &w.agents {
            assert!((1..=4).contains(&a.skills.len()));
        }
        assert!(w.tasks.windows(2).all(|p| p[0].at <= p[1].at));
    }
}
