//! Generation speed with and without the KV cache, for the course's GPTs at random init (the
//! cost of a token does not depend on what the weights are). Run with `make bench`
//! (`cargo run --release --example generate_bench`); `-- --quick` times `cpu_small` only,
//! one run of 20 and 80 tokens each (what `make test` runs, so this cannot rot).
//!
//! Each row draws one sample of 100, 500 or 1000 tokens (and `block_size - 1`, the most that
//! fit in the context) after a one-token prompt, both ways,
//! and checks the two gave the same tokens. While the context fits in `block_size`, a cached
//! step runs the model on one position; past it, the window moves and every cached key and
//! value changes, so a step costs a full window again (see `generate`'s docs).

use llm_from_scratch::generate::{generate_batch, Cache, Sampling};
use llm_from_scratch::prelude::*;
use std::time::Instant;

/// The tokens of `seeds.len()` samples of `n` tokens, and the seconds they took: the best of
/// three runs (one when `quick`), or of as many as fit in ten seconds (short runs are noisy on
/// a shared machine).
fn timed(model: &Gpt, n: usize, seeds: &[u64], cache: Cache, quick: bool) -> Result<(Vec<Vec<u32>>, f64)> {
    let sampling = Sampling { temperature: 0.8, top_k: Some(200), ..Sampling::default() };
    let (mut best, mut spent, mut samples) = (f64::INFINITY, 0.0, Vec::new());
    for _ in 0..if quick { 1 } else { 3 } {
        let t0 = Instant::now();
        samples = generate_batch(model, &[0], n, &sampling, seeds, cache, |_| Ok(()))?;
        let seconds = t0.elapsed().as_secs_f64();
        (best, spent) = (best.min(seconds), spent + seconds);
        if spent > 10.0 {
            break;
        }
    }
    Ok((samples, best))
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("machine: {} libtorch threads; one sample after a one-token prompt", tch::get_num_threads());
    println!(
        "{:<10} {:>6} {:>10} {:>16} {:>16} {:>8}",
        "model", "block", "new tokens", "no cache tok/s", "KV cache tok/s", "speedup"
    );
    let models = if quick {
        vec![("cpu_small", GptConfig::cpu_small())]
    } else {
        vec![("cpu_small", GptConfig::cpu_small()), ("lecture", GptConfig::lecture())]
    };
    for (name, config) in models {
        device::seed(1337);
        let block = config.block_size;
        let model = Gpt::new(config, Device::Cpu)?;
        timed(&model, 20, &[0], Cache::On, quick)?; // warm up
                                                    // The three lengths, and the longest that stays within the context (quick: one
                                                    // within the context, one past it).
        let mut lengths = if quick { vec![20, 80] } else { vec![block - 1, 100, 500, 1000] };
        lengths.sort();
        for n in lengths {
            let (uncached, slow) = timed(&model, n, &[1337], Cache::Off, quick)?;
            let (cached, fast) = timed(&model, n, &[1337], Cache::On, quick)?;
            assert_eq!(uncached, cached, "{name}, {n} tokens: the cache changed the tokens");
            println!(
                "{name:<10} {block:>6} {n:>10} {:>16.0} {:>16.0} {:>7.1}×",
                n as f64 / slow,
                n as f64 / fast,
                slow / fast
            );
        }
        // Side by side: 8 samples in one batch against one, within the context.
        let n = block - 1;
        let (_, one) = timed(&model, n, &[1337], Cache::On, quick)?;
        let seeds: Vec<u64> = (0..8).collect();
        let (_, eight) = timed(&model, n, &seeds, Cache::On, quick)?;
        println!(
            "{name:<10} {block:>6} {n:>10}   KV cache, 1 sample: {:.0} tok/s; 8 in one batch: {:.0} tok/s",
            n as f64 / one,
            8.0 * n as f64 / eight
        );
    }
    Ok(())
}
