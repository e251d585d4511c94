//! The set of backends one request has already tried, for retries.
//!
//! Why a bitset with an inline part: a request retries a few times over
//! backend indices that are almost always below 128, so the common case is
//! two words on the stack with no allocation; larger indices spill into a
//! `Vec<u64>`. Owned by one request, so no atomics.

/// Set of backend indices. Inline for indices < 128, heap beyond.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriedSet {
    inline: [u64; 2],
    /// Bits for indices 128.. (word `i` covers `128 + 64 * i ..`).
    spill: Vec<u64>,
    len: usize,
}

const INLINE_BITS: usize = 128;

impl TriedSet {
    /// An empty set; does not allocate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `idx`; returns false if it was already present.
    pub fn insert(&mut self, idx: usize) -> bool {
        let word = if idx < INLINE_BITS {
            &mut self.inline[idx / 64]
        } else {
            let w = (idx - INLINE_BITS) / 64;
            if w >= self.spill.len() {
                self.spill.resize(w + 1, 0);
            }
            &mut self.spill[w]
        };
        let bit = 1u64 << (idx % 64);
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        self.len += 1;
        true
    }

    /// Whether `idx` was inserted.
    #[inline]
    pub fn contains(&self, idx: usize) -> bool {
        let word = if idx < INLINE_BITS {
            self.inline[idx / 64]
        } else {
            match self.spill.get((idx - INLINE_BITS) / 64) {
                Some(&w) => w,
                None => return false,
            }
        };
        word & (1u64 << (idx % 64)) != 0
    }

    /// Number of distinct indices inserted.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was inserted.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the set, keeping any spill allocation for reuse.
    pub fn clear(&mut self) {
        self.inline = [0; 2];
        self.spill.iter_mut().for_each(|w| *w = 0);
        self.len = 0;
    }

    /// The indices in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.inline
            .iter()
            .chain(self.spill.iter())
            .enumerate()
            .flat_map(|(w, &bits)| {
                (0..64)
                    .filter(move |b| bits & (1u64 << b) != 0)
                    .map(move |b| w * 64 + b)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn small_indices_stay_inline() {
        let mut s = TriedSet::new();
        assert!(s.is_empty());
        assert!(s.insert(0));
        assert!(s.insert(63));
        assert!(s.insert(64));
        assert!(s.insert(127));
        assert!(!s.insert(63), "duplicate");
        assert_eq!(s.len(), 4);
        assert!(s.contains(0) && s.contains(63) && s.contains(64) && s.contains(127));
        assert!(!s.contains(1) && !s.contains(126) && !s.contains(128) && !s.contains(100_000));
        assert_eq!(s.spill.capacity(), 0, "no allocation below 128");
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 63, 64, 127]);
    }

    #[test]
    fn large_indices_spill() {
        let mut s = TriedSet::new();
        assert!(s.insert(128));
        assert!(s.insert(5000));
        assert!(s.insert(3));
        assert!(!s.insert(5000));
        assert_eq!(s.len(), 3);
        assert!(s.contains(128) && s.contains(5000) && s.contains(3));
        assert!(!s.contains(129) && !s.contains(4999) && !s.contains(5001) && !s.contains(1 << 20));
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 128, 5000]);
        s.clear();
        assert!(s.is_empty());
        assert!(!s.contains(5000) && !s.contains(3));
        assert!(s.insert(5000), "insertable again after clear");
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in prop::collection::vec(0usize..1000, 0..200)) {
            let mut s = TriedSet::new();
            let mut model = BTreeSet::new();
            for &i in &ops {
                prop_assert_eq!(s.insert(i), model.insert(i));
            }
            prop_assert_eq!(s.len(), model.len());
            for i in 0..1100 {
                prop_assert_eq!(s.contains(i), model.contains(&i));
            }
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
        }
    }
}
