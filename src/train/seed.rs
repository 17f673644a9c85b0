//! A run's randomness as a function of `(seed, step)` (see the module docs of [`crate::train`]).

use crate::device::splitmix64;

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
