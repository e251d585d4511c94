//! Exhaustive interleaving checks of the lock-free primitives with loom.
//!
//! Only built with the `loom` cfg, which swaps the crate's atomics for
//! loom's model-checked ones:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p citoroute-core --release loom
//! ```
#![cfg(loom)]

use citoroute_core::{Admission, BreakerConfig, CircuitBreaker, TokenBucket};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

const OPEN: u64 = 1_000_000;
const LATER: u64 = 1_000_000_000;

/// An open breaker whose open period has elapsed at `LATER`.
fn tripped(probes: u32) -> CircuitBreaker {
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 1,
        failure_ratio: 0.0,
        min_requests: 1,
        window_nanos: 100 * LATER,
        open_nanos: OPEN,
        half_open_probes: probes,
    });
    let a = b.admit(0);
    b.on_failure(a, 0);
    b
}

/// Three threads race for probe slots (limit 2) and never report: at most
/// two probes are granted, and the packed counter agrees. Three threads
/// with CAS loops explode the full state space, so this one bounds
/// preemptions (3, the usual choice: most concurrency bugs need fewer).
#[test]
fn loom_probe_limit_is_never_exceeded() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let b = Arc::new(tripped(2));
        let granted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (b, granted) = (Arc::clone(&b), Arc::clone(&granted));
                thread::spawn(move || {
                    if b.admit(LATER) == Admission::Probe {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread panicked");
        }
        let n = granted.load(Ordering::SeqCst);
        assert_eq!(n, 2, "exactly the limit is granted when 3 compete");
        assert_eq!(b.probes_in_flight() as usize, n);
    });
}

/// Probes that report while others race for the slot: the number of probes
/// out at once never exceeds the limit (1), and all slots are returned.
#[test]
fn loom_probe_limit_with_completions() {
    loom::model(|| {
        let b = Arc::new(tripped(1));
        let out = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (b, out) = (Arc::clone(&b), Arc::clone(&out));
                thread::spawn(move || {
                    let a = b.admit(LATER);
                    if a == Admission::Probe {
                        let n = out.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= 1, "{n} probes out at once");
                        out.fetch_sub(1, Ordering::SeqCst);
                        if i == 0 {
                            b.on_failure(a, LATER);
                        } else {
                            b.on_success(a, LATER);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread panicked");
        }
        assert_eq!(b.probes_in_flight(), 0);
    });
}

/// Two threads take the last token of a bucket: exactly one wins.
#[test]
fn loom_token_bucket_single_token() {
    loom::model(|| {
        let bucket = Arc::new(TokenBucket::new(1.0, 1));
        let wins = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (bucket, wins) = (Arc::clone(&bucket), Arc::clone(&wins));
                thread::spawn(move || {
                    if bucket.try_acquire(1, 10) {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread panicked");
        }
        assert_eq!(wins.load(Ordering::SeqCst), 1);
    });
}
