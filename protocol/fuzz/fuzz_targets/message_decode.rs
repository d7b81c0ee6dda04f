//! The bounded decoder never panics, and what it accepts round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_protocol::{Message, codec};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode::<Message>(data) {
        let again = codec::encode(&msg).expect("a decoded message encodes");
        let back: Message = codec::decode(&again).expect("an encoded message decodes");
        assert_eq!(format!("{back:?}"), format!("{msg:?}"));
    }
});
