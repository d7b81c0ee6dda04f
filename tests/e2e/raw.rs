//! Raw peers: a swarm with a node's behaviour but no node behind it, driven by the
//! test, to send what an honest node never would. And a bare swarm that writes a
//! direct frame larger than the limit.

use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, Transport,
    core::{transport::MemoryTransport, upgrade::Version},
    gossipsub, noise, request_response,
    swarm::SwarmEvent,
    yamux,
};
use starling::{
    node::{
        behaviour::{StarlingBehaviour, StarlingEvent},
        codec::{DIRECT_PROTOCOL, DirectFrame},
        swarm,
    },
    protocol::{
        AgentId, Audience, Keypair, Level, Message, SignedEnvelope, codec::MAX_MESSAGE_BYTES,
        skill_topic,
    },
};
use tokio::time::Instant;

use crate::support::{agent_config, node_config};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the driver hands the script.
pub(crate) enum Step {
    /// A direct envelope arrived (already acknowledged).
    Direct { bytes: Vec<u8> },
    /// A gossip message arrived (reported to gossipsub as ignored: not forwarded).
    Gossip,
    /// Some other swarm event.
    Swarm(Box<SwarmEvent<StarlingEvent>>),
    /// Nothing happened for a moment (a chance to check conditions).
    Idle,
}

/// A raw peer with its own key.
pub(crate) struct RawPeer {
    pub(crate) swarm: Swarm<StarlingBehaviour>,
    pub(crate) key: Keypair,
}

impl RawPeer {
    /// A raw peer subscribed to the topics of `skills`.
    pub(crate) fn new(key: Keypair, skills: &[&str]) -> RawPeer {
        let levels: Vec<(&str, Level)> = skills.iter().map(|s| (*s, Level::Expert)).collect();
        let cfg = node_config(key.clone(), agent_config(&levels), &[]);
        let mut swarm = swarm::build(&cfg, &mut Default::default()).unwrap();
        for s in skills {
            let topic = gossipsub::IdentTopic::new(skill_topic(s));
            swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        }
        RawPeer { swarm, key }
    }

    pub(crate) fn id(&self) -> AgentId {
        self.key.id()
    }

    pub(crate) fn dial(&mut self, addr: Multiaddr) {
        self.swarm.dial(addr).unwrap();
    }

    /// Seals `message` with this peer's key (its own seq and time).
    pub(crate) fn seal(&self, seq: u64, sent_at: u64, to: Audience, message: &Message) -> Vec<u8> {
        SignedEnvelope::seal(&self.key, seq, sent_at, to, message)
            .unwrap()
            .into_bytes()
    }

    /// Sends raw bytes to `to` on the direct protocol.
    pub(crate) fn send(&mut self, to: AgentId, bytes: Vec<u8>) {
        let peer = swarm::peer_id_of(&to).unwrap();
        self.swarm
            .behaviour_mut()
            .direct
            .send_request(&peer, DirectFrame::Envelope(bytes));
    }

    /// Publishes raw bytes on a skill's topic.
    pub(crate) fn publish(&mut self, skill: &str, bytes: Vec<u8>) {
        let topic = gossipsub::IdentTopic::new(skill_topic(skill));
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, bytes)
            .unwrap();
    }

    /// Whether `peer` is known to subscribe to `skill`'s topic.
    pub(crate) fn knows_subscriber(&self, peer: AgentId, skill: &str) -> bool {
        let peer = swarm::peer_id_of(&peer).unwrap();
        let topic = gossipsub::IdentTopic::new(skill_topic(skill)).hash();
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .any(|(p, topics)| *p == peer && topics.contains(&&topic))
    }

    /// Drives the swarm, handing every event (and an `Idle` step when nothing
    /// happens for 50 ms) to `script`, until it returns a value. Panics with `what`
    /// after `secs`. Direct requests are acknowledged before they are handed on.
    pub(crate) async fn drive<T>(
        &mut self,
        secs: u64,
        what: &str,
        mut script: impl FnMut(&mut RawPeer, Step) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s: {what}"
            );
            let step = tokio::select! {
                e = self.swarm.select_next_some() => match e {
                    SwarmEvent::Behaviour(StarlingEvent::Direct(request_response::Event::Message {
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    })) => {
                        let _ = self.swarm.behaviour_mut().direct.send_response(channel, 1);
                        match request {
                            DirectFrame::Envelope(bytes) => Step::Direct { bytes },
                            DirectFrame::Refused(r) => panic!("a node sent a bad frame: {r}"),
                        }
                    }
                    SwarmEvent::Behaviour(StarlingEvent::Gossipsub(gossipsub::Event::Message {
                        propagation_source,
                        message_id,
                        ..
                    })) => {
                        self.swarm
                            .behaviour_mut()
                            .gossipsub
                            .report_message_validation_result(
                                &message_id,
                                &propagation_source,
                                gossipsub::MessageAcceptance::Ignore,
                            );
                        Step::Gossip
                    }
                    other => Step::Swarm(Box::new(other)),
                },
                _ = tokio::time::sleep(Duration::from_millis(50)) => Step::Idle,
            };
            if let Some(t) = script(self, step) {
                return t;
            }
        }
    }

    /// Keeps the swarm running (connections open) in the background.
    pub(crate) fn run_in_background(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(StarlingEvent::Direct(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) = self.swarm.select_next_some().await
                {
                    let _ = self.swarm.behaviour_mut().direct.send_response(channel, 1);
                }
            }
        })
    }
}

/// A codec that claims a frame longer than the limit and sends a little of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct OversizeCodec;

impl request_response::Codec for OversizeCodec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = u8;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> std::io::Result<()> {
        Ok(())
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<u8> {
        use futures::AsyncReadExt;
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await?;
        Ok(ack[0])
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        _: (),
    ) -> std::io::Result<()> {
        let claim = (MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes();
        io.write_all(&claim).await?;
        io.write_all(&[0u8; 1024]).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: u8,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// Connects a bare swarm under `key` to `addr` and sends one oversize direct frame
/// to `to`; returns once the request failed or the connection closed.
pub(crate) async fn send_oversize_frame(key: &Keypair, addr: Multiaddr, to: AgentId) {
    let id = libp2p::identity::Keypair::ed25519_from_bytes(key.secret_bytes()).unwrap();
    let mut bare = libp2p::SwarmBuilder::with_existing_identity(id)
        .with_tokio()
        .with_other_transport(|key| {
            MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key).unwrap())
                .multiplex(yamux::Config::default())
        })
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                OversizeCodec,
                [(DIRECT_PROTOCOL, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    bare.dial(addr).unwrap();
    let peer = swarm::peer_id_of(&to).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = tokio::time::timeout_at(deadline, bare.select_next_some())
            .await
            .expect("the oversize frame was neither refused nor answered");
        match e {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                bare.behaviour_mut().send_request(&peer, ());
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. })
            | SwarmEvent::ConnectionClosed { .. } => return,
            SwarmEvent::Behaviour(request_response::Event::Message { .. }) => {
                panic!("the node acknowledged an oversize frame")
            }
            _ => {}
        }
    }
}
