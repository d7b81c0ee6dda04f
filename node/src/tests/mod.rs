//! In-process swarms on the memory transport.

mod support;

mod direct;
mod gossip;
mod group;
mod leave;
