//! End-to-end tests of Starling: real nodes in one process on the memory transport,
//! seeded, synchronised on their events. One binary, a module per topic; the tests
//! take turns (each wants both cores).
//!
//! - [`lifecycle`] — groups form, complete, dissolve and free their capacity.
//! - [`faults`] — members and initiators crash mid-task.
//! - [`partition`] — groups spanning a partition complete once it heals.
//! - [`hostile`] — forged, replayed, oversized and garbage envelopes from raw peers.
//! - [`hostile_group`] — lies inside a group: forged invitations, forbidden and
//!   equivocating changes, false skill claims, announcement floods.
//! - [`discovery`] — joining through one node, and after it leaves.
//! - [`scheduling`] — dependencies and priority ageing over the network.
//!
//! Helpers: [`support`] (nodes, the event log, crash and restart) and [`raw`]
//! (swarms driven by the test, to send what no honest node would).

// The harness is test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod discovery;
mod faults;
mod hostile;
mod hostile_group;
mod lifecycle;
mod partition;
mod raw;
mod scheduling;
