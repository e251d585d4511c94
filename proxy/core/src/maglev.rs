//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016).
//!
//! Why Maglev: O(1) lookups from a flat table, near-perfect balance, and
//! removing one of N backends remaps little more than its own 1/N of keys
//! (measured at 65537 slots: at most 1.5/N up to 60 backends, 1.7/N at 100,
//! but about 6/N at 1000, as the fill's knock-on effects grow with N).
//! Rebuilding is off the hot path (on config change), so the build may
//! allocate.
//!
//! Weights: each backend's k-th turn to claim a slot happens at "virtual
//! time" (k-1)/weight, and turns are served in virtual-time order (a heap),
//! so slot counts are proportional to weights (within a slot or two), heavy
//! and light backends interleave as in unweighted Maglev, and every
//! weighted backend gets at least one slot. Ties are broken by a hash of the
//! backend's name rather than its position, so the table does not depend on
//! the order in which backends are listed.

use core::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use crate::hash::{hash_bytes_seeded, mix64, reduce};

/// Table size used when the configuration does not say otherwise: a prime
/// large enough for ~650 slots per backend at 100 backends.
pub const DEFAULT_TABLE_SIZE: usize = 65537;

/// Largest accepted table (a 256 MiB table is a configuration mistake).
pub const MAX_TABLE_SIZE: usize = 1 << 26;

/// Seeds for the two per-backend permutation parameters.
const OFFSET_SEED: u64 = 0x6D61_676C_6576_6F66; // "maglevof"
const SKIP_SEED: u64 = 0x6D61_676C_6576_736B; // "maglevsk"

/// Backend indices are stored as `u32`; this one is reserved.
const MAX_BACKENDS: usize = u32::MAX as usize;

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size must be prime so every backend's permutation visits
    /// every slot.
    NotPrime {
        /// The rejected size.
        table_size: usize,
    },
    /// Fewer slots than weighted backends: some would get no slot.
    TableTooSmall {
        /// The rejected size.
        table_size: usize,
        /// Backends with weight > 0.
        backends: usize,
    },
    /// Above [`MAX_TABLE_SIZE`].
    TableTooLarge {
        /// The rejected size.
        table_size: usize,
    },
    /// Indices are stored as `u32`.
    TooManyBackends {
        /// Number of backends given.
        backends: usize,
    },
    /// No backend has a weight above zero.
    NoBackends,
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPrime { table_size } => {
                write!(f, "maglev table size {table_size} is not prime")
            }
            Self::TableTooSmall {
                table_size,
                backends,
            } => write!(
                f,
                "maglev table size {table_size} is smaller than the {backends} weighted backends"
            ),
            Self::TableTooLarge { table_size } => write!(
                f,
                "maglev table size {table_size} exceeds the maximum {MAX_TABLE_SIZE}"
            ),
            Self::TooManyBackends { backends } => {
                write!(f, "{backends} backends exceed the maglev limit")
            }
            Self::NoBackends => write!(f, "no backend has a weight above zero"),
        }
    }
}

impl std::error::Error for MaglevError {}

/// An immutable Maglev lookup table. Cheap to share (`Arc`) across threads.
#[derive(Clone)]
pub struct Maglev {
    /// Slot -> index into the backend slice given to [`Maglev::new`].
    table: Box<[u32]>,
    backends: usize,
    weighted: usize,
}

impl fmt::Debug for Maglev {
    // The table itself is 64K entries: print its shape, not its contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table.len())
            .field("backends", &self.backends)
            .field("weighted_backends", &self.weighted)
            .finish()
    }
}

/// Fixed-point fraction bits of the fill's virtual clock.
const VT_SHIFT: u32 = 30;

/// Heap key of a backend's next turn: virtual time in the high 64 bits, then
/// the name-derived tie-breaker, then the index (unique, so keys never tie).
/// Packing into one `u128` makes heap comparisons a single compare.
fn turn_key(vt: u64, tie: u64, idx: u32) -> u128 {
    (u128::from(vt) << 64) | (u128::from(tie >> 32) << 32) | u128::from(idx)
}

/// Deterministic trial division; table sizes are small enough (< 2^26)
/// that this is a few thousand divisions at most, once per rebuild.
fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3usize;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

impl Maglev {
    /// Builds the table. `backends` are `(stable name, weight)`; the name
    /// (e.g. `"10.0.0.1:8080"`) seeds the backend's slot preferences, so the
    /// same name keeps the same slots across rebuilds. Weight-0 backends get
    /// no slots but keep their index.
    pub fn new<N: AsRef<[u8]>>(
        backends: &[(N, u32)],
        table_size: usize,
    ) -> Result<Maglev, MaglevError> {
        if table_size > MAX_TABLE_SIZE {
            return Err(MaglevError::TableTooLarge { table_size });
        }
        if !is_prime(table_size) {
            return Err(MaglevError::NotPrime { table_size });
        }
        if backends.len() >= MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends {
                backends: backends.len(),
            });
        }
        let weighted = backends.iter().filter(|(_, w)| *w > 0).count();
        if weighted == 0 {
            return Err(MaglevError::NoBackends);
        }
        if table_size < weighted {
            return Err(MaglevError::TableTooSmall {
                table_size,
                backends: weighted,
            });
        }

        let m = table_size as u64;
        let max_weight = backends
            .iter()
            .map(|(_, w)| u64::from(*w))
            .max()
            .unwrap_or(1);
        // Per backend: current position in its permutation, its stride, and
        // the virtual time between its turns. The heaviest backend takes one
        // turn per unit of virtual time (2^VT_SHIFT), a backend of weight w
        // one per max_weight/w units. Everything advances by addition, so
        // the fill loop has no division.
        let mut pos = vec![0u64; backends.len()];
        let mut skip = vec![0u64; backends.len()];
        let mut step = vec![0u64; backends.len()];
        let mut heap = BinaryHeap::with_capacity(weighted);
        for (i, (name, weight)) in backends.iter().enumerate() {
            if *weight == 0 {
                continue;
            }
            let name = name.as_ref();
            let offset_hash = hash_bytes_seeded(name, OFFSET_SEED);
            pos[i] = offset_hash % m;
            // m is prime, so any stride in 1..m visits every slot.
            skip[i] = hash_bytes_seeded(name, SKIP_SEED) % (m - 1) + 1;
            let s = (u128::from(max_weight) << VT_SHIFT) / u128::from(*weight);
            step[i] = u64::try_from(s).unwrap_or(u64::MAX);
            // Every weighted backend's first turn is at virtual time 0, so
            // each gets at least one slot.
            heap.push(Reverse(turn_key(0, offset_hash, i as u32)));
        }

        // Occupancy as a bitset: the permutation walks probe it at random,
        // and 8 KiB stays in L1 where the 256 KiB table would not.
        let mut used = vec![0u64; table_size.div_ceil(64)];
        let mut table = vec![0u32; table_size].into_boxed_slice();
        for _ in 0..table_size {
            let Some(Reverse(key)) = heap.pop() else {
                break; // unreachable: `weighted > 0` keeps the heap non-empty
            };
            let i = (key & 0xFFFF_FFFF) as usize;
            let (mut p, s) = (pos[i], skip[i]);
            // Walk this backend's permutation to its next free slot. It is
            // a full permutation, so this terminates while slots are free.
            while used[(p / 64) as usize] & (1 << (p % 64)) != 0 {
                p += s;
                if p >= m {
                    p -= m;
                }
            }
            used[(p / 64) as usize] |= 1 << (p % 64);
            table[p as usize] = i as u32;
            p += s;
            if p >= m {
                p -= m;
            }
            pos[i] = p;
            // Saturation only affects backends whose next turn is beyond
            // the end of the fill anyway.
            let vt = ((key >> 64) as u64).saturating_add(step[i]);
            heap.push(Reverse(
                (key & u128::from(u64::MAX)) | (u128::from(vt) << 64),
            ));
        }

        Ok(Maglev {
            table,
            backends: backends.len(),
            weighted,
        })
    }

    /// The slot for a key. `mix64` first, so even unmixed keys (small
    /// integers) spread over the table; then a multiply-shift instead of a
    /// division by the prime table size.
    #[inline]
    fn slot(&self, key_hash: u64) -> usize {
        reduce(mix64(key_hash), self.table.len() as u64) as usize
    }

    /// The backend (index into the slice given to [`Maglev::new`]) for a key.
    #[inline]
    pub fn get(&self, key_hash: u64) -> usize {
        let slot = self.slot(key_hash);
        self.table.get(slot).map_or(0, |&b| b as usize)
    }

    /// The first backend, walking the table from the key's slot, for which
    /// `skip` is false; `None` if every backend is skipped. The walk is
    /// deterministic per key, so a retry of the same key lands on the same
    /// fallback, and neighbouring slots belong to pseudo-random backends, so
    /// one backend's load spreads over many others when it is skipped.
    ///
    /// `skip` is called at most once per distinct backend when there are up
    /// to 4096 backends (the usual case); beyond that it may be called again
    /// for a backend it already rejected.
    pub fn get_skipping(&self, key_hash: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len();
        let start = self.slot(key_hash);
        let first = self.table[start];
        if !skip(first as usize) {
            return Some(first as usize);
        }
        // Slow path. A stack bitset remembers rejected backends so `skip` is
        // not re-asked and we can stop as soon as all have been rejected,
        // instead of walking the whole table.
        const MEMO_WORDS: usize = 64;
        let memo = self.backends <= MEMO_WORDS * 64;
        let mut rejected_bits = [0u64; MEMO_WORDS];
        let mut rejected = 0usize;
        let mut remember = |b: u32, bits: &mut [u64; MEMO_WORDS]| {
            if memo {
                bits[(b / 64) as usize] |= 1 << (b % 64);
                rejected += 1;
            }
            memo && rejected >= self.weighted
        };
        if remember(first, &mut rejected_bits) {
            return None;
        }
        let mut last = first;
        let mut slot = start;
        for _ in 1..m {
            slot += 1;
            if slot == m {
                slot = 0;
            }
            let b = self.table[slot];
            if b == last {
                continue;
            }
            last = b;
            if memo && rejected_bits[(b / 64) as usize] & (1 << (b % 64)) != 0 {
                continue;
            }
            if !skip(b as usize) {
                return Some(b as usize);
            }
            if remember(b, &mut rejected_bits) {
                return None;
            }
        }
        None
    }

    /// Number of slots (the prime given to [`Maglev::new`]).
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// Number of backends given to [`Maglev::new`], including weight-0 ones.
    pub fn backend_count(&self) -> usize {
        self.backends
    }

    /// Slots owned by each backend, indexed like the input slice. For
    /// metrics and tests; allocates.
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.backends];
        for &b in self.table.iter() {
            counts[b as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_bytes;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256))
            .collect()
    }

    fn equal(names: &[String]) -> Vec<(&str, u32)> {
        names.iter().map(|n| (n.as_str(), 1)).collect()
    }

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| hash_bytes(format!("session-{i}").as_bytes()))
            .collect()
    }

    /// Backend name chosen for each key.
    fn assignment<'a>(m: &Maglev, backends: &[(&'a str, u32)], keys: &[u64]) -> Vec<&'a str> {
        keys.iter().map(|&k| backends[m.get(k)].0).collect()
    }

    const SMALL_PRIME: usize = 10007;

    #[test]
    fn validates_inputs() {
        let b = [("a", 1u32), ("b", 1)];
        assert_eq!(
            Maglev::new(&b, 65536).err(),
            Some(MaglevError::NotPrime { table_size: 65536 })
        );
        assert!(matches!(
            Maglev::new(&b, 1),
            Err(MaglevError::NotPrime { .. })
        ));
        assert!(matches!(
            Maglev::new(&b, 0),
            Err(MaglevError::NotPrime { .. })
        ));
        assert_eq!(
            Maglev::new(&[("a", 1u32), ("b", 1), ("c", 1), ("d", 1)], 3).err(),
            Some(MaglevError::TableTooSmall {
                table_size: 3,
                backends: 4
            })
        );
        assert_eq!(
            Maglev::new(&[("a", 0u32), ("b", 0)], 7).err(),
            Some(MaglevError::NoBackends)
        );
        let empty: [(&str, u32); 0] = [];
        assert_eq!(Maglev::new(&empty, 7).err(), Some(MaglevError::NoBackends));
        assert!(matches!(
            Maglev::new(&b, MAX_TABLE_SIZE + 1),
            Err(MaglevError::TableTooLarge { .. })
        ));
        // Weight-0 backends do not count towards the size requirement.
        let m = Maglev::new(&[("a", 1u32), ("b", 0), ("c", 0), ("d", 1)], 2)
            .expect("2 slots for 2 weighted backends");
        assert_eq!(m.slot_counts(), vec![1, 0, 0, 1]);
        assert_eq!(m.backend_count(), 4);
        assert_eq!(m.table_size(), 2);
        assert!(MaglevError::NoBackends.to_string().contains("weight"));
    }

    #[test]
    fn primality() {
        let primes: Vec<usize> = (0..60).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            primes,
            [
                2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59
            ]
        );
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(SMALL_PRIME));
        assert!(!is_prime(65535));
        assert!(!is_prime(10403)); // 101 * 103
    }

    #[test]
    fn default_size_is_balanced_and_deterministic() {
        let n = names(100);
        let b = equal(&n);
        let m1 = Maglev::new(&b, DEFAULT_TABLE_SIZE).expect("build");
        let m2 = Maglev::new(&b, DEFAULT_TABLE_SIZE).expect("build");
        assert_eq!(m1.table, m2.table);
        let counts = m1.slot_counts();
        let (lo, hi) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        // 65537 / 100 = 655.37: equal weights give 655 or 656 slots.
        assert!(lo >= 655 && hi <= 656, "{lo}..{hi}");
    }

    #[test]
    fn listing_order_does_not_change_assignment() {
        let n = names(37);
        let b = equal(&n);
        let mut rev = b.clone();
        rev.reverse();
        let ks = keys(5000);
        let m1 = Maglev::new(&b, SMALL_PRIME).expect("build");
        let m2 = Maglev::new(&rev, SMALL_PRIME).expect("build");
        assert_eq!(assignment(&m1, &b, &ks), assignment(&m2, &rev, &ks));
    }

    #[test]
    fn unmixed_keys_still_spread() {
        let n = names(10);
        let m = Maglev::new(&equal(&n), SMALL_PRIME).expect("build");
        let mut counts = [0usize; 10];
        for k in 0..10_000u64 {
            counts[m.get(k)] += 1;
        }
        for &c in &counts {
            assert!(c.abs_diff(1000) < 200, "{counts:?}");
        }
    }

    #[test]
    fn get_skipping_honours_skip() {
        let n = names(20);
        let b = equal(&n);
        let m = Maglev::new(&b, SMALL_PRIME).expect("build");
        for k in keys(2000) {
            let home = m.get(k);
            // Nothing skipped: same as get.
            assert_eq!(m.get_skipping(k, |_| false), Some(home));
            // Home skipped: a different, deterministic backend.
            let alt = m.get_skipping(k, |i| i == home).expect("others left");
            assert_ne!(alt, home);
            assert_eq!(m.get_skipping(k, |i| i == home), Some(alt));
            // Only one backend left: it is found.
            assert_eq!(m.get_skipping(k, |i| i != 7), Some(7));
            // Everything skipped.
            assert_eq!(m.get_skipping(k, |_| true), None);
        }
    }

    #[test]
    fn get_skipping_asks_each_backend_once() {
        let n = names(50);
        let m = Maglev::new(&equal(&n), DEFAULT_TABLE_SIZE).expect("build");
        let calls = std::cell::Cell::new(0usize);
        let r = m.get_skipping(42, |_| {
            calls.set(calls.get() + 1);
            true
        });
        assert_eq!(r, None);
        assert_eq!(calls.get(), 50);
    }

    #[test]
    fn get_skipping_spreads_a_skipped_backends_keys() {
        // When one backend is down, its keys go to many others, not one.
        let n = names(20);
        let m = Maglev::new(&equal(&n), SMALL_PRIME).expect("build");
        let mut dest = [0usize; 20];
        for k in keys(20_000) {
            if m.get(k) == 3 {
                dest[m.get_skipping(k, |i| i == 3).expect("alt")] += 1;
            }
        }
        assert_eq!(dest[3], 0);
        let receivers = dest.iter().filter(|&&c| c > 0).count();
        assert!(receivers >= 15, "{dest:?}");
    }

    #[test]
    fn get_skipping_beyond_memo_size() {
        // More backends than the skip memo covers: still correct.
        let n = names(5000);
        let b = equal(&n);
        let m = Maglev::new(&b, DEFAULT_TABLE_SIZE).expect("build");
        assert_eq!(m.get_skipping(9, |_| true), None);
        assert_eq!(m.get_skipping(9, |i| i != 4321), Some(4321));
    }

    /// Fraction of keys whose backend name differs between two tables.
    fn moved(a: &[&str], b: &[&str]) -> f64 {
        let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
        n as f64 / a.len() as f64
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn slots_follow_weights(weights in prop::collection::vec(0u32..=20, 1..40)) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let n = names(weights.len());
            let b: Vec<(&str, u32)> = n.iter().map(String::as_str).zip(weights.iter().copied()).collect();
            let m = Maglev::new(&b, SMALL_PRIME).expect("build");
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            for (i, (&c, &w)) in m.slot_counts().iter().zip(&weights).enumerate() {
                if w == 0 {
                    prop_assert_eq!(c, 0, "weight-0 backend {} got slots", i);
                } else {
                    let want = SMALL_PRIME as f64 * f64::from(w) / total as f64;
                    prop_assert!((c as f64 - want).abs() <= 2.0 + want * 0.01,
                        "backend {} weight {} has {} slots, want {:.1}", i, w, c, want);
                }
            }
        }

        #[test]
        fn removing_a_backend_moves_about_one_nth(n in 3usize..60, victim_seed in any::<u64>()) {
            let all = names(n);
            let before = equal(&all);
            let victim = (victim_seed % n as u64) as usize;
            let mut after = before.clone();
            after.remove(victim);
            let ks = keys(10_000);
            let a = assignment(&Maglev::new(&before, DEFAULT_TABLE_SIZE).expect("build"), &before, &ks);
            let b = assignment(&Maglev::new(&after, DEFAULT_TABLE_SIZE).expect("build"), &after, &ks);
            let frac = moved(&a, &b);
            let bound = 1.5 / n as f64 + 0.01;
            prop_assert!(frac <= bound, "moved {:.4} > {:.4} (n={})", frac, bound, n);
            // Keys on surviving backends mostly stay put.
            let (mut kept, mut survivors) = (0usize, 0usize);
            for (x, y) in a.iter().zip(&b) {
                if *x != before[victim].0 {
                    survivors += 1;
                    kept += usize::from(x == y);
                }
            }
            let stay = kept as f64 / survivors as f64;
            prop_assert!(stay >= 0.97, "only {:.4} of untouched keys stayed (n={})", stay, n);
            // And every key of the removed backend moved (trivially), so
            // the move is at least its share.
            prop_assert!(frac >= 0.5 / n as f64);
        }

        #[test]
        fn adding_a_backend_moves_about_one_over_n_plus_one(n in 2usize..60) {
            let all = names(n + 1);
            let after = equal(&all);
            let before = after[..n].to_vec();
            let ks = keys(10_000);
            let a = assignment(&Maglev::new(&before, DEFAULT_TABLE_SIZE).expect("build"), &before, &ks);
            let b = assignment(&Maglev::new(&after, DEFAULT_TABLE_SIZE).expect("build"), &after, &ks);
            let frac = moved(&a, &b);
            let bound = 1.5 / (n + 1) as f64 + 0.01;
            prop_assert!(frac <= bound, "moved {:.4} > {:.4} (n={})", frac, bound, n);
            // Keys that moved went to the new backend, nearly always.
            let to_new = a.iter().zip(&b).filter(|(x, y)| x != y && **y == all[n].as_str()).count();
            let moved_n = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            prop_assert!(to_new as f64 >= 0.6 * moved_n as f64, "{} of {} moves went to the new backend", to_new, moved_n);
        }

        #[test]
        fn deterministic(weights in prop::collection::vec(1u32..=5, 1..30)) {
            let n = names(weights.len());
            let b: Vec<(&str, u32)> = n.iter().map(String::as_str).zip(weights.iter().copied()).collect();
            let m1 = Maglev::new(&b, SMALL_PRIME).expect("build");
            let m2 = Maglev::new(&b, SMALL_PRIME).expect("build");
            prop_assert_eq!(&m1.table, &m2.table);
        }

        #[test]
        fn non_prime_sizes_rejected(size in 4usize..200_000) {
            prop_assume!(!is_prime(size));
            prop_assert_eq!(Maglev::new(&[("a", 1u32)], size).err(), Some(MaglevError::NotPrime { table_size: size }));
        }
    }
}
