//! A lock-free token bucket.
//!
//! Why GCRA: the bucket is stored as one number, the "theoretical arrival
//! time" (TAT) in nanoseconds: the instant at which the bucket would be full
//! again. Tokens available at `now` are `(burst_window - (TAT - now)) /
//! interval`, so the token count is implicit and exact, refill needs no
//! timestamp of its own, and the whole state fits one `AtomicU64` updated by
//! a CAS loop. This is equivalent to a token bucket holding at most `burst`
//! tokens refilled at `rate_per_sec`.
//!
//! Time is passed in by the caller as monotonic nanoseconds (any origin,
//! below about 2^62 ns); the crate never reads a clock.

use crate::sync::{AtomicU64, Ordering};

/// Tolerances are kept below this so `TAT + cost` never overflows.
const MAX_SPAN: u64 = 1 << 62;

/// Token bucket admitting at most `burst` tokens at once and `rate_per_sec`
/// tokens per second sustained. `Send + Sync`.
#[derive(Debug)]
pub struct TokenBucket {
    /// When the bucket will be full again (ns); "in the past" means full.
    tat: AtomicU64,
    /// Nanoseconds to earn one token (rounded up: never faster than `rate`).
    interval: u64,
    /// `burst * interval`: how far TAT may run ahead of now.
    tolerance: u64,
    burst: u64,
}

impl TokenBucket {
    /// A full bucket. Rates above 1e9/s are treated as 1e9/s (one token per
    /// nanosecond). A rate that is zero, negative or NaN means no refill:
    /// only the initial `burst` is ever granted (practically).
    pub fn new(rate_per_sec: f64, burst: u64) -> Self {
        let max_interval = MAX_SPAN / burst.max(1);
        let interval = if rate_per_sec > 0.0 {
            let ns = (1e9 / rate_per_sec).ceil();
            // `as` saturates for huge values; clamp keeps tolerance in range.
            (ns as u64).clamp(1, max_interval)
        } else {
            max_interval
        };
        TokenBucket {
            tat: AtomicU64::new(0),
            interval,
            tolerance: burst.saturating_mul(interval).min(MAX_SPAN),
            burst,
        }
    }

    /// Takes `tokens` if all of them are available; otherwise takes nothing.
    /// Relaxed ordering: the bucket guards no other memory.
    pub fn try_acquire(&self, tokens: u64, now_nanos: u64) -> bool {
        if tokens == 0 {
            return true;
        }
        if tokens > self.burst {
            return false;
        }
        let cost = tokens * self.interval; // <= tolerance <= MAX_SPAN
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let base = tat.max(now_nanos);
            let next = base.saturating_add(cost);
            if next - now_nanos > self.tolerance {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }

    /// Whole tokens available at `now_nanos` (for headers such as
    /// `x-ratelimit-remaining`); a hint, as others may take them first.
    pub fn available(&self, now_nanos: u64) -> u64 {
        let tat = self.tat.load(Ordering::Relaxed);
        let ahead = tat.saturating_sub(now_nanos);
        self.tolerance.saturating_sub(ahead) / self.interval
    }

    /// Nanoseconds until `tokens` could be granted (0 if now), for
    /// `retry-after`; `None` if `tokens` exceeds the burst and never will.
    pub fn wait_nanos(&self, tokens: u64, now_nanos: u64) -> Option<u64> {
        if tokens > self.burst {
            return None;
        }
        let tat = self.tat.load(Ordering::Relaxed).max(now_nanos);
        let next = tat.saturating_add(tokens * self.interval);
        Some((next - now_nanos).saturating_sub(self.tolerance))
    }

    /// The configured burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64 as StdAtomicU64;
    use std::sync::atomic::Ordering as StdOrdering;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 500 * SEC;

    #[test]
    fn burst_then_refill_at_rate() {
        let b = TokenBucket::new(10.0, 5); // one token per 100 ms
        assert_eq!(b.available(T0), 5);
        for i in 0..5 {
            assert!(b.try_acquire(1, T0), "token {i}");
        }
        assert!(!b.try_acquire(1, T0));
        assert_eq!(b.available(T0), 0);
        assert!(!b.try_acquire(1, T0 + 99 * MS));
        assert!(b.try_acquire(1, T0 + 100 * MS));
        assert!(!b.try_acquire(1, T0 + 100 * MS));
        // 350 ms later: 3 more tokens.
        assert_eq!(b.available(T0 + 450 * MS), 3);
        assert!(b.try_acquire(3, T0 + 450 * MS));
        assert!(!b.try_acquire(1, T0 + 450 * MS));
        // Idle for long: back to burst, not beyond.
        assert_eq!(b.available(T0 + 100 * SEC), 5);
        assert!(!b.try_acquire(6, T0 + 100 * SEC));
        assert!(b.try_acquire(5, T0 + 100 * SEC));
    }

    #[test]
    fn all_or_nothing() {
        let b = TokenBucket::new(1.0, 4);
        assert!(b.try_acquire(3, T0));
        assert!(!b.try_acquire(2, T0));
        assert_eq!(b.available(T0), 1, "a failed acquire takes nothing");
        assert!(b.try_acquire(0, T0));
        assert!(
            !b.try_acquire(5, T0 + 1000 * SEC),
            "more than burst never fits"
        );
    }

    #[test]
    fn wait_hint() {
        let b = TokenBucket::new(10.0, 2);
        assert_eq!(b.wait_nanos(1, T0), Some(0));
        assert!(b.try_acquire(2, T0));
        assert_eq!(b.wait_nanos(1, T0), Some(100 * MS));
        assert_eq!(b.wait_nanos(2, T0 + 50 * MS), Some(150 * MS));
        assert_eq!(b.wait_nanos(3, T0), None);
    }

    #[test]
    fn zero_and_odd_rates() {
        let b = TokenBucket::new(0.0, 3);
        assert!(b.try_acquire(3, T0));
        assert!(!b.try_acquire(1, T0 + 3600 * SEC));
        let b = TokenBucket::new(f64::NAN, 1);
        assert!(b.try_acquire(1, 0));
        assert!(!b.try_acquire(1, 10 * SEC));
        let b = TokenBucket::new(f64::INFINITY, 2);
        assert!(b.try_acquire(2, T0));
        assert!(b.try_acquire(2, T0 + 2));
        let b = TokenBucket::new(5.0, 0);
        assert!(!b.try_acquire(1, T0));
        // Works from time zero too.
        let b = TokenBucket::new(1.0, 1);
        assert!(b.try_acquire(1, 0));
        assert!(!b.try_acquire(1, SEC - 1));
        assert!(b.try_acquire(1, SEC));
    }

    #[test]
    fn fractional_rate_never_exceeds() {
        // 3 tokens/s: 333,333,334 ns each after rounding up.
        let b = TokenBucket::new(3.0, 1);
        let mut granted = 0u64;
        let mut now = T0;
        while now < T0 + 60 * SEC {
            granted += u64::from(b.try_acquire(1, now));
            now += MS;
        }
        assert!((179..=181).contains(&granted), "{granted}");
    }

    /// 8 threads x 100k acquisitions against a shared virtual clock: the
    /// total granted never exceeds burst + rate * elapsed.
    #[test]
    fn hammer_never_overgrants() {
        const THREADS: u64 = 8;
        const OPS: u64 = 100_000;
        const RATE: f64 = 1000.0;
        const BURST: u64 = 50;
        let b = Arc::new(TokenBucket::new(RATE, BURST));
        let clock = Arc::new(StdAtomicU64::new(T0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (b, clock) = (Arc::clone(&b), Arc::clone(&clock));
                std::thread::spawn(move || {
                    let mut granted = 0u64;
                    for _ in 0..OPS {
                        let now = clock.fetch_add(1_000, StdOrdering::Relaxed);
                        granted += u64::from(b.try_acquire(1, now));
                    }
                    granted
                })
            })
            .collect();
        let granted: u64 = handles
            .into_iter()
            .map(|h| h.join().expect("thread panicked"))
            .sum();
        let elapsed = clock.load(StdOrdering::Relaxed) - T0;
        let bound = BURST + (RATE * elapsed as f64 / 1e9) as u64;
        assert!(granted <= bound, "granted {granted} > bound {bound}");
        // And the limiter is not starving anyone: most of the budget is used.
        assert!(
            granted >= bound * 9 / 10,
            "granted only {granted} of {bound}"
        );
    }

    #[test]
    fn shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TokenBucket>();
    }
}
