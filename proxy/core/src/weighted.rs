//! Per-request weighted choice among a route's `backendRefs`.
//!
//! Gateway API semantics: a ref with weight 0 receives no traffic, and the
//! others receive traffic in proportion to their weights. A cumulative-sum
//! array with binary search is exact (no rounding of weights into a fixed
//! number of slots) and O(log n), which beats alias tables on rebuild cost
//! and simplicity for the handful of refs a route has.

use crate::hash::{mix64, reduce};

/// Weighted picker over a fixed list of weights. Immutable and `Sync`.
#[derive(Debug, Clone)]
pub struct WeightedPicker {
    /// `cumulative[i]` = sum of weights `0..=i`; strictly increasing across
    /// non-zero weights, flat across zeros.
    cumulative: Box<[u64]>,
}

impl WeightedPicker {
    /// `None` if `weights` is empty or all zero: such a route has no
    /// backend to send to and the caller must answer with an error.
    pub fn new(weights: &[u32]) -> Option<WeightedPicker> {
        let mut sum = 0u64;
        let cumulative: Box<[u64]> = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        (sum > 0).then_some(WeightedPicker { cumulative })
    }

    /// Sum of all weights.
    #[inline]
    pub fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Weight of entry `i` (0 if out of range).
    #[inline]
    pub fn weight(&self, i: usize) -> u64 {
        let hi = self.cumulative.get(i).copied().unwrap_or(0);
        let lo = match i.checked_sub(1) {
            Some(j) => self.cumulative.get(j).copied().unwrap_or(0),
            None => 0,
        };
        hi.saturating_sub(lo)
    }

    /// Picks an index with probability weight/total. `random` must be
    /// uniform over all of `u64` (e.g. from a per-thread PRNG); it is mapped
    /// onto `0..total` by a multiply-shift, so every index receives exactly
    /// `floor` or `ceil` of `2^64 * weight / total` of the possible values.
    #[inline]
    pub fn pick(&self, random: u64) -> usize {
        let r = reduce(random, self.total_weight());
        // First entry whose cumulative sum exceeds r; a zero-weight entry
        // never qualifies because its predecessor's sum is equal to its own.
        let i = self.cumulative.partition_point(|&c| c <= r);
        i.min(self.cumulative.len() - 1)
    }

    /// Like [`pick`](Self::pick), but never returns an index for which
    /// `skip` is true; the others keep their relative proportions. `None` if
    /// every weighted entry is skipped.
    ///
    /// Fast path: one `pick` and one `skip` call. Slow path (the pick was
    /// skipped): two linear passes calling `skip` per weighted entry, with a
    /// re-mixed `random` so the fallback is not biased towards neighbours
    /// of the skipped entry.
    pub fn pick_skipping(&self, random: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let first = self.pick(random);
        if !skip(first) {
            return Some(first);
        }
        let remaining: u64 = (0..self.len())
            .map(|i| (i, self.weight(i)))
            .filter(|&(i, w)| w > 0 && i != first && !skip(i))
            .map(|(_, w)| w)
            .sum();
        if remaining == 0 {
            return None;
        }
        let mut r = reduce(mix64(random), remaining);
        let mut fallback = None;
        for i in 0..self.len() {
            let w = self.weight(i);
            if w == 0 || i == first || skip(i) {
                continue;
            }
            if r < w {
                return Some(i);
            }
            r -= w;
            fallback = Some(i);
        }
        // Only reached if `skip` changed its mind between the two passes.
        fallback
    }

    /// Number of entries, including weight-0 ones (indices are into the
    /// slice given to [`new`](Self::new)).
    #[inline]
    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    /// Always false: an empty picker cannot be constructed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_empty_and_all_zero() {
        assert!(WeightedPicker::new(&[]).is_none());
        assert!(WeightedPicker::new(&[0, 0, 0]).is_none());
        let p = WeightedPicker::new(&[0, 3, 0]).expect("one weighted");
        assert_eq!(p.len(), 3);
        assert!(!p.is_empty());
        assert_eq!(p.total_weight(), 3);
        assert_eq!(
            (p.weight(0), p.weight(1), p.weight(2), p.weight(9)),
            (0, 3, 0, 0)
        );
        for r in [0, 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(p.pick(r), 1);
        }
    }

    /// Sweeps `random` over the whole u64 range in `steps` equal strides
    /// and counts picks.
    fn sweep(p: &WeightedPicker, steps: u64) -> Vec<u64> {
        let stride = u64::MAX / steps + 1;
        let mut counts = vec![0u64; p.len()];
        for k in 0..steps {
            counts[p.pick(k.wrapping_mul(stride))] += 1;
        }
        counts
    }

    #[test]
    fn exact_proportions_over_full_range() {
        // total = 16, 2^14 evenly spaced randoms: exactly 1024 per unit.
        let weights = [1u32, 0, 7, 3, 0, 5];
        let p = WeightedPicker::new(&weights).expect("weighted");
        let counts = sweep(&p, 1 << 14);
        let want: Vec<u64> = weights.iter().map(|&w| u64::from(w) * 1024).collect();
        assert_eq!(counts, want);
        // Extremes of the range land on the first and last weighted entry.
        assert_eq!(p.pick(0), 0);
        assert_eq!(p.pick(u64::MAX), 5);
    }

    #[test]
    fn statistical_proportions() {
        let weights = [10u32, 0, 30, 60];
        let p = WeightedPicker::new(&weights).expect("weighted");
        let mut state = 0x1234_5678u64;
        let n = 200_000u64;
        let mut counts = [0u64; 4];
        for _ in 0..n {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            counts[p.pick(mix64(state))] += 1;
        }
        assert_eq!(counts[1], 0);
        for (i, &w) in weights.iter().enumerate() {
            let want = n as f64 * f64::from(w) / 100.0;
            // ~5 standard deviations at these sizes.
            assert!(
                (counts[i] as f64 - want).abs() <= 5.0 * want.sqrt() + 1.0,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn skipping() {
        let p = WeightedPicker::new(&[1, 0, 1, 2]).expect("weighted");
        for k in 0..1000u64 {
            let r = mix64(k);
            let got = p.pick_skipping(r, |i| i == 3).expect("0 and 2 remain");
            assert!(got == 0 || got == 2);
            assert_eq!(p.pick_skipping(r, |i| i != 2), Some(2));
            assert_eq!(p.pick_skipping(r, |_| false), Some(p.pick(r)));
            assert_eq!(
                p.pick_skipping(r, |i| i != 1),
                None,
                "weight-0 entry is never a fallback"
            );
            assert_eq!(p.pick_skipping(r, |_| true), None);
        }
    }

    #[test]
    fn skipping_keeps_relative_proportions() {
        // Skip entry 0 (weight 50): the rest keep 1:3.
        let p = WeightedPicker::new(&[50, 10, 30]).expect("weighted");
        let n = 100_000u64;
        let mut counts = [0u64; 3];
        for k in 0..n {
            counts[p.pick_skipping(mix64(k), |i| i == 0).expect("some")] += 1;
        }
        assert_eq!(counts[0], 0);
        let share1 = counts[1] as f64 / n as f64;
        assert!((share1 - 0.25).abs() < 0.01, "{counts:?}");
    }

    proptest! {
        #[test]
        fn sweep_is_within_one_of_exact(weights in prop::collection::vec(0u32..1000, 1..20)) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let p = WeightedPicker::new(&weights).expect("weighted");
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let steps = 1u64 << 16;
            let counts = sweep(&p, steps);
            for (i, &w) in weights.iter().enumerate() {
                let want = steps as f64 * f64::from(w) / total as f64;
                if w == 0 {
                    prop_assert_eq!(counts[i], 0);
                } else {
                    prop_assert!((counts[i] as f64 - want).abs() <= 1.0, "i={} got {} want {}", i, counts[i], want);
                }
            }
        }

        #[test]
        fn never_picks_zero_or_skipped(weights in prop::collection::vec(0u32..5, 1..12), r in any::<u64>(), mask in any::<u16>()) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let p = WeightedPicker::new(&weights).expect("weighted");
            prop_assert!(weights[p.pick(r)] > 0);
            let skip = |i: usize| mask & (1 << i) != 0;
            match p.pick_skipping(r, skip) {
                Some(i) => prop_assert!(weights[i] > 0 && !skip(i)),
                None => prop_assert!(weights.iter().enumerate().all(|(i, &w)| w == 0 || skip(i))),
            }
        }
    }
}
