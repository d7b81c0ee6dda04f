//! Agent cards: what an agent says about itself, signed by it — stored in the DHT
//! under its id, gossiped on [`CARDS_TOPIC`] when it joins or changes, and relayed
//! by any agent in a [`Message::Cards`](crate::Message::Cards) answer. Whoever relays
//! a card cannot alter it: every receiver checks the card's own signature.
//!
//! A card is current from its `version` (the signer's clock, ms) for [`CARD_TTL_MS`];
//! agents publish theirs again at half that, so a card that is no longer renewed
//! (its agent is gone) drops out of every directory by itself.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{AgentId, Keypair, ProtocolError, Result, Skill, codec, codec::*, message::MAX_SKILLS};

/// Domain separator of card signatures.
pub const CARD_DOMAIN: &[u8] = b"starling/agent-card/v1";
/// Longest listen address.
pub const MAX_ADDR: usize = 256;
/// Largest signed card: 16 skills and 16 addresses at their caps fit well within it.
pub const MAX_CARD_BYTES: usize = 8 * 1024;
/// How long a card counts from its `version` (30 min, the DHT record's lifetime).
pub const CARD_TTL_MS: u64 = 30 * 60 * 1000;
/// The gossip topic every agent subscribes to and publishes its card on.
pub const CARDS_TOPIC: &str = "starling/v1/cards";

/// A card held, as an asker names it in a
/// [`Message::CardsRequest`](crate::Message::CardsRequest): the first eight bytes
/// of its agent's id and its version — enough for the answerer to send only what
/// the asker lacks (a prefix shared by two agents costs at worst one card not
/// sent, which the next exchange or gossip brings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardStamp {
    /// The first eight bytes of the agent's id, big-endian.
    pub agent: u64,
    /// The card's version.
    pub version: u64,
}

impl CardStamp {
    /// The prefix by which a stamp names `agent`.
    pub fn prefix(agent: &AgentId) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&agent.0[..8]);
        u64::from_be_bytes(b)
    }
}

/// What an agent says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCard {
    /// The agent.
    pub id: AgentId,
    /// Its skills with their metrics.
    #[serde(deserialize_with = "bounded_vec::<_, _, MAX_SKILLS>")]
    pub skills: Vec<Skill>,
    /// Multiaddrs it listens on.
    #[serde(deserialize_with = "bounded_vec::<_, _, 16>")]
    pub addrs: Vec<String>,
    /// Tasks it is working on.
    pub load: u32,
    /// Its task slots.
    pub max_slots: u32,
    /// Increases with every new card, so a newer card replaces an older one.
    pub version: u64,
}

/// A card and its signature, as stored in the DHT under `/starling/agent/<peer id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCard {
    bytes: Vec<u8>,
}

impl SignedCard {
    /// Encodes and signs a card. The card's id must be the signer's.
    pub fn sign(keypair: &Keypair, card: &AgentCard) -> Result<SignedCard> {
        if card.id != keypair.id() {
            return Err(ProtocolError::Invalid(
                "a card must be signed by its own agent".into(),
            ));
        }
        let mut bytes = codec::encode(card)?;
        let sig = keypair.sign(&[CARD_DOMAIN, &bytes].concat());
        bytes.extend_from_slice(&sig);
        Ok(SignedCard { bytes })
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes as received, not yet verified: [`SignedCard::peek`] reads them,
    /// [`SignedCard::verify`] checks them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SignedCard> {
        if bytes.len() > MAX_CARD_BYTES {
            return Err(ProtocolError::TooLarge {
                size: bytes.len(),
                limit: MAX_CARD_BYTES,
            });
        }
        Ok(SignedCard { bytes })
    }

    /// The card, decoded but **not verified**: only for deciding whether it is worth
    /// a signature check (is it newer than the one held?).
    pub fn peek(&self) -> Result<AgentCard> {
        if self.bytes.len() < 64 {
            return Err(ProtocolError::Decode("card too short".into()));
        }
        codec::decode(&self.bytes[..self.bytes.len() - 64])
    }

    /// The DHT key of an agent's card.
    pub fn dht_key(id: &AgentId) -> String {
        format!("/starling/agent/{id}")
    }

    /// Verifies stored bytes: the card decodes, its signature verifies with the card's
    /// own id, and (if given) that id is the one the record is stored under.
    pub fn verify(bytes: &[u8], expected: Option<&AgentId>) -> Result<AgentCard> {
        if bytes.len() < 64 {
            return Err(ProtocolError::Decode("card too short".into()));
        }
        let (body, sig) = bytes.split_at(bytes.len() - 64);
        let card: AgentCard = codec::decode(body)?;
        if let Some(e) = expected
            && &card.id != e
        {
            return Err(ProtocolError::Invalid(
                "card stored under another agent's key".into(),
            ));
        }
        let sig: [u8; 64] = sig
            .try_into()
            .map_err(|_| ProtocolError::Decode("signature".into()))?;
        if !card.id.verify_strict(&[CARD_DOMAIN, body].concat(), &sig) {
            return Err(ProtocolError::BadSignature(card.id.to_string()));
        }
        for s in &card.skills {
            s.validate()?;
        }
        Ok(card)
    }
}

impl AgentCard {
    /// Whether the card counts at `now`: not from the future (beyond `skew` ms) and
    /// not past its lifetime.
    pub fn is_current(&self, now: u64, skew: u64) -> bool {
        self.version <= now.saturating_add(skew) && self.version.saturating_add(CARD_TTL_MS) > now
    }
}

impl Serialize for SignedCard {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_bytes::serialize(&self.bytes, s)
    }
}

impl<'de> Deserialize<'de> for SignedCard {
    /// Bounded to [`MAX_CARD_BYTES`]; the result is unverified.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = bounded_bytes::<_, MAX_CARD_BYTES>(d)?;
        Ok(SignedCard { bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Level;

    #[test]
    fn cards_verify_only_under_their_own_key() {
        let k = Keypair::from_secret_bytes([5; 32]);
        let card = AgentCard {
            id: k.id(),
            skills: vec![Skill::new("rust", Level::Expert)],
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            load: 1,
            max_slots: 4,
            version: 3,
        };
        let signed = SignedCard::sign(&k, &card).unwrap();
        assert_eq!(
            SignedCard::verify(signed.as_bytes(), Some(&k.id())).unwrap(),
            card
        );
        let other = Keypair::from_secret_bytes([6; 32]);
        assert!(SignedCard::verify(signed.as_bytes(), Some(&other.id())).is_err());
        let mut forged = card.clone();
        forged.id = other.id();
        assert!(SignedCard::sign(&k, &forged).is_err());
        let mut tampered = signed.as_bytes().to_vec();
        tampered[40] ^= 1;
        assert!(SignedCard::verify(&tampered, None).is_err());
    }
}
