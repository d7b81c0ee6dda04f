//! The node's side of link faults: holding inbound messages for their simulated delay,
//! and blocking peers across a partition (see [`crate::faults`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use libp2p::{Multiaddr, PeerId, gossipsub, swarm::dial_opts::DialOpts};
use tokio::{sync::watch, time::Instant};
use tracing::debug;

use super::NodeActor;
use crate::{
    faults::{Draws, LinkFaults},
    swarm::agent_of,
};

/// An inbound message, as the swarm handed it over.
pub(super) enum Inbound {
    Gossip {
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    },
    Direct {
        peer: PeerId,
        bytes: Vec<u8>,
    },
}

/// The addresses a peer reported (through identify) that are worth dialling. A
/// loopback address names the dialler's own host, so it is kept only when the peer
/// reached us over loopback itself (it saw us at a loopback address); elsewhere a
/// dial there meets whatever listens on our own host — another agent, or this one —
/// and fails the whole dial with the wrong peer id. Unspecified addresses
/// (`0.0.0.0`, `::`) are never dialable.
pub(super) fn usable_addrs(reported: &[Multiaddr], observed: &Multiaddr) -> Vec<Multiaddr> {
    let local_link = ip_of(observed).is_some_and(|ip| ip.is_loopback());
    reported
        .iter()
        .filter(|a| match ip_of(a) {
            Some(ip) => !ip.is_unspecified() && (local_link || !ip.is_loopback()),
            None => true,
        })
        .cloned()
        .collect()
}

/// The addresses an agent advertises — on its card, and (as its confirmed external
/// addresses) on its DHT provider records and identify reports: its listen
/// addresses, without unspecified ones, and without loopback ones unless it listens
/// on nothing else (a mesh on one host). A provider record must carry addresses:
/// a peer that stores one it cannot route to (its routing bucket for the provider
/// is full) otherwise leaves the provider out of every answer.
pub(super) fn advertised_addrs(listen: &[Multiaddr]) -> Vec<Multiaddr> {
    let dialable = |a: &&Multiaddr| ip_of(a).is_none_or(|ip| !ip.is_unspecified());
    let off_host = |a: &&Multiaddr| ip_of(a).is_none_or(|ip| !ip.is_loopback());
    let only_loopback = !listen.iter().filter(dialable).any(|a| off_host(&a));
    listen
        .iter()
        .filter(dialable)
        .filter(|a| only_loopback || off_host(a))
        .cloned()
        .collect()
}

/// Tells the swarm the advertised addresses are ours (without the `/p2p` suffix
/// the listen addresses carry).
pub(super) fn confirm_advertised(
    swarm: &mut libp2p::Swarm<crate::behaviour::StarlingBehaviour>,
    listen: &[Multiaddr],
) {
    use libp2p::multiaddr::Protocol;
    for mut addr in advertised_addrs(listen) {
        if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
            addr.pop();
        }
        swarm.add_external_address(addr);
    }
}

/// The IP address an address starts with, if it starts with one.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// Peers whose addresses are remembered, at most.
const MAX_PEERS: usize = 4096;
/// Addresses remembered per peer, at most.
const MAX_ADDRS: usize = 8;

/// Fault state of one node: the shared controller, the delay queue, and the peers
/// blocked because a partition cuts them off.
pub(super) struct Links {
    faults: Option<Arc<LinkFaults>>,
    changes: Option<watch::Receiver<u64>>,
    draws: Draws,
    held: BTreeMap<(Instant, u64), Inbound>,
    next_seq: u64,
    cut_off: BTreeSet<PeerId>,
    /// Listen addresses peers reported, to dial them again after a partition (a real
    /// one or an injected one) made Kademlia forget them. Bounded by `MAX_PEERS`
    /// peers of `MAX_ADDRS` addresses each.
    addrs: BTreeMap<PeerId, Vec<Multiaddr>>,
}

impl Links {
    pub(super) fn new(faults: Option<Arc<LinkFaults>>, seed: u64) -> Self {
        Links {
            changes: faults.as_ref().map(|f| f.changes()),
            faults,
            draws: Draws::new(seed),
            held: BTreeMap::new(),
            next_seq: 0,
            cut_off: BTreeSet::new(),
            addrs: BTreeMap::new(),
        }
    }

    /// When the next held message is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.held.keys().next().map(|(t, _)| *t)
    }

    /// Resolves when the partition changes; never, without faults.
    pub(super) async fn changed(changes: &mut Option<watch::Receiver<u64>>) {
        match changes {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    pub(super) fn changes_mut(&mut self) -> &mut Option<watch::Receiver<u64>> {
        &mut self.changes
    }

    /// Remembers addresses a peer can be dialled on (its identify listen addresses, or
    /// the address we dialled it on).
    pub(super) fn learned(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if !self.addrs.contains_key(&peer) && self.addrs.len() >= MAX_PEERS {
            return;
        }
        let known = self.addrs.entry(peer).or_default();
        for a in addrs {
            if !known.contains(a) && known.len() < MAX_ADDRS {
                known.push(a.clone());
            }
        }
    }

    /// The addresses a peer reported, if any.
    pub(super) fn addrs_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addrs.get(peer).cloned().unwrap_or_default()
    }

    fn is_cut(&self, me: &starling_protocol::AgentId, peer: &PeerId) -> bool {
        match (&self.faults, agent_of(peer)) {
            (Some(f), Some(a)) => f.cut(me, &a),
            _ => false,
        }
    }
}

impl NodeActor {
    /// Where to dial `agent` (whose peer id is `peer`): the addresses it reported
    /// through identify, or else those its card gives.
    pub(super) fn addrs_to_dial(
        &self,
        peer: &PeerId,
        agent: &starling_protocol::AgentId,
    ) -> Vec<Multiaddr> {
        let reported = self.links.addrs_of(peer);
        if !reported.is_empty() {
            return reported;
        }
        self.agent
            .card_addrs(agent)
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// Takes an inbound message: at once, or after the link's simulated delay.
    pub(super) fn inbound(&mut self, msg: Inbound) {
        let peer = match &msg {
            Inbound::Gossip { source, .. } => *source,
            Inbound::Direct { peer, .. } => *peer,
        };
        if self.links.is_cut(&self.me, &peer) {
            // Still in flight when the link was cut: the partition swallows it.
            if let Inbound::Gossip { source, id, .. } = msg {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &id,
                        &source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
            }
            return;
        }
        let delay = match &self.links.faults {
            Some(f) if f.delays() => {
                let (j, l) = (self.links.draws.next(), self.links.draws.next());
                f.delay(j, l)
            }
            _ => std::time::Duration::ZERO,
        };
        if delay.is_zero() {
            return self.deliver(msg);
        }
        let seq = self.links.next_seq;
        self.links.next_seq += 1;
        self.links.held.insert((Instant::now() + delay, seq), msg);
    }

    /// Delivers the held messages whose delay has passed.
    pub(super) fn deliver_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.links.held.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let msg = entry.remove();
            self.deliver(msg);
        }
    }

    fn deliver(&mut self, msg: Inbound) {
        match msg {
            Inbound::Gossip {
                source,
                id,
                message,
            } => self.on_gossip(source, id, message),
            Inbound::Direct { peer, bytes } => self.on_direct(peer, bytes),
        }
    }

    /// A connection to `peer`: if a partition cuts the peer off, block it (which closes
    /// the connection) and return true.
    pub(super) fn check_link(&mut self, peer: PeerId) -> bool {
        if !self.links.is_cut(&self.me, &peer) {
            return false;
        }
        if self.links.cut_off.insert(peer) {
            debug!(%peer, "partitioned from peer");
            self.swarm.behaviour_mut().blocked.block_peer(peer);
        }
        true
    }

    /// The partition changed: block peers now cut off, unblock (and redial) those
    /// reachable again.
    pub(super) fn on_links_changed(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            let _ = self.check_link(peer);
        }
        let cut_off = std::mem::take(&mut self.links.cut_off);
        let now = Instant::now();
        for peer in cut_off {
            if self.links.is_cut(&self.me, &peer) {
                self.links.cut_off.insert(peer);
            } else if !self.penalties.is_banned(&peer, now) {
                debug!(%peer, "partition healed; reconnecting");
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                // Denied dials during the cut made Kademlia forget the peer's
                // addresses: dial the ones identify reported.
                let addrs = self.links.addrs.get(&peer).cloned().unwrap_or_default();
                let opts = DialOpts::peer_id(peer).addresses(addrs).build();
                if let Err(e) = self.swarm.dial(opts) {
                    debug!(%peer, error = %e, "cannot redial after healing");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{advertised_addrs, usable_addrs};
    use libp2p::Multiaddr;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn an_agent_advertises_off_host_addresses_and_loopback_only_when_alone() {
        let listen = addrs(&[
            "/ip4/0.0.0.0/tcp/7400",
            "/ip4/127.0.0.1/tcp/7400",
            "/ip4/10.77.0.3/tcp/7400",
        ]);
        assert_eq!(
            advertised_addrs(&listen),
            addrs(&["/ip4/10.77.0.3/tcp/7400"])
        );
        let one_host = addrs(&["/ip4/0.0.0.0/tcp/7400", "/ip4/127.0.0.1/tcp/7400"]);
        assert_eq!(
            advertised_addrs(&one_host),
            addrs(&["/ip4/127.0.0.1/tcp/7400"])
        );
        let memory = addrs(&["/memory/42"]);
        assert_eq!(advertised_addrs(&memory), memory);
    }

    #[test]
    fn a_remote_peer_s_loopback_and_unspecified_addresses_are_dropped() {
        let reported = addrs(&[
            "/ip4/127.0.0.1/tcp/7400",
            "/ip4/10.77.0.3/tcp/7400",
            "/ip4/0.0.0.0/tcp/7400",
            "/ip6/::1/udp/7400/quic-v1",
            "/ip6/fd00::3/udp/7400/quic-v1",
            "/memory/42",
        ]);
        let observed: Multiaddr = "/ip4/10.77.0.6/tcp/51234".parse().unwrap();
        assert_eq!(
            usable_addrs(&reported, &observed),
            addrs(&[
                "/ip4/10.77.0.3/tcp/7400",
                "/ip6/fd00::3/udp/7400/quic-v1",
                "/memory/42",
            ])
        );
    }

    #[test]
    fn a_peer_on_the_same_host_keeps_its_loopback_addresses() {
        let reported = addrs(&["/ip4/127.0.0.1/tcp/7400", "/ip4/0.0.0.0/tcp/7400"]);
        let observed: Multiaddr = "/ip4/127.0.0.1/tcp/51234".parse().unwrap();
        assert_eq!(
            usable_addrs(&reported, &observed),
            addrs(&["/ip4/127.0.0.1/tcp/7400"])
        );
    }
}
