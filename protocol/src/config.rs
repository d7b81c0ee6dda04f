//! `AgentConfig`: an agent's skills and timing, with documented defaults.

use starling_crdt::Limits;

use crate::{ProtocolError, Result, Skill};

/// Everything that shapes an agent's behaviour. Times are milliseconds.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Skills this agent offers. Default: none (it can still initiate tasks).
    pub skills: Vec<Skill>,
    /// Tasks it works on at once. Default 2: enough to overlap I/O-bound work
    /// without starving other agents of tasks.
    pub max_concurrent_tasks: u32,
    /// How long an initiator waits for offers before inviting the best it has.
    /// Default 250 ms: offers arrive within milliseconds on a LAN, so this bound only
    /// matters when too few agents answer. Once every place has an offer, it waits
    /// only as long again as those took, and at least a tenth of this.
    pub offer_window_ms: u64,
    /// Offers wanted per slot beyond the first before the offer window closes early
    /// (the extras become standbys). Default 1.
    pub standbys_per_slot: u32,
    /// How long an invitee has to accept. Default 2 s.
    pub invite_timeout_ms: u64,
    /// Heartbeats between a coordinator and its members. Default 1 s.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a peer is declared failed. Default 4 s (four missed
    /// heartbeats), long enough to ride out a GC pause or a congested link.
    pub suspicion_timeout_ms: u64,
    /// Grace after the transport reports a peer down before it counts as failed, in case
    /// it reconnects. Default 500 ms.
    pub peer_down_grace_ms: u64,
    /// Wait before announcing again when a skill got no usable offer. Default 1 s.
    pub reannounce_interval_ms: u64,
    /// Announcement rounds before a task that has not formed yet fails for want of
    /// agents. Default 30 (about half a minute of asking). A running group that lost
    /// a member asks for a replacement until the task's deadline.
    pub max_announce_rounds: u32,
    /// Age that raises a task's effective priority by one level. Default 10 s: a Low
    /// task waiting 30 s outranks a fresh Critical one, so nothing starves.
    pub aging_interval_ms: u64,
    /// Deadline given to tasks announced without one. Default 5 min.
    pub default_deadline_ms: u64,
    /// Times each place whose work failed is tried again with another agent before
    /// the task fails (counted per skill: a skill needed twice may fail four times).
    /// Default 2.
    pub max_part_retries: u32,
    /// Weight of the newest observation in skill metrics and reputation (EWMA).
    /// Default 0.2: about the last ten tasks matter.
    pub ewma_alpha: f64,
    /// Consecutive successes that promote a skill one level. Default 5.
    pub promotion_streak: u32,
    /// Offers an agent keeps outstanding per free slot (initiators pick only some
    /// offerers, so a little overbooking keeps agents busy). Default 3.
    pub offers_per_free_slot: u32,
    /// Announcements remembered for later when there is no capacity. Default 256.
    pub backlog_size: usize,
    /// Bounds on group documents.
    pub crdt_limits: Limits,
    /// Staff a task by invitation when the skill directory knows enough agents with
    /// free slots, instead of announcing it to every holder of its skills. Default on;
    /// a task the directory cannot staff is announced as usual.
    pub directed_formation: bool,
    /// Agents the skill directory remembers at most. Default 4,096.
    pub directory_capacity: usize,
    /// A directory entry not heard from for this long is dropped. Default 2 min.
    pub directory_ttl_ms: u64,
    /// A member writes its executor's checkpoints into the group document at most
    /// this often (progress itself reaches the coordinator at once, as a plain
    /// message). Default 1 s: a replacement redoes at most about this much work.
    pub checkpoint_interval_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            skills: Vec::new(),
            max_concurrent_tasks: 2,
            offer_window_ms: 250,
            standbys_per_slot: 1,
            invite_timeout_ms: 2_000,
            heartbeat_interval_ms: 1_000,
            suspicion_timeout_ms: 4_000,
            peer_down_grace_ms: 500,
            reannounce_interval_ms: 1_000,
            max_announce_rounds: 30,
            aging_interval_ms: 10_000,
            default_deadline_ms: 300_000,
            max_part_retries: 2,
            ewma_alpha: 0.2,
            promotion_streak: 5,
            offers_per_free_slot: 3,
            backlog_size: 256,
            crdt_limits: Limits::default(),
            directed_formation: true,
            directory_capacity: 4_096,
            directory_ttl_ms: 120_000,
            checkpoint_interval_ms: 1_000,
        }
    }
}

impl AgentConfig {
    /// Checks every field; run before anything starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(ProtocolError::Config {
                field,
                reason: reason.into(),
            })
        };
        let mut names: Vec<&str> = self.skills.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != self.skills.len() {
            return bad("skills", "a skill is listed twice");
        }
        for s in &self.skills {
            if s.name.is_empty() || s.name.len() > crate::message::MAX_NAME {
                return bad("skills", "skill names must be 1..=64 bytes");
            }
            if !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return bad(
                    "skills",
                    "skill names may use letters, digits, '-', '_' and '.' only",
                );
            }
            if s.validate().is_err() {
                return bad(
                    "skills",
                    "success_rate must be within 0..=1 and times non-negative",
                );
            }
        }
        if self.skills.len() > crate::message::MAX_SKILLS {
            return bad("skills", "at most 16 skills");
        }
        if self.max_concurrent_tasks == 0 && !self.skills.is_empty() {
            return bad(
                "max_concurrent_tasks",
                "must be at least 1 for an agent with skills",
            );
        }
        for (field, v) in [
            ("offer_window_ms", self.offer_window_ms),
            ("invite_timeout_ms", self.invite_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("reannounce_interval_ms", self.reannounce_interval_ms),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
            ("aging_interval_ms", self.aging_interval_ms),
            ("default_deadline_ms", self.default_deadline_ms),
            ("directory_ttl_ms", self.directory_ttl_ms),
        ] {
            if v == 0 {
                return bad(field, "must be positive");
            }
        }
        if self.suspicion_timeout_ms <= self.heartbeat_interval_ms {
            return bad("suspicion_timeout_ms", "must exceed heartbeat_interval_ms");
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return bad("ewma_alpha", "must be within (0, 1]");
        }
        if self.max_announce_rounds == 0 {
            return bad("max_announce_rounds", "must be at least 1");
        }
        self.crdt_limits
            .validate()
            .map_err(|e| ProtocolError::Config {
                field: "crdt_limits",
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Level;

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        AgentConfig::default().validate().unwrap();
        let dup = AgentConfig {
            skills: vec![
                Skill::new("a", Level::Novice),
                Skill::new("a", Level::Expert),
            ],
            ..AgentConfig::default()
        };
        assert!(dup.validate().unwrap_err().to_string().contains("skills"));
        let hb = AgentConfig {
            suspicion_timeout_ms: 10,
            heartbeat_interval_ms: 10,
            ..AgentConfig::default()
        };
        assert!(
            hb.validate()
                .unwrap_err()
                .to_string()
                .contains("suspicion_timeout_ms")
        );
        let spaces = AgentConfig {
            skills: vec![Skill::new("a b", Level::Novice)],
            ..AgentConfig::default()
        };
        assert!(spaces.validate().is_err());
    }
}
