//! In-process swarms on the memory transport.

mod support;

mod cards;
mod connections;
mod direct;
mod discovery;
mod faults;
mod gossip;
mod group;
mod hostile;
mod leave;
mod persistence;
