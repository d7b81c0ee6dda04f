//! What keeps a connection open: the node's choice, not gossipsub's streams.
//!
//! libp2p closes a connection once none of its streams is active and no handler
//! asks to keep it, after the swarm's idle timeout. gossipsub holds one stream each
//! way open on every connection for as long as the connection lives, so a
//! connection to any gossip peer never went idle and every peer an agent had ever
//! met stayed connected (rust-libp2p #5190). Two parts fix that:
//!
//! - [`QuietGossip`] is gossipsub with its streams marked as not counting for
//!   keep-alive. gossipsub still keeps what it needs itself: its handler asks to
//!   keep a connection while the peer is in one of our meshes.
//! - [`Pins`] keeps the connections of the peers the node chose (open groups,
//!   spare subscribers, routing peers; see `node/connections.rs`).
//!
//! Every other connection closes by itself once Kademlia, direct messaging and
//! identify are done with it (their streams are active while a request or a
//! record is on its way, so nothing in flight is cut) and the idle timeout has
//! passed: a lookup or a single message never becomes a lasting connection.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    ops::{Deref, DerefMut},
    task::{Context, Poll, Waker},
};

use futures::future::Either;
use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade::DeniedUpgrade},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound},
    },
};

use crate::behaviour::Gossipsub;

/// gossipsub whose streams do not keep a connection open (see the module docs).
/// Dereferences to the gossipsub behaviour.
pub struct QuietGossip(pub Gossipsub);

impl Deref for QuietGossip {
    type Target = Gossipsub;
    fn deref(&self) -> &Gossipsub {
        &self.0
    }
}

impl DerefMut for QuietGossip {
    fn deref_mut(&mut self) -> &mut Gossipsub {
        &mut self.0
    }
}

type GossipHandler = THandler<Gossipsub>;

/// gossipsub's connection handler, with each stream it opens or accepts marked
/// as not counting for keep-alive before gossipsub takes it.
pub struct QuietHandler(GossipHandler);

impl ConnectionHandler for QuietHandler {
    type FromBehaviour = <GossipHandler as ConnectionHandler>::FromBehaviour;
    type ToBehaviour = <GossipHandler as ConnectionHandler>::ToBehaviour;
    type InboundProtocol = <GossipHandler as ConnectionHandler>::InboundProtocol;
    type OutboundProtocol = <GossipHandler as ConnectionHandler>::OutboundProtocol;
    type InboundOpenInfo = <GossipHandler as ConnectionHandler>::InboundOpenInfo;
    type OutboundOpenInfo = <GossipHandler as ConnectionHandler>::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.0.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.0.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.0.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.0.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.0.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        mut event: ConnectionEvent<
            '_,
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        match &mut event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: Either::Left((stream, _)),
                ..
            })
            | ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                ..
            }) => stream.ignore_for_keep_alive(),
            _ => {}
        }
        self.0.on_connection_event(event);
    }
}

impl NetworkBehaviour for QuietGossip {
    type ConnectionHandler = QuietHandler;
    type ToSwarm = <Gossipsub as NetworkBehaviour>::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<QuietHandler, ConnectionDenied> {
        self.0
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(QuietHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<QuietHandler, ConnectionDenied> {
        self.0
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(QuietHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.0.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.0
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

/// Keeps the connections of chosen peers open; nothing else.
#[derive(Debug, Default)]
pub struct Pins {
    /// The peers to keep.
    pinned: HashSet<PeerId>,
    /// Every open connection, with whether its handler was last told to keep it.
    connections: HashMap<PeerId, Vec<(ConnectionId, bool)>>,
    /// Messages to handlers not yet handed to the swarm.
    pending: VecDeque<ToSwarm<Infallible, bool>>,
    /// A connection opened since the last [`Pins::set`]: nobody decided on it yet.
    fresh: bool,
    waker: Option<Waker>,
}

impl Pins {
    /// From now on, keeps the connections of exactly `peers`.
    pub fn set(&mut self, peers: HashSet<PeerId>) {
        for (peer, connections) in &mut self.connections {
            let keep = peers.contains(peer);
            for (id, told) in connections.iter_mut().filter(|(_, told)| *told != keep) {
                *told = keep;
                self.pending.push_back(ToSwarm::NotifyHandler {
                    peer_id: *peer,
                    handler: NotifyHandler::One(*id),
                    event: keep,
                });
            }
        }
        self.pinned = peers;
        self.fresh = false;
        if !self.pending.is_empty()
            && let Some(w) = self.waker.take()
        {
            w.wake();
        }
    }

    /// Whether every open connection is kept and none opened since the last
    /// [`Pins::set`]: then no connection is about to close, and none waits to be
    /// pinned.
    pub fn settled(&self) -> bool {
        !self.fresh
            && self
                .connections
                .values()
                .all(|cs| cs.iter().all(|(_, keep)| *keep))
    }

    /// Keeps `peer`'s connections too, until the next [`Pins::set`].
    pub fn pin(&mut self, peer: PeerId) {
        if !self.pinned.insert(peer) {
            return;
        }
        for (id, told) in self.connections.get_mut(&peer).into_iter().flatten() {
            if !*told {
                *told = true;
                self.pending.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(*id),
                    event: true,
                });
            }
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn handler(&mut self, peer: PeerId, id: ConnectionId) -> PinHandler {
        let keep = self.pinned.contains(&peer);
        self.fresh = true;
        self.connections.entry(peer).or_default().push((id, keep));
        PinHandler { keep }
    }
}

impl NetworkBehaviour for Pins {
    type ConnectionHandler = PinHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<PinHandler, ConnectionDenied> {
        Ok(self.handler(peer, connection_id))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<PinHandler, ConnectionDenied> {
        Ok(self.handler(peer, connection_id))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(closed) = event
            && let Some(connections) = self.connections.get_mut(&closed.peer_id)
        {
            connections.retain(|(id, _)| *id != closed.connection_id);
            if connections.is_empty() {
                self.connections.remove(&closed.peer_id);
            }
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: Infallible) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, bool>> {
        match self.pending.pop_front() {
            Some(e) => Poll::Ready(e),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A connection's pin: keeps it open while the node wants the peer.
#[derive(Debug)]
pub struct PinHandler {
    keep: bool,
}

impl ConnectionHandler for PinHandler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep = keep;
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<'_, DeniedUpgrade, DeniedUpgrade>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(pins: &mut Pins, peer: PeerId, id: usize) {
        let addr: Multiaddr = "/memory/1".parse().expect("address");
        pins.handle_established_inbound_connection(
            ConnectionId::new_unchecked(id),
            peer,
            &addr,
            &addr,
        )
        .expect("pins deny nothing");
    }

    #[test]
    fn pins_are_settled_only_when_every_connection_is_kept_and_none_is_new() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let mut pins = Pins::default();
        assert!(pins.settled(), "no connection, nothing to decide");
        open(&mut pins, p, 1);
        assert!(!pins.settled(), "a new connection waits for a sweep");
        pins.set([p].into_iter().collect());
        assert!(pins.settled());
        open(&mut pins, p, 2);
        assert!(
            !pins.settled(),
            "kept peer, but a sweep has not seen it yet"
        );
        pins.set([p].into_iter().collect());
        assert!(pins.settled());
        open(&mut pins, q, 3);
        pins.set([p].into_iter().collect());
        assert!(!pins.settled(), "q's connection is not kept: it is closing");
        pins.set([p, q].into_iter().collect());
        assert!(pins.settled());
    }
}
