//! State-machine tests over an in-test router with a fake clock: no network, no sleeps.

mod alloc;
mod cards;
mod directed;
mod hostile;
mod lifecycle;
mod mesh;
mod partition;
mod recovery;
mod scheduling;
mod voting;
mod wire;
