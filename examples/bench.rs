//! Training throughput of the course's GPTs on this machine, and the share of its float32
//! matmul peak they achieve. Run with `make bench` (`cargo run --release --example bench`);
//! `-- --quick` runs a few steps of small sizes (what `make test` runs, so this cannot rot).
//!
//! The `cpu_small` row is chapter 5's run exactly (`TrainConfig::cpu_small()`, 2000 steps with
//! its loss estimates), timed the way the chapter and `llm train` time it
//! ([`train::RunTimes`]): ms per step with the estimates, and without them.
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

/// Train `model` as `config` says, from step 0, and return where the time went.
fn run(model: &Gpt, config: TrainConfig, data: &TokenData) -> Result<train::RunTimes> {
    let mut trainer = Trainer::new(model, config)?;
    trainer.run(model, data, |_| {})?;
    Ok(trainer.times())
}

fn main() -> Result<()> {
    let text = data::tinyshakespeare()?;
    let tok = CharTokenizer::from_text(&text);
    let data = TokenData::new(&tok.encode(&text)?, 0.9)?;
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 256 } else { 2048 };
    let peak = matmul_peak(n);
    println!(
        "machine: {} libtorch threads, float32 matmul peak {:.1} GFLOP/s ({n}², best of 5)",
        tch::get_num_threads(),
        peak / 1e9
    );
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>9} {:>12} {:>10} {:>8}",
        "model", "batch", "ms/step", "w/o est.", "steps/s", "tokens/s", "GFLOP/s", "of peak"
    );
    // Chapter 5's run as it is, and the lecture's model for a few steps; in quick mode a few
    // steps of each at small sizes.
    let (small_steps, lecture_steps) = if quick { (20, 2) } else { (2000, 4) };
    let runs = [
        (
            "cpu_small",
            GptConfig::cpu_small(),
            TrainConfig {
                steps: small_steps,
                eval_interval: if quick { 10 } else { TrainConfig::cpu_small().eval_interval },
                eval_iters: if quick { 2 } else { TrainConfig::cpu_small().eval_iters },
                warmup_steps: if quick { 5 } else { TrainConfig::cpu_small().warmup_steps },
                ..TrainConfig::cpu_small()
            },
        ),
        (
            "lecture",
            GptConfig { n_layer: if quick { 1 } else { 6 }, ..GptConfig::lecture() },
            TrainConfig {
                steps: lecture_steps,
                batch_size: if quick { 2 } else { 16 },
                block_size: 256,
                eval_interval: lecture_steps,
                eval_iters: 1,
                warmup_steps: 1,
                ..TrainConfig::cpu_small()
            },
        ),
    ];
    for (name, model_config, train_config) in runs {
        seed(1337);
        let model = Gpt::new(model_config.clone(), Device::Cpu)?;
        let times = run(&model, train_config.clone(), &data)?;
        let secs = times.ms_per_step_without_estimates() / 1e3;
        let (b, t) = (train_config.batch_size, train_config.block_size);
        let c = &model_config;
        let flops_per_token =
            6.0 * model.num_params_non_embedding() as f64 + 12.0 * (c.n_layer * c.n_embd * t) as f64;
        let tokens_per_sec = (b * t) as f64 / secs;
        let flops = flops_per_token * tokens_per_sec;
        println!(
            "{name:<10} {:>9} {:>10.1} {:>10.1} {:>9.2} {:>12.0} {:>10.1} {:>7.1}%",
            format!("{b}×{t}"),
            times.ms_per_step(),
            secs * 1e3,
            1.0 / secs,
            tokens_per_sec,
            flops / 1e9,
            100.0 * flops / peak
        );
    }
    println!("ms/step: all of `trainer.run` (the loss estimates included) divided by its steps, then without the estimates' time;");
    println!(
        "the other columns count training steps only. Chapter 5 and `llm train` print the same two figures."
    );
    Ok(())
}
