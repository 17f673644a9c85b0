//! Training throughput of the course's GPTs on this machine, and the share of its float32
//! matmul peak they achieve. Run with `make bench` (`cargo run --release --example bench`).
//!
//! FLOPs per token follow nanoGPT's `estimate_mfu` (PaLM appendix B): `6·N + 12·L·H·Q·T`
//! for forward plus backward, N the parameters without position embeddings.

use llm_from_scratch::prelude::*;
use std::time::Instant;

/// The best float32 matmul rate of `n × n` matrices over a few tries, in FLOP/s.
fn matmul_peak(n: i64) -> f64 {
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let _ = a.matmul(&b); // warm up
    (0..5)
        .map(|_| {
            let t0 = Instant::now();
            let c = a.matmul(&b);
            let secs = t0.elapsed().as_secs_f64();
            drop(c);
            2.0 * (n * n * n) as f64 / secs
        })
        .fold(0.0, f64::max)
}

/// Seconds per optimizer step of `model` trained with `config` (after one warm-up step).
fn seconds_per_step(model: &Gpt, config: TrainConfig, data: &TokenData, steps: usize) -> Result<f64> {
    let config = TrainConfig {
        steps: steps + 1,
        eval_interval: steps + 1,
        eval_iters: 1,
        log_interval: None,
        ..config
    };
    let mut trainer = Trainer::new(model, config)?;
    trainer.train_until(model, data, 1, |_| {})?;
    let t0 = Instant::now();
    trainer.train_until(model, data, steps + 1, |_| {})?;
    Ok(t0.elapsed().as_secs_f64() / steps as f64)
}

fn main() -> Result<()> {
    let text = data::tinyshakespeare()?;
    let tok = CharTokenizer::from_text(&text);
    let data = TokenData::new(&tok.encode(&text)?, 0.9)?;
    let peak = matmul_peak(2048);
    println!(
        "machine: {} libtorch threads, float32 matmul peak {:.1} GFLOP/s (2048², best of 5)",
        tch::get_num_threads(),
        peak / 1e9
    );
    println!(
        "{:<10} {:>9} {:>10} {:>9} {:>12} {:>10} {:>8}",
        "model", "batch", "ms/step", "steps/s", "tokens/s", "GFLOP/s", "of peak"
    );
    let runs = [
        ("cpu_small", GptConfig::cpu_small(), TrainConfig::cpu_small(), 50),
        (
            "lecture",
            GptConfig::lecture(),
            TrainConfig { batch_size: 16, block_size: 256, ..TrainConfig::cpu_small() },
            3,
        ),
    ];
    for (name, model_config, train_config, steps) in runs {
        seed(1337);
        let model = Gpt::new(model_config.clone(), Device::Cpu)?;
        let secs = seconds_per_step(&model, train_config.clone(), &data, steps)?;
        let (b, t) = (train_config.batch_size, train_config.block_size);
        let c = &model_config;
        let flops_per_token =
            6.0 * model.num_params_non_embedding() as f64 + 12.0 * (c.n_layer * c.n_embd * t) as f64;
        let tokens_per_sec = (b * t) as f64 / secs;
        let flops = flops_per_token * tokens_per_sec;
        println!(
            "{name:<10} {:>9} {:>10.1} {:>9.2} {:>12.0} {:>10.1} {:>7.1}%",
            format!("{b}×{t}"),
            secs * 1e3,
            1.0 / secs,
            tokens_per_sec,
            flops / 1e9,
            100.0 * flops / peak
        );
    }
    Ok(())
}
