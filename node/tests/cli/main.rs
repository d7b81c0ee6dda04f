//! End-to-end tests of the `starling` binary: real agent processes on loopback,
//! driven through the CLI, the control API and the Python executor.

// Test helpers too (not only `#[test]` functions) should fail loudly on the spot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod config;
mod mesh;
mod support;
