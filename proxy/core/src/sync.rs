//! Atomics used by the crate, swapped for loom's model-checked ones when
//! built with `RUSTFLAGS="--cfg loom"`, so the same code is both shipped and
//! exhaustively checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
