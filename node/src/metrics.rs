//! Prometheus metrics: Starling's own counters plus libp2p's (swarm, gossipsub,
//! Kademlia, identify, ping, bandwidth), all in one registry.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use starling_protocol::{Event, Outcome, ProtocolError};

type Labels = Vec<(String, String)>;

/// The node's metrics. Counters are cheap to update from the event loop; the registry
/// is locked only to encode it.
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    messages_in: Family<Labels, Counter>,
    messages_out: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    groups_formed: Counter,
    tasks_completed: Counter,
    tasks_failed: Counter,
    members_failed: Counter,
    reassignments: Counter,
    pub(crate) banned: Counter,
    pub(crate) direct_dropped: Counter,
    pub(crate) verifications: Counter,
    pub(crate) connections: Gauge,
    pub(crate) idle_closed: Counter,
    pub(crate) libp2p: libp2p::metrics::Metrics,
}

impl Metrics {
    /// Registers everything in `registry` (which may already hold the swarm's
    /// bandwidth metrics).
    pub fn new(mut registry: Registry) -> Metrics {
        let libp2p = libp2p::metrics::Metrics::new(&mut registry);
        let sub = registry.sub_registry_with_prefix("starling");
        let messages_in = Family::default();
        sub.register(
            "messages_in",
            "Verified messages received, by kind",
            messages_in.clone(),
        );
        let messages_out = Family::default();
        sub.register(
            "messages_out",
            "Messages sent or published, by kind",
            messages_out.clone(),
        );
        let refused = Family::default();
        sub.register(
            "refused",
            "Inbound messages refused, by reason",
            refused.clone(),
        );
        let groups_formed = Counter::default();
        sub.register(
            "groups_formed",
            "Working groups formed by this node",
            groups_formed.clone(),
        );
        let tasks_completed = Counter::default();
        sub.register(
            "tasks_completed",
            "Tasks this node finished as completed",
            tasks_completed.clone(),
        );
        let tasks_failed = Counter::default();
        sub.register(
            "tasks_failed",
            "Tasks this node finished as failed",
            tasks_failed.clone(),
        );
        let members_failed = Counter::default();
        sub.register(
            "members_failed",
            "Members this node declared failed",
            members_failed.clone(),
        );
        let reassignments = Counter::default();
        sub.register(
            "reassignments",
            "Parts restarted on a replacement member",
            reassignments.clone(),
        );
        let banned = Counter::default();
        sub.register(
            "peers_banned",
            "Peers banned for repeated bad input",
            banned.clone(),
        );
        let direct_dropped = Counter::default();
        sub.register(
            "direct_dropped",
            "Direct messages not sent because their peer had too many unanswered",
            direct_dropped.clone(),
        );
        let verifications = Counter::default();
        sub.register(
            "signature_verifications",
            "Envelope signatures checked (one per distinct inbound message)",
            verifications.clone(),
        );
        let connections = Gauge::default();
        sub.register(
            "connections",
            "Established connections now",
            connections.clone(),
        );
        let idle_closed = Counter::default();
        sub.register(
            "connections_closed_idle",
            "Connections closed because nothing used or pinned them for the idle timeout",
            idle_closed.clone(),
        );
        Metrics {
            connections,
            idle_closed,
            banned,
            direct_dropped,
            verifications,
            registry: Arc::new(Mutex::new(registry)),
            messages_in,
            messages_out,
            refused,
            groups_formed,
            tasks_completed,
            tasks_failed,
            members_failed,
            reassignments,
            libp2p,
        }
    }

    /// A handle on the registry for encoding.
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    pub(crate) fn message_in(&self, kind: &str) {
        self.messages_in
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }

    pub(crate) fn message_out(&self, kind: &str) {
        self.messages_out
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }

    pub(crate) fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    pub(crate) fn agent_event(&self, event: &Event) {
        match event {
            Event::GroupFormed { .. } => {
                self.groups_formed.inc();
            }
            Event::TaskFinished {
                outcome: Outcome::Completed,
                ..
            } => {
                self.tasks_completed.inc();
            }
            Event::TaskFinished {
                outcome: Outcome::Failed(_),
                ..
            } => {
                self.tasks_failed.inc();
            }
            Event::MemberFailed { .. } => {
                self.members_failed.inc();
            }
            Event::ReplacementStarted { .. } => {
                self.reassignments.inc();
            }
            // A verified envelope whose content the protocol refused (a forged
            // invitation, a change writing another member's entry, an equivocation…).
            Event::Misbehaviour { .. } => self.refused("protocol_violation"),
            _ => {}
        }
    }
}

/// Encodes a registry in the Prometheus text format.
pub fn encode_text(registry: &Mutex<Registry>) -> String {
    let registry = registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut out = String::new();
    // ok to ignore: writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// A short, stable label for why a message was refused.
pub fn refusal_reason(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::TooLarge { .. } => "too_large",
        ProtocolError::Decode(_) => "undecodable",
        ProtocolError::UnknownVersion(_) => "unknown_version",
        ProtocolError::BadSignature(_) => "bad_signature",
        ProtocolError::WrongAudience(_) => "wrong_audience",
        ProtocolError::Stale { .. } => "stale",
        ProtocolError::Replay { .. } => "replay",
        _ => "invalid",
    }
}
