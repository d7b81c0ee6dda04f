//! Direct messages: request-response sends with retries and a per-peer bound on
//! unanswered requests, and the verification of inbound direct envelopes.

use std::time::Duration;

use libp2p::{PeerId, request_response};
use starling_protocol::{AgentId, Audience, Input, SignedEnvelope};
use tokio::time::Instant;
use tracing::{debug, trace};

use super::{NodeActor, links, now_ms, refusal_reason};
use crate::{
    codec::DirectFrame,
    swarm::{agent_of, peer_id_of},
};

/// Direct requests to one peer that may be unanswered at once; more are dropped.
/// Far above what a healthy link holds (a few, for a peer in many groups).
const MAX_IN_FLIGHT_PER_PEER: usize = 32;

pub(super) struct PendingSend {
    pub(super) to: AgentId,
    pub(super) bytes: Vec<u8>,
    pub(super) attempt: u32,
    /// When the first attempt went out: a retry that would reach the peer outside
    /// its freshness window is not made.
    pub(super) first_at: Instant,
}

impl NodeActor {
    pub(super) fn send_direct(&mut self, send: PendingSend) {
        let Ok(peer) = peer_id_of(&send.to) else {
            return;
        };
        // A peer that leaves this many requests unanswered is unreachable or slow:
        // queueing more would only hand it a burst of stale messages when it comes
        // back. The protocol sends what matters again (heartbeats carry the heads,
        // a sync follows), so the message is dropped.
        let in_flight = self.in_flight.entry(peer).or_default();
        if *in_flight >= MAX_IN_FLIGHT_PER_PEER {
            trace!(%peer, "too many unanswered direct messages; dropping one");
            self.metrics.direct_dropped.inc();
            return;
        }
        *in_flight += 1;
        self.talked_with(peer);
        // Not connected: request-response dials, with the addresses the peer
        // reported itself besides what Kademlia knows. After a partition Kademlia
        // may have dropped them (its dials failed); a member cut off from its
        // coordinator reconnects this way when it next sends.
        // An agent known only from its card is reached at the card's addresses.
        let addrs = if self.swarm.is_connected(&peer) {
            Vec::new()
        } else {
            self.addrs_to_dial(&peer, &send.to)
        };
        let id = self
            .swarm
            .behaviour_mut()
            .direct
            .send_request_with_addresses(&peer, DirectFrame::Envelope(send.bytes.clone()), addrs);
        self.sends.insert(id, send);
    }

    /// A direct request to `peer` ended (answered or failed).
    fn answered(&mut self, peer: PeerId) {
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&peer);
            }
        }
    }

    /// Verifies a direct envelope: signature, addressed to us, sent by the peer that
    /// delivered it, fresh and new.
    pub(super) fn on_direct(&mut self, peer: PeerId, bytes: Vec<u8>) {
        if self.penalties.is_banned(&peer, Instant::now()) {
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        let from = agent_of(&peer);
        let me = Audience::Agent(self.me);
        self.metrics.verifications.inc();
        let env = match SignedEnvelope::open(&bytes)
            .and_then(|env| env.check_audience(&me).map(|()| env))
        {
            Ok(env) => env,
            Err(e) => return self.refuse(from, refusal_reason(&e), e.to_string()),
        };
        if Some(env.sender) != from {
            let reason = format!("envelope from {} delivered by another peer", env.sender);
            return self.refuse(from, "wrong_sender", reason);
        }
        if let Err(e) = self
            .replay
            .check(env.sender, env.seq, env.sent_at_ms, now_ms())
        {
            return self.refuse(from, refusal_reason(&e), e.to_string());
        }
        self.metrics.message_in(env.message.kind());
        self.feed(Input::Received {
            from: env.sender,
            message: env.message,
        });
    }

    pub(super) fn on_direct_event(&mut self, event: request_response::Event<DirectFrame, u8>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => match request {
                    DirectFrame::Envelope(bytes) => {
                        let _ = self.swarm.behaviour_mut().direct.send_response(channel, 1);
                        self.talked_with(peer);
                        self.inbound(links::Inbound::Direct { peer, bytes });
                    }
                    DirectFrame::Refused(reason) => {
                        let reason = format!("bad direct frame: {reason}");
                        self.refuse(agent_of(&peer), "bad_frame", reason);
                    }
                },
                request_response::Message::Response { request_id, .. } => {
                    if self.sends.remove(&request_id).is_some() {
                        self.answered(peer);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                connection_id,
            } => {
                // The peer answers every request as soon as it reads it, so a request
                // unanswered for the whole timeout means the connection is dead (a
                // cut link keeps TCP retransmitting for minutes) or the peer is stuck.
                // Close it: later sends dial afresh instead of queueing behind it, and
                // a peer that comes back is not flooded with a stale backlog.
                if matches!(error, request_response::OutboundFailure::Timeout) {
                    debug!(%peer, ?connection_id, "closing a connection that left a request unanswered");
                    self.swarm.close_connection(connection_id);
                }
                let Some(mut send) = self.sends.remove(&request_id) else {
                    return;
                };
                self.answered(peer);
                let fresh_for = Duration::from_millis(self.config.replay_skew_ms / 2);
                if send.attempt < self.config.send_retries && send.first_at.elapsed() < fresh_for {
                    send.attempt += 1;
                    let backoff = Duration::from_millis(250 * u64::from(send.attempt));
                    debug!(%peer, %error, attempt = send.attempt, "direct send failed; retrying");
                    self.retries.push((Instant::now() + backoff, send));
                } else {
                    debug!(%peer, %error, "direct send failed; giving up (the protocol recovers)");
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // Oversize frames arrive as `DirectFrame::Refused`; what fails here is
                // the stream itself (closed, timed out).
                debug!(%peer, %error, "inbound direct message failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
