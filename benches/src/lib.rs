//! This crate only hosts the benchmarks of blockdiff: the criterion benches
//! in `benches/` (`cargo bench -p blockdiff-benches`) and the end-to-end
//! script `benches/run.sh`, and the data the benches share ([`pseudo_random`]).
#![deny(missing_docs)]

/// One step of SplitMix64: the next pseudo-random word after `state`.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` deterministic pseudo-random bytes (SplitMix64): incompressible,
/// without a zero block, and identical from run to run.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x0123_4567_89ab_cdef;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}
