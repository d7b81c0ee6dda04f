//! Signed envelopes: every application message travels in one.
//!
//! Wire layout (big-endian), the signed part first and the signature last:
//!
//! ```text
//! version u8 | sender [32] | seq u64 | sent_at_ms u64 |
//! audience kind u8 (0 topic, 1 agent) | audience len u16 | audience bytes |
//! body len u32 | body (bincode Message) | signature [64]
//! ```
//!
//! The signature covers `b"starling/envelope/v1"` followed by every byte before the
//! signature, exactly as sent; nothing is re-encoded to verify. A direct message names
//! its recipient and a broadcast its topic inside the signed bytes, so an envelope
//! captured on its way to one agent cannot be replayed to another, nor onto another
//! topic.

use crate::{AgentId, Keypair, Message, ProtocolError, Result, codec};

/// The envelope version this build speaks.
pub const ENVELOPE_VERSION: u8 = 1;
/// Domain separator of envelope signatures.
pub const ENVELOPE_DOMAIN: &[u8] = b"starling/envelope/v1";
/// Longest topic name.
pub const MAX_TOPIC: usize = 128;

/// Who an envelope is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// A gossip topic.
    Topic(String),
    /// One agent, point to point.
    Agent(AgentId),
}

/// A sealed envelope: its exact wire bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for SignedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedEnvelope({} bytes)", self.bytes.len())
    }
}

/// A verified envelope's fields and decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedEnvelope {
    /// Envelope version.
    pub version: u8,
    /// Who signed it.
    pub sender: AgentId,
    /// The sender's sequence number.
    pub seq: u64,
    /// When it was signed (ms since the epoch, sender's clock).
    pub sent_at_ms: u64,
    /// Who it is for.
    pub audience: Audience,
    /// The message.
    pub message: Message,
}

impl SignedEnvelope {
    /// Encodes and signs `message` for `audience`.
    pub fn seal(
        keypair: &Keypair,
        seq: u64,
        sent_at_ms: u64,
        audience: Audience,
        message: &Message,
    ) -> Result<SignedEnvelope> {
        let body = codec::encode(message)?;
        let (kind, aud): (u8, Vec<u8>) = match &audience {
            Audience::Topic(t) => (0, t.as_bytes().to_vec()),
            Audience::Agent(a) => (1, a.0.to_vec()),
        };
        if aud.len() > MAX_TOPIC {
            return Err(ProtocolError::Invalid("topic name too long".into()));
        }
        let mut bytes = Vec::with_capacity(64 + aud.len() + body.len() + 64);
        bytes.push(ENVELOPE_VERSION);
        bytes.extend_from_slice(&keypair.id().0);
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&sent_at_ms.to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&(aud.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&aud);
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        let signature = keypair.sign(&signed_bytes(&bytes));
        bytes.extend_from_slice(&signature);
        if bytes.len() > codec::MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge {
                size: bytes.len(),
                limit: codec::MAX_MESSAGE_BYTES,
            });
        }
        Ok(SignedEnvelope { bytes })
    }

    /// Wraps received bytes (nothing is checked until [`SignedEnvelope::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> SignedEnvelope {
        SignedEnvelope { bytes }
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The wire bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Parses the header, verifies the signature over the received bytes, then decodes
    /// the body. Freshness, replay and audience are the receiver's next checks
    /// ([`crate::ReplayGuard`], [`OpenedEnvelope::check_audience`]).
    pub fn open(bytes: &[u8]) -> Result<OpenedEnvelope> {
        if bytes.len() > codec::MAX_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge {
                size: bytes.len(),
                limit: codec::MAX_MESSAGE_BYTES,
            });
        }
        let header = Header::parse(bytes)?;
        let signed_len = bytes.len() - 64;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[signed_len..]);
        if !header
            .sender
            .verify_strict(&signed_bytes(&bytes[..signed_len]), &signature)
        {
            return Err(ProtocolError::BadSignature(header.sender.to_string()));
        }
        let message: Message = codec::decode(&bytes[header.body.clone()])?;
        Ok(OpenedEnvelope {
            version: header.version,
            sender: header.sender,
            seq: header.seq,
            sent_at_ms: header.sent_at_ms,
            audience: header.audience,
            message,
        })
    }

    /// The sender named in the header, without verifying anything (for logging and
    /// scoring a peer whose envelope failed to open).
    pub fn claimed_sender(bytes: &[u8]) -> Option<AgentId> {
        Header::parse(bytes).ok().map(|h| h.sender)
    }
}

impl OpenedEnvelope {
    /// Refuses an envelope addressed to another agent or topic.
    pub fn check_audience(&self, expected: &Audience) -> Result<()> {
        if &self.audience == expected {
            Ok(())
        } else {
            Err(ProtocolError::WrongAudience(format!(
                "{:?}, expected {:?}",
                self.audience, expected
            )))
        }
    }
}

fn signed_bytes(prefix: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ENVELOPE_DOMAIN.len() + prefix.len());
    msg.extend_from_slice(ENVELOPE_DOMAIN);
    msg.extend_from_slice(prefix);
    msg
}

struct Header {
    version: u8,
    sender: AgentId,
    seq: u64,
    sent_at_ms: u64,
    audience: Audience,
    body: std::ops::Range<usize>,
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Header> {
        let short = || ProtocolError::Decode(format!("envelope truncated ({} bytes)", bytes.len()));
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or_else(short);
        let version = *bytes.first().ok_or_else(short)?;
        if version != ENVELOPE_VERSION {
            return Err(ProtocolError::UnknownVersion(version));
        }
        let sender = AgentId(take(1, 32)?.try_into().map_err(|_| short())?);
        let seq = u64::from_be_bytes(take(33, 8)?.try_into().map_err(|_| short())?);
        let sent_at_ms = u64::from_be_bytes(take(41, 8)?.try_into().map_err(|_| short())?);
        let kind = *take(49, 1)?.first().ok_or_else(short)?;
        let aud_len = u16::from_be_bytes(take(50, 2)?.try_into().map_err(|_| short())?) as usize;
        if aud_len > MAX_TOPIC {
            return Err(ProtocolError::Decode("audience too long".into()));
        }
        let aud = take(52, aud_len)?;
        let audience = match kind {
            0 => Audience::Topic(
                std::str::from_utf8(aud)
                    .map_err(|_| ProtocolError::Decode("topic is not UTF-8".into()))?
                    .to_string(),
            ),
            1 => Audience::Agent(AgentId(
                aud.try_into()
                    .map_err(|_| ProtocolError::Decode("bad recipient".into()))?,
            )),
            k => return Err(ProtocolError::Decode(format!("unknown audience kind {k}"))),
        };
        let at = 52 + aud_len;
        let body_len = u32::from_be_bytes(take(at, 4)?.try_into().map_err(|_| short())?) as usize;
        let body_start = at + 4;
        if body_start
            .checked_add(body_len)
            .and_then(|e| e.checked_add(64))
            != Some(bytes.len())
        {
            return Err(ProtocolError::Decode(format!(
                "envelope length {} does not match its body length {body_len}",
                bytes.len()
            )));
        }
        Ok(Header {
            version,
            sender,
            seq,
            sent_at_ms,
            audience,
            body: body_start..body_start + body_len,
        })
    }
}

/// Produces envelope sequence numbers that strictly increase per sender and survive
/// restarts without storage: the first is the unix time in µs, each next one the
/// last plus one. Consecutive numbers keep a receiver's replay window dense
/// ([`crate::ReplayGuard`]); a restarted sender starts above everything it sent
/// before, as no run signs more than one envelope per µs of its life.
#[derive(Debug, Clone, Default)]
pub struct SeqGenerator {
    last: u64,
}

impl SeqGenerator {
    /// The next sequence number at `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> u64 {
        self.last = if self.last == 0 {
            now_ms.saturating_mul(1000).max(1)
        } else {
            self.last + 1
        };
        self.last
    }
}
