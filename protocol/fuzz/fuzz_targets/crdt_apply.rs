//! Arbitrary change batches and sync messages against a group replica: errors, never
//! panics, and the replica stays readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_protocol::crdt::{AgentKey, GroupDoc, Limits, SyncMessage, decode_batch};
use starling_protocol::Keypair;

fuzz_target!(|data: &[u8]| {
    let key = Keypair::from_secret_bytes([1; 32]);
    let initiator = AgentKey([2; 32]);
    let Ok(mut doc) = GroupDoc::replica(key.signing_key().clone(), b"fuzz".to_vec(), initiator, Limits::default()) else {
        return;
    };
    if let Ok(batch) = decode_batch(data, doc.limits()) {
        let _ = doc.apply(batch);
    }
    if let Ok(msg) = SyncMessage::decode(data, doc.limits()) {
        let _ = doc.receive_sync(msg);
    }
    let _ = doc.view();
    let _ = doc.save();
});
