//! A small, fast, stable 64-bit hash for load-balancing keys.
//!
//! Why our own: Maglev tables must agree across proxy replicas, restarts and
//! CPU architectures, so the hash must never change with a dependency upgrade
//! or the platform's endianness. `std`'s `DefaultHasher` makes no such promise.
//!
//! The construction is a multiply-fold hash: 16-byte blocks are folded through
//! a 64x64->128 bit multiply, chained with a bijective state update, and
//! finished with one more fold over the length. It is not cryptographic and
//! not meant to resist chosen-input collisions: a client who controls the key
//! can already pin itself to one backend by repeating the key.

/// 2^64 / golden ratio (odd).
const K0: u64 = 0x9E37_79B9_7F4A_7C15;
/// Fractional bits of sqrt(3).
const K1: u64 = 0xBB67_AE85_84CA_A73B;
/// Fractional bits of sqrt(5).
const K2: u64 = 0x3C6E_F372_FE94_F82B;
/// Fractional bits of sqrt(7).
const K3: u64 = 0xA54F_F53A_5F1D_36F1;

/// Multiplies into 128 bits and folds the halves: every input bit reaches
/// many output bits in a single `mul` instruction.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Absorbs one 128-bit block. The state update (rotate, xor, odd multiply)
/// is a bijection of `h`, so no block can erase what came before it.
#[inline(always)]
fn absorb(h: u64, lo: u64, hi: u64) -> u64 {
    let block = fold_mul(lo ^ K1, hi ^ K2) ^ hi;
    (h.rotate_left(23) ^ block).wrapping_mul(K0)
}

/// Hashes `data` with the default seed. Stable across runs, versions of this
/// crate (pinned by tests) and platforms.
#[inline]
pub fn hash_bytes(data: &[u8]) -> u64 {
    hash_bytes_seeded(data, 0)
}

/// Hashes `data` with `seed`; different seeds give independent-looking hashes
/// of the same input (Maglev derives two permutation parameters this way).
#[inline]
pub fn hash_bytes_seeded(data: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ K3;
    let (blocks, tail) = data.as_chunks::<16>();
    for block in blocks {
        let v = u128::from_le_bytes(*block);
        h = absorb(h, v as u64, (v >> 64) as u64);
    }
    let n = tail.len();
    if n > 0 {
        let (lo, hi) = if n >= 8 {
            // Overlapping reads cover 8..=15 bytes without a byte loop.
            (
                tail.first_chunk::<8>()
                    .map_or(0, |c| u64::from_le_bytes(*c)),
                tail.last_chunk::<8>().map_or(0, |c| u64::from_le_bytes(*c)),
            )
        } else if n >= 4 {
            (
                tail.first_chunk::<4>()
                    .map_or(0, |c| u64::from(u32::from_le_bytes(*c))),
                tail.last_chunk::<4>()
                    .map_or(0, |c| u64::from(u32::from_le_bytes(*c))),
            )
        } else {
            // 1..=3 bytes: first, middle and last cover every byte.
            let a = u64::from(tail[0]);
            let b = u64::from(tail[n / 2]);
            let c = u64::from(tail[n - 1]);
            (a | (b << 8) | (c << 16), 0)
        };
        h = absorb(h, lo, hi);
    }
    // The length separates inputs that differ only by trailing zero bytes.
    let len = data.len() as u64;
    let out = fold_mul(h ^ K2, len ^ K0);
    mix64(out ^ h)
}

/// A bijective 64-bit finalizer: spreads entropy from any bits to all bits.
/// Use it to turn weak inputs (counters, ids) into pickers' `random` values.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 32;
    x = x.wrapping_mul(K0);
    x ^= x >> 29;
    x = x.wrapping_mul(K1 | 1);
    x ^= x >> 32;
    x
}

/// Maps a uniformly distributed `x` onto `0..n` with a multiply instead of a
/// division (the high half of `x * n`).
#[inline(always)]
pub(crate) fn reduce(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned outputs: if one of these changes, every Maglev table in a
    /// mixed-version fleet changes with it. Do not update casually.
    #[test]
    fn stable_golden_values() {
        let cases: [(&[u8], u64); 6] = [
            (b"", GOLDEN[0]),
            (b"a", GOLDEN[1]),
            (b"10.0.0.1:8080", GOLDEN[2]),
            (b"0123456789abcdef", GOLDEN[3]),
            (b"0123456789abcdefg", GOLDEN[4]),
            (
                b"the quick brown fox jumps over the lazy dog, twice over",
                GOLDEN[5],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                hash_bytes(input),
                want,
                "hash of {:?} changed",
                String::from_utf8_lossy(input)
            );
        }
    }

    const GOLDEN: [u64; 6] = [
        0xE786_3A71_4DF0_382D,
        0xD2BB_FF4E_3003_45C5,
        0xED88_3810_1438_8F2C,
        0xAC2B_A607_D690_F6DA,
        0x3EBE_24F5_7AF3_290F,
        0xB26B_23D5_EC5A_F4E4,
    ];

    #[test]
    fn every_length_and_byte_matters() {
        let base: Vec<u8> = (0u8..64).collect();
        let mut seen = std::collections::HashSet::new();
        for len in 0..=base.len() {
            assert!(seen.insert(hash_bytes(&base[..len])), "length {len}");
        }
        // Flipping any single bit of a 40-byte input changes the hash.
        let input = &base[..40];
        let h0 = hash_bytes(input);
        for byte in 0..input.len() {
            for bit in 0..8 {
                let mut v = input.to_vec();
                v[byte] ^= 1 << bit;
                assert_ne!(hash_bytes(&v), h0, "byte {byte} bit {bit}");
            }
        }
        // Trailing zeros are not ignored.
        assert_ne!(hash_bytes(b"ab"), hash_bytes(b"ab\0"));
    }

    #[test]
    fn avalanche_is_roughly_half() {
        // Each single-bit flip of the input should flip about half of the
        // output bits on average.
        let mut total_flips = 0u64;
        let mut trials = 0u64;
        for len in [1usize, 3, 7, 8, 13, 16, 17, 31, 48] {
            let input: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let h0 = hash_bytes(&input);
            for byte in 0..len {
                for bit in 0..8 {
                    let mut v = input.clone();
                    v[byte] ^= 1 << bit;
                    total_flips += u64::from((hash_bytes(&v) ^ h0).count_ones());
                    trials += 1;
                }
            }
        }
        let mean = total_flips as f64 / trials as f64;
        assert!((28.0..=36.0).contains(&mean), "mean flipped bits {mean}");
    }

    #[test]
    fn sequential_keys_spread_evenly() {
        let buckets = 64usize;
        let n = 64_000usize;
        let mut counts = vec![0usize; buckets];
        for i in 0..n {
            let h = hash_bytes(format!("client-{i}").as_bytes());
            counts[reduce(h, buckets as u64) as usize] += 1;
        }
        let expect = n / buckets;
        for (b, &c) in counts.iter().enumerate() {
            assert!(c.abs_diff(expect) < expect / 8, "bucket {b}: {c}");
        }
    }

    #[test]
    fn seeds_are_independent() {
        assert_ne!(hash_bytes_seeded(b"x", 1), hash_bytes_seeded(b"x", 2));
        assert_eq!(hash_bytes_seeded(b"x", 0), hash_bytes(b"x"));
    }

    #[test]
    fn mix64_is_not_identity_and_spreads_small_inputs() {
        let mut counts = [0usize; 16];
        for i in 0..16_000u64 {
            counts[reduce(mix64(i), 16) as usize] += 1;
        }
        for &c in &counts {
            assert!(c.abs_diff(1000) < 150, "{counts:?}");
        }
    }
}
