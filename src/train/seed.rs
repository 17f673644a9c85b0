//! A run's randomness as a function of `(seed, step)` (see the module docs of [`crate::train`]).

/// SplitMix64's output function: a good 64-bit mixer.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn derive_seed(seed: u64, stream: u64, index: usize) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(stream)) ^ index as u64)
}

/// The seed of libtorch's generator for optimizer step `step` (from 0) of a run seeded `seed`.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    derive_seed(seed, 0, step)
}

/// The seed of libtorch's generator for the loss estimate after `step` steps.
pub fn eval_seed(seed: u64, step: usize) -> u64 {
    derive_seed(seed, 1, step)
}
