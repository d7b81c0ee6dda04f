//! Agent identity: one ed25519 key per agent. Its public key is the agent's
//! [`AgentId`] and, through libp2p's identity encoding, its PeerId.

use std::{fmt, fs, io::Write, path::Path, str::FromStr};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use starling_crdt::AgentKey;

use crate::{ProtocolError, Result};

/// An agent's ed25519 public key. `Display` prints the libp2p PeerId string of the
/// key (base58 of the identity multihash of the protobuf-encoded public key), so logs,
/// the CLI and libp2p all name an agent the same way.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AgentId(pub [u8; 32]);

impl AgentId {
    /// The libp2p PeerId bytes: multihash(identity, protobuf PublicKey{Ed25519, key}).
    pub fn peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        // multihash: code 0x00 (identity), length 36
        out[0] = 0x00;
        out[1] = 36;
        // protobuf: field 1 varint KeyType::Ed25519 = 1; field 2 bytes (32)
        out[2..6].copy_from_slice(&[0x08, 0x01, 0x12, 0x20]);
        out[6..].copy_from_slice(&self.0);
        out
    }

    /// Parses a PeerId string of an ed25519 key.
    pub fn from_peer_id_str(s: &str) -> Result<AgentId> {
        let bad = |m: &str| ProtocolError::Invalid(format!("peer id {s:?}: {m}"));
        let bytes = bs58::decode(s).into_vec().map_err(|_| bad("not base58"))?;
        if bytes.len() != 38 || bytes[..6] != [0x00, 36, 0x08, 0x01, 0x12, 0x20] {
            return Err(bad("not an ed25519 identity peer id"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[6..]);
        Ok(AgentId(key))
    }

    /// The same key as the CRDT layer names it.
    pub fn key(&self) -> AgentKey {
        AgentKey(self.0)
    }

    /// Verifies an ed25519 signature strictly.
    pub fn verify_strict(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.key().verify_strict(msg, sig)
    }

    /// A short form for logs: the last 6 characters of the PeerId.
    pub fn short(&self) -> String {
        let s = self.to_string();
        s[s.len().saturating_sub(6)..].to_string()
    }
}

impl From<AgentKey> for AgentId {
    fn from(k: AgentKey) -> Self {
        AgentId(k.0)
    }
}

impl From<AgentId> for AgentKey {
    fn from(a: AgentId) -> Self {
        AgentKey(a.0)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.peer_id_bytes()).into_string())
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.short())
    }
}

impl FromStr for AgentId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self> {
        AgentId::from_peer_id_str(s)
    }
}

/// An agent's secret key.
#[derive(Clone)]
pub struct Keypair {
    secret: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.id())
    }
}

impl Keypair {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Keypair> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| ProtocolError::Refused(format!("no OS randomness: {e}")))?;
        Ok(Keypair::from_secret_bytes(secret))
    }

    /// The key with these 32 secret bytes (the same bytes libp2p's
    /// `Keypair::ed25519_from_bytes` takes).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Keypair {
        Keypair {
            secret: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32 secret bytes.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The agent id (public key).
    pub fn id(&self) -> AgentId {
        AgentId(self.secret.verifying_key().to_bytes())
    }

    /// The signing key, for the CRDT layer.
    pub fn signing_key(&self) -> &SigningKey {
        &self.secret
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.secret.verifying_key()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.secret.sign(msg).to_bytes()
    }

    /// Writes the key to `path` as 32 raw bytes with mode 0600. Refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |reason: String| ProtocolError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                err("already exists; refusing to overwrite".into())
            } else {
                err(e.to_string())
            }
        })?;
        file.write_all(&self.secret_bytes())
            .map_err(|e| err(e.to_string()))?;
        file.sync_all().map_err(|e| err(e.to_string()))
    }

    /// Reads a key written by [`Keypair::save`].
    pub fn load(path: &Path) -> Result<Keypair> {
        let err = |reason: String| ProtocolError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let meta = fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() != 32 {
            return Err(err(format!("expected 32 bytes, found {}", meta.len())));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "permissions {mode:o} are too open; use chmod 600"
                )));
            }
        }
        let bytes = fs::read(path).map_err(|e| err(e.to_string()))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| err("expected 32 bytes".into()))?;
        Ok(Keypair::from_secret_bytes(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_string_round_trips_and_has_the_libp2p_shape() {
        let id = Keypair::from_secret_bytes([3; 32]).id();
        let s = id.to_string();
        assert!(s.starts_with("12D3KooW"), "{s}");
        assert_eq!(s.parse::<AgentId>().unwrap(), id);
        assert!("12D3KooWxyz".parse::<AgentId>().is_err());
        // A PeerId produced by another libp2p implementation parses and prints back.
        let foreign = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK";
        assert_eq!(foreign.parse::<AgentId>().unwrap().to_string(), foreign);
        // A sha256-multihash (RSA-style) peer id is not an ed25519 agent.
        assert!(
            "QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa"
                .parse::<AgentId>()
                .is_err()
        );
        assert!("not base58 0OIl".parse::<AgentId>().is_err());
    }

    #[test]
    fn key_files_round_trip_and_bad_files_are_explained() {
        let dir = std::env::temp_dir().join(format!("starling-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.key");
        let _ = fs::remove_file(&path);
        let key = Keypair::generate().unwrap();
        key.save(&path).unwrap();
        assert_eq!(Keypair::load(&path).unwrap().id(), key.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let again = key.save(&path).unwrap_err().to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");

        let missing = Keypair::load(&dir.join("nope")).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
        let short = dir.join("short.key");
        fs::write(&short, [1u8; 10]).unwrap();
        assert!(
            Keypair::load(&short)
                .unwrap_err()
                .to_string()
                .contains("expected 32 bytes")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let open = dir.join("open.key");
            fs::write(&open, [1u8; 32]).unwrap();
            fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(
                Keypair::load(&open)
                    .unwrap_err()
                    .to_string()
                    .contains("too open")
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
