//! In-process swarms on the memory transport.

mod support;

mod direct;
mod discovery;
mod gossip;
mod group;
mod hostile;
mod leave;
mod persistence;
