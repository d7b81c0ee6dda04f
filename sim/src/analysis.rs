//! From timestamped events to the report's task figures: latencies, completion,
//! losses, duplicates and reassignment times.

use std::collections::{BTreeMap, BTreeSet};

use starling_node::NodeEvent;
use starling_protocol::{AgentId, Event, Outcome, TaskId};
use tokio::time::Instant;

use crate::{mesh::Stamped, report::Percentiles};

/// A task the simulation announced.
#[derive(Debug, Clone)]
pub struct Announced {
    /// Its id.
    pub task_id: TaskId,
    /// When `announce` was called.
    pub at: Instant,
    /// The initiator's index.
    pub initiator: usize,
}

/// Crashes and restarts, by agent index.
#[derive(Debug, Clone, Default)]
pub struct Crashes {
    /// When each crashed agent went down.
    pub killed: BTreeMap<usize, Instant>,
    /// When each restarted agent came back.
    pub restarted: BTreeMap<usize, Instant>,
}

/// The task figures of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFigures {
    /// Completed tasks.
    pub completed: usize,
    /// Failed tasks.
    pub failed: usize,
    /// Failed tasks per reason (the outcome first reported).
    pub failure_reasons: BTreeMap<String, usize>,
    /// Never finished, though someone could have.
    pub lost: usize,
    /// Initiator crashed (for good) before its group formed, or together with so
    /// many of its group that the rest are no majority (a successor coordinator
    /// needs a majority of the group to depose the old one).
    pub orphaned: usize,
    /// More than one distinct result committed.
    pub duplicated: usize,
    /// Announce → formed, ms.
    pub formation: Percentiles,
    /// Every announce → formed latency, ms.
    pub formation_samples: Vec<f64>,
    /// Announce → completed, ms.
    pub completion: Percentiles,
    /// Announce → delivered to each receiving agent, ms.
    pub delivery: Percentiles,
    /// Crash → replacement started, ms.
    pub reassignment: Percentiles,
    /// When the last task finished.
    pub last_finish: Option<Instant>,
    /// Refused inbound messages.
    pub refused: u64,
}

fn ms(later: Instant, earlier: Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64() * 1000.0
}

/// Computes the figures. `ids` maps agent ids to indices.
pub fn analyse(
    announced: &[Announced],
    events: &[Stamped],
    crashes: &Crashes,
    ids: &BTreeMap<AgentId, usize>,
) -> TaskFigures {
    let mut formed: BTreeMap<TaskId, Instant> = BTreeMap::new();
    let mut groups: BTreeMap<TaskId, Vec<AgentId>> = BTreeMap::new();
    let mut finished: BTreeMap<TaskId, Vec<(Instant, Outcome, String)>> = BTreeMap::new();
    let mut delivered: BTreeMap<(TaskId, usize), Instant> = BTreeMap::new();
    let mut failures: BTreeMap<(TaskId, String), Vec<(Instant, AgentId)>> = BTreeMap::new();
    let mut reassignment = Vec::new();
    let mut refused = 0;
    for s in events {
        match &s.event {
            NodeEvent::AnnouncementReceived { task_id, .. } => {
                delivered.entry((*task_id, s.agent)).or_insert(s.at);
            }
            NodeEvent::Refused { .. } => refused += 1,
            NodeEvent::Agent(Event::GroupFormed { task_id, members }) => {
                formed.entry(*task_id).or_insert(s.at);
                groups
                    .entry(*task_id)
                    .or_insert_with(|| members.iter().map(|(_, m)| *m).collect());
            }
            NodeEvent::Agent(Event::TaskFinished {
                task_id,
                outcome,
                results,
                ..
            }) => {
                let mut parts: Vec<String> = results
                    .iter()
                    .map(|r| format!("{}:{}:{}:{:?}", r.skill, r.member, r.success, r.output))
                    .collect();
                parts.sort();
                finished.entry(*task_id).or_default().push((
                    s.at,
                    outcome.clone(),
                    parts.join("|"),
                ));
            }
            NodeEvent::Agent(Event::MemberFailed {
                task_id,
                member,
                skill,
                ..
            }) => failures
                .entry((*task_id, skill.clone()))
                .or_default()
                .push((s.at, *member)),
            NodeEvent::Agent(Event::ReplacementStarted { task_id, skill, .. }) => {
                // The latest failure of that part whose member had crashed.
                let crash = failures
                    .get(&(*task_id, skill.clone()))
                    .into_iter()
                    .flatten()
                    .filter(|(at, _)| *at <= s.at)
                    .filter_map(|(_, m)| ids.get(m).and_then(|i| crashes.killed.get(i)))
                    .filter(|k| **k <= s.at)
                    .max();
                if let Some(k) = crash {
                    reassignment.push(ms(s.at, *k));
                }
            }
            _ => {}
        }
    }
    let mut fig = TaskFigures {
        refused,
        ..TaskFigures::default()
    };
    let (mut formation, mut completion, mut delivery) = (Vec::new(), Vec::new(), Vec::new());
    for a in announced {
        if let Some(f) = formed.get(&a.task_id) {
            formation.push(ms(*f, a.at));
        }
        match finished.get(&a.task_id) {
            Some(ends) => {
                let results: BTreeSet<&String> = ends.iter().map(|(_, _, r)| r).collect();
                if results.len() > 1 {
                    fig.duplicated += 1;
                }
                let first = ends.iter().map(|(t, _, _)| *t).min();
                fig.last_finish = fig.last_finish.max(first);
                match ends
                    .iter()
                    .filter(|(_, o, _)| *o == Outcome::Completed)
                    .map(|(t, _, _)| *t)
                    .min()
                {
                    Some(t) => {
                        fig.completed += 1;
                        completion.push(ms(t, a.at));
                    }
                    None => {
                        fig.failed += 1;
                        let why = ends
                            .iter()
                            .min_by_key(|(t, _, _)| *t)
                            .map(|(_, o, _)| match o {
                                Outcome::Failed(r) => r.clone(),
                                other => format!("{other:?}"),
                            })
                            .unwrap_or_default();
                        *fig.failure_reasons.entry(why).or_default() += 1;
                    }
                }
            }
            None => {
                let crashed_for_good = |i: &usize| {
                    crashes.killed.contains_key(i) && !crashes.restarted.contains_key(i)
                };
                let leaderless = match groups.get(&a.task_id) {
                    None => true,
                    Some(members) => {
                        let alive = members
                            .iter()
                            .filter(|m| !ids.get(m).is_some_and(crashed_for_good))
                            .count();
                        alive * 2 <= members.len()
                    }
                };
                if crashed_for_good(&a.initiator) && leaderless {
                    fig.orphaned += 1;
                } else {
                    fig.lost += 1;
                }
            }
        }
    }
    let started: BTreeMap<TaskId, Instant> = announced.iter().map(|a| (a.task_id, a.at)).collect();
    for ((task, _), at) in &delivered {
        if let Some(t0) = started.get(task) {
            delivery.push(ms(*at, *t0));
        }
    }
    fig.formation_samples = formation.clone();
    fig.formation = Percentiles::of(formation);
    fig.completion = Percentiles::of(completion);
    fig.delivery = Percentiles::of(delivery);
    fig.reassignment = Percentiles::of(reassignment);
    fig
}
