//! A deterministic in-memory mesh of [`Agent`]s: a router that opens and checks every
//! envelope (signature, audience, replay) like a node would, a fake clock, executors
//! driven by policy, and fault injection (kill, cut and heal, duplicate, latency).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::{
    Agent, AgentConfig, AgentId, Audience, Command, Event, Input, Keypair, Level, Message, Output,
    ReplayGuard, SignedEnvelope, Skill, SkillRequirement, TaskId, TaskSpec, Timestamp,
    message::Priority, skill_topic,
};

pub(crate) const T0: Timestamp = 1_700_000_000_000;

/// What an agent's executor does with an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exec {
    /// Reports progress with a checkpoint at half time, then completes.
    Auto { duration_ms: u64, success: bool },
    /// Does nothing; the test drives it.
    Manual,
}

struct Packet {
    at: Timestamp,
    from: AgentId,
    to: AgentId,
    bytes: Vec<u8>,
}

pub(crate) struct Mesh {
    pub(crate) now: Timestamp,
    pub(crate) agents: BTreeMap<AgentId, Agent>,
    keys: BTreeMap<AgentId, Keypair>,
    subs: BTreeMap<String, BTreeSet<AgentId>>,
    guards: BTreeMap<AgentId, ReplayGuard>,
    queue: VecDeque<Packet>,
    work: BTreeMap<Timestamp, Vec<(AgentId, Command)>>,
    pub(crate) exec: BTreeMap<AgentId, Exec>,
    pub(crate) dead: BTreeSet<AgentId>,
    /// Links that drop every packet, in both directions, until healed.
    cuts: BTreeSet<(AgentId, AgentId)>,
    pub(crate) events: Vec<(Timestamp, AgentId, Event)>,
    /// Every message delivered: (time, from, to, message).
    pub(crate) delivered: Vec<(Timestamp, AgentId, AgentId, Message)>,
    /// Deliver every message twice (the copy bypasses the replay guard, as a
    /// retransmission with a fresh envelope would).
    pub(crate) duplicate: bool,
    pub(crate) latency_ms: u64,
    /// Extra delay for direct messages of one kind (to deliver them out of order).
    pub(crate) slow_kind: Option<(&'static str, u64)>,
}

impl Mesh {
    pub(crate) fn new() -> Mesh {
        Mesh {
            now: T0,
            agents: BTreeMap::new(),
            keys: BTreeMap::new(),
            subs: BTreeMap::new(),
            guards: BTreeMap::new(),
            queue: VecDeque::new(),
            work: BTreeMap::new(),
            exec: BTreeMap::new(),
            dead: BTreeSet::new(),
            cuts: BTreeSet::new(),
            events: Vec::new(),
            delivered: Vec::new(),
            duplicate: false,
            latency_ms: 1,
            slow_kind: None,
        }
    }

    /// Adds an agent with `skills` and `capacity` slots; `tune` adjusts its config.
    pub(crate) fn add(
        &mut self,
        seed: u8,
        skills: &[(&str, Level)],
        capacity: u32,
        exec: Exec,
        tune: impl FnOnce(&mut AgentConfig),
    ) -> AgentId {
        let key = Keypair::from_secret_bytes([seed; 32]);
        let id = key.id();
        let mut config = AgentConfig {
            skills: skills.iter().map(|(n, l)| Skill::new(*n, *l)).collect(),
            max_concurrent_tasks: capacity.max(1),
            ..AgentConfig::default()
        };
        tune(&mut config);
        config.validate().unwrap();
        for (name, _) in skills {
            self.subs.entry(skill_topic(name)).or_default().insert(id);
        }
        self.agents
            .insert(id, Agent::new(config, key.clone(), u64::from(seed)));
        self.keys.insert(id, key);
        self.guards.insert(id, ReplayGuard::default());
        self.exec.insert(id, exec);
        id
    }

    pub(crate) fn worker(&mut self, seed: u8, skill: &str, level: Level) -> AgentId {
        self.add(
            seed,
            &[(skill, level)],
            2,
            Exec::Auto {
                duration_ms: 500,
                success: true,
            },
            |_| {},
        )
    }

    pub(crate) fn key(&self, id: AgentId) -> Keypair {
        self.keys[&id].clone()
    }

    pub(crate) fn agent(&self, id: AgentId) -> &Agent {
        &self.agents[&id]
    }

    /// The document an agent holds of a task: an open one, or the final one of a
    /// coordination it finished (from the tombstone).
    pub(crate) fn document(&self, id: AgentId, task: TaskId) -> Option<starling_crdt::GroupDoc> {
        let agent = self.agent(id);
        match agent.group(&task) {
            Some(doc) => starling_crdt::GroupDoc::load(
                self.keys[&id].signing_key().clone(),
                &doc.save(),
                agent.config().crdt_limits.clone(),
            )
            .ok(),
            None => agent.finished_group(&task),
        }
    }

    pub(crate) fn kill(&mut self, id: AgentId) {
        self.dead.insert(id);
    }

    /// Cuts every link between `side` and `others` (both directions): packets on them
    /// are dropped, as on a partitioned network, until [`Mesh::heal`]. The agents keep
    /// running.
    pub(crate) fn cut(&mut self, side: &[AgentId], others: &[AgentId]) {
        for a in side {
            for b in others.iter().filter(|b| *b != a) {
                self.cuts.insert((*a, *b));
                self.cuts.insert((*b, *a));
            }
        }
    }

    /// Restores every cut link; packets dropped meanwhile stay lost.
    pub(crate) fn heal(&mut self) {
        self.cuts.clear();
    }

    /// `id`'s card as it stands, signed now.
    pub(crate) fn card(&self, id: AgentId) -> crate::SignedCard {
        let agent = self.agent(id);
        let card = crate::AgentCard {
            id,
            skills: agent.skills().cloned().collect(),
            addrs: Vec::new(),
            load: agent.slots_used(),
            max_slots: agent.config().max_concurrent_tasks,
            version: self.now,
        };
        crate::SignedCard::sign(&self.keys[&id], &card).unwrap()
    }

    /// `asker` asks `peer` for the cards it holds.
    pub(crate) fn ask_for_cards(&mut self, asker: AgentId, peer: AgentId) {
        let now = self.now;
        let outs = self
            .agents
            .get_mut(&asker)
            .unwrap()
            .ask_for_cards(now, peer);
        self.carry(asker, outs);
    }

    /// Every agent but `id`.
    pub(crate) fn others(&self, id: AgentId) -> Vec<AgentId> {
        self.agents.keys().copied().filter(|a| *a != id).collect()
    }

    /// Announces a task from `initiator`.
    pub(crate) fn announce(&mut self, initiator: AgentId, spec: TaskSpec) -> TaskId {
        let now = self.now;
        let agent = self.agents.get_mut(&initiator).unwrap();
        let (id, outs) = agent.announce(now, spec).unwrap();
        self.carry(initiator, outs);
        id
    }

    pub(crate) fn command(&mut self, id: AgentId, cmd: Command) {
        let now = self.now;
        let outs = self
            .agents
            .get_mut(&id)
            .unwrap()
            .handle(now, Input::Command(cmd));
        self.carry(id, outs);
    }

    /// Seals `message` with `from`'s key for `audience` and queues it to `to`
    /// (for forged and stray traffic).
    pub(crate) fn inject(
        &mut self,
        key: &Keypair,
        to: AgentId,
        audience: Audience,
        message: &Message,
    ) {
        let env = SignedEnvelope::seal(
            key,
            self.now * 1000 + self.queue.len() as u64,
            self.now,
            audience,
            message,
        )
        .unwrap();
        self.queue.push_back(Packet {
            at: self.now,
            from: key.id(),
            to,
            bytes: env.into_bytes(),
        });
    }

    /// Feeds an input directly and returns the outputs (also carried out).
    pub(crate) fn feed(&mut self, id: AgentId, input: Input) -> Vec<Output> {
        let now = self.now;
        let outs = self.agents.get_mut(&id).unwrap().handle(now, input);
        self.carry(id, outs.clone());
        outs
    }

    fn carry(&mut self, from: AgentId, outs: Vec<Output>) {
        for out in outs {
            match out {
                Output::Publish {
                    topic, envelope, ..
                } => {
                    let subs: Vec<AgentId> = self
                        .subs
                        .get(&topic)
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default();
                    for to in subs.into_iter().filter(|s| *s != from) {
                        self.queue.push_back(Packet {
                            at: self.now + self.latency_ms,
                            from,
                            to,
                            bytes: envelope.as_bytes().to_vec(),
                        });
                    }
                }
                Output::Send { to, envelope, kind } => {
                    let extra = match self.slow_kind {
                        Some((k, ms)) if k == kind => ms,
                        _ => 0,
                    };
                    self.queue.push_back(Packet {
                        at: self.now + self.latency_ms + extra,
                        from,
                        to,
                        bytes: envelope.into_bytes(),
                    });
                }
                Output::Emit(event) => {
                    if let Event::TaskAssigned(a) = &event
                        && let Some(Exec::Auto {
                            duration_ms,
                            success,
                        }) = self.exec.get(&from).copied()
                    {
                        let half = self.now + duration_ms / 2;
                        let cp = format!("checkpoint-of-{}", from.short()).into_bytes();
                        self.work.entry(half).or_default().push((
                            from,
                            Command::Progress {
                                task_id: a.task_id,
                                progress: 0.5,
                                checkpoint: Some(cp),
                            },
                        ));
                        let result = format!("{}:{}", a.skill, from.short()).into_bytes();
                        self.work.entry(self.now + duration_ms).or_default().push((
                            from,
                            Command::Complete {
                                task_id: a.task_id,
                                success,
                                result,
                            },
                        ));
                    }
                    self.events.push((self.now, from, event));
                }
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        if self.dead.contains(&p.to)
            || self.dead.contains(&p.from)
            || self.cuts.contains(&(p.from, p.to))
        {
            return;
        }
        let opened = SignedEnvelope::open(&p.bytes).expect("honest envelopes open");
        let expected_ok = match &opened.audience {
            Audience::Agent(a) => *a == p.to,
            Audience::Topic(t) => self.subs.get(t).is_some_and(|s| s.contains(&p.to)),
        };
        assert!(expected_ok, "envelope delivered to the wrong audience");
        let guard = self.guards.get_mut(&p.to).unwrap();
        if guard
            .check(opened.sender, opened.seq, opened.sent_at_ms, self.now)
            .is_err()
        {
            return;
        }
        let copies = if self.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            self.delivered
                .push((self.now, opened.sender, p.to, opened.message.clone()));
            let now = self.now;
            let outs = self.agents.get_mut(&p.to).unwrap().handle(
                now,
                Input::Received {
                    from: opened.sender,
                    message: opened.message.clone(),
                },
            );
            self.carry(p.to, outs);
        }
    }

    /// Runs the mesh until `done` holds or `limit_ms` of simulated time passes.
    pub(crate) fn run_until(&mut self, limit_ms: u64, mut done: impl FnMut(&Mesh) -> bool) -> bool {
        let end = self.now + limit_ms;
        let (mut last_now, mut spins) = (self.now, 0u32);
        loop {
            if self.now == last_now {
                spins += 1;
                assert!(
                    spins < 100_000,
                    "time stopped at {}: an agent's deadline does not advance",
                    self.now - T0
                );
            } else {
                (last_now, spins) = (self.now, 0);
            }
            while let Some(i) = self.queue.iter().position(|p| p.at <= self.now) {
                let p = self.queue.remove(i).unwrap();
                self.deliver(p);
            }
            if done(self) {
                return true;
            }
            let next_packet = self.queue.iter().map(|p| p.at).min();
            let next_work = self.work.keys().next().copied();
            let next_tick = self
                .agents
                .iter()
                .filter(|(id, _)| !self.dead.contains(id))
                .filter_map(|(_, a)| a.next_deadline())
                .min();
            let Some(next) = [next_packet, next_work, next_tick]
                .into_iter()
                .flatten()
                .min()
            else {
                return false;
            };
            if next > end {
                self.now = end;
                return false;
            }
            self.now = self.now.max(next);
            let due: Vec<Timestamp> = self.work.range(..=self.now).map(|(t, _)| *t).collect();
            for t in due {
                for (id, cmd) in self.work.remove(&t).unwrap_or_default() {
                    if !self.dead.contains(&id) {
                        self.command(id, cmd);
                    }
                }
            }
            let ids: Vec<AgentId> = self.agents.keys().copied().collect();
            for id in ids {
                if self.dead.contains(&id) {
                    continue;
                }
                if self.agents[&id]
                    .next_deadline()
                    .is_some_and(|d| d <= self.now)
                {
                    let outs = self
                        .agents
                        .get_mut(&id)
                        .unwrap()
                        .handle(self.now, Input::Tick);
                    self.carry(id, outs);
                }
            }
        }
    }

    /// Runs for `ms` of simulated time.
    pub(crate) fn run_for(&mut self, ms: u64) {
        self.run_until(ms, |_| false);
    }

    /// Events of one kind, by predicate.
    pub(crate) fn events_where(
        &self,
        f: impl Fn(&AgentId, &Event) -> bool,
    ) -> Vec<(Timestamp, AgentId, Event)> {
        self.events
            .iter()
            .filter(|(_, a, e)| f(a, e))
            .cloned()
            .collect()
    }

    pub(crate) fn finished(
        &self,
        task: TaskId,
    ) -> Option<(AgentId, crate::Outcome, Vec<crate::PartResult>)> {
        self.events.iter().find_map(|(_, a, e)| match e {
            Event::TaskFinished {
                task_id,
                outcome,
                results,
                ..
            } if *task_id == task => Some((*a, outcome.clone(), results.clone())),
            _ => None,
        })
    }

    pub(crate) fn finish_count(&self, task: TaskId) -> usize {
        self.events
            .iter()
            .filter(
                |(_, _, e)| matches!(e, Event::TaskFinished { task_id, .. } if *task_id == task),
            )
            .count()
    }

    /// Messages of `kind` sent by `from` (delivered ones).
    pub(crate) fn sent_by(&self, from: AgentId, kind: &str) -> Vec<(AgentId, Message)> {
        self.delivered
            .iter()
            .filter(|(_, f, _, m)| *f == from && m.kind() == kind)
            .map(|(_, _, t, m)| (*t, m.clone()))
            .collect()
    }
}

/// A task needing `skills` (name, min level, count).
pub(crate) fn spec(skills: &[(&str, Level, u32)]) -> TaskSpec {
    TaskSpec {
        description: "test task".into(),
        required: skills
            .iter()
            .map(|(n, l, c)| SkillRequirement {
                name: n.to_string(),
                min_level: *l,
                count: *c,
            })
            .collect(),
        priority: Priority::Normal,
        deadline_ms: Some(120_000),
        max_group_size: None,
        depends_on: Vec::new(),
        payload: b"payload".to_vec(),
        consensus: false,
    }
}
