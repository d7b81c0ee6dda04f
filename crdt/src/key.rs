//! Agent keys: the 32-byte ed25519 public keys that name actors.

use std::fmt;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// An agent's ed25519 public key. It is the automerge actor id of every change the
/// agent writes, and the key under which its member entry lives.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentKey(pub [u8; 32]);

impl AgentKey {
    /// The public key of a signing key.
    pub fn of(signer: &SigningKey) -> Self {
        AgentKey(signer.verifying_key().to_bytes())
    }

    /// Lowercase hex, the form used as a map key inside group documents.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses the 64-character lowercase hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(chunk[0])?;
            let lo = hex_val(chunk[1])?;
            out[i] = (hi << 4) | lo;
        }
        Some(AgentKey(out))
    }

    /// Takes an automerge actor id that must be exactly 32 bytes.
    pub fn from_actor(actor: &automerge::ActorId) -> Option<Self> {
        let bytes: [u8; 32] = actor.to_bytes().try_into().ok()?;
        Some(AgentKey(bytes))
    }

    /// The automerge actor id for this key.
    pub fn to_actor(&self) -> automerge::ActorId {
        automerge::ActorId::from(self.0)
    }

    /// Verifies `sig` over `msg` with strict ed25519 rules (no malleable signatures,
    /// no small-order keys).
    pub fn verify_strict(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

impl fmt::Display for AgentKey {
    /// The first 8 bytes in hex: enough to tell agents apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0[..8]))
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let key = AgentKey([0xab; 32]);
        assert_eq!(AgentKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(AgentKey::from_hex("ab"), None);
        assert_eq!(AgentKey::from_hex(&"AB".repeat(32)), None);
        assert_eq!(AgentKey::from_hex(&"zz".repeat(32)), None);
    }
}
