//! Helpers shared by blockdiff-core's integration tests (each test file
//! that needs them says `mod common;` and uses what it needs).

#![allow(dead_code)]

use blockdiff_core::{GenerationStore, RestoreOptions, RestorePlan};

/// Deterministic pseudo-random bytes (xorshift), another stream for each
/// seed; incompressible enough that zstd stores most of them.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A plan restoring generation `k` of `store` with `threads`, checking
/// every frame when `verify`; the source may have shrunk along the chain.
pub fn plan(store: &GenerationStore, k: u64, verify: bool, threads: usize) -> RestorePlan {
    let opts = RestoreOptions {
        generation: Some(k),
        verify,
        source_shrank: true,
    };
    RestorePlan::new(store, &opts)
        .unwrap()
        .with_threads(threads)
        .unwrap()
}
