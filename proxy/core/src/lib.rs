//! Lock-free load-balancing core for the CitoRoute proxy. No I/O, no
//! Pingora, no async runtime: every function is pure computation over
//! caller-supplied inputs (including time, as monotonic nanoseconds), so
//! the proxy's hot path pays only for atomics and arithmetic, and every
//! behaviour is testable deterministically.
//!
//! Model checking: the circuit breaker's and token bucket's atomics come
//! from a cfg-switched module, so the concurrency tests in `tests/loom.rs`
//! run the real code under loom:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p citoroute-core --release loom
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod breaker;
pub mod hash;
pub mod maglev;
pub mod ratelimit;
mod sync;
pub mod tried;
pub mod weighted;

pub use breaker::{Admission, BreakerConfig, BreakerSnapshot, BreakerState, CircuitBreaker};
pub use hash::{hash_bytes, hash_bytes_seeded, mix64};
pub use maglev::{DEFAULT_TABLE_SIZE, Maglev, MaglevError};
pub use ratelimit::TokenBucket;
pub use tried::TriedSet;
pub use weighted::WeightedPicker;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Maglev>();
        check::<WeightedPicker>();
        check::<CircuitBreaker>();
        check::<TokenBucket>();
        check::<TriedSet>();
    }
}
