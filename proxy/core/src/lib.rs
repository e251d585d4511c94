//! Lock-free load-balancing core for the CitoRoute proxy. No I/O, no
//! Pingora, no async runtime: every function is pure computation over
//! caller-supplied inputs (including time, as monotonic nanoseconds), so
//! the proxy's hot path pays only for atomics and arithmetic, and every
//! behaviour is testable deterministically.
//!
//! How the pieces fit on a request's path (consistent hashing with
//! retries that avoid tripped and already-tried backends):
//!
//! ```
//! use citoroute_core::{
//!     Admission, BreakerConfig, CircuitBreaker, DEFAULT_TABLE_SIZE, Maglev, TriedSet, hash_bytes,
//! };
//!
//! let backends = [("10.0.0.1:8080", 1), ("10.0.0.2:8080", 1), ("10.0.0.3:8080", 2)];
//! let table = Maglev::new(&backends, DEFAULT_TABLE_SIZE).expect("valid backends");
//! let breakers: Vec<CircuitBreaker> =
//!     backends.iter().map(|_| CircuitBreaker::new(BreakerConfig::default())).collect();
//!
//! let now = 1_000_000_000; // monotonic nanoseconds from the caller's clock
//! let key = hash_bytes(b"session-42");
//! let mut tried = TriedSet::new();
//! for _attempt in 0..3 {
//!     let Some(i) = table.get_skipping(key, |i| tried.contains(i) || !breakers[i].is_available(now))
//!     else {
//!         break; // every backend tried or unavailable: answer 503
//!     };
//!     tried.insert(i);
//!     let admission = breakers[i].admit(now);
//!     if admission == Admission::Rejected {
//!         continue; // lost a race for the last probe slot
//!     }
//!     let upstream_ok = i != 0; // pretend backend 0 fails
//!     if upstream_ok {
//!         breakers[i].on_success(admission, now);
//!         break;
//!     }
//!     breakers[i].on_failure(admission, now);
//! }
//! assert!(!tried.is_empty());
//! ```
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
