//! In-process swarms on the memory transport.

mod support;

mod direct;
mod discovery;
mod gossip;
mod group;
mod leave;
mod persistence;
