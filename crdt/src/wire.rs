//! Bounded binary encodings of change batches.
//!
//! Layout (big-endian): `version: u8 = 1`, `count: u32`, then per change
//! `signer: [u8; 32]`, `signature: [u8; 64]`, `len: u32`, `bytes: [u8; len]`.
//! Decoding checks the total size before reading, each count and length against
//! [`Limits`] and against the bytes actually present, so nothing is allocated beyond
//! what the input really holds.

use crate::{AgentKey, CrdtError, Limits, Result, SignedChange};

const BATCH_VERSION: u8 = 1;

/// Encodes a batch of signed changes.
pub fn encode_batch(changes: &[SignedChange]) -> Vec<u8> {
    let size = 5 + changes.iter().map(|c| 100 + c.bytes.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(BATCH_VERSION);
    write_batch_body(&mut out, changes);
    out
}

pub(crate) fn write_batch_body(out: &mut Vec<u8>, changes: &[SignedChange]) {
    out.extend_from_slice(&(changes.len() as u32).to_be_bytes());
    for c in changes {
        out.extend_from_slice(&c.signer.0);
        out.extend_from_slice(&c.signature);
        out.extend_from_slice(&(c.bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&c.bytes);
    }
}

/// Decodes a batch of signed changes within `limits`. Signatures are not checked here
/// (that happens when the changes are applied).
pub fn decode_batch(bytes: &[u8], limits: &Limits) -> Result<Vec<SignedChange>> {
    check_size(bytes, limits)?;
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != BATCH_VERSION {
        return Err(CrdtError::Malformed(format!(
            "unknown batch version {version}"
        )));
    }
    let changes = read_batch_body(&mut r, limits)?;
    r.finish()?;
    Ok(changes)
}

pub(crate) fn check_size(bytes: &[u8], limits: &Limits) -> Result<()> {
    if bytes.len() > limits.max_batch_bytes {
        return Err(CrdtError::TooLarge {
            size: bytes.len(),
            limit: limits.max_batch_bytes,
        });
    }
    Ok(())
}

pub(crate) fn read_batch_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<SignedChange>> {
    let count = r.u32()? as usize;
    if count > limits.max_batch_changes {
        return Err(CrdtError::TooMany {
            what: "changes in batch",
            count: count as u64,
            limit: limits.max_batch_changes as u64,
        });
    }
    // Each change needs at least 100 bytes of framing: a count that the remaining
    // input cannot hold is refused before anything is allocated for it.
    if count.saturating_mul(100) > r.remaining() {
        return Err(CrdtError::Malformed(format!(
            "batch claims {count} changes, input too short"
        )));
    }
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let signer = AgentKey(r.array::<32>()?);
        let signature = r.array::<64>()?;
        let len = r.u32()? as usize;
        if len > limits.max_change_bytes {
            return Err(CrdtError::TooLarge {
                size: len,
                limit: limits.max_change_bytes,
            });
        }
        let bytes = r.take(len)?.to_vec();
        changes.push(SignedChange {
            signer,
            bytes,
            signature,
        });
    }
    Ok(changes)
}

/// A cursor over untrusted bytes; every read is checked against what is left.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(CrdtError::Malformed(format!(
                "truncated: needed {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(CrdtError::Malformed(format!(
                "{} trailing bytes",
                self.remaining()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: u8) -> SignedChange {
        SignedChange {
            signer: AgentKey([n; 32]),
            bytes: vec![n; 40 + n as usize],
            signature: [n; 64],
        }
    }

    #[test]
    fn batch_round_trip() {
        let batch = vec![change(1), change(2), change(3)];
        let bytes = encode_batch(&batch);
        assert_eq!(decode_batch(&bytes, &Limits::default()).unwrap(), batch);
    }

    #[test]
    fn truncated_and_trailing_input_is_rejected() {
        let bytes = encode_batch(&[change(1), change(2)]);
        for cut in 0..bytes.len() {
            assert!(
                decode_batch(&bytes[..cut], &Limits::default()).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_batch(&longer, &Limits::default()),
            Err(CrdtError::Malformed(_))
        ));
    }

    #[test]
    fn huge_claimed_counts_fail_without_allocating() {
        // version 1, count u32::MAX, nothing else: must fail on the count check.
        let bytes = [1u8, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_batch(&bytes, &Limits::default()),
            Err(CrdtError::TooMany { .. })
        ));
        // A plausible count but a giant change length.
        let mut bytes = vec![1u8, 0, 0, 0, 1];
        bytes.extend_from_slice(&[0u8; 96]);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_batch(&bytes, &Limits::default()),
            Err(CrdtError::TooLarge { .. })
        ));
        // A count the input cannot possibly hold.
        let bytes = [1u8, 0, 0, 0, 200, 0, 0];
        assert!(matches!(
            decode_batch(&bytes, &Limits::default()),
            Err(CrdtError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_batches_and_too_many_changes_are_rejected() {
        let limits = Limits {
            max_batch_changes: 2,
            ..Limits::default()
        };
        let bytes = encode_batch(&[change(1), change(2), change(3)]);
        assert!(matches!(
            decode_batch(&bytes, &limits),
            Err(CrdtError::TooMany { .. })
        ));
        let limits = Limits {
            max_batch_bytes: 100,
            ..Limits::default()
        };
        assert!(matches!(
            decode_batch(&bytes, &limits),
            Err(CrdtError::TooLarge { .. })
        ));
    }
}
