//! starling-protocol: messages, identity, signed envelopes and the
//! coordination state machine. No I/O, no tokio, no libp2p.
