//! `SimError`: what can stop a simulation.

/// Why a simulation or benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An option is out of range; names the flag.
    #[error("--{field}: {reason}")]
    Options {
        /// The flag.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The mesh could not be started or driven.
    #[error("mesh: {0}")]
    Mesh(String),
    /// A report could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}
