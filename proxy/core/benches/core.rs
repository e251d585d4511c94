//! Hot-path costs of the load-balancing core.
//!
//! `cargo bench -p citoroute-core -- --warm-up-time 1 --measurement-time 3`
//! (append a name such as `maglev_lookup` to run one group).

use std::hint::black_box;

use citoroute_core::{
    Admission, BreakerConfig, CircuitBreaker, DEFAULT_TABLE_SIZE, Maglev, TokenBucket,
    WeightedPicker, hash_bytes, mix64,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn backends(n: usize) -> Vec<(String, u32)> {
    (0..n)
        .map(|i| (format!("10.0.{}.{}:8080", i / 256, i % 256), 1))
        .collect()
}

fn maglev_lookup(c: &mut Criterion) {
    let m = Maglev::new(&backends(1000), DEFAULT_TABLE_SIZE).expect("valid table");
    let key = hash_bytes(b"203.0.113.7");
    let mut g = c.benchmark_group("maglev_lookup");
    g.bench_function("precomputed_hash", |b| b.iter(|| m.get(black_box(key))));
    // Different keys each iteration, so slots are not all cache-hot.
    let mut k = 0u64;
    g.bench_function("varying_hash", |b| {
        b.iter(|| {
            k = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
            m.get(black_box(k))
        })
    });
    g.bench_function("hash_and_lookup", |b| {
        b.iter(|| m.get(hash_bytes(black_box(b"203.0.113.7:53124"))))
    });
    g.bench_function("get_skipping_home_down", |b| {
        let home = m.get(key);
        b.iter(|| m.get_skipping(black_box(key), |i| i == home))
    });
    g.finish();
}

fn maglev_build_1000(c: &mut Criterion) {
    let equal = backends(1000);
    let weighted: Vec<(String, u32)> = equal
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), 1 + (i % 10) as u32 * 10))
        .collect();
    let mut g = c.benchmark_group("maglev_build_1000");
    g.sample_size(20);
    g.bench_function("equal_weights", |b| {
        b.iter(|| Maglev::new(black_box(&equal), DEFAULT_TABLE_SIZE))
    });
    g.bench_function("mixed_weights", |b| {
        b.iter(|| Maglev::new(black_box(&weighted), DEFAULT_TABLE_SIZE))
    });
    g.finish();
}

fn weighted_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("weighted_pick");
    for n in [2usize, 10, 100] {
        let weights: Vec<u32> = (0..n as u32).map(|i| 1 + i % 7).collect();
        let p = WeightedPicker::new(&weights).expect("non-zero weights");
        let mut r = 0u64;
        g.bench_function(format!("pick_{n}"), |b| {
            b.iter(|| {
                r = r.wrapping_add(1);
                p.pick(mix64(black_box(r)))
            })
        });
        g.bench_function(format!("pick_skipping_{n}_one_down"), |b| {
            b.iter(|| {
                r = r.wrapping_add(1);
                p.pick_skipping(mix64(black_box(r)), |i| i == 1)
            })
        });
    }
    g.finish();
}

fn breaker_admit(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_admit");
    let b = CircuitBreaker::new(BreakerConfig::default());
    let now = 1_000_000_000_000u64;
    g.bench_function("closed_admit", |bn| bn.iter(|| b.admit(black_box(now))));
    g.bench_function("closed_admit_and_success", |bn| {
        bn.iter(|| {
            let a = b.admit(black_box(now));
            b.on_success(a, now);
        })
    });
    g.bench_function("is_available", |bn| {
        bn.iter(|| b.is_available(black_box(now)))
    });
    let open = CircuitBreaker::new(BreakerConfig::default());
    for _ in 0..5 {
        open.on_failure(Admission::Allowed, now);
    }
    g.bench_function("open_reject", |bn| bn.iter(|| open.admit(black_box(now))));
    g.finish();
}

fn token_bucket(c: &mut Criterion) {
    let mut g = c.benchmark_group("token_bucket");
    let tb = TokenBucket::new(1e9, 1_000_000);
    let mut now = 1_000_000_000u64;
    g.bench_function("try_acquire_granted", |b| {
        b.iter(|| {
            now += 10;
            tb.try_acquire(1, black_box(now))
        })
    });
    let empty = TokenBucket::new(1.0, 1);
    empty.try_acquire(1, 0);
    g.bench_function("try_acquire_denied", |b| {
        b.iter(|| empty.try_acquire(1, black_box(5)))
    });
    g.finish();
}

criterion_group!(
    benches,
    maglev_lookup,
    maglev_build_1000,
    weighted_pick,
    breaker_admit,
    token_bucket
);
criterion_main!(benches);
