//! Behaviour tests of group documents: lifecycle, permissions, hostile input,
//! succession, persistence and convergence under lossy sync.

mod hostile;
mod lifecycle;
mod persistence;
mod succession;
mod support;
mod sync_props;
