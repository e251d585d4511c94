//! A lock-free circuit breaker for one backend.
//!
//! Why this shape: the breaker sits on every request's path, so admission in
//! the healthy (closed) state is a single atomic load, and every transition
//! is one compare-and-swap on one `AtomicU64`. Packing the state, the
//! consecutive-failure count, the in-flight probe count and a timestamp into
//! that one word means no transition can observe a half-updated breaker.
//!
//! The failure-ratio window is a ring of [`BUCKETS`] buckets, each a single
//! `AtomicU64` holding its time-slot tag and its counts, so a stale bucket is
//! reset and counted into by the same CAS.
//!
//! Time is passed in by the caller as monotonic nanoseconds: the crate never
//! reads a clock, so tests are deterministic and callers can reuse one clock
//! read per request.
//!
//! Contract: every [`Admission::Probe`] must be followed by exactly one
//! [`CircuitBreaker::on_success`], [`CircuitBreaker::on_failure`] or
//! [`CircuitBreaker::on_cancel`]; that is what keeps the number of
//! concurrent probes at or below `half_open_probes`. A probe that is never
//! reported is presumed lost after `max(open_nanos, window_nanos)` without
//! probe activity, and its slot is reclaimed, so a leaked probe cannot pin a
//! backend in half-open forever.

use crate::sync::{AtomicU64, Ordering};

/// Tuning of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row (0 disables; capped at 4095).
    pub consecutive_failures: u32,
    /// Trip when failures / requests in the window reach this (0 disables).
    pub failure_ratio: f64,
    /// The ratio only applies once the window holds this many requests, so
    /// one failure out of two requests does not trip a quiet backend.
    pub min_requests: u32,
    /// Length of the rolling window for the ratio.
    pub window_nanos: u64,
    /// How long the breaker stays open before letting probes through.
    pub open_nanos: u64,
    /// Concurrent probes allowed while half-open (at least 1, capped at 4095).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window_nanos: 10_000_000_000,
            open_nanos: 5_000_000_000,
            half_open_probes: 1,
        }
    }
}

/// The breaker's state as seen at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Healthy: all requests admitted.
    Closed,
    /// Tripped: requests rejected until `open_nanos` have passed.
    Open,
    /// Trial: a bounded number of probe requests decide between closing and
    /// reopening.
    HalfOpen,
}

/// The outcome of [`CircuitBreaker::admit`]; pass it back to `on_success`,
/// `on_failure` or `on_cancel` so the breaker knows what is being reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A normal request in the closed state.
    Allowed,
    /// Admitted as a half-open probe: its result closes or reopens.
    Probe,
    /// Not admitted: pick another backend or fail fast.
    Rejected,
}

/// Number of buckets in the ratio window: the window advances in steps of
/// `window_nanos / BUCKETS`.
pub const BUCKETS: usize = 10;

// --- packed state word ----------------------------------------------------
// bits 0..2   state (Closed / Open / HalfOpen)
// bits 2..14  consecutive failures (saturating)
// bits 14..26 probes in flight
// bits 26..64 timestamp in units of 2^16 ns (~65.5 us), wrapping every ~208
//             days: when Open, the time it opened; when HalfOpen, the last
//             probe activity (for leak reclaim).
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const STATE_MASK: u64 = 0b11;
const FAIL_SHIFT: u32 = 2;
const COUNT_BITS: u32 = 12;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const PROBE_SHIFT: u32 = FAIL_SHIFT + COUNT_BITS;
const TIME_SHIFT: u32 = PROBE_SHIFT + COUNT_BITS;
const TIME_BITS: u32 = 64 - TIME_SHIFT;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const UNIT_SHIFT: u32 = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Word(u64);

impl Word {
    fn state(self) -> u64 {
        self.0 & STATE_MASK
    }
    fn fails(self) -> u64 {
        (self.0 >> FAIL_SHIFT) & COUNT_MAX
    }
    fn probes(self) -> u64 {
        (self.0 >> PROBE_SHIFT) & COUNT_MAX
    }
    fn time(self) -> u64 {
        self.0 >> TIME_SHIFT
    }
    fn new(state: u64, fails: u64, probes: u64, time: u64) -> Word {
        Word(
            state
                | (fails.min(COUNT_MAX) << FAIL_SHIFT)
                | (probes.min(COUNT_MAX) << PROBE_SHIFT)
                | ((time & TIME_MASK) << TIME_SHIFT),
        )
    }
}

/// Timestamp for "it happened at `now`", rounded up so that elapsed-time
/// checks against it never fire early.
fn stamp(now: u64) -> u64 {
    now.div_ceil(1 << UNIT_SHIFT) & TIME_MASK
}

/// Whole units elapsed since `since` (a [`stamp`]), modulo the wrap. A
/// `now` slightly before `since` (the stamp is rounded up, and callers'
/// clock reads race) counts as zero, not as a near-full wrap.
fn elapsed_units(since: u64, now: u64) -> u64 {
    let d = ((now >> UNIT_SHIFT) & TIME_MASK).wrapping_sub(since) & TIME_MASK;
    if d > TIME_MASK / 2 { 0 } else { d }
}

fn to_units(nanos: u64) -> u64 {
    // Half the wrap period at most, so comparisons stay meaningful.
    nanos.div_ceil(1 << UNIT_SHIFT).min(TIME_MASK / 2)
}

// --- window buckets -------------------------------------------------------
// bits 0..20 failures, 20..40 successes, 40..64 slot tag (slot mod 2^24).
const CNT_BITS: u32 = 20;
const CNT_MAX: u64 = (1 << CNT_BITS) - 1;
const TAG_SHIFT: u32 = 2 * CNT_BITS;
const TAG_MASK: u64 = (1 << (64 - TAG_SHIFT)) - 1;

fn bucket_unpack(v: u64) -> (u64, u64, u64) {
    (v >> TAG_SHIFT, (v >> CNT_BITS) & CNT_MAX, v & CNT_MAX)
}

fn bucket_pack(tag: u64, ok: u64, fail: u64) -> u64 {
    (tag << TAG_SHIFT) | (ok << CNT_BITS) | fail
}

/// Point-in-time view of a breaker, for metrics and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// State at the snapshot's time.
    pub state: BreakerState,
    /// Failures in a row (closed state).
    pub consecutive_failures: u32,
    /// Probes admitted and not yet reported.
    pub probes_in_flight: u32,
    /// Successes in the ratio window (closed state).
    pub window_successes: u64,
    /// Failures in the ratio window (closed state).
    pub window_failures: u64,
}

/// Circuit breaker for one backend. `Send + Sync`; share it by reference or
/// `Arc`.
#[derive(Debug)]
pub struct CircuitBreaker {
    word: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    cfg: BreakerConfig,
    consecutive_limit: u64,
    probe_limit: u64,
    open_units: u64,
    leak_units: u64,
    bucket_nanos: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        CircuitBreaker {
            word: AtomicU64::new(Word::new(CLOSED, 0, 0, 0).0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            cfg,
            consecutive_limit: u64::from(cfg.consecutive_failures).min(COUNT_MAX),
            probe_limit: u64::from(cfg.half_open_probes).clamp(1, COUNT_MAX),
            open_units: to_units(cfg.open_nanos),
            leak_units: to_units(cfg.open_nanos.max(cfg.window_nanos)).max(1),
            bucket_nanos: (cfg.window_nanos / BUCKETS as u64).max(1),
        }
    }

    /// The configuration this breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// Decides whether a request may go to this backend now. Closed: one
    /// atomic load. Open past `open_nanos`, or half-open: takes a probe slot
    /// if one is free (at most `half_open_probes` at once).
    pub fn admit(&self, now_nanos: u64) -> Admission {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            let w = Word(cur);
            let (next, outcome) = match w.state() {
                CLOSED => return Admission::Allowed,
                OPEN => {
                    if elapsed_units(w.time(), now_nanos) < self.open_units {
                        return Admission::Rejected;
                    }
                    if w.probes() >= self.probe_limit {
                        // Earlier probes are still out: go half-open, but
                        // wait for them to report.
                        let next = Word::new(HALF_OPEN, 0, w.probes(), stamp(now_nanos));
                        (next, Admission::Rejected)
                    } else {
                        let next = Word::new(HALF_OPEN, 0, w.probes() + 1, stamp(now_nanos));
                        (next, Admission::Probe)
                    }
                }
                _ => {
                    if w.probes() < self.probe_limit {
                        let next = Word::new(HALF_OPEN, 0, w.probes() + 1, stamp(now_nanos));
                        (next, Admission::Probe)
                    } else if elapsed_units(w.time(), now_nanos) >= self.leak_units {
                        // All slots held with no activity for too long: the
                        // probes were lost (never reported). Reclaim them.
                        (
                            Word::new(HALF_OPEN, 0, 1, stamp(now_nanos)),
                            Admission::Probe,
                        )
                    } else {
                        return Admission::Rejected;
                    }
                }
            };
            match self
                .word
                .compare_exchange_weak(cur, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return outcome,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Reports a successful request. A successful probe closes the breaker.
    pub fn on_success(&self, admission: Admission, now_nanos: u64) {
        match admission {
            Admission::Rejected => {}
            Admission::Allowed => {
                let w = Word(self.word.load(Ordering::Acquire));
                if w.state() != CLOSED {
                    // Admitted before the trip; its result says nothing
                    // about the trial in progress.
                    return;
                }
                self.record(false, now_nanos);
                if w.fails() > 0 {
                    self.update(|w| {
                        (w.state() == CLOSED && w.fails() > 0)
                            .then(|| Word::new(CLOSED, 0, w.probes(), w.time()))
                    });
                }
            }
            Admission::Probe => {
                let prev = self.update(|w| {
                    let probes = w.probes().saturating_sub(1);
                    Some(if w.state() == HALF_OPEN {
                        Word::new(CLOSED, 0, probes, stamp(now_nanos))
                    } else {
                        Word::new(w.state(), w.fails(), probes, w.time())
                    })
                });
                if prev.is_some_and(|w| w.state() == HALF_OPEN) {
                    // A fresh start: failures from before the trip must not
                    // count against the recovered backend.
                    self.reset_window();
                }
            }
        }
    }

    /// Reports a failed request. May trip the breaker (consecutive failures
    /// or failure ratio); a failed probe reopens it.
    pub fn on_failure(&self, admission: Admission, now_nanos: u64) {
        match admission {
            Admission::Rejected => {}
            Admission::Allowed => {
                if Word(self.word.load(Ordering::Acquire)).state() != CLOSED {
                    return;
                }
                self.record(true, now_nanos);
                let ratio_trip = self.ratio_exceeded(now_nanos);
                self.update(|w| {
                    if w.state() != CLOSED {
                        return None;
                    }
                    let fails = w.fails() + 1;
                    let trip = ratio_trip
                        || (self.consecutive_limit > 0 && fails >= self.consecutive_limit);
                    Some(if trip {
                        Word::new(OPEN, 0, w.probes(), stamp(now_nanos))
                    } else {
                        Word::new(CLOSED, fails, w.probes(), w.time())
                    })
                });
            }
            Admission::Probe => {
                self.update(|w| {
                    let probes = w.probes().saturating_sub(1);
                    Some(if w.state() == HALF_OPEN {
                        Word::new(OPEN, 0, probes, stamp(now_nanos))
                    } else {
                        Word::new(w.state(), w.fails(), probes, w.time())
                    })
                });
            }
        }
    }

    /// Reports a request that ended without a verdict on the backend (e.g.
    /// the client went away): frees a probe slot, counts nothing.
    pub fn on_cancel(&self, admission: Admission, now_nanos: u64) {
        if admission == Admission::Probe {
            self.update(|w| {
                let time = if w.state() == HALF_OPEN {
                    stamp(now_nanos)
                } else {
                    w.time()
                };
                Some(Word::new(
                    w.state(),
                    w.fails(),
                    w.probes().saturating_sub(1),
                    time,
                ))
            });
        }
    }

    /// The state at `now_nanos` (an open breaker past `open_nanos` reads as
    /// half-open even before the next `admit` moves it there).
    pub fn state(&self, now_nanos: u64) -> BreakerState {
        let w = Word(self.word.load(Ordering::Acquire));
        match w.state() {
            CLOSED => BreakerState::Closed,
            OPEN if elapsed_units(w.time(), now_nanos) < self.open_units => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether [`admit`](Self::admit) would currently let a request through,
    /// without taking a probe slot: for pickers' `skip` closures. One load.
    #[inline]
    pub fn is_available(&self, now_nanos: u64) -> bool {
        let w = Word(self.word.load(Ordering::Acquire));
        match w.state() {
            CLOSED => true,
            OPEN => {
                elapsed_units(w.time(), now_nanos) >= self.open_units
                    && w.probes() < self.probe_limit
            }
            _ => {
                w.probes() < self.probe_limit
                    || elapsed_units(w.time(), now_nanos) >= self.leak_units
            }
        }
    }

    /// Probes admitted and not yet reported.
    pub fn probes_in_flight(&self) -> u32 {
        Word(self.word.load(Ordering::Acquire)).probes() as u32
    }

    /// A consistent view of the state word plus the window counts.
    pub fn snapshot(&self, now_nanos: u64) -> BreakerSnapshot {
        let w = Word(self.word.load(Ordering::Acquire));
        let (ok, fail) = self.window_counts(now_nanos);
        BreakerSnapshot {
            state: self.state(now_nanos),
            consecutive_failures: w.fails() as u32,
            probes_in_flight: w.probes() as u32,
            window_successes: ok,
            window_failures: fail,
        }
    }

    /// Applies `f` to the word until the CAS succeeds; `f` returning `None`
    /// means "no change". Returns the word `f` was applied to, if changed.
    fn update(&self, f: impl Fn(Word) -> Option<Word>) -> Option<Word> {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            let next = f(Word(cur))?;
            match self
                .word
                .compare_exchange_weak(cur, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Word(cur)),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Counts one result into the current bucket, resetting it first if it
    /// still holds an older slot. Relaxed: the counts publish no other data.
    fn record(&self, failure: bool, now_nanos: u64) {
        let slot = now_nanos / self.bucket_nanos;
        let tag = slot & TAG_MASK;
        let bucket = &self.buckets[(slot % BUCKETS as u64) as usize];
        let mut cur = bucket.load(Ordering::Relaxed);
        loop {
            let (t, mut ok, mut fail) = bucket_unpack(cur);
            if t != tag {
                (ok, fail) = (0, 0);
            }
            if ok == CNT_MAX || fail == CNT_MAX {
                // Saturated: halve both, which keeps the ratio.
                ok /= 2;
                fail /= 2;
            }
            if failure {
                fail += 1;
            } else {
                ok += 1;
            }
            match bucket.compare_exchange_weak(
                cur,
                bucket_pack(tag, ok, fail),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// (successes, failures) over the buckets of the last window.
    pub fn window_counts(&self, now_nanos: u64) -> (u64, u64) {
        let slot = (now_nanos / self.bucket_nanos) & TAG_MASK;
        let (mut ok, mut fail) = (0, 0);
        for bucket in &self.buckets {
            let (t, o, f) = bucket_unpack(bucket.load(Ordering::Relaxed));
            if slot.wrapping_sub(t) & TAG_MASK < BUCKETS as u64 {
                ok += o;
                fail += f;
            }
        }
        (ok, fail)
    }

    fn ratio_exceeded(&self, now_nanos: u64) -> bool {
        let ratio = self.cfg.failure_ratio;
        if ratio.is_nan() || ratio <= 0.0 {
            return false;
        }
        let (ok, fail) = self.window_counts(now_nanos);
        let total = ok + fail;
        total > 0
            && total >= u64::from(self.cfg.min_requests)
            && fail as f64 >= ratio * total as f64
    }

    fn reset_window(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
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
    /// A start time well away from zero, as a monotonic clock would give.
    const T0: u64 = 1_000 * SEC;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.0,
            min_requests: 10,
            window_nanos: 10 * SEC,
            open_nanos: 5 * SEC,
            half_open_probes: 1,
        }
    }

    fn fail_n(b: &CircuitBreaker, n: usize, now: u64) {
        for _ in 0..n {
            let a = b.admit(now);
            b.on_failure(a, now);
        }
    }

    fn trip(b: &CircuitBreaker, now: u64) {
        let limit = b.config().consecutive_failures as usize;
        fail_n(b, limit, now);
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn default_config_values() {
        let d = BreakerConfig::default();
        assert_eq!(d.consecutive_failures, 5);
        assert_eq!(d.failure_ratio, 0.5);
        assert_eq!(d.min_requests, 20);
        assert_eq!(d.window_nanos, 10 * SEC);
        assert_eq!(d.open_nanos, 5 * SEC);
        assert_eq!(d.half_open_probes, 1);
    }

    #[test]
    fn closed_admits_everything() {
        let b = CircuitBreaker::new(cfg());
        for i in 0..100 {
            assert_eq!(b.admit(T0 + i), Admission::Allowed);
        }
        assert_eq!(b.state(T0), BreakerState::Closed);
        assert!(b.is_available(T0));
    }

    #[test]
    fn consecutive_failures_trip() {
        let b = CircuitBreaker::new(cfg());
        fail_n(&b, 2, T0);
        assert_eq!(b.state(T0), BreakerState::Closed);
        assert_eq!(b.snapshot(T0).consecutive_failures, 2);
        fail_n(&b, 1, T0);
        assert_eq!(b.state(T0), BreakerState::Open);
        assert_eq!(b.admit(T0), Admission::Rejected);
        assert!(!b.is_available(T0));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let b = CircuitBreaker::new(cfg());
        for _ in 0..10 {
            fail_n(&b, 2, T0);
            let a = b.admit(T0);
            b.on_success(a, T0);
            assert_eq!(b.snapshot(T0).consecutive_failures, 0);
        }
        assert_eq!(b.state(T0), BreakerState::Closed);
    }

    #[test]
    fn zero_consecutive_limit_disables_that_trip() {
        let b = CircuitBreaker::new(BreakerConfig {
            consecutive_failures: 0,
            ..cfg()
        });
        fail_n(&b, 10_000, T0);
        assert_eq!(b.state(T0), BreakerState::Closed);
    }

    fn ratio_cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 0,
            failure_ratio: 0.5,
            min_requests: 10,
            ..cfg()
        }
    }

    #[test]
    fn ratio_trips_only_with_min_requests() {
        let b = CircuitBreaker::new(ratio_cfg());
        // 100% failures, but only 9 requests: below min_requests.
        fail_n(&b, 9, T0);
        assert_eq!(b.state(T0), BreakerState::Closed);
        // The 10th request (a failure) reaches the minimum: 10/10 >= 0.5.
        fail_n(&b, 1, T0);
        assert_eq!(b.state(T0), BreakerState::Open);
    }

    #[test]
    fn ratio_below_threshold_stays_closed() {
        let b = CircuitBreaker::new(ratio_cfg());
        for i in 0..100 {
            let now = T0 + i * MS;
            let a = b.admit(now);
            // 1 failure in 3 < 0.5.
            if i % 3 == 0 {
                b.on_failure(a, now);
            } else {
                b.on_success(a, now);
            }
        }
        assert_eq!(b.state(T0 + 100 * MS), BreakerState::Closed);
        let s = b.snapshot(T0 + 100 * MS);
        assert_eq!(s.window_successes + s.window_failures, 100);
        assert_eq!(s.window_failures, 34);
        // Now mostly failures: trips once the ratio crosses 0.5.
        let mut tripped_at = None;
        for i in 0..100 {
            let now = T0 + (100 + i) * MS;
            let a = b.admit(now);
            b.on_failure(a, now);
            if b.state(now) == BreakerState::Open {
                tripped_at = Some(i);
                break;
            }
        }
        // 34 + k failures >= 0.5 * (100 + k)  =>  k >= 32.
        assert_eq!(tripped_at, Some(31));
    }

    #[test]
    fn ratio_window_forgets_old_results() {
        let b = CircuitBreaker::new(ratio_cfg());
        // 9 failures, then wait out the window: they no longer count.
        fail_n(&b, 9, T0);
        assert_eq!(b.window_counts(T0), (0, 9));
        let later = T0 + 11 * SEC;
        assert_eq!(b.window_counts(later), (0, 0));
        fail_n(&b, 9, later);
        assert_eq!(b.state(later), BreakerState::Closed);
        // Within the window they do.
        fail_n(&b, 1, later + SEC);
        assert_eq!(b.state(later + SEC), BreakerState::Open);
    }

    #[test]
    fn window_rolls_bucket_by_bucket() {
        let b = CircuitBreaker::new(ratio_cfg());
        // One success per second for 20 s: a 10 s window of 1 s buckets
        // holds the last 10.
        for s in 0..20 {
            let now = T0 + s * SEC;
            let a = b.admit(now);
            b.on_success(a, now);
            let want = (s + 1).min(BUCKETS as u64);
            assert_eq!(b.window_counts(now), (want, 0), "second {s}");
        }
    }

    #[test]
    fn bucket_saturation_keeps_the_ratio() {
        let b = CircuitBreaker::new(BreakerConfig {
            consecutive_failures: 0,
            failure_ratio: 0.0,
            ..cfg()
        });
        for i in 0..(CNT_MAX * 3 / 2) {
            let a = b.admit(T0);
            if i % 4 == 0 {
                b.on_failure(a, T0);
            } else {
                b.on_success(a, T0);
            }
        }
        let (ok, fail) = b.window_counts(T0);
        assert!(ok < CNT_MAX && ok > CNT_MAX / 3, "{ok}");
        let ratio = fail as f64 / (ok + fail) as f64;
        assert!((ratio - 0.25).abs() < 0.01, "{ratio}");
    }

    #[test]
    fn open_becomes_half_open_after_open_nanos() {
        let b = CircuitBreaker::new(cfg());
        trip(&b, T0);
        let open = cfg().open_nanos;
        // Never early, at most ~2 time units (~131 us) late.
        for dt in [0, SEC, open - MS, open - 1] {
            assert_eq!(b.state(T0 + dt), BreakerState::Open, "dt={dt}");
            assert!(!b.is_available(T0 + dt));
            assert_eq!(b.admit(T0 + dt), Admission::Rejected, "dt={dt}");
        }
        let after = T0 + open + 200_000;
        assert_eq!(b.state(after), BreakerState::HalfOpen);
        assert!(b.is_available(after));
        assert_eq!(b.admit(after), Admission::Probe);
    }

    #[test]
    fn half_open_probe_limit() {
        let b = CircuitBreaker::new(BreakerConfig {
            half_open_probes: 3,
            ..cfg()
        });
        trip(&b, T0);
        let t = T0 + 6 * SEC;
        for _ in 0..3 {
            assert_eq!(b.admit(t), Admission::Probe);
        }
        assert_eq!(b.probes_in_flight(), 3);
        assert!(!b.is_available(t));
        for _ in 0..10 {
            assert_eq!(b.admit(t), Admission::Rejected);
        }
        // A cancelled probe frees its slot and decides nothing.
        b.on_cancel(Admission::Probe, t);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        assert!(b.is_available(t));
        assert_eq!(b.admit(t), Admission::Probe);
        assert_eq!(b.admit(t), Admission::Rejected);
    }

    #[test]
    fn probe_success_closes() {
        let b = CircuitBreaker::new(cfg());
        trip(&b, T0);
        let t = T0 + 6 * SEC;
        let a = b.admit(t);
        assert_eq!(a, Admission::Probe);
        b.on_success(a, t);
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.probes_in_flight(), 0);
        assert_eq!(b.admit(t), Admission::Allowed);
        // The consecutive count starts from zero again.
        fail_n(&b, 2, t);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn closing_clears_the_ratio_window() {
        let b = CircuitBreaker::new(ratio_cfg());
        fail_n(&b, 10, T0);
        assert_eq!(b.state(T0), BreakerState::Open);
        let t = T0 + 6 * SEC; // old failures still inside the 10 s window
        let a = b.admit(t);
        b.on_success(a, t);
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.window_counts(t), (0, 0));
        fail_n(&b, 1, t);
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn probe_failure_reopens() {
        let b = CircuitBreaker::new(cfg());
        trip(&b, T0);
        let t = T0 + 6 * SEC;
        let a = b.admit(t);
        assert_eq!(a, Admission::Probe);
        b.on_failure(a, t);
        assert_eq!(b.state(t), BreakerState::Open);
        assert_eq!(b.probes_in_flight(), 0);
        // The open period restarts from the probe's failure.
        assert_eq!(b.admit(t + 4 * SEC), Admission::Rejected);
        assert_eq!(b.admit(t + 5 * SEC + MS), Admission::Probe);
    }

    #[test]
    fn late_results_of_pre_trip_requests_are_ignored() {
        let b = CircuitBreaker::new(cfg());
        let early = b.admit(T0);
        assert_eq!(early, Admission::Allowed);
        trip(&b, T0);
        let t = T0 + 6 * SEC;
        assert_eq!(b.admit(t), Admission::Probe);
        // The early request finishing now must neither close nor reopen.
        b.on_success(early, t);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        b.on_failure(early, t);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        assert_eq!(b.probes_in_flight(), 1);
        // Rejected admissions report nothing.
        b.on_failure(Admission::Rejected, t);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
    }

    #[test]
    fn probes_outstanding_across_reopen_still_count() {
        // Two probes; the first fails and reopens; the second is still out
        // when the next half-open period starts, so only one new probe fits.
        let b = CircuitBreaker::new(BreakerConfig {
            half_open_probes: 2,
            ..cfg()
        });
        trip(&b, T0);
        let t1 = T0 + 6 * SEC;
        let p1 = b.admit(t1);
        let p2 = b.admit(t1);
        assert_eq!((p1, p2), (Admission::Probe, Admission::Probe));
        b.on_failure(p1, t1);
        assert_eq!(b.state(t1), BreakerState::Open);
        let t2 = t1 + 6 * SEC;
        assert_eq!(b.admit(t2), Admission::Probe);
        assert_eq!(b.admit(t2), Admission::Rejected);
        // p2 reports (success closes the half-open breaker).
        b.on_success(p2, t2);
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.probes_in_flight(), 1);
    }

    #[test]
    fn leaked_probe_is_reclaimed() {
        let b = CircuitBreaker::new(cfg());
        trip(&b, T0);
        let t = T0 + 6 * SEC;
        assert_eq!(b.admit(t), Admission::Probe); // never reported
        // Within max(open, window) = 10 s: still held.
        assert_eq!(b.admit(t + 9 * SEC), Admission::Rejected);
        assert!(!b.is_available(t + 9 * SEC));
        // After it: reclaimed.
        assert!(b.is_available(t + 11 * SEC));
        assert_eq!(b.admit(t + 11 * SEC), Admission::Probe);
        assert_eq!(b.probes_in_flight(), 1);
    }

    #[test]
    fn zero_probe_config_still_probes_once() {
        let b = CircuitBreaker::new(BreakerConfig {
            half_open_probes: 0,
            ..cfg()
        });
        trip(&b, T0);
        assert_eq!(b.admit(T0 + 6 * SEC), Admission::Probe);
    }

    #[test]
    fn works_from_time_zero_and_near_wrap() {
        for start in [0, (TIME_MASK - 1000) << UNIT_SHIFT] {
            let b = CircuitBreaker::new(cfg());
            trip(&b, start);
            assert_eq!(
                b.admit(start + 4 * SEC),
                Admission::Rejected,
                "start={start}"
            );
            assert_eq!(b.admit(start + 6 * SEC), Admission::Probe, "start={start}");
        }
    }

    #[test]
    fn shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CircuitBreaker>();
    }

    /// 8 threads x 100k operations on one breaker with a shared virtual
    /// clock. Asserts the probe bound at every step and consistent counters
    /// at the end.
    #[test]
    fn hammer_probe_limit_and_counters() {
        const THREADS: u64 = 8;
        const OPS: u64 = 100_000;
        const PROBES: u32 = 2;
        let b = Arc::new(CircuitBreaker::new(BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 20,
            // Longer than the whole run in virtual time, so probe-leak
            // reclaim never fires and the bound must hold exactly.
            window_nanos: 100 * SEC,
            open_nanos: 200_000,
            half_open_probes: PROBES,
        }));
        let clock = Arc::new(StdAtomicU64::new(T0));
        let in_flight = Arc::new(StdAtomicU64::new(0));
        let max_seen = Arc::new(StdAtomicU64::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (b, clock, in_flight, max_seen) = (
                    Arc::clone(&b),
                    Arc::clone(&clock),
                    Arc::clone(&in_flight),
                    Arc::clone(&max_seen),
                );
                std::thread::spawn(move || {
                    let mut rng = crate::hash::mix64(t + 1);
                    let mut counts = [0u64; 3];
                    for _ in 0..OPS {
                        let now = clock.fetch_add(100, StdOrdering::Relaxed);
                        rng = crate::hash::mix64(rng);
                        let fail = rng % 100 < 40;
                        let a = b.admit(now);
                        match a {
                            Admission::Allowed => counts[0] += 1,
                            Admission::Probe => {
                                counts[1] += 1;
                                let n = in_flight.fetch_add(1, StdOrdering::SeqCst) + 1;
                                max_seen.fetch_max(n, StdOrdering::SeqCst);
                                assert!(n <= u64::from(PROBES), "{n} concurrent probes");
                                // Give other threads a chance to race for a
                                // slot while this probe is out.
                                std::thread::yield_now();
                                in_flight.fetch_sub(1, StdOrdering::SeqCst);
                            }
                            Admission::Rejected => counts[2] += 1,
                        }
                        let now = clock.load(StdOrdering::Relaxed);
                        if fail {
                            b.on_failure(a, now);
                        } else {
                            b.on_success(a, now);
                        }
                    }
                    counts
                })
            })
            .collect();
        let mut totals = [0u64; 3];
        for h in handles {
            let c = h.join().expect("hammer thread panicked");
            for i in 0..3 {
                totals[i] += c[i];
            }
        }
        assert_eq!(totals.iter().sum::<u64>(), THREADS * OPS);
        // Every path was exercised.
        assert!(totals.iter().all(|&c| c > 0), "{totals:?}");
        assert!(max_seen.load(StdOrdering::SeqCst) >= 1);
        // All probes reported: nothing leaked in the packed counter.
        assert_eq!(b.probes_in_flight(), 0);
        let s = b.snapshot(clock.load(StdOrdering::Relaxed));
        assert!(s.consecutive_failures < 3, "{s:?}");
    }

    /// Window counters are exact under contention when nothing trips.
    #[test]
    fn hammer_window_counts_exact() {
        const THREADS: u64 = 8;
        const OPS: u64 = 50_000;
        let b = Arc::new(CircuitBreaker::new(BreakerConfig {
            consecutive_failures: 0,
            failure_ratio: 0.0,
            ..cfg()
        }));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    for i in 0..OPS {
                        let a = b.admit(T0);
                        if (i + t) % 5 == 0 {
                            b.on_failure(a, T0);
                        } else {
                            b.on_success(a, T0);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread panicked");
        }
        assert_eq!(
            b.window_counts(T0),
            (THREADS * OPS * 4 / 5, THREADS * OPS / 5)
        );
    }
}
