//! The one place bincode is used. Every decode has a byte limit and every vector and
//! string a length cap, so untrusted input gets a clear error — never a panic, never
//! an allocation sized by the sender.
//!
//! bincode (`=2.0.1`, serde) is unmaintained; keeping it behind this module means it
//! can be swapped for a compatible format without touching the rest of the code.

use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

use crate::{ProtocolError, Result};

/// Largest encoded envelope or message (1 MiB). The node uses the same value for
/// gossipsub's `max_transmit_size` and the request-response codec.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_MESSAGE_BYTES>,
>;

fn config() -> Config {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encodes a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let bytes = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| ProtocolError::Invalid(format!("cannot encode: {e}")))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes a value from exactly `bytes` (trailing bytes are an error).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(ProtocolError::Decode(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// `deserialize_with` for a `Vec<T>` of at most `MAX` elements: the capacity reserved
/// is `min(MAX, hint)`, and the element past `MAX` is an error.
pub(crate) fn bounded_vec<'de, D, T, const MAX: usize>(
    d: D,
) -> std::result::Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T, const MAX: usize>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const MAX: usize> serde::de::Visitor<'de> for V<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a sequence of at most {MAX} elements")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(64));
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX} elements"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V::<T, MAX>(std::marker::PhantomData))
}

/// `deserialize_with` for a `String` of at most `MAX` bytes.
pub(crate) fn bounded_string<'de, D, const MAX: usize>(
    d: D,
) -> std::result::Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    if s.len() > MAX {
        return Err(serde::de::Error::custom(format!(
            "string longer than {MAX} bytes"
        )));
    }
    Ok(s)
}

/// `deserialize_with` for bytes of at most `MAX`. bincode checks the claimed length
/// against the decode limit before allocating.
pub(crate) fn bounded_bytes<'de, D, const MAX: usize>(
    d: D,
) -> std::result::Result<Vec<u8>, D::Error>
where
    D: Deserializer<'de>,
{
    let b: Vec<u8> = serde_bytes::deserialize(d)?;
    if b.len() > MAX {
        return Err(serde::de::Error::custom(format!(
            "byte string longer than {MAX} bytes"
        )));
    }
    Ok(b)
}

/// `deserialize_with` for optional bytes of at most `MAX`.
pub(crate) fn bounded_opt_bytes<'de, D, const MAX: usize>(
    d: D,
) -> std::result::Result<Option<Vec<u8>>, D::Error>
where
    D: Deserializer<'de>,
{
    let b: Option<Vec<u8>> = serde_bytes::deserialize(d)?;
    if b.as_ref().is_some_and(|b| b.len() > MAX) {
        return Err(serde::de::Error::custom(format!(
            "byte string longer than {MAX} bytes"
        )));
    }
    Ok(b)
}
